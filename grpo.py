"""grpo.py: the math of GRPO for autoregressive image generators (AR-GRPO), as pure functions.

One rollout batch holds P prompts x G samples, stored group-contiguously: rows [j*G, (j+1)*G)
are the G images of prompt j. Each image is a sequence of N tokens (no end token, so every
sequence has exactly N tokens). With r_i the scalar reward of image i, l = log pi(x_t),
l_old = log pi_old(x_t) (the policy that sampled), l_ref = log pi_ref(x_t) (the frozen start):

  advantage   A_i = (r_i - mean_g r) / (std_g r + eps)        unbiased std over the group g of i
              (GRPO: Shao et al. 2024, DeepSeekMath; AR-GRPO uses eps = 1e-4). A group whose
              rewards are all equal carries no signal: its A is 0 (never NaN), and it is counted.
  ratio       rho_t = exp(l - l_old)
  surrogate   L_pg  = -min(rho_t A, clip(rho_t, 1 - eps, 1 + eps_high) A)     (PPO, eps = 0.2)
  KL (k3)     L_kl  = exp(d) - d - 1 >= 0,  d = l_ref - l: an unbiased, non-negative estimate of
              KL(pi || pi_ref) from samples of pi (Schulman, "Approximating KL divergence", 2020)
  loss        L = mean_t(L_pg + beta L_kl)              token level, over all tokens of the batch

With one optimizer step per rollout batch (the paper) rho == 1 and the clip never acts; with
several inner updates the ratio and the clip matter, and `diagnostics` reports how much.

The variants researchers compare (each a small function below, chosen by `Objective`, a flag each
in train.py; the paper presets use none): the advantage's scale (batch std, none: Dr. GRPO), a
sequence-level ratio (GSPO), dual-clip (verl) and TRL's delta clamp, the KL estimator (k1, k2, k3,
clamped, capped) and where the KL enters (the loss, or the reward as PPO-RLHF), an entropy bonus.

Which distribution is "pi" when the sampler uses classifier-free guidance (`policy_logprobs`):
  policy="cond"  log-softmax of the conditional branch alone (what the paper's code trains):
                 the samples come from a different (guided) distribution, so rho is not the true
                 importance ratio of the samples; reproduces the paper.
  policy="cfg"   log-probs of the guided distribution the tokens were actually drawn from:
                 sampling_logprobs(l_u + s (l_c - l_u)) with temperature / top-k / top-p applied.
                 On-policy rho is exactly 1 and the gradient flows through both branches.

Run the tests:  python -m pytest tests/test_grpo.py
"""
from dataclasses import dataclass
from typing import Optional

import torch

from model import cfg_logits, sampling_logprobs


@dataclass(frozen=True)
class Objective:
    """What the update minimises; the defaults are AR-GRPO's (and the paper presets')."""
    beta: float = 0.1                    # weight of the KL to the reference
    clip_eps: float = 0.2
    clip_eps_high: Optional[float] = None  # DAPO's clip-higher (default clip_eps)
    ratio_level: str = "token"           # "sequence": GSPO
    dual_clip: Optional[float] = None    # verl's clip_ratio_c: bound -c A for A < 0 (e.g. 3)
    delta: Optional[float] = None        # TRL's delta: the unclipped ratio clamped at delta
    kl: str = "k3"                       # the estimator: k1, k2 or k3
    kl_clamp: float = 20.0               # d clamped to [-c, c] (verl's 20; 0 = none)
    kl_cap: float = 0.0                  # the estimate clamped to [-cap, cap] (verl: 10; 0 = none)
    kl_in: str = "loss"                  # "reward": beta x the sequence's KL leaves its reward
    entropy_coef: float = 0.0            # loss -= c x mean token entropy

    @classmethod
    def of(cls, args):
        """The objective from parsed flags of the same names (--beta, --clip-eps, ...)."""
        return cls(**{k: getattr(args, k) for k in cls.__dataclass_fields__})


def group_advantages(rewards, group_size, eps=1e-4, std="group", zero_flat=True):
    """rewards (B,) with B = P*G group-contiguous -> (advantages (B,), zero_std_frac).
    std="group": each group's unbiased std (GRPO); "batch": the batch's unbiased std (TRL's
    scale_rewards="batch"; "global" is its old name); "none": no division (Dr. GRPO, Liu et al.
    2025). zero_flat=False is AR-GRPO's code: no special case for all-equal groups, whose
    (r - mean) / (0 + eps) is whatever rounding of the mean leaves (0, or ~ulp(r) / eps)."""
    r = rewards.float().view(-1, group_size)                        # (P, G)
    mean = r.mean(dim=1, keepdim=True)                              # (P, 1)
    if std == "group":
        sd = r.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(mean)
    elif std in ("batch", "global"):
        sd = r.std().expand_as(mean) if r.numel() > 1 else torch.zeros_like(mean)
    elif std == "none":
        sd, eps = torch.ones_like(mean), 0.0
    else:
        raise ValueError(f"std must be 'group', 'batch' or 'none', got {std!r}")
    # all-equal groups: r - mean may be a rounding error away from 0, so zero them explicitly
    flat = (r.max(dim=1, keepdim=True).values == r.min(dim=1, keepdim=True).values)  # (P, 1)
    adv = (r - mean) / (sd + eps)
    if zero_flat:
        adv = torch.where(flat, torch.zeros_like(r), adv)
    return adv.view(-1), flat.float().mean().item()


def importance_ratio(logp, logp_old, level="token"):
    """rho (B, N). level="token": exp(l - l_old) per token (PPO). level="sequence" (GSPO, Zheng et
    al. 2025; TRL's importance_sampling_level): exp(mean_t(l - l_old)), the geometric mean of an
    image's token ratios, the same for each of its tokens."""
    log_ratio = logp - logp_old                                     # (B, N)
    if level == "sequence":
        log_ratio = log_ratio.mean(-1, keepdim=True).expand_as(log_ratio)
    elif level != "token":
        raise ValueError(f"ratio level must be 'token' or 'sequence', got {level!r}")
    return torch.exp(log_ratio)


def clipped_surrogate(ratio, adv, eps=0.2, eps_high=None, dual_clip=None, delta=None):
    """PPO's clipped objective as a loss to minimise, per token: ratio (B, N), adv (B,) -> (B, N).
    delta (TRL): the unclipped term's ratio is clamped at delta, so a huge ratio cannot blow up a
    negative-advantage loss. dual_clip = c (Ye et al. 2020; verl's clip_ratio_c): for A < 0 the
    loss is at most -c A."""
    eps_high = eps if eps_high is None else eps_high
    a = adv[:, None]                                                # (B, 1), one value per sequence
    unclipped = (ratio if delta is None else ratio.clamp(max=delta)) * a
    clipped = ratio.clamp(1 - eps, 1 + eps_high) * a
    loss = -torch.minimum(unclipped, clipped)
    if dual_clip is not None:
        loss = torch.where(a < 0, torch.minimum(loss, -dual_clip * a), loss)
    return loss


def kl_estimate(logp, logp_ref, kind="k3", clamp=20.0, cap=0.0):
    """Per-token estimate of KL(pi || pi_ref) from samples of pi, d = l_ref - l (Schulman 2020):
    k1 = -d (unbiased, any sign), k2 = d^2 / 2, k3 = exp(d) - d - 1 (unbiased, >= 0, low
    variance). d is clamped to [-clamp, clamp] (a token outside the reference's top-k set has
    d = -inf), the estimate to [-cap, cap] (verl caps k3 at 10); 0 or None: no clamp."""
    d = logp_ref - logp
    if clamp:
        d = d.clamp(-clamp, clamp)
    if kind == "k1":
        k = -d
    elif kind == "k2":
        k = 0.5 * d.square()
    elif kind == "k3":
        k = torch.exp(d) - d - 1
    else:
        raise ValueError(f"KL estimator must be 'k1', 'k2' or 'k3', got {kind!r}")
    return k.clamp(-cap, cap) if cap else k


def kl_penalized_rewards(rewards, logp_old, logp_ref, obj):
    """The KL in the reward (PPO-RLHF, Ouyang et al. 2022): r_i - beta sum_t KL_t of image i under
    the policy that sampled it, before the advantages. rewards (B,) -> (B,)."""
    kl = kl_estimate(logp_old, logp_ref, obj.kl, obj.kl_clamp, obj.kl_cap).sum(-1)
    return rewards - obj.beta * kl


def entropy(logprobs):
    """Entropy -sum_v p log p of each distribution, logprobs (..., V) possibly -inf -> (...).
    The -inf entries are zeroed before the product, so the gradient stays finite."""
    p = logprobs.exp()
    return -(p * torch.where(p > 0, logprobs, torch.zeros_like(logprobs))).sum(-1)


def grpo_loss(logp, logp_old, logp_ref, adv, obj, ent=None):
    """The full per-token loss, aggregated: (loss scalar, pg per token (B, N), kl (B, N), ratio).
    A plain mean over all B x N tokens: every image has exactly N tokens (no end token, no
    padding), so no mask is needed (TRL's `bnpo` reduction, as AR-GRPO's code). ent (B, N), with
    grad: the entropy bonus's token entropies."""
    ratio = importance_ratio(logp, logp_old, obj.ratio_level)
    pg = clipped_surrogate(ratio, adv, obj.clip_eps, obj.clip_eps_high, obj.dual_clip, obj.delta)
    # measured in every mode; in the loss only with beta != 0 (0 x an infinite k3 would be NaN)
    # and kl_in="loss" (with "reward" it left the reward: kl_penalized_rewards)
    kl = kl_estimate(logp if obj.beta else logp.detach(), logp_ref, obj.kl, obj.kl_clamp,
                     obj.kl_cap)
    loss = (pg + obj.beta * kl).mean() if obj.kl_in == "loss" and obj.beta else pg.mean()
    if obj.entropy_coef:
        loss = loss - obj.entropy_coef * ent.mean()
    return loss, pg, kl, ratio


@torch.no_grad()
def diagnostics(ratio, adv, logp, logp_old, obj):
    """clip_frac: tokens where PPO's clip binds (the gradient is cut): rho above 1 + eps_high with
    A > 0, or below 1 - eps with A < 0. approx_kl_old: k3 estimate of KL(pi_old || pi) from the
    rollout samples, (rho - 1) - log rho. With a variant: dual_clip_frac (tokens where -c A binds),
    delta_frac (tokens where rho > delta), seq_ratio_std (the spread of GSPO's sequence ratios)."""
    eps_high = obj.clip_eps if obj.clip_eps_high is None else obj.clip_eps_high
    a = adv[:, None].expand_as(ratio)
    clipped = ((ratio > 1 + eps_high) & (a > 0)) | ((ratio < 1 - obj.clip_eps) & (a < 0))
    log_ratio = logp - logp_old
    out = {"clip_frac": clipped.float().mean().item(),
           "ratio_mean": ratio.mean().item(),
           "ratio_min": ratio.min().item(), "ratio_max": ratio.max().item(),
           "approx_kl_old": (torch.expm1(log_ratio) - log_ratio).mean().item()}
    if obj.dual_clip is not None:   # binds where max(rho, clip(rho)) > c, for A < 0
        bound = torch.maximum(ratio, ratio.clamp(1 - obj.clip_eps, 1 + eps_high)) > obj.dual_clip
        out["dual_clip_frac"] = (bound & (a < 0)).float().mean().item()
    if obj.delta is not None:
        out["delta_frac"] = (ratio > obj.delta).float().mean().item()
    if obj.ratio_level == "sequence":
        out["seq_ratio_std"] = ratio[:, 0].std().item() if len(ratio) > 1 else 0.0
    return out


def policy_logprobs(model, cond, tokens, policy, s, cond_mask=None, pad_self_attend=True,
                    ent_grad=False):
    """Teacher-forced log-probs of the sampled tokens under the policy definition (see top), with
    the sampler settings s (model.Sampling). tokens (B, N) -> (logp (B, N) with grad, entropy
    (B, N), with grad only if ent_grad: the entropy bonus). pad_self_attend=False: AR-GRPO's
    training pass on right-padded captions (model.GPT.attn_mask)."""
    if policy == "cond":   # the paper: conditional branch only, temperature only (no truncation,
        # since a sampled token may lie outside the conditional branch's own top-k set)
        logprobs = (model(cond, tokens, cond_mask, pad_self_attend) / s.temperature).log_softmax(-1)
    elif policy == "cfg":  # the distribution generate() sampled from
        logits = cfg_logits(model, cond, tokens, s, cond_mask, pad_self_attend)
        logprobs = sampling_logprobs(logits, s)                                  # (B, N, V)
    else:
        raise ValueError(f"policy must be 'cond' or 'cfg', got {policy!r}")
    logp = logprobs.gather(-1, tokens[..., None]).squeeze(-1)                   # (B, N)
    if ent_grad:
        return logp, entropy(logprobs)
    with torch.no_grad():
        ent = entropy(logprobs.detach())
    return logp, ent
