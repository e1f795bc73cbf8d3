"""LlamaGen's VQ image tokenizer (VQ-16 / VQ-8), inference only: images <-> token grids.

    encode:  x (B, 3, H, W) in [-1, 1] -> Encoder -> quant_conv -> z (B, 8, h, w)
             code = argmin_k || z/|z| - e_k/|e_k| ||^2      (both L2-normalised, codebook 16384 x 8)
    decode:  code (B, h, w) -> e_code/|e_code| -> post_quant_conv -> Decoder
             -> x (B, 3, H, W) ~ [-1, 1]

The encoder/decoder are the taming-style conv nets with LlamaGen's own module names
(`conv_blocks.{i}.res/attn/downsample|upsample`, `mid.{0,1,2}`), GroupNorm(32, eps 1e-6) and swish,
so the released `vq_ds16_c2i.pt` / `vq_ds16_t2i.pt` load unchanged. h = H / 2^(len(ch_mult) - 1).

    python -c "from vq import *; m = VQModel(VQ_PRESETS['VQ-tiny']); x = torch.rand(1, 3, 32, 32);
print(m.decode(m.encode(2 * x - 1)).shape)"
"""
import os
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from plumbing.formats import check_keys, read
from plumbing.weights import BadCheckpoint


@dataclass
class VQConfig:
    base_channels: int = 128  # LlamaGen's `ch`
    ch_mult: tuple = (1, 1, 2, 2, 4)  # for the encoder; the decoder uses it reversed
    z_channels: int = 256
    codebook_size: int = 16384
    codebook_embed_dim: int = 8
    num_res_blocks: int = 2

    def __post_init__(self):
        self.ch_mult = tuple(self.ch_mult)

    @property
    def downsample(self):
        return 2 ** (len(self.ch_mult) - 1)


VQ_PRESETS = {
    "VQ-16": VQConfig(),
    "VQ-8": VQConfig(ch_mult=(1, 2, 2, 4)),
    # downsample 4, for the tests
    "VQ-tiny": VQConfig(base_channels=32, ch_mult=(1, 1, 2), z_channels=16, codebook_size=64),
}


def Normalize(c):
    return nn.GroupNorm(32, c, eps=1e-6)


class ResnetBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.norm1, self.conv1 = Normalize(cin), nn.Conv2d(cin, cout, 3, 1, 1)
        self.norm2, self.conv2 = Normalize(cout), nn.Conv2d(cout, cout, 3, 1, 1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class AttnBlock(nn.Module):  # single-head self-attention over the h*w positions
    def __init__(self, c):
        super().__init__()
        self.norm = Normalize(c)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x):
        B, C, H, W = x.shape
        h = self.norm(x)
        q, k, v = (f(h).flatten(2).transpose(1, 2) for f in (self.q, self.k, self.v))  # (B, HW, C)
        # one head of width C: the scale is 1/sqrt(C)
        y = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        return x + self.proj_out(y.transpose(1, 2).reshape(B, C, H, W))


class Downsample(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 2, 0)

    def forward(self, x):  # asymmetric pad (right, bottom), then stride-2 conv
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 1, 1)

    def forward(self, x):
        return self.conv(F.interpolate(x.float(), scale_factor=2.0, mode="nearest").to(x.dtype))


def level(res, attn, resample=None):
    """One resolution level: `res` blocks, `attn` blocks (possibly none) and an optional
    resampler."""
    m = nn.Module()
    m.res, m.attn = nn.ModuleList(res), nn.ModuleList(attn)
    if resample is not None:
        m.add_module("downsample" if isinstance(resample, Downsample) else "upsample", resample)
    return m


def run_level(m, h):
    for i, res in enumerate(m.res):
        h = res(h)
        if len(m.attn):  # attention follows every res block at the levels that have it
            h = m.attn[i](h)
    for name in ("downsample", "upsample"):
        if hasattr(m, name):
            h = getattr(m, name)(h)
    return h


def mid(c):
    return nn.ModuleList([ResnetBlock(c, c), AttnBlock(c), ResnetBlock(c, c)])


class Encoder(nn.Module):
    def __init__(self, c: VQConfig):
        super().__init__()
        ch, mult, n = c.base_channels, c.ch_mult, c.num_res_blocks
        self.conv_in = nn.Conv2d(3, ch, 3, 1, 1)
        self.conv_blocks = nn.ModuleList()
        cin = ch
        for i, m in enumerate(mult):
            last = i == len(mult) - 1
            res = [ResnetBlock(cin if j == 0 else ch * m, ch * m) for j in range(n)]
            cin = ch * m
            self.conv_blocks.append(level(res, [AttnBlock(cin) for _ in range(n)] if last else [],
                                          None if last else Downsample(cin)))
        self.mid = mid(cin)
        self.norm_out, self.conv_out = Normalize(cin), nn.Conv2d(cin, c.z_channels, 3, 1, 1)

    def forward(self, x):
        h = self.conv_in(x)
        for m in self.conv_blocks:
            h = run_level(m, h)
        for m in self.mid:
            h = m(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, c: VQConfig):
        super().__init__()
        ch, mult, n = c.base_channels, c.ch_mult[::-1], c.num_res_blocks + 1
        cin = ch * mult[0]
        self.conv_in = nn.Conv2d(c.z_channels, cin, 3, 1, 1)
        self.mid = mid(cin)
        self.conv_blocks = nn.ModuleList()
        for i, m in enumerate(mult):
            res = [ResnetBlock(cin if j == 0 else ch * m, ch * m) for j in range(n)]
            cin = ch * m
            self.conv_blocks.append(level(res, [AttnBlock(cin) for _ in range(n)] if i == 0 else [],
                                          None if i == len(mult) - 1 else Upsample(cin)))
        self.norm_out, self.conv_out = Normalize(cin), nn.Conv2d(cin, 3, 3, 1, 1)

    def forward(self, z):
        h = self.conv_in(z)
        for m in self.mid:
            h = m(h)
        for m in self.conv_blocks:
            h = run_level(m, h)
        return self.conv_out(F.silu(self.norm_out(h)))


class VectorQuantizer(nn.Module):
    def __init__(self, c: VQConfig):
        super().__init__()
        self.embedding = nn.Embedding(c.codebook_size, c.codebook_embed_dim)
        # a training statistic, kept because the checkpoints hold it
        self.register_buffer("codebook_used", torch.zeros(65536))

    def codebook(self):
        return F.normalize(self.embedding.weight, dim=-1)  # (K, C)

    def forward(self, z):  # (B, C, h, w) -> codes (B, h, w)
        zf = F.normalize(z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]), dim=-1)  # (B*h*w, C)
        e = self.codebook()
        d = zf.pow(2).sum(1, keepdim=True) + e.pow(2).sum(1) - 2 * zf @ e.t()  # squared distances
        return d.argmin(1).view(z.shape[0], z.shape[2], z.shape[3])

    def lookup(self, codes):  # (B, h, w) -> (B, C, h, w)
        return self.codebook()[codes].permute(0, 3, 1, 2).contiguous()


class VQModel(nn.Module):
    def __init__(self, config: VQConfig):
        super().__init__()
        self.config = config
        self.encoder, self.decoder = Encoder(config), Decoder(config)
        self.quantize = VectorQuantizer(config)
        self.quant_conv = nn.Conv2d(config.z_channels, config.codebook_embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(config.codebook_embed_dim, config.z_channels, 1)

    @torch.no_grad()
    def encode(self, images):
        """(B, 3, H, W) in [-1, 1] -> codes (B, H/ds, W/ds)."""
        ds = self.config.downsample
        shape = tuple(images.shape)
        if images.dim() != 4 or shape[1] != 3 or shape[2] % ds or shape[3] % ds:
            raise ValueError(f"expected images (B, 3, H, W) with H, W multiples of {ds}, "
                             f"got {shape}")
        return self.quantize(self.quant_conv(self.encoder(images)))

    @torch.no_grad()
    def decode(self, codes):
        """codes (B, h, w) (or (B, h*w) for square grids) -> images (B, 3, h*ds, w*ds), about
        [-1, 1]."""
        if codes.dim() == 2:
            side = int(codes.shape[1] ** 0.5)
            codes = codes.view(len(codes), side, side)
        quant = self.quantize.lookup(codes).to(self.post_quant_conv.weight.dtype)
        return self.decoder(self.post_quant_conv(quant))


def load_vq(ckpt="vq_ds16_c2i", device="cpu", config=None, flag="--vq-ckpt"):
    """Load a released VQ (`vq_ds16_c2i`, `vq_ds16_t2i`, a path) or one of ours (stores its
    config)."""
    path, sd, stored = read(ckpt, VQConfig, flag, kind="vq")
    config = config or stored
    if config is None:  # released files: VQ-16 or VQ-8, told apart by their number of levels
        blocks = [k for k in sd if k.startswith("encoder.conv_blocks.")]
        levels = 1 + max(int(k.split(".")[2]) for k in blocks)
        config = {5: VQ_PRESETS["VQ-16"], 4: VQ_PRESETS["VQ-8"]}.get(levels)
        if config is None:
            raise BadCheckpoint(f"{path}: {levels} encoder levels match neither VQ-16 nor VQ-8; "
                                f"save the config with the weights")
    model = VQModel(config)
    check_keys(model, sd, what=os.path.basename(path))
    model.load_state_dict(sd)
    return model.to(device).eval()
