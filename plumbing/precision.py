"""The dtypes and autocast each command runs its models in: training (fp32 master weights, or
AR-GRPO's pure bf16; the reference in bf16 or fp32) and sampling (--precision, AR-GRPO's fp16)."""
import contextlib

import torch


def training_dtypes(args, device, policy, reference, vq, text):
    """The models in the dtypes they train in (docs/performance.md, "Memory")."""
    if args.pure_bf16:  # AR-GRPO's --force_model_bf16: no fp32 master weights; AdamW state follows
        policy.to(torch.bfloat16)
        reference.to(torch.bfloat16)
        vq.to(torch.bfloat16)
    if args.ref_dtype == "bf16" or args.ref_dtype == "auto" and device.type == "cuda" and args.bf16:
        reference.to(torch.bfloat16)  # half the memory; its matmuls ran in bf16 under autocast
    policy.grad_checkpoint = args.grad_checkpoint
    return policy, reference, vq, text


def sample_dtypes(args, model, vq, dev):
    """(GPT, VQ) in the sampling precision: --precision, else bf16 on a GPU; fp16 casts the VQ too
    (AR-GRPO's test.py loads its whole model in fp16)."""
    precision = args.precision or ("bf16" if dev.type == "cuda" else "fp32")
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return model.to(dtype), (vq.to(dtype) if precision == "fp16" else vq)


def sample_autocast(args, dev):
    """fp16 autocast over sampling and decoding with --precision fp16 on a GPU (test.py's)."""
    if args.precision == "fp16" and dev.type == "cuda":
        return torch.autocast("cuda", torch.float16)
    return contextlib.nullcontext()
