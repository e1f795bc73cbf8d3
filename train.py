"""train.py: online GRPO for LlamaGen (AR-GRPO, Kwai-Klear 2025), one file, top to bottom.

main() is a setup, then a loop of GRPO steps; each step is these phases (the math is in grpo.py):
  1. draw_prompts: P prompts per rank (class ids for c2i, captions for t2i), the same global
     draw on every rank;
  2. rollout: G images per prompt with the KV-cache CFG sampler (generate);
  3. score: decode them with the VQ, score them (rewards.py), normalise rewards within each
     group -> one advantage per image;
  4. logprobs_before_update: the log-probs of the frozen reference model (not trained, not in
     DDP, not in checkpoints), and of the rollout policy pi_old where nothing else gives them;
  5. update: --inner-epochs passes over the batch in --minibatches optimizer steps (AdamW, grad
     clipping), each an accumulation over micro-batches of
     L = mean_tokens(-min(rho A, clip(rho) A) + beta k3);
  6. step_metrics, log_step, save_checkpoint: metrics.jsonl and the log line, sample grids,
     ckpt.pt.

Randomness is derived from (seed, step, ...) only: prompt draw from (seed, step); the samples of
global group j from (seed, step, j); everything else (reward crops) from (seed, step, rank). So
a resumed run repeats the uninterrupted one exactly, and the samples do not depend on how many
ranks share the work. The policy runs in eval mode: LlamaGen's dropout is for pretraining, and
the log-probs of a policy-gradient step must be deterministic.

Gradients across ranks: each rank's loss is the mean over its local tokens (equal counts on every
rank), DDP averages gradients, so the update equals one process running the whole global batch.

  python train.py --task c2i --preset tiny                 # CPU, offline, random tiny models, ~15 s
  torchrun --nproc_per_node 4 train.py --task c2i          # AR-GRPO's C2I recipe on GPT-B 256
  torchrun --nproc_per_node 4 train.py --task c2i --preset paper-c2i-xl384
                                                           # AR-GRPO's run_c2i_train.sh
  torchrun --nproc_per_node 4 train.py --task t2i --prompts coco_captions_30000.json
                                                           # AR-GRPO's run_t2i_train.sh
  python train.py --task t2i --dry-run                     # what a preset means: every flag as JSON
"""
import argparse
import json
import math
import os
import shutil
import sys
import time
import traceback
from contextlib import nullcontext
from dataclasses import dataclass
from types import SimpleNamespace

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from checkpoint import (BadCheckpoint, MissingCheckpoint, load_checkpoint, remove_stale_tmp,
                        save_atomic)
from grpo import diagnostics, group_advantages, grpo_loss, policy_logprobs
from model import generate, gpt_checkpoint, gpt_config
from rewards import WEIGHT_ARGS, RewardWeightsMissing, build_rewards, parse_spec
from sample import (SAMPLER_CHECKS, build_models, check_t5_width, check_writable, class_prompts,
                    missing_files, mix, path_kind_errors, range_errors, read_prompts, save_grid,
                    to_uint8)
from tiny import TINY_PROMPTS

PAPER_REWARDS = "clip:1,clip_q:1,hps:1,hps_q:1,maniqa:1,qwen:1"  # the paper's C2I run, weights 1

# AR-GRPO's released code (Kwai-Klear/AR-GRPO 65947ad), what every paper preset shares on top of
# its model: README "Fidelity to AR-GRPO's code" lists each item with its file, line and
# alternative.
PAPER_CODE = dict(policy="cond", judge_mode="generate", zero_flat_groups=False, caption_pad="right",
                  clean_captions=True, pure_bf16=False, lr=1e-5, ref_dtype="fp32")
# HF Trainer's linear decay to 0 over num_train_epochs=20 epochs of (prompts / prompts per step)
# steps: ImageNet's train images at 4 prompts per step (4 GPUs x 8 / G 8), and
# coco_captions_30000.json at 8 prompts per step (4 GPUs x 16 / 8)
LR_DECAY_C2I = 20 * 1281167 // 4
LR_DECAY_T2I = 20 * 30000 // 8


def paper_c2i(gpt_ckpt, image_size):
    """A C2I paper preset: AR-GRPO's C2I recipe on one of LlamaGen's released C2I GPTs."""
    return dict(task="c2i", gpt_ckpt=gpt_ckpt, vq_ckpt="checkpoints/vq_ds16_c2i.pt",
                image_size=image_size, rewards=PAPER_REWARDS, prompts_per_rank=1, group_size=8,
                steps=400, beta=0.1, cfg_scale=2.0, lr_decay_steps=LR_DECAY_C2I, **PAPER_CODE)


# Presets: one plain dict each; any flag given on the command line wins over its preset.
PRESETS = {
    "tiny": dict(gpt_model="GPT-tiny", gpt_ckpt="", vq_model="palette", vq_ckpt="", image_size=16,
                 rewards="color:1", prompts_per_rank=4, group_size=8, steps=100, lr=3e-3,
                 beta=0.01, cfg_scale=2.0, save_every=25, image_every=25, cpu_threads=1,
                 policy="cfg", judge_mode="fast", zero_flat_groups=True, caption_pad="left"),
    "paper-c2i-b256": paper_c2i("checkpoints/c2i_B_256.pt", 256),
    "paper-c2i-l256": paper_c2i("checkpoints/c2i_L_256.pt", 256),
    "paper-c2i-xl384": paper_c2i("checkpoints/c2i_XL_384.pt", 384),
    "paper-t2i-xl": dict(task="t2i", gpt_ckpt="checkpoints/t2i_XL_stage1_256.pt",
                         vq_ckpt="checkpoints/vq_ds16_t2i.pt", t5_path="checkpoints/flan-t5-xl",
                         image_size=256, rewards=PAPER_REWARDS, prompts_per_rank=2, group_size=8,
                         steps=600, beta=1.0, cfg_scale=4.0, lr_decay_steps=LR_DECAY_T2I,
                         **{**PAPER_CODE, "pure_bf16": True}),
}
DEFAULT_PRESET = {"c2i": "paper-c2i-b256", "t2i": "paper-t2i-xl"}


def get_args(argv=None):
    # allow_abbrev=False: --resume tells given flags from defaults by their full names
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                allow_abbrev=False)
    a = p.add_argument
    a("--task", choices=["c2i", "t2i"], default="c2i",
      help="class-to-image (ImageNet ids) or text-to-image")
    a("--preset", choices=list(PRESETS), default=None,
      help="hyperparameters + checkpoints; default: AR-GRPO's recipe for --task "
           "(paper-c2i-b256 / paper-t2i-xl)")
    # models
    a("--gpt-ckpt", default="",
      help="policy/reference weights: a file, a released name (c2i_B_256), "
           "or '' = random --gpt-model")
    a("--gpt-model", default="GPT-B", help="architecture for random init (only without --gpt-ckpt)")
    a("--vq-ckpt", default="", help="VQ tokenizer weights, or '' = random --vq-model")
    a("--vq-model", default="VQ-16",
      help="VQ architecture for random init (VQ-16, VQ-tiny, ...) or 'palette' (tiny preset)")
    a("--t5-path", default="",
      help="FLAN-T5-XL directory (t2i); '' = a tiny random T5 (tiny preset)")
    a("--image-size", type=int, default=256)
    # data
    a("--prompts", default="",
      help="t2i prompts: a .txt (one per line), a .jsonl ('prompt' or 'caption' field) "
           "or AR-GRPO's .json list (coco_captions_30000.json)")
    a("--num-classes", type=int, default=0,
      help="c2i: draw class ids from [0, K) (0 = all classes of the model)")
    # rewards
    a("--rewards", default=PAPER_REWARDS,
      help="'name:weight,...' (rewards.py); weight-free: color, brightness, colorfulness, jpeg")
    a("--clip-ckpt", default=None)
    a("--hps-ckpt", default=None)
    a("--maniqa-ckpt", default=None)
    a("--qwen-path", default=None)
    a("--judge-mode", default="generate", choices=["fast", "generate"],
      help="generate = AR-GRPO's judge (answer, repair, parse, 3 attempts); "
           "fast = one forward pass, E[score digit]")
    for flag in WEIGHT_ARGS[4:]:  # the T2I scorers
        a("--" + flag.replace("_", "-"), default=None,
          help="weights of the pickscore / imagereward / aesthetic rewards (rewards.py)")
    # sampler (the paper: temperature 1, top-k 0, top-p 1, CFG 2.0 for c2i / 4.0 for t2i)
    a("--cfg-scale", type=float, default=2.0)
    a("--cfg-interval", type=int, default=-1)
    a("--temperature", type=float, default=1.0)
    a("--top-k", type=int, default=0)
    a("--top-p", type=float, default=1.0)
    # GRPO
    a("--prompts-per-rank", type=int, default=1, help="P: prompts per rank per step")
    a("--group-size", type=int, default=8, help="G: samples per prompt")
    a("--policy", choices=["cond", "cfg"], default="cond",
      help="log-probs of the conditional branch (the paper's code) or of the guided distribution "
           "sampled from")
    a("--adv-std", choices=["group", "global"], default="group",
      help="advantage denominator: group std (GRPO) or batch std (Flow-GRPO)")
    a("--beta", type=float, default=0.1, help="weight of the k3 KL to the reference")
    a("--clip-eps", type=float, default=0.2)
    a("--clip-eps-high", type=float, default=None, help="upper clip (default = --clip-eps)")
    a("--inner-epochs", type=int, default=1,
      help="passes over each rollout batch (1 = the paper: rho == 1)")
    a("--minibatches", type=int, default=1,
      help="optimizer steps per pass (each over B/minibatches sequences)")
    a("--micro-batch", type=int, default=0,
      help="sequences per forward for gradient accumulation (0 = whole minibatch)")
    # optimisation
    a("--lr", type=float, default=1e-5)
    a("--weight-decay", type=float, default=0.0)
    a("--adam-betas", type=float, nargs=2, default=[0.9, 0.999])
    a("--grad-clip", type=float, default=1.0)
    a("--bf16", action=argparse.BooleanOptionalAction, default=True,
      help="bf16 autocast on GPU (CPU runs fp32)")
    # run
    a("--steps", type=int, default=400)
    a("--seed", type=int, default=42)
    a("--out", default="out/run", help="metrics.jsonl, args.json, ckpt.pt, samples/")
    a("--resume", action="store_true",
      help="continue from OUT/ckpt.pt (an error if there is none)")
    a("--overwrite", action="store_true",
      help="start over in an OUT that already holds a run (its files are replaced)")
    a("--save-every", type=int, default=50)
    a("--image-every", type=int, default=50)
    a("--tensorboard", action="store_true",
      help="also write TensorBoard curves and images to OUT/tb")
    a("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a("--cpu-threads", type=int, default=0,
      help="torch CPU threads (0 = torch's default; tiny models run best on 1)")
    # fidelity to AR-GRPO's code (README, "Fidelity to AR-GRPO's code"): the paper presets set these
    a("--zero-flat-groups", action=argparse.BooleanOptionalAction, default=False,
      help="advantage exactly 0 for a group whose rewards are all equal (AR-GRPO: no special case, "
           "(r - mean) / (std + 1e-4) whatever rounding leaves)")
    a("--lr-decay-steps", type=int, default=0,
      help="linear LR decay to 0 over this many steps, as HF Trainer over AR-GRPO's 20 epochs "
           "(0 = constant)")
    a("--caption-pad", choices=["left", "right"], default="right",
      help="t2i caption features: right = AR-GRPO (padded rows kept), left = LlamaGen's sampler "
           "(zeroed)")
    a("--clean-captions", action=argparse.BooleanOptionalAction, default=True,
      help="t2i: DeepFloyd-IF caption cleaning, twice, before T5 (LlamaGen and AR-GRPO do)")
    a("--pure-bf16", action=argparse.BooleanOptionalAction, default=False,
      help="bf16 weights, grads and AdamW state for policy, reference and VQ (AR-GRPO's t2i "
           "--force_model_bf16); updates below half a bf16 ulp are lost")
    a("--dry-run", action="store_true",
      help="print the resolved configuration as JSON (flag names) and exit")
    # speed and memory (README, "Sampling speed" and "Training"): none of these changes the update
    a("--compile", action=argparse.BooleanOptionalAction, default=None,
      help="sample with the torch.compile'd decode step (inductor on CPU, CUDA graphs on GPU); "
           "same tokens; default: on for a GPU (20x faster sampling there), off on a CPU "
           "(README, 'Sampling speed')")
    a("--grad-checkpoint", action="store_true",
      help="recompute each layer's activations in the backward pass "
           "(less memory, ~1/3 more update compute)")
    a("--ref-dtype", choices=["auto", "bf16", "fp32"], default="auto",
      help="reference model weights; auto = bf16 on GPU with --bf16 (the matmuls run in bf16 "
           "under autocast anyway), else fp32")
    a("--old-logprobs", choices=["auto", "pass"], default="auto",
      help="pi_old: auto = the update forward's own log-probs with one update per rollout, the "
           "sampler's with --policy cfg, else a no-grad pass; pass = always a separate no-grad "
           "pass (a check: same update)")
    # a preset's values become the defaults, so explicit flags still override them
    first, _ = p.parse_known_args(argv)
    preset = first.preset or DEFAULT_PRESET[first.task]
    if PRESETS[preset].get("task", first.task) != first.task:
        p.error(f"preset {preset} is for --task {PRESETS[preset]['task']}")
    p.set_defaults(**{**PRESETS[preset], "preset": preset, "task": first.task})
    args = p.parse_args(argv)
    check_args(p, args)
    if args.compile is None:  # compiling pays for itself on a GPU in a few steps, never on a CPU
        args.compile = args.device.startswith("cuda")
    return args


def check_args(p, args):
    """Flag combinations and values that cannot work: one line each (p.error), before anything
    is loaded."""
    if args.group_size < 2:
        p.error("--group-size must be >= 2: a group of one has no baseline "
                "(its advantage is always 0)")
    if (args.prompts_per_rank * args.group_size) % args.minibatches:
        p.error(f"--minibatches {args.minibatches} must divide --prompts-per-rank x --group-size = "
                f"{args.prompts_per_rank * args.group_size}")
    if min(args.steps, args.inner_epochs, args.prompts_per_rank) < 1:
        p.error("--steps, --inner-epochs and --prompts-per-rank must be >= 1")
    try:
        parse_spec(args.rewards)
    except ValueError as e:
        p.error(str(e))
    # every numeric flag in its meaningful range, one line each (NaN fails every comparison)
    error = range_errors(args, SAMPLER_CHECKS + RANGE_CHECKS)
    if error is None and args.clip_eps_high is not None and not 0 < args.clip_eps_high < math.inf:
        error = f"--clip-eps-high must be a finite number > 0, got {args.clip_eps_high}"
    if error is None and not all(0 <= b < 1 for b in args.adam_betas):
        error = f"--adam-betas must both be in [0, 1), got {args.adam_betas}"
    if error is None and args.resume and args.overwrite:
        error = "--resume continues the run in --out, --overwrite starts it over: pass one of them"
    if error:
        p.error(error)


# (flag, predicate, what it must be); the sampler flags are in sample.SAMPLER_CHECKS
RANGE_CHECKS = [
    ("--image-size", lambda v: v > 0, "> 0"),
    ("--num-classes", lambda v: v >= 0, ">= 0 (0 = all classes)"),
    ("--beta", lambda v: 0 <= v < math.inf, "a finite number >= 0"),
    ("--clip-eps", lambda v: 0 < v < 1, "in (0, 1)"),
    ("--micro-batch", lambda v: v >= 0, ">= 0 (0 = the whole minibatch)"),
    ("--minibatches", lambda v: v >= 1, ">= 1"),
    ("--lr", lambda v: 0 < v < math.inf, "a finite number > 0"),
    ("--weight-decay", lambda v: 0 <= v < math.inf, "a finite number >= 0"),
    ("--grad-clip", lambda v: 0 < v < math.inf, "a finite number > 0"),
    ("--seed", lambda v: v >= 0, ">= 0"),
    ("--save-every", lambda v: v >= 1, ">= 1 (steps between checkpoints)"),
    ("--image-every", lambda v: v >= 0, ">= 0 (0 = only the first step)"),
    ("--cpu-threads", lambda v: v >= 0, ">= 0 (0 = torch's default)"),
    ("--lr-decay-steps", lambda v: v >= 0, ">= 0 (0 = constant)"),
]


# ----------------------------------------------------------------------------- distributed
def setup_distributed(device):
    """torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; without them this is a single process."""
    if "RANK" not in os.environ:
        return 0, 1, torch.device(device)
    global _PROCESS_GROUP_STARTED
    _PROCESS_GROUP_STARTED = True  # from here on, leave through cli()'s os._exit (see cli)
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    local = int(os.environ["LOCAL_RANK"])
    if device.startswith("cuda"):
        torch.cuda.set_device(local)
        dist.init_process_group("nccl", device_id=torch.device("cuda", local))
        return rank, world, torch.device("cuda", local)
    dist.init_process_group("gloo")
    return rank, world, torch.device("cpu")


def all_gather(x, world):  # (n, ...) on every rank -> (world * n, ...), rank-major
    if world == 1:
        return x
    out = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out)


def all_reduce(metrics, world, device):
    """Average the metrics over ranks; *_min / *_max keys take the min / max."""
    if world == 1:
        return metrics
    for key, op in (("_min", dist.ReduceOp.MIN), ("_max", dist.ReduceOp.MAX),
                    ("", dist.ReduceOp.SUM)):
        keys = [k for k in metrics
                if (k.endswith(key) if key else not k.endswith(("_min", "_max")))]
        t = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64,
                         device=device)  # nccl: on GPU
        dist.all_reduce(t, op=op)
        divisor = world if op == dist.ReduceOp.SUM else 1
        metrics.update({k: v / divisor for k, v in zip(keys, t.tolist())})
    return metrics


# ----------------------------------------------------------------------------- models and prompts
def check_files(args):
    """Stop at once, in one line, when weights are missing (not after minutes of loading)."""
    wrong = path_kind_errors(args)
    if wrong:
        raise BadCheckpoint("; ".join(wrong))
    if args.task == "t2i" and args.t5_path and not args.gpt_ckpt:  # a random GPT: width known now
        check_t5_width(args.t5_path, gpt_config(args.gpt_model, model_type="t2i").caption_dim)
    missing = missing_files(args)
    if missing:
        raise MissingCheckpoint(f"missing weights: {', '.join(missing)}; download them (README, "
                                f"'Training') and pass the flag(s), or run offline on CPU with: "
                                f"python train.py --task {args.task} --preset tiny")


def load_prompts(args):
    """The prompt pool, read before any model is built (a bad prompt file fails at once): for c2i,
    'a photo of {class name}' for every ImageNet class id (cut to the model's classes later)."""
    if args.task == "c2i":
        return class_prompts(args.num_classes)
    if not args.prompts:
        if args.preset == "tiny":
            return TINY_PROMPTS
        raise SystemExit("error: t2i needs --prompts FILE (.txt, one prompt per line, .jsonl with "
                         "a 'prompt' field, or AR-GRPO's .json list)")
    return read_prompts(args.prompts)


def build_scorer(args, device):
    """The weighted sum of --rewards (rewards.py): (images, prompts) -> (B,), {name: (B,)}."""
    weights = {k: getattr(args, k) for k in WEIGHT_ARGS}  # --clip-ckpt, ...
    return build_rewards(args.rewards, device=device, judge_mode=args.judge_mode,
                         dtype=torch.bfloat16 if device.type == "cuda" and args.bf16 else None,
                         seed=args.seed, **weights)


def build_training_models(args, device):
    """sample.build_models in the training dtypes: policy, reference, vq, text encoder (or None)."""
    policy, reference, vq, text = build_models(args, device)
    if args.pure_bf16:  # AR-GRPO's --force_model_bf16: no fp32 master weights; AdamW state follows
        policy.to(torch.bfloat16)
        reference.to(torch.bfloat16)
        vq.to(torch.bfloat16)
    if args.ref_dtype == "bf16" or args.ref_dtype == "auto" and device.type == "cuda" and args.bf16:
        reference.to(torch.bfloat16)  # half the memory; its matmuls ran in bf16 under autocast
    policy.grad_checkpoint = args.grad_checkpoint
    return policy, reference, vq, text


# ------------------------------------------------------------------------- run directory, resume
RUN_FILES = ["ckpt.pt", "metrics.jsonl", "summary.json", "args.json"]
# flags that may differ on --resume: run logistics (taken as given, not recorded) and
# hyper-parameters (applied from the resumed step on and recorded); any other flag given with a
# new value is refused
RESUME_FREE = {"resume", "overwrite", "out", "steps", "save_every", "image_every", "tensorboard",
               "device", "cpu_threads", "preset", "resumes", "dry_run", "compile",
               "grad_checkpoint", "old_logprobs", *WEIGHT_ARGS}
RESUME_APPLIED = {"lr", "weight_decay", "adam_betas", "grad_clip", "beta", "clip_eps",
                  "clip_eps_high", "inner_epochs", "minibatches", "micro_batch", "cfg_scale",
                  "cfg_interval",
                  "temperature", "top_k", "top_p", "lr_decay_steps"}


def given(key, argv):
    """Was --key given on the command line (rather than left to its default or preset)?"""
    flag = "--" + key.replace("_", "-")
    return any(a == flag or a.startswith(flag + "=") or a == f"--no-{flag[2:]}" for a in argv)


def prepare_run(args, argv):
    """Check --out before anything loads; returns (args, the checkpoint to resume or None).
    A directory holding a run is never overwritten silently: --resume continues it, --overwrite
    starts over (removing the run's files), anything else is a one-line error. On --resume, see
    resumed_args."""
    ckpt_path = os.path.join(args.out, "ckpt.pt")
    master = int(os.environ.get("RANK", 0)) == 0
    held = [f for f in ("ckpt.pt", "metrics.jsonl") if os.path.exists(os.path.join(args.out, f))]
    if args.resume and not os.path.isfile(ckpt_path):
        raise SystemExit(f"error: --resume: {ckpt_path} does not exist, nothing to resume "
                         f"(check --out, or drop --resume to start a new run)")
    if held and not args.resume and not args.overwrite:
        raise SystemExit(f"error: {args.out} already holds a run ({', '.join(held)}): pass "
                         f"--resume to continue it or --overwrite to start it over "
                         f"(or choose another --out)")
    if master:
        # unwritable: fails here, not after the models load
        check_writable(args.out, "--out", is_dir=True)
        removed = remove_stale_tmp(ckpt_path)  # left by a run killed while saving
        if removed:
            print(f"removed {len(removed)} stale temporary checkpoint file(s): "
                  f"{', '.join(removed)}")
        if args.overwrite:
            for f in RUN_FILES:
                if os.path.exists(os.path.join(args.out, f)):
                    os.remove(os.path.join(args.out, f))
            for d in ("samples", "tb"):
                shutil.rmtree(os.path.join(args.out, d), ignore_errors=True)
    if not args.resume:
        return args, None
    ck = load_checkpoint(ckpt_path)
    return resumed_args(args, argv, ck, ckpt_path), ck


def resumed_args(args, argv, ck, ckpt_path):
    """--resume: flags not given take the checkpoint's values (so a bare --resume continues
    exactly); a given flag in RESUME_APPLIED changes the run from here on and is recorded in
    args.resumes; any other given change is refused."""
    old, new = dict(ck.get("args") or {}), vars(args)
    changed, refused = {}, []
    for k in sorted(set(old) & set(new) - RESUME_FREE):
        if old[k] == new[k]:
            continue
        if not given(k, argv):
            new[k] = old[k]                        # not asked for: the run continues as it was
        elif k in RESUME_APPLIED:
            changed[k] = [old[k], new[k]]
        else:
            refused.append(f"--{k.replace('_', '-')} ({old[k]} -> {new[k]})")
    if refused:
        raise SystemExit(f"error: --resume cannot change {', '.join(refused)}: it would be another "
                         f"experiment; start a new run (another --out, or --overwrite)")
    if ck["step"] >= args.steps:
        raise SystemExit(f"error: {ckpt_path} is at step {ck['step']}, --steps {args.steps}: "
                         f"nothing to do (raise --steps to train longer)")
    if (args.prompts_per_rank * args.group_size) % args.minibatches:
        raise SystemExit(f"error: --minibatches {args.minibatches} must divide "
                         f"--prompts-per-rank x --group-size = "
                         f"{args.prompts_per_rank * args.group_size}")
    resume = [{"step": ck["step"], "changed": changed}] if changed else []
    args.resumes = list(old.get("resumes", [])) + resume
    return args


# ----------------------------------------------------------------------------- setup
@dataclass
class Run:
    """What setup() builds once and every phase reads. Each step, this rank handles B = P x G
    sequences (P prompts, G samples each, group-contiguous) of N image tokens."""
    args: argparse.Namespace
    rank: int
    world: int
    device: torch.device
    log: object                 # a line above the progress bar (rank 0; elsewhere a no-op)
    amp: object                 # bf16 autocast on GPU with --bf16, else a no-op context
    scorer: object              # rewards.py: (images, prompts) -> (B,) total, {name: (B,)}
    policy: torch.nn.Module
    reference: torch.nn.Module  # the frozen initial model: not trained, not in DDP, not saved
    vq: torch.nn.Module
    text: object                # t2i: captions -> T5 features (P, 120, C), mask (P, 120); c2i: None
    model: torch.nn.Module      # the policy, in DDP when world > 1 (the reference stays outside)
    opt: torch.optim.Optimizer
    pool: list                  # the prompts to draw from
    P: int
    G: int
    N: int
    micro: int                  # sequences per forward (--micro-batch, or a whole minibatch)
    old_from: str               # where pi_old's log-probs come from: see pi_old_source
    ckpt_path: str
    metrics_path: str
    writer: object = None       # TensorBoard (--tensorboard, rank 0)
    start: int = 0              # the first step to run (the checkpoint's on --resume)
    saved: int = 0              # the step of the checkpoint on disk (0: none yet)

    @property
    def master(self):
        return self.rank == 0

    @property
    def B(self):  # sequences per rank per step
        return self.P * self.G


def pi_old_source(args):
    """Where the log-probs of the rollout policy (pi_old) come from, computed only where nothing
    gives them: with one update per rollout (the paper) the update forward's own detached
    log-probs ("update": rho == 1, as AR-GRPO's code and TRL); with several and --policy cfg, the
    sampler's ("sampler": the distribution the tokens were drawn from); else (or --old-logprobs
    pass) a no-grad pass before the update ("pass")."""
    one_update = args.inner_epochs == 1 and args.minibatches == 1
    if args.old_logprobs == "pass" or not one_update and args.policy == "cond":
        return "pass"
    return "update" if one_update else "sampler"


def setup(args, argv):
    """Everything before the first step, in the order that fails fastest: the run directory,
    the weights' files, the prompts, then the processes, the rewards and the models."""
    args, ck = prepare_run(args, argv)
    check_files(args)
    pool = load_prompts(args)
    if args.cpu_threads:
        torch.set_num_threads(args.cpu_threads)
    rank, world, device = setup_distributed(args.device)
    scorer = build_scorer(args, device)  # first: missing reward weights stop before anything heavy
    log = tqdm.write if rank == 0 else (lambda *a, **k: None)  # lines above the progress bar
    if rank == 0:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "args.json"), "w") as f:
            json.dump(vars(args), f, indent=1)
        log(json.dumps(vars(args)))
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    bf16 = device.type == "cuda" and args.bf16
    amp = torch.autocast("cuda", torch.bfloat16) if bf16 else nullcontext()
    policy, reference, vq, text = build_training_models(args, device)
    if args.task == "c2i":
        pool = pool[:policy.config.num_classes]  # a model with K classes draws ids from [0, K)
    opt = torch.optim.AdamW(policy.parameters(), lr=args.lr, betas=tuple(args.adam_betas),
                            weight_decay=args.weight_decay)
    model = ddp_policy(policy, world, device)
    P, G = args.prompts_per_rank, args.group_size
    run = Run(args=args, rank=rank, world=world, device=device, log=log, amp=amp, scorer=scorer,
              policy=policy, reference=reference, vq=vq, text=text, model=model, opt=opt,
              pool=pool, P=P, G=G, N=policy.config.block_size,
              micro=args.micro_batch or P * G // args.minibatches, old_from=pi_old_source(args),
              ckpt_path=os.path.join(args.out, "ckpt.pt"),
              metrics_path=os.path.join(args.out, "metrics.jsonl"))
    params = sum(p.numel() for p in policy.parameters()) / 1e6
    log(f"policy {params:.2f}M params | {world} rank(s) x {P} prompts x {G} samples = "
        f"{world * run.B} images/step | {len(pool)} prompts | policy log-probs: {args.policy}")
    if ck is not None:  # read by prepare_run
        resume(run, ck)
    start_logs(run)
    return run


def ddp_policy(policy, world, device):
    """The policy in DDP for several ranks (the reference stays outside: DDP syncs only what is
    trained); the policy itself for one."""
    if world == 1:
        return policy
    device_ids = [device.index] if device.type == "cuda" else None
    return DDP(policy, device_ids=device_ids, broadcast_buffers=False)


def resume(run, ck):
    """--resume: weights, optimizer, step and RNG states from the checkpoint prepare_run read."""
    args = run.args
    run.policy.load_state_dict(ck["model"])
    run.opt.load_state_dict(ck["optimizer"])
    for group in run.opt.param_groups:  # the stored values unless this command line changed them
        group.update(lr=args.lr, betas=tuple(args.adam_betas), weight_decay=args.weight_decay)
    run.start = run.saved = ck["step"]
    if len(ck["rng"]) == run.world:
        torch.set_rng_state(ck["rng"][run.rank]["cpu"])
        if run.device.type == "cuda" and ck["rng"][run.rank]["cuda"] is not None:
            torch.cuda.set_rng_state(ck["rng"][run.rank]["cuda"])
    last = args.resumes[-1] if args.resumes else None
    changes = last["changed"] if last and last["step"] == run.start else {}
    run.log(f"resumed from {run.ckpt_path} at step {run.start}"
            + "".join(f" | {k} {a} -> {b}" for k, (a, b) in changes.items()))


def start_logs(run):
    """Rank 0: metrics.jsonl keeps only the steps the checkpoint covers (none for a new run), and
    the TensorBoard writer opens (--tensorboard)."""
    if not run.master:
        return
    kept = []
    if run.start and os.path.exists(run.metrics_path):
        with open(run.metrics_path) as f:
            kept = list(f)
    with open(run.metrics_path, "w") as f:
        f.writelines(line for line in kept if json.loads(line)["step"] < run.start)
    if run.args.tensorboard:
        from torch.utils.tensorboard import SummaryWriter
        run.writer = SummaryWriter(os.path.join(run.args.out, "tb"))


def sync(device):
    """The time, once the GPU has finished the work queued so far (phase timings)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.time()


def get_lr(args, step):
    """HF Trainer's linear schedule (no warmup) over --lr-decay-steps, or a constant --lr.
    Stateless, a function of the step: resume-proof."""
    if not args.lr_decay_steps:
        return args.lr
    return args.lr * max(0.0, 1 - step / args.lr_decay_steps)


# ----------------------------------------------------------------------------- one GRPO step
def draw_prompts(run, step):
    """1. One global draw of P x world prompts from (seed, step), the same on every rank; this rank
    takes its slice and repeats each prompt G times. -> the batch, a SimpleNamespace: prompts
    (B strings, group-contiguous), cond (class ids (B,) or caption features (B, 120, C)),
    cond_mask ((B, 120) or None); main adds rollout's tokens and logp_sampler."""
    P, G, pool = run.P, run.G, run.pool
    g = torch.Generator().manual_seed(mix(run.args.seed, step))
    if len(pool) >= P * run.world:
        draw = torch.randperm(len(pool), generator=g)
    else:  # fewer prompts than the global batch: with repetition
        draw = torch.randint(len(pool), (P * run.world,), generator=g)
    ids = draw[: P * run.world][run.rank * P:(run.rank + 1) * P].tolist()
    prompts = [pool[i] for i in ids for _ in range(G)]
    if run.args.task == "c2i":
        cond = torch.tensor(ids, device=run.device).repeat_interleave(G)     # (B,)
        return SimpleNamespace(prompts=prompts, cond=cond, cond_mask=None)
    feats, mask = run.text([pool[i] for i in ids])                       # (P, 120, C), (P, 120)
    return SimpleNamespace(prompts=prompts, cond=feats.repeat_interleave(G, 0),
                           cond_mask=mask.repeat_interleave(G, 0))


def rollout(run, batch, step):
    """2. G samples per prompt with the KV-cache CFG sampler, each group from its own generator,
    seeded by (seed, step, global group index). -> tokens (B, N), the sampler's log-probs (B, N)."""
    args, G = run.args, run.G
    tokens, logp_sampler = [], []
    with torch.no_grad(), run.amp:
        for j in range(run.P):
            group = run.rank * run.P + j                                  # global group index
            gen = torch.Generator(run.device).manual_seed(mix(args.seed, step, group))
            s = slice(j * G, (j + 1) * G)
            mask = None if batch.cond_mask is None else batch.cond_mask[s]
            t, lp = generate(run.policy, batch.cond[s], cfg_scale=args.cfg_scale,
                             temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                             cfg_interval=args.cfg_interval, cond_mask=mask, generator=gen,
                             return_logprobs=True, compile=args.compile)
            tokens.append(t)
            logp_sampler.append(lp)
    return torch.cat(tokens), torch.cat(logp_sampler)                    # (B, N), (B, N)


def score(run, batch, step):
    """3. Decode, score, and the advantages over the global batch (groups never straddle ranks).
    Stops the run on a non-finite reward or advantage. -> SimpleNamespace: images
    (B, 3, H, W) in [0, 1], parts {reward name: (B,)}, rewards_all (world * B,), adv (B,),
    zero_std_frac, judge (this step's judge counters)."""
    args = run.args
    with torch.no_grad(), run.amp:
        images = (run.vq.decode(batch.tokens).float().clamp(-1, 1) + 1) / 2  # (B, 3, H, W)
    judge_before = run.scorer.stats()
    reward, parts = run.scorer(images, batch.prompts)                         # (B,), {name: (B,)}
    judge = judge_metrics(judge_before, run.scorer.stats())
    rewards_all = all_gather(reward.float().to(run.device), run.world)   # (world * B,)
    adv_all, zero_std_frac = group_advantages(rewards_all, run.G, std=args.adv_std,
                                              zero_flat=args.zero_flat_groups)
    adv = adv_all[run.rank * run.B:(run.rank + 1) * run.B]               # (B,)
    bad = nonfinite_rewards(parts, rewards_all, adv_all, run.world, run.device)
    stop_if_nonfinite(bad, step, run.saved)
    return SimpleNamespace(images=images, parts=parts, rewards_all=rewards_all, adv=adv,
                           zero_std_frac=zero_std_frac, judge=judge)


def judge_metrics(before, after):
    """This step's judge counters from the scorer's cumulative stats() (generate mode): the fraction
    of judged images scored 0 because no answer parsed, and answers generated per judged image."""
    d = {k: after[k] - before.get(k, 0) for k in after
         if k.endswith(("/answers", "/attempts", "/failures"))}
    n = sum(v for k, v in d.items() if k.endswith("/answers"))
    if not n:
        return {}
    return {"judge_fail_frac": sum(v for k, v in d.items() if k.endswith("/failures")) / n,
            "judge_attempts": sum(v for k, v in d.items() if k.endswith("/attempts")) / n}


def sequence_logprobs(run, model, batch, idx):
    """Teacher-forced log-probs (b, N) of the sampled tokens of rows idx under `model` (the policy,
    its DDP wrapper or the reference), with the entropies (b, N)."""
    args = run.args
    mask = None if batch.cond_mask is None else batch.cond_mask[idx]
    return policy_logprobs(model, batch.cond[idx], batch.tokens[idx], args.policy, args.cfg_scale,
                           args.temperature, args.top_k, args.top_p, mask, args.cfg_interval,
                           # AR-GRPO's training pass (right padding, cond): padded caption rows do
                           # not see themselves; cfg keeps the sampler's mask (rho == 1 on-policy)
                           pad_self_attend=args.caption_pad == "left" or args.policy == "cfg")


def logprobs_before_update(run, batch):
    """4. No-grad log-probs (B, N) of the reference, and of pi_old only where nothing gives them
    (run.old_from == "pass"; see pi_old_source). -> SimpleNamespace: ref, old (the sampler's
    log-probs, or filled here or by update), ent (pi_old's entropy, filled here or by update),
    first (the policy's log-probs before any update, filled by update)."""
    B, N, device = run.B, run.N, run.device
    if run.old_from == "sampler":
        old = batch.logp_sampler.clone()
    else:
        old = torch.empty(B, N, device=device)
    ref = torch.empty(B, N, device=device)
    ent = torch.empty(B, N, device=device)
    with torch.no_grad(), run.amp:
        for idx in torch.arange(B, device=device).split(run.micro):
            if run.old_from == "pass":
                old[idx], ent[idx] = sequence_logprobs(run, run.policy, batch, idx)
            ref[idx] = sequence_logprobs(run, run.reference, batch, idx)[0]
    return SimpleNamespace(ref=ref, old=old, ent=ent, first=torch.empty(B, N, device=device),
                           first_rows=None)


def update(run, batch, adv, lp, step):
    """5. --inner-epochs passes over the batch, each in --minibatches AdamW steps, each step a
    gradient accumulation over micro-batches. The first pass fills in what phase 4 left to it
    (lp.first; pi_old's entropy and, with one update, its log-probs) and sets lp.first_rows: the
    first minibatch's rows, the only ones scored before any update. -> per-micro-batch stats,
    the last gradient norm."""
    args = run.args
    stats = []
    for epoch in range(args.inner_epochs):
        if args.minibatches == 1:
            order = torch.arange(run.B)
        else:
            g = torch.Generator().manual_seed(mix(args.seed, step, run.rank, epoch))
            order = torch.randperm(run.B, generator=g)
        for n_mb, mb in enumerate(order.to(run.device).split(run.B // args.minibatches)):
            chunks = mb.split(run.micro)
            for k, idx in enumerate(chunks):
                last = k == len(chunks) - 1
                stats.append(backward_micro_batch(run, batch, adv, lp, idx, len(mb), epoch, last))
            grad_norm = optimizer_step(run, step)
            if epoch == 0 and n_mb == 0:
                lp.first_rows = mb  # rows whose `first` log-probs come from pi_old itself
    return stats, grad_norm


def backward_micro_batch(run, batch, adv, lp, idx, mb_len, epoch, last):
    """The GRPO loss of rows idx, part of a minibatch of mb_len rows, and its backward (DDP
    all-reduces the gradients on the minibatch's last micro-batch only). -> its statistics."""
    args = run.args
    no_sync = run.model.no_sync() if run.world > 1 and not last else nullcontext()
    with no_sync, run.amp:
        logp, ent = sequence_logprobs(run, run.model, batch, idx)            # (b, N), with grad
        if epoch == 0:
            lp.first[idx] = logp.detach()
            if run.old_from != "pass":
                lp.ent[idx] = ent  # pi_old's entropy on the first minibatch, before any update
            if run.old_from == "update":
                lp.old[idx] = logp.detach()                                  # rho == 1
        loss, pg, kl, ratio = grpo_loss(logp, lp.old[idx], lp.ref[idx], adv[idx], args.beta,
                                        args.clip_eps, args.clip_eps_high)
        # mean over this rank's minibatch tokens: weight each micro-batch by its share
        (loss * len(idx) / mb_len).backward()
    return {"loss": loss.item(), "pg_loss": pg.mean().item(), "kl": kl.mean().item(),
            **diagnostics(ratio, adv[idx], logp.detach(), lp.old[idx], args.clip_eps,
                          args.clip_eps_high)}


def optimizer_step(run, step):
    """Clip the accumulated gradient, step AdamW, zero the gradient. -> the norm before clipping."""
    grad_norm = torch.nn.utils.clip_grad_norm_(run.policy.parameters(), run.args.grad_clip).item()
    # the gradient is all-reduced, so every rank sees the same norm and stops together
    bad = {} if math.isfinite(grad_norm) else {"gradient norm": grad_norm}
    stop_if_nonfinite(bad, step, run.saved)
    run.opt.step()
    run.opt.zero_grad(set_to_none=True)
    return grad_norm


def step_metrics(run, step, stats, grad_norm, batch, scores, lp, times):
    """6. One metrics.jsonl row: this rank's statistics averaged over the ranks (*_min / *_max:
    their extremes), the global batch's rewards, the learning rate and each phase's seconds."""
    m = {k: sum(s[k] for s in stats) / len(stats) for k in stats[0]}
    m["ratio_min"] = min(s["ratio_min"] for s in stats)
    m["ratio_max"] = max(s["ratio_max"] for s in stats)
    m.update({f"reward_{n}": v.float().mean().item() for n, v in scores.parts.items()})
    # the teacher-forced pi_old vs the sampler's log-probs: all rows with the pass, else those
    # scored before any update (all of them with one update per rollout)
    old_pass = run.old_from == "pass"
    rows = slice(None) if old_pass else lp.first_rows
    gap = (lp.old if old_pass else lp.first)[rows] - batch.logp_sampler[rows]
    m.update(entropy=lp.ent[rows].mean().item(), logp_gap_sampler=gap.mean().item(),
             logp_gap_sampler_max=gap.abs().max().item(), grad_norm=grad_norm, **scores.judge)
    m = all_reduce(m, run.world, run.device)
    r, G = scores.rewards_all, run.G                                     # (world * B,)
    t0, t1, t2, t3, t4 = times
    m = {"step": step, "reward_mean": r.mean().item(), "reward_std": r.std().item(),
         "reward_group_std": r.view(-1, G).std(1).mean().item() if G > 1 else 0.0,
         **m, "zero_std_frac": scores.zero_std_frac, "lr": run.opt.param_groups[0]["lr"],
         "t_rollout": t1 - t0, "t_reward": t2 - t1, "t_logp": t3 - t2, "t_update": t4 - t3,
         "t_step": t4 - t0, "images_per_s": run.world * run.B / (t4 - t0)}
    resumes = run.args.resumes if step == run.start and run.start else None
    if resumes and resumes[-1]["step"] == run.start:
        m.update(resumed_at=run.start, **changed_metrics(resumes[-1]["changed"]))
    return m


def changed_metrics(changed):
    """The hyper-parameters a --resume changed, as numbers for metrics.jsonl:
    changed_<flag> = new value."""
    out = {}
    for k, (_, new) in changed.items():
        if isinstance(new, (list, tuple)):
            out.update({f"changed_{k}_{i}": v for i, v in enumerate(new)})
        elif new is not None:
            out[f"changed_{k}"] = new
    return out


def log_step(run, step, m, images):
    """6. Rank 0: the metrics.jsonl row (and TensorBoard's), the log line, and a grid of samples
    (a row per prompt) on the first step and every --image-every steps."""
    if not run.master:
        return
    args, writer = run.args, run.writer
    with open(run.metrics_path, "a") as f:
        f.write(json.dumps(m) + "\n")
    if writer:
        for k, v in m.items():
            writer.add_scalar(k, v, step)
    run.log(f"step {step + 1}/{args.steps} | reward {m['reward_mean']:.4f} "
            f"(std {m['reward_std']:.4f}) | loss {m['loss']:+.4f} kl {m['kl']:.5f} "
            f"ent {m['entropy']:.3f} clip {m['clip_frac']:.3f} zero-std {m['zero_std_frac']:.2f} "
            f"gnorm {m['grad_norm']:.3f} | {m['t_step']:.2f}s (rollout {m['t_rollout']:.2f} "
            f"reward {m['t_reward']:.2f} logp {m['t_logp']:.2f} update {m['t_update']:.2f}) "
            f"{m['images_per_s']:.1f} img/s")
    if args.image_every and (step + 1) % args.image_every == 0 or step == run.start:
        n = min(run.P, 4) * run.G
        path = os.path.join(args.out, "samples", f"step_{step + 1:06d}.png")
        grid = save_grid(to_uint8(images[:n] * 2 - 1), path, nrow=run.G, min_px=64)
        if writer:
            writer.add_image("samples", grid, step, dataformats="HWC")


def save_checkpoint(run, step):
    """6. ckpt.pt after this step, written atomically by rank 0: the policy and its config, AdamW,
    the step, every rank's RNG states and the flags. Non-finite weights are never saved."""
    args, device = run.args, run.device
    cuda_rng = torch.cuda.get_rng_state() if device.type == "cuda" else None
    rng = {"cpu": torch.get_rng_state(), "cuda": cuda_rng}
    rngs = [rng] * run.world
    if run.world > 1:
        dist.all_gather_object(rngs, rng)
    bad = [n for n, p in run.policy.named_parameters() if not torch.isfinite(p).all()]
    stop_if_nonfinite({f"weight {bad[0]}": float("nan")} if bad else {}, step, run.saved)
    if run.master:
        try:
            save_atomic({**gpt_checkpoint(run.policy, args.image_size),
                         "optimizer": run.opt.state_dict(), "step": step + 1, "rng": rngs,
                         "args": vars(args)}, run.ckpt_path)
        except OSError as e:  # a full disk: save_atomic left the previous checkpoint as it was
            on_disk = f"step {run.saved} is still on disk" if run.saved else "no checkpoint yet"
            raise SystemExit(f"error: cannot write {run.ckpt_path} at step {step + 1}: "
                             f"{e.strerror or e} ({on_disk})")
    run.saved = step + 1


def finish(run):
    """After the last step: close the logs, write summary.json, leave the process group."""
    if run.writer:
        run.writer.close()
    if run.master:
        with open(os.path.join(run.args.out, "summary.json"), "w") as f:
            json.dump({"steps": run.args.steps, "world_size": run.world}, f)
        run.log(f"done: {run.args.out}")
    if run.world > 1:
        dist.destroy_process_group()


# ----------------------------------------------------------------------------- main
def dry_run(args):
    """The resolved configuration, flag names as keys (what a preset means), as one JSON line."""
    print(json.dumps({k.replace("_", "-"): v for k, v in vars(args).items() if k != "dry_run"}))


def main(argv=None):
    """Set up, then run the GRPO steps: each is the phases of the module docstring, in order."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = get_args(argv)
    if args.dry_run:
        return dry_run(args)
    run = setup(args, argv)
    args = run.args
    bar = tqdm(total=args.steps, initial=run.start, desc="train", unit="step",
               disable=not run.master, dynamic_ncols=True)
    for step in range(run.start, args.steps):
        t0 = sync(run.device)
        for group in run.opt.param_groups:
            group["lr"] = get_lr(args, step)
        torch.manual_seed(mix(args.seed, step, run.rank))  # any other randomness (reward crops)
        batch = draw_prompts(run, step)                               # 1. B prompts, condition
        batch.tokens, batch.logp_sampler = rollout(run, batch, step)  # 2. (B, N), (B, N)
        t1 = sync(run.device)
        scores = score(run, batch, step)                              # 3. images, rewards, adv (B,)
        t2 = sync(run.device)
        lp = logprobs_before_update(run, batch)                       # 4. reference, pi_old (B, N)
        t3 = sync(run.device)
        stats, grad_norm = update(run, batch, scores.adv, lp, step)   # 5. the AdamW step(s)
        t4 = sync(run.device)
        m = step_metrics(run, step, stats, grad_norm, batch, scores, lp, (t0, t1, t2, t3, t4))
        log_step(run, step, m, scores.images)                         # 6. log and save
        if (step + 1) % args.save_every == 0 or step + 1 == args.steps:
            save_checkpoint(run, step)
        bar.update(1)
    bar.close()
    finish(run)


# ----------------------------------------------------------------------------- non-finite values
class NonFinite(RuntimeError):
    """A NaN / inf reward, advantage, loss, gradient or weight. The run stops (one line) before it
    reaches the optimizer or the disk: the last checkpoint stays as it was."""


def nonfinite_rewards(parts, rewards_all, adv_all, world, device):
    """{what: count} of the non-finite values of this step, the same on every rank (all-reduced)."""
    counts = torch.tensor([(~torch.isfinite(v.float())).sum().item() for v in parts.values()],
                          dtype=torch.float64, device=device)      # one count per reward component
    if world > 1:
        dist.all_reduce(counts)
    bad = {f"reward {n!r}": int(c) for n, c in zip(parts, counts.tolist()) if c}
    # the total and the advantages are of the global batch: the same on every rank
    for what, x in (("weighted reward total", rewards_all), ("advantage", adv_all)):
        if not bad and not torch.isfinite(x).all():
            bad[what] = int((~torch.isfinite(x)).sum())
    return bad


def stop_if_nonfinite(bad, step, saved):
    """Raise NonFinite for bad = {what: count of non-finite values, or the value itself}, if any;
    saved is the step of the checkpoint on disk (0: none)."""
    if not bad:
        return
    what = ", ".join(f"{k} ({v} non-finite value{'s' if v != 1 else ''})" if isinstance(v, int)
                     else f"{k} ({v})" for k, v in bad.items())
    intact = f"the checkpoint of step {saved} is intact" if saved else "no checkpoint was written"
    raise NonFinite(f"step {step + 1}: {what}: stopped before the update; " + intact)


# ----------------------------------------------------------------------------- process exit
_PROCESS_GROUP_STARTED = False


def cli(argv=None):
    """main() with one-line errors, and an exit that cannot abort in a distributed run.

    Why torchrun ranks used to die with SIGABRT ("terminate called without an active exception")
    after 'done': DDP's constructor (its parameter-shape check) keeps references to the process
    group that destroy_process_group() cannot drop (torch 2.x), so gloo's two worker threads
    outlive main(). A worker drops its reference to a finished collective a moment after the
    caller's wait() returns; when that is the last reference to a tensor created in Python, the
    drop takes the GIL. If the interpreter is already finalizing (rank 1 exits right after its
    last collective), taking the GIL ends the thread (pthread_exit) inside a noexcept destructor,
    and C++ calls std::terminate. (pytorch/pytorch#179291 describes the same race.) A barrier
    only narrows the window. So a distributed rank, once main() has returned and the process group
    is destroyed, leaves with os._exit after flushing its output: the interpreter is never torn
    down under live gloo threads.
    Every file train.py writes is closed by then (`with` blocks, the TensorBoard writer)."""
    try:
        main(argv)
        code = 0
    except (MissingCheckpoint, BadCheckpoint, RewardWeightsMissing, NonFinite) as e:
        # one line, no traceback
        code = f"error: {e}"
    except SystemExit as e:
        code = e.code
    except OSError as e:
        # e.g. a full disk while writing metrics or a sample grid: ckpt.pt is the last complete one
        code = f"error: {e.strerror or e}" + (f": {e.filename}" if e.filename else "")
    except BaseException:
        if not _PROCESS_GROUP_STARTED:
            raise
        traceback.print_exc()
        code = 1
    if _PROCESS_GROUP_STARTED:
        if isinstance(code, str):
            print(code, file=sys.stderr)
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code or 0)
    sys.exit(code)


if __name__ == "__main__":
    cli()
