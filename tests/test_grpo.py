"""The GRPO math on small tensors whose answers can be checked by hand."""
import math

import pytest
import torch

from grpo import (Objective, clipped_surrogate, diagnostics, entropy, group_advantages, grpo_loss,
                  importance_ratio, kl_estimate, kl_penalized_rewards)


def k3_kl(logp, ref, clamp=0.0, cap=0.0):  # AR-GRPO's k3: no clamp, no cap unless asked
    return kl_estimate(logp, ref, "k3", clamp, cap)


def test_group_advantages_by_hand():
    # group 1: [1, 3] mean 2, unbiased std sqrt(2); group 2 all equal -> exactly 0, counted
    r = torch.tensor([1.0, 3.0, 5.0, 5.0])
    adv, zero_frac = group_advantages(r, group_size=2, eps=0.0)
    s = math.sqrt(2.0)
    assert torch.allclose(adv, torch.tensor([-1 / s, 1 / s, 0.0, 0.0]))
    assert zero_frac == 0.5
    # eps enters the denominator
    adv, _ = group_advantages(r, group_size=2, eps=1e-4)
    assert adv[1].item() == pytest.approx(1 / (s + 1e-4), rel=1e-6)


def test_zero_std_groups_are_zero_not_nan():
    r = torch.tensor([0.1] * 8 + [7.0] * 8)            # 0.1 * 8 / 8 is not exactly 0.1 in float32
    adv, zero_frac = group_advantages(r, group_size=8)
    assert torch.equal(adv, torch.zeros(16)) and zero_frac == 1.0
    adv, zero_frac = group_advantages(torch.tensor([1.0, 2.0]), group_size=1)   # G = 1: std undefined
    assert torch.equal(adv, torch.zeros(2)) and zero_frac == 1.0


def test_ar_grpo_flat_groups_keep_the_rounding_leak():
    """AR-GRPO's code has no special case: (r - mean) / (std + 1e-4) with the float32 rounding of
    mean and std. --no-zero-flat-groups (the paper presets) reproduces it; 1.1 rounds exactly."""
    r = torch.tensor([2.9] * 8 + [1.1] * 8 + [1.0, 3.0] * 4)
    ours, frac = group_advantages(r, group_size=8)
    paper, frac_paper = group_advantages(r, group_size=8, zero_flat=False)
    mean, sd = r.view(3, 8).mean(1, keepdim=True), r.view(3, 8).std(1, keepdim=True)
    assert torch.equal(paper, ((r.view(3, 8) - mean) / (sd + 1e-4)).view(-1))
    assert paper[:8].abs().min() > 1e-3 and torch.equal(paper[8:16], torch.zeros(8))   # the leak: ~2.4e-3
    assert torch.equal(ours[:16], torch.zeros(16)) and torch.equal(ours[16:], paper[16:])
    assert frac == frac_paper == pytest.approx(2 / 3)


@pytest.mark.parametrize("name", ["batch", "global"])
def test_batch_std(name):
    """TRL's scale_rewards="batch": the group's mean removed, divided by the batch's unbiased std."""
    r = torch.tensor([0.0, 2.0, 10.0, 14.0])
    adv, zero_frac = group_advantages(r, group_size=2, eps=0.0, std=name)
    sd = r.std()                                         # unbiased over all 4
    assert torch.allclose(adv, torch.tensor([-1.0, 1.0, -2.0, 2.0]) / sd)
    assert zero_frac == 0.0


def test_no_std_is_dr_grpo():
    """Dr. GRPO (Liu et al. 2025): A = r - mean_g r, no division; flat groups still exactly 0."""
    r = torch.tensor([0.0, 2.0, 10.0, 14.0, 0.3, 0.3])
    adv, zero_frac = group_advantages(r, group_size=2, std="none")
    assert torch.equal(adv, torch.tensor([-1.0, 1.0, -2.0, 2.0, 0.0, 0.0]))
    assert zero_frac == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="std must be"):
        group_advantages(r, group_size=2, std="pop")


def test_k3_kl_values():
    logp = torch.tensor([0.0, 0.0, math.log(2.0)])
    ref = torch.tensor([0.0, math.log(2.0), 0.0])
    # d = ref - logp: 0 -> 0; log2 -> 2 - log2 - 1; -log2 -> 0.5 + log2 - 1
    want = torch.tensor([0.0, 1 - math.log(2.0), math.log(2.0) - 0.5])
    assert torch.allclose(k3_kl(logp, ref), want, atol=1e-6)
    assert (k3_kl(torch.randn(100), torch.randn(100)) >= 0).all()
    assert torch.isfinite(k3_kl(torch.zeros(1), torch.tensor([-float("inf")]), clamp=20.0)).all()
    assert torch.isinf(k3_kl(torch.zeros(1), torch.tensor([-float("inf")]))).all()   # AR-GRPO: no clamp


def test_k3_clamp_zeroes_the_gradient_beyond_it_and_the_cap_bounds_the_estimate():
    """AR-GRPO has no clamp: its KL gradient grows with the drift. Clamping d (--kl-clamp) keeps the
    value finite but cuts the gradient beyond the clamp; capping the estimate (--kl-cap, verl's 10)
    bounds the value and cuts the gradient where the cap binds."""
    def value_and_grad(d, **kw):
        logp = torch.tensor([-d], requires_grad=True)           # l_ref = 0, so d = l_ref - l
        kl = k3_kl(logp, torch.zeros(1), **kw)
        kl.sum().backward()
        return kl.item(), logp.grad.item()
    v, g = value_and_grad(25.0)                               # d = 25: exp(25) - 26, d/dl = 1 - exp(25)
    assert v == pytest.approx(math.exp(25) - 26, rel=1e-5) and g == pytest.approx(1 - math.exp(25), rel=1e-5)
    v, g = value_and_grad(25.0, clamp=20.0)
    assert v == pytest.approx(math.exp(20) - 21, rel=1e-5) and g == 0.0
    assert value_and_grad(5.0, clamp=20.0) == value_and_grad(5.0)             # inside the clamp: the same
    assert value_and_grad(5.0, cap=10.0) == (10.0, 0.0)                       # k3(5) = 142.4 > 10
    assert value_and_grad(1.0, cap=10.0) == value_and_grad(1.0)               # k3(1) = 0.72 < 10
    assert value_and_grad(1.0, clamp=0, cap=0) == value_and_grad(1.0)         # 0 = off


def test_k3_kl_is_unbiased_for_kl():
    # samples from p = softmax(a), KL(p || q) = sum p (log p - log q): the k3 mean estimates it
    g = torch.Generator().manual_seed(0)
    lp, lq = torch.randn(5, generator=g).log_softmax(0), torch.randn(5, generator=g).log_softmax(0)
    x = torch.multinomial(lp.exp(), 200_000, replacement=True, generator=g)
    exact = (lp.exp() * (lp - lq)).sum()
    assert k3_kl(lp[x], lq[x]).mean().item() == pytest.approx(exact.item(), rel=0.03)


def test_clipping_both_sides():
    logp_old = torch.zeros(2, 3)
    ratio = torch.tensor([[0.5, 1.0, 1.5], [0.5, 1.0, 1.5]])
    adv = torch.tensor([1.0, -1.0])
    r = importance_ratio(ratio.log(), logp_old)
    loss = clipped_surrogate(r, adv, eps=0.2)
    assert torch.allclose(r, ratio)
    # A > 0: min(rho A, clip(rho) A) -> 0.5 (unclipped is smaller), 1.0, 1.2 (clipped)
    # A < 0: min(-rho, -clip(rho)) -> -0.8 (clipped), -1.0, -1.5 (unclipped)
    assert torch.allclose(loss, -torch.tensor([[0.5, 1.0, 1.2], [-0.8, -1.0, -1.5]]))
    # separate upper eps
    loss = clipped_surrogate(ratio, adv, eps=0.2, eps_high=0.28)
    assert torch.allclose(loss[0], -torch.tensor([0.5, 1.0, 1.28]))
    # the clipped side has no gradient, the unclipped side has d/dlogp = -rho A
    logp = ratio.log().requires_grad_()
    clipped_surrogate(importance_ratio(logp, logp_old), adv, eps=0.2).sum().backward()
    assert torch.allclose(logp.grad, torch.tensor([[-0.5, -1.0, 0.0], [0.0, 1.0, 1.5]]))
    d = diagnostics(ratio, adv, ratio.log(), logp_old, Objective(clip_eps=0.2))
    assert d["clip_frac"] == pytest.approx(2 / 6)       # (row 0, 1.5) and (row 1, 0.5)
    assert d["ratio_min"] == 0.5 and d["ratio_max"] == 1.5 and d["ratio_mean"] == pytest.approx(1.0)
    want = ((ratio - 1) - ratio.log()).mean().item()
    assert d["approx_kl_old"] == pytest.approx(want, rel=1e-5)


def test_aggregation_and_full_loss():
    # on-policy (rho = 1), reference = policy: loss = -mean_t A = -mean over tokens of each row's A
    logp = torch.randn(2, 4)
    adv = torch.tensor([2.0, -1.0])
    loss, pg, kl, ratio = grpo_loss(logp, logp, logp, adv, Objective(beta=0.1))
    assert loss.item() == pytest.approx(-0.5) and kl.abs().max() == 0 and torch.equal(ratio, torch.ones(2, 4))
    # KL term adds beta * k3
    ref = logp + 0.3
    loss2, _, kl, _ = grpo_loss(logp, logp, ref, adv, Objective(beta=0.1))
    assert loss2.item() == pytest.approx(-0.5 + 0.1 * (math.exp(0.3) - 1.3), rel=1e-5)


def test_beta_0_measures_the_kl_but_keeps_it_out_of_the_loss():
    # the beta-0 runs report how far they drift (metrics.jsonl "kl"); the loss and its gradient
    # are the policy gradient's alone, even where k3 overflows (0 x inf would be NaN)
    logp = torch.randn(2, 4, requires_grad=True)
    adv = torch.tensor([2.0, -1.0])
    for ref, want in [(logp.detach() + 0.3, math.exp(0.3) - 1.3), (logp.detach() + 200, math.inf)]:
        loss, pg, kl, _ = grpo_loss(logp, logp.detach(), ref, adv, Objective(beta=0.0, kl_clamp=0))
        assert kl.mean().item() == pytest.approx(want, rel=1e-5) and not kl.requires_grad
        assert torch.equal(loss, pg.mean())
        g, = torch.autograd.grad(loss, logp)
        assert torch.isfinite(g).all()


def test_entropy():
    lp = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.25] * 4]).log()        # contains -inf
    assert torch.allclose(entropy(lp), torch.tensor([math.log(2), math.log(4)]))



# ----------------------------------------------------------------------------- the variants
# Each against its peer's definition, written out here on the same tensors (verl's core_algos,
# TRL's GRPOTrainer), with both signs of the advantage and ratios far from 1.
def verl_dual_clip_loss(ratio, adv, eps, c):
    """verl compute_policy_loss (clip_ratio_c): max(-A r, -A clip(r)), then min(-A c, .) for A < 0."""
    a = adv[:, None]
    clip_pg_losses1 = torch.maximum(-a * ratio, -a * ratio.clamp(1 - eps, 1 + eps))
    return torch.where(a < 0, torch.minimum(-a * c, clip_pg_losses1), clip_pg_losses1)


def trl_loss(ratio, adv, eps, delta):
    """TRL: coef_2 = clamp(coef_1, 1 - eps, 1 + eps); coef_1 = clamp(coef_1, max=delta);
    -min(coef_1 A, coef_2 A)."""
    a = adv[:, None]
    return -torch.minimum(ratio.clamp(max=delta) * a, ratio.clamp(1 - eps, 1 + eps) * a)


def ratios_far_from_one():
    g = torch.Generator().manual_seed(0)
    ratio = torch.exp(3 * torch.randn(6, 5, generator=g))          # 0.01 .. 100
    return ratio, torch.tensor([1.5, -0.5, -2.0, 0.0, 1.0, -1.0])


def test_dual_clip_equals_verl_and_by_hand():
    ratio, adv = ratios_far_from_one()
    ours = clipped_surrogate(ratio, adv, eps=0.2, dual_clip=3.0)
    assert torch.allclose(ours, verl_dual_clip_loss(ratio, adv, 0.2, 3.0))
    # by hand, A = -1: rho 10 -> PPO loss 10, bounded by -c A = 3; rho 2 -> 2 (below the bound)
    r, a = torch.tensor([[10.0, 2.0, 0.5]]), torch.tensor([-1.0])
    assert torch.allclose(clipped_surrogate(r, a, 0.2, dual_clip=3.0), torch.tensor([[3.0, 2.0, 0.8]]))
    # a positive advantage is never dual-clipped
    assert torch.equal(clipped_surrogate(r, -a, 0.2, dual_clip=3.0), clipped_surrogate(r, -a, 0.2))
    d = diagnostics(r, a, r.log(), torch.zeros_like(r), Objective(dual_clip=3.0))
    assert d["dual_clip_frac"] == pytest.approx(1 / 3)


def test_delta_equals_trl_and_by_hand():
    ratio, adv = ratios_far_from_one()
    assert torch.allclose(clipped_surrogate(ratio, adv, eps=0.2, delta=2.0), trl_loss(ratio, adv, 0.2, 2.0))
    # A = -1, rho = 5: PPO's loss is 5, TRL's delta 2 makes it 2; rho 0.5 -> clipped 0.8 either way
    r, a = torch.tensor([[5.0, 0.5]]), torch.tensor([-1.0])
    assert torch.allclose(clipped_surrogate(r, a, 0.2, delta=2.0), torch.tensor([[2.0, 0.8]]))
    assert torch.allclose(clipped_surrogate(r, a, 0.2), torch.tensor([[5.0, 0.8]]))
    d = diagnostics(r, a, r.log(), torch.zeros_like(r), Objective(delta=2.0))
    assert d["delta_frac"] == 0.5


def test_sequence_ratio_is_gspo():
    """GSPO: s_i = exp(mean_t (l - l_old)), one value per image, clipped per image."""
    logp_old = torch.zeros(2, 4)
    logp = torch.tensor([[0.1, 0.3, -0.2, 0.2], [0.0, 0.0, 0.0, 0.4]])
    s = importance_ratio(logp, logp_old, "sequence")
    assert torch.allclose(s, torch.exp(torch.tensor([[0.1] * 4, [0.1] * 4])))
    # TRL's sequence level: log_importance_weights = mean_t log_ratio, unsqueezed
    assert torch.allclose(s, torch.exp((logp - logp_old).mean(-1, keepdim=True)).expand(2, 4))
    # clipped per image with GSPO's small eps: 3e-4 / 4e-4
    loss = clipped_surrogate(s, torch.tensor([1.0, -1.0]), eps=3e-4, eps_high=4e-4)
    assert torch.allclose(loss, torch.tensor([[-(1 + 4e-4)] * 4, [math.exp(0.1)] * 4]))
    # every token's gradient is the image's mean: d s / d l_t = s / N
    lp = logp.clone().requires_grad_()
    importance_ratio(lp, logp_old, "sequence").sum().backward()
    assert torch.allclose(lp.grad, s)                                # 4 tokens x s / 4 each
    d = diagnostics(s, torch.tensor([1.0, -1.0]), logp, logp_old, Objective(ratio_level="sequence"))
    assert d["seq_ratio_std"] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="ratio level"):
        importance_ratio(logp, logp_old, "image")


def test_kl_estimators_by_hand():
    logp = torch.tensor([0.0, 0.0, math.log(2.0)])
    ref = torch.tensor([0.0, math.log(2.0), 0.0])                      # d = 0, log 2, -log 2
    d = ref - logp
    assert torch.allclose(kl_estimate(logp, ref, "k1"), -d)
    assert torch.allclose(kl_estimate(logp, ref, "k2"), 0.5 * d ** 2)
    assert torch.allclose(kl_estimate(logp, ref, "k3"), torch.exp(d) - d - 1)
    # verl: low_var_kl = k3 with d clamped to [-20, 20] and the estimate to [-10, 10]
    far = kl_estimate(torch.zeros(2), torch.tensor([15.0, -30.0]), "k3", clamp=20.0, cap=10.0)
    assert torch.equal(far, torch.tensor([10.0, 10.0]))             # both capped
    uncapped = kl_estimate(torch.zeros(1), torch.tensor([-30.0]), "k3", clamp=20.0)
    assert uncapped.item() == pytest.approx(19.0)                   # d clamped to -20: e^-20 + 19
    assert kl_estimate(torch.zeros(1), torch.tensor([25.0]), "k3", clamp=0).item() == pytest.approx(math.exp(25) - 26)
    with pytest.raises(ValueError, match="KL estimator"):
        kl_estimate(logp, ref, "k4")


@pytest.mark.parametrize("kind", ["k1", "k3"])
def test_k1_k3_are_unbiased(kind):
    g = torch.Generator().manual_seed(1)
    lp, lq = torch.randn(5, generator=g).log_softmax(0), torch.randn(5, generator=g).log_softmax(0)
    x = torch.multinomial(lp.exp(), 200_000, replacement=True, generator=g)
    exact = (lp.exp() * (lp - lq)).sum()
    assert kl_estimate(lp[x], lq[x], kind).mean().item() == pytest.approx(exact.item(), rel=0.03)


def test_kl_in_the_reward():
    """PPO-RLHF: r_i - beta sum_t KL_t; the loss then carries no KL term (it is only measured)."""
    logp_old, ref = torch.zeros(2, 3), torch.tensor([[0.0, 0.1, 0.2], [0.0, 0.0, 0.0]])
    obj = Objective(beta=0.5, kl="k1", kl_in="reward")
    r = kl_penalized_rewards(torch.tensor([1.0, 2.0]), logp_old, ref, obj)
    assert torch.allclose(r, torch.tensor([1.0 + 0.5 * 0.3, 2.0]))      # k1 = -d, summed over tokens
    adv = torch.tensor([1.0, -1.0])
    loss, pg, kl, _ = grpo_loss(logp_old, logp_old, ref, adv, obj)
    assert loss.item() == pytest.approx(pg.mean().item()) and kl.abs().sum() > 0


def test_entropy_bonus_lowers_the_loss_with_a_finite_gradient():
    logits = torch.randn(2, 3, 5).masked_fill(torch.tensor([True, False, False, False, False]), -math.inf)
    logits.requires_grad_()
    lp = logits.log_softmax(-1)
    ent = entropy(lp)                                                  # (2, 3), with grad
    tokens = torch.ones(2, 3, dtype=torch.long)
    logp = lp.gather(-1, tokens[..., None]).squeeze(-1)
    adv = torch.tensor([1.0, -1.0])
    base, *_ = grpo_loss(logp, logp.detach(), logp.detach(), adv, Objective(beta=0.0))
    bonus, *_ = grpo_loss(logp, logp.detach(), logp.detach(), adv, Objective(beta=0.0, entropy_coef=0.1), ent)
    assert bonus.item() == pytest.approx(base.item() - 0.1 * ent.mean().item(), rel=1e-6)
    bonus.backward()
    assert torch.isfinite(logits.grad[..., 1:]).all() and (logits.grad[..., 0] == 0).all()


def test_the_default_objective_is_the_paper_s():
    """With the defaults every variant is off: the loss equals the plain formula of the docstring."""
    g = torch.Generator().manual_seed(3)
    logp, old, ref = (torch.randn(3, 4, generator=g) for _ in range(3))
    adv = torch.randn(3, generator=g)
    loss, *_ = grpo_loss(logp, old, ref, adv, Objective(beta=0.1))
    rho, a, d = torch.exp(logp - old), adv[:, None], (ref - logp).clamp(-20, 20)
    want = (-torch.minimum(rho * a, rho.clamp(0.8, 1.2) * a) + 0.1 * (torch.exp(d) - d - 1)).mean()
    assert torch.equal(loss, want)
