"""model.py: LlamaGen's autoregressive image generator (GPT), its CFG sampler with a KV cache.

The model (Sun et al. 2024, "Autoregressive Model Beats Diffusion", LlamaGen) is a Llama decoder
over VQ image tokens, raster order, prefixed by condition tokens:

    h_0 = [cond tokens (T), tok_emb(x_1 .. x_{N-1})]          T = 1 (class) or 120 (T5 caption)
    h_l = h + Attn(RMSNorm(h)) ; h_{l+1} = h_l + SwiGLU(RMSNorm(h_l))
    p(x_i | c, x_<i) = softmax(W_out RMSNorm(h_L)[T - 1 + i])

with 2D RoPE (row index on the first half of each head, column on the second half) and the
LlamaGen quirk that the condition positions get cos = sin = 0: their queries and keys are exactly
zero, so the condition reaches the image only through the attention values. The released weights
rely on it.

Classifier-free guidance (CFG) runs the condition and the null condition in one batch and samples
from

    l_guided = l_uncond + s (l_cond - l_uncond)        then temperature, top-k, top-p, multinomial.

Top to bottom: config, RoPE, attention and its KV cache, blocks, GPT (teacher forcing), then the
sampler: `guide` (the CFG mix, shared with `cfg_logits`, the guided logits by teacher forcing
that GRPO scores samples with), `generate` = `prefill` + `decode_step` per token. With
compile=True the same step runs through torch.compile (plumbing/compiled.py). Parameter names
are the official ones: released checkpoints load unchanged (`load_gpt`).

    python -c "from model import *; print(generate(GPT(gpt_config('GPT-tiny')), torch.tensor([1])))"
"""
import math
import os
from dataclasses import dataclass, replace
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

from plumbing import compiled
from plumbing.formats import check_keys, read_gpt


# ----------------------------------------------------------------------------- config

@dataclass
class GPTConfig:  # field names as LlamaGen's ModelArgs
    dim: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_kv_head: Optional[int] = None
    multiple_of: int = 256
    ffn_dim_multiplier: Optional[float] = None
    rope_base: float = 10000
    norm_eps: float = 1e-5
    initializer_range: float = 0.02
    token_dropout_p: float = 0.1
    attn_dropout_p: float = 0.0
    resid_dropout_p: float = 0.1
    ffn_dropout_p: float = 0.1
    num_classes: int = 1000
    caption_dim: int = 2048
    class_dropout_prob: float = 0.1  # > 0 adds the null-class row used by CFG
    model_type: str = "c2i"
    vocab_size: int = 16384
    cls_token_num: int = 1
    block_size: int = 256  # image tokens: (image_size / 16) ** 2

    def __post_init__(self):
        self.n_kv_head = self.n_kv_head or self.n_head
        if self.model_type not in ("c2i", "t2i"):
            raise ValueError(f"model_type must be 'c2i' or 't2i', got {self.model_type!r}")
        if math.isqrt(self.block_size) ** 2 != self.block_size:
            raise ValueError(f"block_size {self.block_size} is not a square token grid")


GPT_PRESETS = {
    "GPT-B": dict(n_layer=12, n_head=12, dim=768),      # 111M
    "GPT-L": dict(n_layer=24, n_head=16, dim=1024),     # 343M
    "GPT-XL": dict(n_layer=36, n_head=20, dim=1280),    # 775M
    "GPT-XXL": dict(n_layer=48, n_head=24, dim=1536),   # 1.4B
    "GPT-3B": dict(n_layer=24, n_head=32, dim=3200),    # 3.1B
    "GPT-tiny": dict(n_layer=2, n_head=4, dim=64, multiple_of=32, vocab_size=64, num_classes=10,
                     caption_dim=32, block_size=16),  # CPU tests and the tiny training preset
    "GPT-mnist": dict(n_layer=4, n_head=4, dim=96, multiple_of=32, vocab_size=256, num_classes=10,
                      block_size=49),  # 0.5M, the mnist preset, pretrained on a CPU in minutes
}


def gpt_config(preset, **overrides):
    if preset not in GPT_PRESETS:
        raise ValueError(f"unknown GPT preset {preset!r}; choose from {', '.join(GPT_PRESETS)}")
    if overrides.get("model_type") == "t2i":
        overrides.setdefault("cls_token_num", 120)
    return GPTConfig(**{**GPT_PRESETS[preset], **overrides})


def find_multiple(n, k):
    return n if n % k == 0 else n + k - n % k


# ----------------------------------------------------------------------------- RoPE

def rope_2d(grid, head_dim, base, n_cond):
    """Rotations (n_cond + grid*grid, head_dim // 2) as unit complex numbers cos + i sin: the row
    index on the first head_dim/4 frequencies, the column index on the last; n_cond leading zero
    rows."""
    half, cpu = head_dim // 2, torch.device("cpu")  # on the host even when built on meta
    freqs = 1.0 / (base ** (torch.arange(0, half, 2, device=cpu)[: half // 2].float() / half))
    f = torch.outer(torch.arange(grid, device=cpu).float(), freqs)  # (grid, head_dim/4)
    rows, cols = f[:, None].expand(-1, grid, -1), f[None].expand(grid, -1, -1)
    ang = torch.cat([rows, cols], -1).flatten(0, 1)  # (grid*grid, head_dim/2)
    # the quirk: cos = sin = 0 for the condition positions
    zeros = torch.zeros(n_cond, half, dtype=torch.complex64, device=cpu)
    return torch.cat([zeros, torch.polar(torch.ones_like(ang), ang)])


def apply_rope(x, rot):
    """Rotate interleaved pairs (x[2j], x[2j+1]) of x (B, L, H, D) by rot (L, 1, D/2, 2) =
    (cos, sin), in fp32: (x0 + i x1)(cos + i sin) = (x0 cos - x1 sin) + i (x1 cos + x0 sin).
    Real arithmetic, not complex tensors: torch.compile's inductor generates no code for complex
    ops."""
    x0, x1 = x.float().unflatten(-1, (-1, 2)).unbind(-1)  # (B, L, H, D/2) each
    cos, sin = rot.unbind(-1)  # (L, 1, D/2) each
    return torch.stack([x0 * cos - x1 * sin, x1 * cos + x0 * sin], -1).flatten(3).type_as(x)


# ----------------------------------------------------------------------------- attention

class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps, self.weight = eps, nn.Parameter(torch.ones(dim))

    def forward(self, x):  # x * rsqrt(mean(x^2) + eps) in fp32 (as LlamaGen), scaled in x's dtype
        return F.rms_norm(x.float(), x.shape[-1:], eps=self.eps).type_as(x) * self.weight


class Attention(nn.Module):
    def __init__(self, c: GPTConfig):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = c.n_head, c.n_kv_head, c.dim // c.n_head
        qkv_heads = c.n_head + 2 * self.n_kv_head  # fused [q | k | v]
        self.wqkv = nn.Linear(c.dim, qkv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(c.dim, c.dim, bias=False)
        self.attn_p, self.resid_p = c.attn_dropout_p, c.resid_dropout_p

    def forward(self, x, rot, mask=None, cache=None, pos=None):
        B, L, _ = x.shape
        qkv = self.wqkv(x).view(B, L, self.n_head + 2 * self.n_kv_head, self.head_dim)
        nqk = self.n_head + self.n_kv_head
        qk = apply_rope(qkv[:, :, :nqk], rot).transpose(1, 2)  # q and k rotated in one go
        q, k = qk[:, :self.n_head], qk[:, self.n_head:]  # (B, H, L, hd), (B, Hkv, L, hd)
        v = qkv[:, :, nqk:].transpose(1, 2)  # (B, Hkv, L, hd)
        if cache is not None:  # sampling: this step's k, v into the cache, attend over it
            y = cache.attend(q, k, v, pos, mask)
        else:  # teacher forcing: causal, or the caption mask
            y = sdpa(q, k, v, mask, is_causal=mask is None and L > 1,
                     dropout_p=self.attn_p if self.training else 0.0)
        return F.dropout(self.wo(y.transpose(1, 2).reshape(B, L, -1)), self.resid_p, self.training)


def sdpa(q, k, v, mask, **kw):  # q (B, H, L, hd), k, v (B, Hkv, S, hd) -> (B, H, L, hd)
    if k.shape[1] != q.shape[1]:  # grouped-query attention: each k, v head serves H / Hkv queries
        k, v = (t.repeat_interleave(q.shape[1] // k.shape[1], dim=1) for t in (k, v))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, **kw)


class KVCache:
    """One layer's keys and values for the sampler, gpt-fast style: k, v (B, Hkv, S, hd) for the
    S = T + N positions. `attend` writes this step's k, v at the host positions pos (L,) and
    attends over the filled prefix only (on a CPU that read is the bandwidth that counts)."""

    def __init__(self, k, v):
        self.k, self.v = k, v

    def attend(self, q, k, v, pos, mask):  # mask (B or 1, 1, L, S)
        start, n = int(pos[0]), int(pos[-1]) + 1  # pos lives on the host: no device sync
        self.k[:, :, start:n], self.v[:, :, start:n] = k, v
        return sdpa(q, self.k[:, :, :n], self.v[:, :, :n], mask[..., :n])

    def rows(self, n):  # the first n sequences (CFG's null half dropped once guidance ends)
        return KVCache(self.k[:n], self.v[:n])


# ----------------------------------------------------------------------------- blocks

class FeedForward(nn.Module):  # SwiGLU: w2(silu(w1 x) * w3 x)
    def __init__(self, c: GPTConfig):
        super().__init__()
        hidden = int(2 * 4 * c.dim / 3)
        if c.ffn_dim_multiplier is not None:
            hidden = int(c.ffn_dim_multiplier * hidden)
        hidden = find_multiple(hidden, c.multiple_of)
        self.w1 = nn.Linear(c.dim, hidden, bias=False)
        self.w3 = nn.Linear(c.dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, c.dim, bias=False)
        self.p = c.ffn_dropout_p

    def forward(self, x):
        return F.dropout(self.w2(F.silu(self.w1(x)) * self.w3(x)), self.p, self.training)


class Block(nn.Module):
    def __init__(self, c: GPTConfig):
        super().__init__()
        self.attention = Attention(c)
        self.feed_forward = FeedForward(c)
        self.attention_norm = RMSNorm(c.dim, c.norm_eps)
        self.ffn_norm = RMSNorm(c.dim, c.norm_eps)

    def forward(self, x, rot, mask=None, cache=None, pos=None):
        h = x + self.attention(self.attention_norm(x), rot, mask, cache, pos)
        return h + self.feed_forward(self.ffn_norm(h))


class ClassEmbedder(nn.Module):  # C2I: one token per class; row num_classes is the CFG null class
    def __init__(self, c: GPTConfig):
        super().__init__()
        self.embedding_table = nn.Embedding(c.num_classes + int(c.class_dropout_prob > 0), c.dim)

    def forward(self, labels):  # (B,) -> (B, 1, D)
        return self.embedding_table(labels).unsqueeze(1)


class CaptionMLP(nn.Module):
    def __init__(self, c: GPTConfig):
        super().__init__()
        self.fc1 = nn.Linear(c.caption_dim, c.dim, bias=False)
        self.fc2 = nn.Linear(c.dim, c.dim, bias=False)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class CaptionEmbedder(nn.Module):  # T2I: T5 features (B, 120, caption_dim) -> (B, 120, D)
    def __init__(self, c: GPTConfig):
        super().__init__()
        self.cap_proj = CaptionMLP(c)
        # the CFG null caption; a buffer in the released checkpoints
        null_caption = torch.randn(c.cls_token_num, c.caption_dim) / c.caption_dim ** 0.5
        self.register_buffer("uncond_embedding", null_caption)

    def forward(self, caps):
        return self.cap_proj(caps)


# ----------------------------------------------------------------------------- GPT

def key_mask(cond_mask, n):
    """Which of n key positions may be attended (B, n): the caption mask, then every image token."""
    image = cond_mask.new_ones(len(cond_mask), n - cond_mask.shape[1], dtype=torch.bool)
    return torch.cat([cond_mask.bool(), image], 1)


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        c = self.config = config
        self.cls_embedding = ClassEmbedder(c) if c.model_type == "c2i" else CaptionEmbedder(c)
        self.tok_embeddings = nn.Embedding(c.vocab_size, c.dim)
        self.layers = nn.ModuleList(Block(c) for _ in range(c.n_layer))
        self.norm = RMSNorm(c.dim, c.norm_eps)
        self.output = nn.Linear(c.dim, c.vocab_size, bias=False)
        # a plain attribute, not a buffer: it stays complex64 (fp32) when the model is cast to bf16
        self.rope = rope_2d(math.isqrt(c.block_size), c.dim // c.n_head, c.rope_base,
                            c.cls_token_num)
        self.apply(self._init)
        # True: recompute activations in the backward pass (train.py --grad-checkpoint)
        self.grad_checkpoint = False

    def rotations(self, start, L, device):  # (L, 1, head_dim/2, 2): cos, sin of start..start+L-1
        if self.rope.device != device:
            self.rope = self.rope.to(device)
        return torch.view_as_real(self.rope[start:start + L, None])

    def _init(self, m):  # random weights (tests, tiny runs); released weights overwrite them
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=self.config.initializer_range)

    def null_cond(self, cond):  # the CFG null condition: the null class, or the null caption
        if self.config.model_type == "c2i":
            return torch.full_like(cond, self.config.num_classes)
        return self.cls_embedding.uncond_embedding.to(cond.dtype).expand_as(cond)

    def embed_cond(self, cond):  # (B,) ids or (B, T, C) feats -> (B, T, D)
        c, shape = self.config, tuple(cond.shape)
        if c.model_type == "c2i":
            if cond.dtype not in (torch.int32, torch.int64) or cond.dim() != 1:
                raise ValueError(f"c2i expects class ids of shape (B,), got {cond.dtype} {shape}")
            if len(cond) and (cond.min() < 0 or cond.max() > c.num_classes):
                raise ValueError(f"class id out of range [0, {c.num_classes}): {cond.tolist()}")
            return self.cls_embedding(cond)
        if cond.dim() != 3 or shape[1:] != (c.cls_token_num, c.caption_dim):
            raise ValueError(f"t2i expects caption features (B, {c.cls_token_num}, "
                             f"{c.caption_dim}), got {shape}")
        return self.cls_embedding(cond.to(self.tok_embeddings.weight.dtype))

    def attn_mask(self, cond_mask, L, pad_self_attend=True):
        """Boolean mask (B, 1, L, L), or None (c2i): causal, padded caption columns off, the
        diagonal on. pad_self_attend=False (AR-GRPO's teacher-forced pass): a padded caption row
        does not see itself (it needs a real row before it: right padding)."""
        if cond_mask is None:
            return None
        keys = key_mask(cond_mask, L)  # (B, L)
        q = torch.arange(L, device=keys.device)[:, None]  # query positions (L, 1)
        k = torch.arange(L, device=keys.device)[None]  # key positions (1, L)
        return ((keys[:, None] & (k <= q)) | ((k == q) & pad_self_attend))[:, None]

    def cache_mask(self, cond_mask, pos, S):
        """Boolean mask (B or 1, 1, L, S) for queries at positions pos (L,) over a KV cache of S
        positions: keys at or before the query, padded caption columns off, the diagonal always
        on (as attn_mask)."""
        k = torch.arange(S, device=pos.device)[None]  # (1, S)
        causal = k <= pos[:, None]  # (L, S)
        if cond_mask is None:
            return causal[None, None]
        keys = key_mask(cond_mask, S)  # (B, S)
        return ((keys[:, None] & causal) | (k == pos[:, None]))[:, None]

    def forward(self, cond, tokens, cond_mask=None, pad_self_attend=True):
        """Teacher forcing: (B,) or (B, T, C) cond, tokens (B, N) -> logits (B, N, V), fp32;
        logits[:, i] predicts tokens[:, i] from the condition and tokens[:, :i]."""
        T = self.config.cls_token_num
        tok = self.tok_embeddings(tokens[:, :-1])
        h = torch.cat([self.embed_cond(cond), tok], 1)  # (B, T+N-1, D)
        h = F.dropout(h, self.config.token_dropout_p, self.training)
        L = h.shape[1]
        rot = self.rotations(0, L, h.device)
        mask = self.attn_mask(cond_mask, L, pad_self_attend=pad_self_attend)
        for layer in self.layers:
            if self.grad_checkpoint and torch.is_grad_enabled():
                # keep only each layer's input for the backward pass
                h = torch.utils.checkpoint.checkpoint(layer, h, rot, mask, use_reentrant=False)
            else:
                h = layer(h, rot, mask)
        return self.output(self.norm(h[:, T - 1:])).float()


# ----------------------------------------------------------------------------- sampling

@dataclass(frozen=True)
class Sampling:
    """The sampler's settings (LlamaGen's names). The paper samples with CFG 2.0 (c2i), the rest
    off: temperature 1, top-k 0, top-p 1, guidance at every token."""
    cfg_scale: float = 1.0    # 1 = no guidance
    temperature: float = 1.0
    top_k: int = 0            # 0 = off
    top_p: float = 1.0        # 1 = off
    cfg_interval: int = -1    # guidance stops after token cfg_interval + 1 (-1 = never)

    @classmethod
    def of(cls, args):
        """The settings from parsed flags of the same names (--cfg-scale, ...)."""
        return cls(args.cfg_scale, args.temperature, args.top_k, args.top_p, args.cfg_interval)


def guide(cond_logits, null_logits, scale):
    """Classifier-free guidance, LlamaGen's formula: l_uncond + (l_cond - l_uncond) * scale."""
    return null_logits + (cond_logits - null_logits) * scale


def cfg_logits(model, cond, tokens, s, cond_mask=None, pad_self_attend=True):
    """Teacher-forced guided logits (B, N, V): what `generate` samples from with the settings s,
    before temperature etc."""
    if s.cfg_scale == 1.0:
        return model(cond, tokens, cond_mask, pad_self_attend)
    B = len(tokens)
    null = getattr(model, "module", model).null_cond(cond)  # `module`: a DDP-wrapped GPT
    mask2 = None if cond_mask is None else torch.cat([cond_mask, cond_mask])
    both = model(torch.cat([cond, null]), torch.cat([tokens, tokens]), mask2, pad_self_attend)
    lc, lu = both[:B], both[B:]
    guided = guide(lc, lu, s.cfg_scale)
    if s.cfg_interval > -1:  # the official sampler stops guiding after token cfg_interval + 1
        keep = torch.arange(tokens.shape[1], device=tokens.device) <= s.cfg_interval + 1
        guided = torch.where(keep[None, :, None], guided, lc)
    return guided


def sampling_logprobs(logits, s):
    """Log-probs (..., V) of the sampling distribution: temperature, then top-k, then top-p
    (nucleus), as LlamaGen's `sample`; tokens outside the kept set get -inf."""
    logits = logits.float() / max(s.temperature, 1e-5)
    if s.top_k > 0:
        kth = torch.topk(logits, min(s.top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if s.top_p < 1.0:
        srt, idx = torch.sort(logits, descending=True, dim=-1)
        drop = srt.softmax(-1).cumsum(-1) > s.top_p
        drop[..., 1:] = drop[..., :-1].clone()  # keep the token that crosses top_p
        drop[..., 0] = False
        logits = logits.masked_fill(drop.scatter(-1, idx, drop), float("-inf"))
    return logits.log_softmax(-1)


def sample_next(logits, u, s):
    """One token per row of sampling_logprobs(logits) (B, V) by inverse CDF with the uniforms u
    (B, 1): torch.multinomial's distribution at ~1/30 of its CPU cost at V = 16384 (right=True
    never lands on a zero-probability token). -> (token (B, 1), its log-prob (B, 1))."""
    logp = sampling_logprobs(logits, s)  # (B, V)
    # compiled on a GPU, the draw runs eagerly between two CUDA graphs (plumbing/compiled.py)
    draw = compiled.eager(inverse_cdf) if logits.is_cuda else inverse_cdf
    nxt = draw(logp.exp(), u).clamp_(max=logits.shape[-1] - 1)
    return nxt, logp.gather(1, nxt)


def inverse_cdf(p, u):  # p (B, V) unnormalised probabilities, u (B, 1) uniforms -> (B, 1) indices
    cdf = p.cumsum(-1)
    return torch.searchsorted(cdf, u * cdf[:, -1:], right=True)


# ----------------------------------------------------------------------------- decoding

def next_logits(model, x, pos, rot, caches, cond_mask, n_images, cfg_scale):
    """Embeddings x (B2, L, D) at positions pos (L,) with rotations rot through every layer (each
    writing its KV cache) -> the guided logits (n_images, V) of the token after the last position.
    With CFG (cfg_scale != 1) rows [n_images:] of x are the null condition of rows [:n_images]."""
    mask = model.cache_mask(cond_mask, pos.to(x.device), caches[0].k.shape[2])  # (B2|1, 1, L, S)
    for layer, cache in zip(model.layers, caches):
        x = layer(x, rot, mask, cache, pos)
    logits = model.output(model.norm(x[:, -1])).float()  # (B2, V)
    if cfg_scale != 1.0:
        logits = guide(logits[:n_images], logits[n_images:], cfg_scale)
    return logits


def prefill(model, cond, caches, cond_mask, u, pos_device, s):
    """The first sampler step: the T condition tokens of cond (B2,) or (B2, T, C) into the KV
    caches at once, then the first image token of each of the B = len(u) images (always eager)."""
    x = model.embed_cond(cond)  # (B2, T, D)
    T = x.shape[1]
    pos, rot = torch.arange(T, device=pos_device), model.rotations(0, T, x.device)
    logits = next_logits(model, x, pos, rot, caches, cond_mask, len(u), s.cfg_scale)
    return sample_next(logits, u, s)


def decode_step(model, x, pos, rot, caches, cond_mask, u, s):
    """One step after the prefill: the last tokens' embeddings x (B2, 1, D) at position pos (1,)
    into the KV caches, then the next token of each image and its log-prob. No shape depends on
    the position: torch.compile traces one graph for all N - 1 steps."""
    logits = next_logits(model, x, pos, rot, caches, cond_mask, len(u), s.cfg_scale)
    return sample_next(logits, u, s)


@torch.no_grad()
def generate(model, cond, s=Sampling(), cond_mask=None, generator=None, return_logprobs=False,
             compile=False):
    """Sample (B, N) image tokens with a KV cache; CFG runs [cond; null] as one batch. With
    return_logprobs, also the (B, N) log-prob of each token under the distribution it was drawn
    from. compile=True: the same tokens through torch.compile'd steps (docs/performance.md)."""
    c, B, N, T = model.config, len(cond), model.config.block_size, model.config.cls_token_num
    if c.model_type == "c2i" and len(cond) and (cond.min() < 0 or cond.max() >= c.num_classes):
        raise ValueError(f"class id out of range [0, {c.num_classes}): {cond.tolist()}")
    guided = s.cfg_scale != 1.0
    if guided:
        cond = torch.cat([cond, model.null_cond(cond)])
        cond_mask = None if cond_mask is None else torch.cat([cond_mask, cond_mask])
    w = model.tok_embeddings.weight
    shape = (len(cond), c.n_kv_head, T + N, c.dim // c.n_head)  # each layer's k and v
    if compile:  # fixed-shape caches and a compiled step (plumbing/compiled.py)
        caches, step, pos_dev = compiled.decoding(model, decode_step, c.n_layer, shape, w)
    else:  # positions live on the host
        caches = [KVCache(w.new_zeros(shape), w.new_zeros(shape)) for _ in range(c.n_layer)]
        step, pos_dev = decode_step, torch.device("cpu")
    tokens = torch.empty(B, N, dtype=torch.long, device=w.device)
    logprobs = torch.empty(B, N, dtype=torch.float32, device=w.device)

    u = torch.rand(B, 1, generator=generator, device=w.device)  # one uniform per image and token
    nxt, lp = prefill(model, cond, caches, cond_mask, u, pos_dev, s)  # (B, 1) each
    tokens[:, :1], logprobs[:, :1] = nxt, lp
    for i in range(1, N):  # token i from token i - 1, at position T + i - 1
        if guided and s.cfg_interval > -1 and i > s.cfg_interval + 1:
            # guidance is over for good: drop the null half of the batch and its cache
            guided, s, caches = False, replace(s, cfg_scale=1.0), [k.rows(B) for k in caches]
            cond_mask = None if cond_mask is None else cond_mask[:B]
        x = model.tok_embeddings(torch.cat([nxt, nxt]) if guided else nxt)  # (B2, 1, D)
        u = torch.rand(B, 1, generator=generator, device=w.device)
        pos = torch.arange(T + i - 1, T + i, device=pos_dev)
        rot = model.rotations(T + i - 1, 1, w.device)
        nxt, lp = step(model, x, pos, rot, caches, cond_mask, u, s)  # (B, 1) each
        tokens[:, i:i + 1], logprobs[:, i:i + 1] = nxt, lp
    return (tokens, logprobs) if return_logprobs else tokens


# ----------------------------------------------------------------------------- loading

HEADS_BY_DIM = {p["dim"]: p["n_head"] for p in GPT_PRESETS.values()}


def load_gpt(ckpt, image_size=None, device="cpu", config=None, flag="--gpt-ckpt"):
    """A GPT from a released file / name or a checkpoint of ours (which stores its config); every
    released layout and the resolution check: plumbing/formats.py (read_gpt)."""
    path, sd, config = read_gpt(ckpt, GPTConfig, HEADS_BY_DIM, image_size, config, flag)
    with torch.device("meta"):
        model = GPT(config)
    check_keys(model, sd, what=os.path.basename(path))
    model.load_state_dict(sd, strict=True, assign=True)  # take the loaded tensors, no second copy
    return model.to(device).eval()
