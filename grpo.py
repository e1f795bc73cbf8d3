"""grpo.py: the math of GRPO for autoregressive image generators (AR-GRPO), as pure functions.

One rollout batch holds P prompts x G samples, stored group-contiguously: rows [j*G, (j+1)*G)
are the G images of prompt j. Each image is a sequence of N tokens (no end token, so every
sequence has exactly N tokens). With r_i the scalar reward of image i and q_t the token log-probs:

  advantage   A_i = (r_i - mean_g r) / (std_g r + eps)        unbiased std over the group g of i
              (GRPO: Shao et al. 2024, DeepSeekMath; AR-GRPO uses eps = 1e-4). A group whose
              rewards are all equal carries no signal: its A is set to exactly 0 (never NaN) and
              it is counted.
              std="global" divides by the unbiased std of the whole batch instead (TRL's
              scale_rewards="batch"; Flow-GRPO's population std is ~1/(2n) smaller).
  ratio       rho_t = exp(log pi(x_t) - log pi_old(x_t))      pi_old = the policy that sampled
  surrogate   L_pg  = -min(rho_t A, clip(rho_t, 1 - eps, 1 + eps_high) A)     (PPO, eps = 0.2)
  KL (k3)     L_kl  = exp(l_ref - l) - (l_ref - l) - 1 >= 0
              with l = log pi(x_t), l_ref = log pi_ref(x_t):
              an unbiased, always non-negative estimate of KL(pi || pi_ref) from samples of pi
              (Schulman, "Approximating KL divergence", 2020)
  loss        L = mean_t(L_pg + beta L_kl)              token level, over all tokens of the batch

With one optimizer step per rollout batch (the paper) rho == 1 and the clip never acts; with
several inner updates the ratio and the clip matter, and `diagnostics` reports how much.

Which distribution is "pi" when the sampler uses classifier-free guidance (`policy_logprobs`):
  policy="cond"  log-softmax of the conditional branch alone (what the paper's code trains):
                 the samples come from a different (guided) distribution, so rho is not the true
                 importance ratio of the samples; reproduces the paper.
  policy="cfg"   log-probs of the guided distribution the tokens were actually drawn from:
                 sampling_logprobs(l_u + s (l_c - l_u)) with temperature / top-k / top-p applied.
                 On-policy rho is exactly 1 and the gradient flows through both branches.

Run the tests:  python -m pytest tests/test_grpo.py
"""
import torch

from model import cfg_logits, sampling_logprobs


def group_advantages(rewards, group_size, eps=1e-4, std="group", zero_flat=True):
    """rewards (B,) with B = P*G group-contiguous -> (advantages (B,), zero_std_frac).
    std="group": divide by each group's unbiased std; std="global": by the batch's.
    zero_flat=False is AR-GRPO's code: no special case for all-equal groups, whose
    (r - mean) / (0 + eps) is whatever rounding of the mean leaves (0, or ~ulp(r) / eps)."""
    r = rewards.float().view(-1, group_size)                        # (P, G)
    mean = r.mean(dim=1, keepdim=True)                              # (P, 1)
    if std == "group":
        sd = r.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(mean)
    elif std == "global":
        sd = r.std().expand_as(mean) if r.numel() > 1 else torch.zeros_like(mean)
    else:
        raise ValueError(f"std must be 'group' or 'global', got {std!r}")
    # all-equal groups: r - mean may be a rounding error away from 0, so zero them explicitly
    flat = (r.max(dim=1, keepdim=True).values == r.min(dim=1, keepdim=True).values)  # (P, 1)
    adv = (r - mean) / (sd + eps)
    if zero_flat:
        adv = torch.where(flat, torch.zeros_like(r), adv)
    return adv.view(-1), flat.float().mean().item()


def clipped_surrogate(logp, logp_old, adv, eps=0.2, eps_high=None):
    """PPO clipped objective as a loss to minimise, per token.
    logp, logp_old (B, N); adv (B,) -> (loss (B, N), ratio (B, N))."""
    eps_high = eps if eps_high is None else eps_high
    ratio = torch.exp(logp - logp_old)                              # (B, N)
    a = adv[:, None]                                                # (B, 1), one value per sequence
    unclipped = ratio * a
    clipped = ratio.clamp(1 - eps, 1 + eps_high) * a
    return -torch.minimum(unclipped, clipped), ratio


def k3_kl(logp, logp_ref, clamp=None, cap=None):
    """k3 estimator of KL(pi || pi_ref) per token: exp(d) - d - 1 with d = logp_ref - logp (AR-GRPO:
    nothing else). clamp: d limited to [-clamp, clamp] first, so a token outside the reference's
    top-k set (d = -inf) gives no inf (but the KL gradient is 0 beyond it); cap: the estimate
    limited to <= cap (verl: 10). None or 0: off."""
    d = (logp_ref - logp).clamp(-clamp, clamp) if clamp else logp_ref - logp
    kl = torch.exp(d) - d - 1
    return kl.clamp(max=cap) if cap else kl


def entropy(logprobs):
    """Entropy -sum_v p log p of each distribution, logprobs (..., V) possibly -inf -> (...)."""
    p = logprobs.exp()
    return -torch.where(p > 0, p * logprobs, torch.zeros_like(p)).sum(-1)


def grpo_loss(logp, logp_old, logp_ref, adv, beta, eps=0.2, eps_high=None, kl_clamp=None,
              kl_cap=None):
    """The full per-token loss, aggregated: (loss scalar, pg per token (B, N), kl (B, N), ratio).
    A plain mean over all B x N tokens: every image has exactly N tokens (no end token, no
    padding), so no mask is needed (TRL's `bnpo` reduction, as AR-GRPO's code)."""
    pg, ratio = clipped_surrogate(logp, logp_old, adv, eps, eps_high)
    kl = k3_kl(logp, logp_ref, kl_clamp, kl_cap) if beta != 0 else torch.zeros_like(pg)
    return (pg + beta * kl).mean(), pg, kl, ratio


@torch.no_grad()
def diagnostics(ratio, adv, logp, logp_old, eps=0.2, eps_high=None):
    """clip_frac: fraction of tokens where the clip is binding (the gradient is cut): rho above
    1 + eps_high with A > 0, or below 1 - eps with A < 0. approx_kl_old: k3 estimate of
    KL(pi_old || pi) from the rollout samples, (rho - 1) - log rho."""
    eps_high = eps if eps_high is None else eps_high
    a = adv[:, None].expand_as(ratio)
    clipped = ((ratio > 1 + eps_high) & (a > 0)) | ((ratio < 1 - eps) & (a < 0))
    log_ratio = logp - logp_old
    return {"clip_frac": clipped.float().mean().item(),
            "ratio_mean": ratio.mean().item(),
            "ratio_min": ratio.min().item(), "ratio_max": ratio.max().item(),
            "approx_kl_old": (torch.expm1(log_ratio) - log_ratio).mean().item()}


def policy_logprobs(model, cond, tokens, policy, s, cond_mask=None, pad_self_attend=True):
    """Teacher-forced log-probs of the sampled tokens under the policy definition (see top), with
    the sampler settings s (model.Sampling). tokens (B, N) -> (logp (B, N) with grad, entropy
    (B, N) without grad). pad_self_attend=False: AR-GRPO's training pass on right-padded captions
    (model.GPT.attn_mask)."""
    if policy == "cond":   # the paper: conditional branch only, temperature only (no truncation,
        # since a sampled token may lie outside the conditional branch's own top-k set)
        logprobs = (model(cond, tokens, cond_mask, pad_self_attend) / s.temperature).log_softmax(-1)
    elif policy == "cfg":  # the distribution generate() sampled from
        logits = cfg_logits(model, cond, tokens, s, cond_mask, pad_self_attend)
        logprobs = sampling_logprobs(logits, s)                                  # (B, N, V)
    else:
        raise ValueError(f"policy must be 'cond' or 'cfg', got {policy!r}")
    logp = logprobs.gather(-1, tokens[..., None]).squeeze(-1)                   # (B, N)
    with torch.no_grad():
        ent = entropy(logprobs.detach())
    return logp, ent
