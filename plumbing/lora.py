"""LoRA for the GPT (train.py --lora-rank R): low-rank adapters on the attention and FFN linears,
the base weights frozen, and the reference = the same model with its adapters switched off (no
second copy of the weights). Hu et al. 2021: W x + (alpha / r) B A x, A (r, in) random, B (out, r)
zero, so at initialisation the policy IS the base (log-probs equal, KL 0).

Our own ~100 lines rather than peft: the GPT's linears are plain nn.Linear, and a subclass keeps
LlamaGen's state-dict names (`layers.0.attention.wqkv.weight`) where peft renames them
(`base_layer.weight`), so loading a release and merging need no key mapping (docs/memory.md).

A LoRA run's ckpt.pt holds the adapters only (`model`: the lora_a / lora_b tensors) and `lora`:
rank, alpha, targets and the base (the run's --gpt-ckpt, or the seed of a random base), from which
--resume and `tools/lora.py merge` rebuild the policy; the merged file is a plain checkpoint that
sample.py, tools/eval.py and --gpt-ckpt read.
"""
import contextlib
import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

TARGETS = ("wqkv", "wo", "w1", "w2", "w3")  # attention (qkv, out) and SwiGLU FFN linears


class LoRALinear(nn.Linear):
    """nn.Linear (its weight frozen, names unchanged) plus a trainable low-rank update."""

    def add_adapter(self, rank, alpha):
        self.weight.requires_grad_(False)
        self.scale, self.enabled = alpha / rank, True
        dev, dt = self.weight.device, self.weight.dtype
        self.lora_a = nn.Parameter(torch.empty(rank, self.in_features, device=dev, dtype=dt))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # as peft / the LoRA paper's code
        self.lora_b = nn.Parameter(torch.zeros(self.out_features, rank, device=dev, dtype=dt))

    def forward(self, x):
        y = F.linear(x, self.weight, self.bias)                              # (..., out)
        if self.enabled:
            y = y + F.linear(F.linear(x, self.lora_a), self.lora_b) * self.scale
        return y

    def merged_weight(self):
        return self.weight + (self.lora_b @ self.lora_a) * self.scale       # (out, in)


def add_adapters(model, rank, alpha, targets=TARGETS):
    """Freeze the model and give every target linear an adapter, in place; returns the model."""
    model.requires_grad_(False)
    found = 0
    for name, m in model.named_modules():
        if name.rsplit(".", 1)[-1] in targets and type(m) is nn.Linear:
            m.__class__ = LoRALinear   # same module, same weight tensor: no copy
            m.add_adapter(rank, alpha)
            found += 1
    if not found:
        raise ValueError(f"--lora-targets {','.join(targets)} names no linear of the GPT")
    return model


def parse_targets(text):
    """--lora-targets "wqkv, wo" -> ("wqkv", "wo")."""
    return tuple(t.strip() for t in text.split(","))


def adapters(model):
    return [m for m in model.modules() if isinstance(m, LoRALinear)]


@contextlib.contextmanager
def adapters_off(model):
    """The base model: every adapter skipped inside the block (the reference's forward)."""
    mods = adapters(model)
    for m in mods:
        m.enabled = False
    try:
        yield model
    finally:
        for m in mods:
            m.enabled = True


class Reference(nn.Module):
    """The frozen reference of a LoRA run: the policy's own modules with the adapters off. Not a
    submodule holder (the policy is not registered), so nothing is counted, cast or saved twice."""

    def __init__(self, policy):
        super().__init__()
        object.__setattr__(self, "policy", policy)
        self.config = policy.config

    def forward(self, *args, **kwargs):
        with adapters_off(self.policy):
            return self.policy(*args, **kwargs)

    def __getattr__(self, name):  # what policy_logprobs / cfg_logits read off the model (config,
        # null_cond): only forward() runs with the adapters off
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(object.__getattribute__(self, "policy"), name)


def adapter_state(model):
    """The adapters' tensors by their state-dict names (what a LoRA checkpoint stores)."""
    return {k: v for k, v in model.state_dict().items() if k.endswith((".lora_a", ".lora_b"))}


def load_adapter_state(model, sd, what="checkpoint"):
    """Put saved adapters back; the keys must be exactly the model's adapters."""
    own = adapter_state(model)
    missing, unexpected = sorted(set(own) - set(sd)), sorted(set(sd) - set(own))
    shapes = [k for k in own if k in sd and sd[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise ValueError(f"{what}'s adapters do not fit this model (rank / targets differ?): "
                         f"missing {missing[:2]}, unexpected {unexpected[:2]}, shapes {shapes[:2]}")
    model.load_state_dict(sd, strict=False)


def fold(model, settings, sd, what="checkpoint"):
    """A LoRA checkpoint's policy as a plain GPT: its adapters (`settings`: the checkpoint's
    `lora` entry; `sd`: its `model`) put on `model`, the run's base, then merged in, in place."""
    add_adapters(model, settings["rank"], settings["alpha"], tuple(settings["targets"]))
    load_adapter_state(model, sd, what)
    return merge(model).eval()


def merge(model):
    """Fold every adapter into its weight and drop it: a plain GPT (LlamaGen's names), in place."""
    with torch.no_grad():
        for m in adapters(model):
            m.weight.copy_(m.merged_weight())
            del m.lora_a, m.lora_b, m.scale, m.enabled
            m.__class__ = nn.Linear
    return model.requires_grad_(True)


def reference_for(policy, args):
    """The frozen reference of train.py: a copy of the initial weights, or with --lora-rank the
    policy itself with its adapters off (the adapters are added to the policy here)."""
    if not getattr(args, "lora_rank", 0):  # runs saved before LoRA have no such flag
        return copy.deepcopy(policy)
    add_adapters(policy, args.lora_rank, args.lora_alpha or args.lora_rank,
                 parse_targets(args.lora_targets))
    return Reference(policy)


def settings(model):
    """rank, alpha and targets of a model's adapters (what a checkpoint's `lora` entry holds)."""
    mods = {n.rsplit(".", 1)[-1]: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}
    m = next(iter(mods.values()))
    rank = m.lora_a.shape[0]
    return {"rank": rank, "alpha": m.scale * rank, "targets": sorted(mods)}


def describe(lora):
    """One phrase for the `lora` entry of a checkpoint."""
    return f"LoRA rank {lora['rank']}, alpha {lora['alpha']:g} on {', '.join(lora['targets'])}"
