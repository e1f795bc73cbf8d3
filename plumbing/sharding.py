"""How the policy is spread over the ranks (train.py): DDP (the default: a full copy per rank, the
gradient all-reduced), or with --fsdp torch's FSDP2 (`fully_shard` on every transformer block, then
on the whole GPT): parameters, gradient and AdamW moments split over the ranks, each block gathered
only while it computes. The frozen reference stays a full copy outside (bf16 with --ref-dtype).

What FSDP2 changes around the method, each handled here, so train.py reads the same either way:
- the rollout's KV-cache sampler calls the blocks step by step: the whole policy is gathered once
  for the rollout (`Gathered`) instead of once per block per token;
- the root module must run one forward before its blocks run alone (the sampler): a one-token
  forward at wrapping time, on every rank;
- the checkpoint is one full state dict (LlamaGen's names, as DDP's), gathered on every rank
  (`full_state`), written by rank 0, and put back sharded on --resume (`load_state`): sample.py
  and --resume read it as any other; the gradient sync is skipped for all but the last
  micro-batch, as DDP's no_sync.
"""
import contextlib

import torch
import torch.distributed as dist

from plumbing.distributed import ddp


def wrap(policy, args, world, device):
    """The module the update calls: the policy in DDP (several ranks), the policy itself (one
    rank), or with --fsdp the policy sharded in place by FSDP2 (before the optimizer is built:
    FSDP2 replaces the parameters)."""
    if not args.fsdp:
        return ddp(policy, world, device)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    mesh = init_device_mesh(device.type, (world,))
    bf16 = device.type == "cuda" and args.bf16 and not args.pure_bf16
    # as autocast today: fp32 master weights, bf16 compute, fp32 gradient reduction
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 \
        else MixedPrecisionPolicy()
    for block in policy.layers:
        fully_shard(block, mesh=mesh, mp_policy=mp)
    fully_shard(policy, mesh=mesh, mp_policy=mp)
    with torch.no_grad():  # FSDP2's lazy init runs in the root's first forward: before the sampler
        c = policy.config
        cond = torch.zeros(1, 120, c.caption_dim, device=device) if c.model_type == "t2i" else \
            torch.zeros(1, dtype=torch.long, device=device)
        policy(cond, torch.zeros(1, 1, dtype=torch.long, device=device))
    policy.reshard()  # the root keeps its parameters gathered after a forward: the optimizer must
    # see the sharded ones (FSDP2 swaps them back, and an optimizer holding the gathered would
    # update tensors the model no longer uses)
    policy.no_sync = lambda: no_sync(policy)   # DDP's name for it (train.py's micro-batches)
    return policy


@contextlib.contextmanager
def no_sync(policy):
    policy.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        policy.set_requires_gradient_sync(True)


def sharded(module):
    return hasattr(module, "set_reshard_after_forward")   # an FSDP2 module


class Gathered:
    """The rollout's context: the sharded policy gathered whole for the rollout (then split again),
    around `inner` (autocast or nothing); just `inner` for an unsharded policy. Re-enterable."""

    def __init__(self, policy, inner):
        self.policy, self.inner = policy, inner

    def __enter__(self):
        if sharded(self.policy):
            self.policy.set_reshard_after_forward(False)
            self.policy.unshard()
            for block in self.policy.layers:
                block.unshard()
        return self.inner.__enter__()

    def __exit__(self, *exc):
        out = self.inner.__exit__(*exc)
        if sharded(self.policy):
            self.policy.reshard()
            for block in self.policy.layers:
                block.reshard()
            self.policy.set_reshard_after_forward(True)
        return out


def full_state(policy, opt):
    """(the policy's state dict, AdamW's) as full tensors for the checkpoint: the plain ones, or
    with FSDP2 gathered on every rank (collective: every rank calls it) onto the host, complete on
    rank 0."""
    if not sharded(policy):
        return policy.state_dict(), opt.state_dict()
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                         get_optimizer_state_dict)
    o = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(policy, options=o), get_optimizer_state_dict(policy, opt, options=o)


def load_state(policy, opt, model_sd, opt_sd):
    """--resume into a sharded policy: the full state dicts (every rank read the file) split."""
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                         set_optimizer_state_dict)
    o = StateDictOptions(full_state_dict=True)
    set_model_state_dict(policy, model_sd, options=o)
    set_optimizer_state_dict(policy, opt, opt_sd, options=o)


def nonfinite(policy):
    """Names of the parameters holding a NaN or inf, the same list on every rank (a sharded
    parameter is checked on each rank's shard, and the verdicts gathered)."""
    bad = [n for n, p in policy.named_parameters() if not torch.isfinite(p).all()]
    if sharded(policy) and dist.is_initialized():
        every = [None] * dist.get_world_size()
        dist.all_gather_object(every, bad)
        bad = sorted({n for b in every for n in b})
    return bad
