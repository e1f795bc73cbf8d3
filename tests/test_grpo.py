"""The GRPO math on small tensors whose answers can be checked by hand."""
import math

import pytest
import torch

from grpo import clipped_surrogate, diagnostics, entropy, group_advantages, grpo_loss, k3_kl


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


def test_global_std():
    r = torch.tensor([0.0, 2.0, 10.0, 14.0])
    adv, zero_frac = group_advantages(r, group_size=2, eps=0.0, std="global")
    sd = r.std()                                         # unbiased over all 4
    assert torch.allclose(adv, torch.tensor([-1.0, 1.0, -2.0, 2.0]) / sd)
    assert zero_frac == 0.0


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
    loss, r = clipped_surrogate(ratio.log(), logp_old, adv, eps=0.2)
    assert torch.allclose(r, ratio)
    # A > 0: min(rho A, clip(rho) A) -> 0.5 (unclipped is smaller), 1.0, 1.2 (clipped)
    # A < 0: min(-rho, -clip(rho)) -> -0.8 (clipped), -1.0, -1.5 (unclipped)
    assert torch.allclose(loss, -torch.tensor([[0.5, 1.0, 1.2], [-0.8, -1.0, -1.5]]))
    # separate upper eps
    loss, _ = clipped_surrogate(ratio.log(), logp_old, adv, eps=0.2, eps_high=0.28)
    assert torch.allclose(loss[0], -torch.tensor([0.5, 1.0, 1.28]))
    # the clipped side has no gradient, the unclipped side has d/dlogp = -rho A
    logp = ratio.log().requires_grad_()
    clipped_surrogate(logp, logp_old, adv, eps=0.2)[0].sum().backward()
    assert torch.allclose(logp.grad, torch.tensor([[-0.5, -1.0, 0.0], [0.0, 1.0, 1.5]]))
    d = diagnostics(ratio, adv, ratio.log(), logp_old, eps=0.2)
    assert d["clip_frac"] == pytest.approx(2 / 6)       # (row 0, 1.5) and (row 1, 0.5)
    assert d["ratio_min"] == 0.5 and d["ratio_max"] == 1.5 and d["ratio_mean"] == pytest.approx(1.0)
    want = ((ratio - 1) - ratio.log()).mean().item()
    assert d["approx_kl_old"] == pytest.approx(want, rel=1e-5)


def test_aggregation_and_full_loss():
    # on-policy (rho = 1), reference = policy: loss = -mean_t A = -mean over tokens of each row's A
    logp = torch.randn(2, 4)
    adv = torch.tensor([2.0, -1.0])
    loss, pg, kl, ratio = grpo_loss(logp, logp, logp, adv, beta=0.1)
    assert loss.item() == pytest.approx(-0.5) and kl.abs().max() == 0 and torch.equal(ratio, torch.ones(2, 4))
    # KL term adds beta * k3
    ref = logp + 0.3
    loss2, _, kl, _ = grpo_loss(logp, logp, ref, adv, beta=0.1)
    assert loss2.item() == pytest.approx(-0.5 + 0.1 * (math.exp(0.3) - 1.3), rel=1e-5)


def test_entropy():
    lp = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.25] * 4]).log()        # contains -inf
    assert torch.allclose(entropy(lp), torch.tensor([math.log(2), math.log(4)]))
