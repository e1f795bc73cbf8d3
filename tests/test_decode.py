"""The sampler's speed paths: the compiled decode step gives the eager tokens, the static full-cache
attention (CUDA graphs) equals the prefix attention, activation checkpointing leaves the gradients alone."""
import pytest
import torch

from model import GPT, KVCache, Sampling, cfg_logits, generate, gpt_config
from plumbing.compiled import attend_full, attend_prefix
from text import TextEncoder


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = GPT(gpt_config("GPT-tiny")).eval()
    with torch.no_grad():  # sharper than the 0.02-std init: sampled tokens depend on the logits
        model.output.weight.mul_(30)
    return model


@pytest.mark.parametrize("kw", [dict(top_k=1), dict(temperature=1.0)], ids=["greedy", "sampled"])
def test_compiled_decode_gives_the_eager_tokens(tiny, kw):
    # one inductor graph per setting (the first pays inductor's start-up: ~30 s on 2 CPU cores)
    cond = torch.tensor([1, 2, 3, 9])
    s = Sampling(cfg_scale=2.0, **kw)
    run = lambda compile: generate(tiny, cond, s, generator=torch.Generator().manual_seed(0),
                                   return_logprobs=True, compile=compile)
    (t_eager, lp_eager), (t_comp, lp_comp) = run(False), run(True)
    assert torch.equal(t_comp, t_eager)
    assert (lp_comp - lp_eager).abs().max() < 1e-5
    assert torch.equal(run(True)[0], t_eager)  # the cached graph: again the same tokens
    if kw.get("top_k") == 1:  # greedy: also the teacher-forced argmax
        with torch.no_grad():
            assert torch.equal(cfg_logits(tiny, cond, t_comp, s).argmax(-1), t_comp)


def test_full_cache_attention_equals_prefix_attention():
    """The CUDA-graph path attends over the whole cache behind the mask; the host path over the filled
    prefix. Same result, whatever stale values lie past the position (a reused static cache)."""
    torch.manual_seed(0)
    model = GPT(gpt_config("GPT-tiny", model_type="t2i")).eval()
    _, cond_mask = TextEncoder.tiny(32)(["a red cat", "x"])
    B, H, S, hd, T = 2, 4, 120 + 16, 16, 120
    for pos in (torch.arange(0, T), torch.tensor([T + 5])):  # the prefill, then one decode step
        L = len(pos)
        q, k, v = (torch.randn(B, H, L, hd) for _ in range(3))
        kc = torch.randn(B, H, S, hd)  # stale values everywhere
        vc = torch.randn(B, H, S, hd)
        kc2, vc2 = kc.clone(), vc.clone()
        mask = model.cache_mask(cond_mask, pos, S)  # (B, 1, L, S)
        y_prefix = attend_prefix(q, k, v, kc, vc, pos, mask)
        y_full = attend_full(q, k, v, kc2, vc2, pos, mask)
        assert torch.allclose(y_prefix, y_full, atol=1e-6)
        assert torch.equal(kc[:, :, pos], k) and torch.equal(kc2, kc) and torch.equal(vc2, vc)


def test_compiled_cache_op_is_the_eager_cache():
    """The compiled CPU step's opaque op (plumbing/compiled.py) does what model.KVCache.attend does,
    bit for bit: the same writes, the same attention over the filled prefix."""
    torch.manual_seed(0)
    B, H, S, hd = 2, 4, 20, 16
    for pos in (torch.arange(0, 4), torch.tensor([9])):
        q, k, v = (torch.randn(B, H, len(pos), hd) for _ in range(3))
        mask = torch.rand(B, 1, len(pos), S) > 0.3
        eager = KVCache(torch.randn(B, H, S, hd), torch.randn(B, H, S, hd))
        kc, vc = eager.k.clone(), eager.v.clone()
        assert torch.equal(eager.attend(q, k, v, pos, mask), attend_prefix(q, k, v, kc, vc, pos, mask))
        assert torch.equal(eager.k, kc) and torch.equal(eager.v, vc)


def test_full_cache_write_casts_like_the_eager_write():
    """Under bf16 autocast (a GPU run with --compile) k, v arrive in bf16 while the cache holds the
    weights' fp32: the CUDA-graph write casts them as the host path's slice assignment does."""
    torch.manual_seed(0)
    B, H, S, hd = 2, 4, 24, 16
    pos, mask = torch.tensor([7]), torch.ones(1, 1, 1, S, dtype=torch.bool)
    q, k, v = (torch.randn(B, H, 1, hd).bfloat16() for _ in range(3))
    kc, vc = torch.zeros(B, H, S, hd), torch.zeros(B, H, S, hd)
    kc2, vc2 = kc.clone(), vc.clone()
    attend_prefix(q.float(), k, v, kc, vc, pos, mask)
    attend_full(q.float(), k, v, kc2, vc2, pos, mask)
    assert kc2.dtype == torch.float32 and torch.equal(kc2, kc) and torch.equal(vc2, vc)


def test_grad_checkpoint_same_loss_and_gradients():
    torch.manual_seed(0)
    model = GPT(gpt_config("GPT-tiny")).eval()
    cond, tokens = torch.tensor([1, 5, 7]), torch.randint(0, 64, (3, 16))
    grads = []
    for ckpt in (False, True):
        model.grad_checkpoint = ckpt
        model.zero_grad()
        loss = cfg_logits(model, cond, tokens, Sampling(cfg_scale=2.0)).log_softmax(-1).gather(-1, tokens[..., None]).mean()
        loss.backward()
        grads.append((loss.item(), [p.grad.clone() for p in model.parameters()]))
    (l0, g0), (l1, g1) = grads
    assert l0 == l1 and all(torch.allclose(a, b, atol=1e-7) for a, b in zip(g0, g1))
