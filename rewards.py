"""rewards.py: the reward ensemble of AR-GRPO.

Every reward maps a batch of images (B, 3, H, W), float in [0, 1], and their prompts (a list of
B strings) to one number per image, a tensor (B,). `build_rewards` parses a spec such as
"clip:1,hps:1,maniqa:1,qwen:1" and returns a scorer:

    scorer = build_rewards("color:1,jpeg:0.5", device="cpu")
    total, parts = scorer(images, prompts)      # total = sum_k w_k * parts[k], all (B,) float32

Weight-free rewards (OFFLINE_REWARDS: no network, no checkpoint, cheap enough for every step):
    color        1 - |mean_rgb(x) - c(prompt)|_2 / sqrt(3)  in [0, 1]; c(prompt) is a fixed RGB
                 colour hashed from the prompt (md5), so it is a *conditional* reward a tiny model
                 can learn: each class / caption has its own target colour.
    brightness   mean luma 0.299 R + 0.587 G + 0.114 B  in [0, 1].
    colorfulness Hasler & Suesstrunk (2003) on [0, 1] pixels: rg = R - G, yb = (R + G)/2 - B,
                 sqrt(std_rg^2 + std_yb^2) + 0.3 sqrt(mean_rg^2 + mean_yb^2).
    jpeg         compressibility: -(JPEG bytes at quality 95) / (H * W), minus bytes per pixel.

The paper's rewards (Kwai-Klear/AR-GRPO, img_gen_grpo_rewards.py), with its scalings:
    clip      5 * cos(f_img, f_txt), OpenAI CLIP ViT-B/32 (open_clip "ViT-B-32-quickgelu").
    hps       5 * <f_img, f_txt> of HPSv2.1 (open_clip ViT-H-14 + HPS_v2.1_compressed.pt); the
              features are L2-normalised, no logit scale, so this is also a cosine.
    clip_q, hps_q  the step map Q applied to the RAW cosine s (not to 5 s, and not multiplied
              by 5 afterwards; this is what the paper's code does):
              Q(s) = -1 if s < 0; 0.5 if s < 0.3; 1 if s < 0.6; 1.5 otherwise. The paper's code
              raises IndexError for s >= 1; here s >= 1 -> 1.5.
    maniqa    2 * mean over 20 random 224x224 crops of MANIQA (KonIQ-10k weights); pixels are
              normalised to [-1, 1] (mean = std = 0.5) as in the official MANIQA / pyiqa.
    qwen_score  Qwen2.5-VL-3B-Instruct judge, the paper's long prompt (describe the image, five
              0-1 sub-scores, JSON answer with a total "score" in [0, 5]); reward = score / 4.
    qwen_fake   "Is the image an AI-generated image? If yes, give 0 score, otherwise 1", / 4.
    qwen_weird  "Is there any strange feature in the image? If yes, 0, otherwise 1", / 4.
    qwen        shorthand for the three judge rewards above, each with the given weight.
    A malformed judge answer is a counted failure and scores 0 (as in the paper after its
    retries). Judge modes: "generate" = batched greedy generation + JSON parsing (the paper's
    behaviour, batched); "fast" = ONE forward pass per image and question with the answer
    prefix '```json\n{\n    "score": ' forced, reading the next-token distribution over the
    score digits: E[score] = sum_d d p(d) / sum_d p(d) (d in 0..5 for qwen_score, 0..1 else).

Weights: a local path flag, else the standard library cache (huggingface_hub for CLIP, HPS and
Qwen; pyiqa's cache for MANIQA); a missing file raises RewardWeightsMissing, one line naming
the file, where it was looked for and the flag to pass. tiny=True builds every paper reward
from a tiny config with random weights (offline; what the tests use).

Run:  python rewards.py --bench            (images/s of each reward, tiny configs, CPU)
"""
import hashlib
import json
import math
import os
import re
from types import SimpleNamespace

import torch
import torch.nn.functional as F


class RewardWeightsMissing(RuntimeError):
    """A reward's weights are not on this machine; str() is one line saying what and how."""


# ----------------------------------------------------------------------------- pure maps
def quantise(s):
    """The paper's step map on a raw similarity s (any shape): <0 -> -1, [0,.3) -> .5,
    [.3,.6) -> 1, >= .6 -> 1.5 (the paper's code crashes for s >= 1; we keep 1.5)."""
    s = torch.as_tensor(s, dtype=torch.float32)
    edges = torch.tensor([0.0, 0.3, 0.6])
    values = torch.tensor([-1.0, 0.5, 1.0, 1.5])
    # bucketize(right=True) gives the number of edges <= s: 0 for s<0, ..., 3 for s>=0.6
    return values[torch.bucketize(s, edges, right=True)]


_SCORE_RE = re.compile(r'"?score"?\s*[:=]\s*"?\s*(-?\d+(?:\.\d+)?)')


def parse_judge_answer(text, max_score):
    """The judge's "score" from its answer, or None when the answer is malformed.
    Accepts a ```json block or bare JSON; falls back to a regex for JSON with the trailing
    comma the paper's own example teaches ('"score": 0,}'). Never eval()s. A score outside
    [0, max_score] or not finite counts as malformed."""
    if not isinstance(text, str):
        return None
    block = re.search(r"```json\s*(.*?)(```|$)", text, re.S)
    body = block.group(1) if block else text
    value = None
    try:
        obj = json.loads(body.strip())
        if isinstance(obj, dict) and "score" in obj:
            value = float(obj["score"])
    except (ValueError, TypeError):
        pass
    if value is None:
        m = _SCORE_RE.search(body)
        value = float(m.group(1)) if m else None
    if value is None or not math.isfinite(value) or not 0 <= value <= max_score:
        return None
    return value


def prompt_color(prompt):
    """A fixed RGB target in [0, 1]^3 for a prompt (md5, so identical across processes,
    unlike Python's salted hash())."""
    digest = hashlib.md5(prompt.encode("utf-8")).digest()
    return torch.tensor([digest[0], digest[1], digest[2]], dtype=torch.float32) / 255.0


# ----------------------------------------------------------------------------- weight-free
def reward_color(x, prompts):
    target = torch.stack([prompt_color(p) for p in prompts]).to(x.device)  # (B, 3)
    mean = x.mean(dim=(2, 3))                                               # (B, 3)
    return 1.0 - (mean - target).norm(dim=1) / math.sqrt(3.0)


def reward_brightness(x, prompts):
    luma = torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)
    return (x * luma).sum(1).mean(dim=(1, 2))


def reward_colorfulness(x, prompts):
    r, g, b = x.unbind(1)                          # each (B, H, W)
    rg, yb = r - g, 0.5 * (r + g) - b
    std = (rg.flatten(1).var(1, unbiased=False) + yb.flatten(1).var(1, unbiased=False)).sqrt()
    mean = (rg.flatten(1).mean(1) ** 2 + yb.flatten(1).mean(1) ** 2).sqrt()
    return std + 0.3 * mean


def reward_jpeg(x, prompts):
    import io
    from PIL import Image
    u8 = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()  # (B, H, W, 3)
    sizes = []
    for img in u8:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=95)
        sizes.append(buf.tell())                                             # bytes
    h, w = x.shape[-2:]
    return -torch.tensor(sizes, dtype=torch.float32, device=x.device) / (h * w)


OFFLINE = {"color": reward_color, "brightness": reward_brightness,
           "colorfulness": reward_colorfulness, "jpeg": reward_jpeg}
OFFLINE_REWARDS = list(OFFLINE)


# ----------------------------------------------------------------------------- the ensemble
def _builders():
    """name -> builder(ctx) returning fn(x, prompts) -> (B,). Paper builders come below."""
    b = {name: (lambda fn: (lambda ctx: fn))(fn) for name, fn in OFFLINE.items()}
    return b


QWEN_PARTS = ["qwen_score", "qwen_fake", "qwen_weird"]


def parse_spec(spec, valid):
    """'a:1,b:0.5' -> [('a', 1.0), ('b', 0.5)]; 'qwen' expands to the three judge prompts."""
    out = []
    for item in [s.strip() for s in spec.split(",") if s.strip()]:
        name, _, w = item.partition(":")
        name = name.strip()
        try:
            weight = float(w) if w.strip() else 1.0
        except ValueError:
            raise ValueError(f"reward weight must be a number: {item!r} in {spec!r}") from None
        names = QWEN_PARTS if name == "qwen" else [name]
        for n in names:
            if n not in valid:
                raise ValueError(f"unknown reward {n!r}; valid: {', '.join(sorted(valid) + ['qwen'])}")
            if n in [o[0] for o in out]:
                raise ValueError(f"reward {n!r} given twice in {spec!r}")
            out.append((n, weight))
    if not out:
        raise ValueError(f"empty reward spec {spec!r}")
    return out


class Rewards:
    """The scorer: call it with images (B, 3, H, W) in [0, 1] and B prompts."""

    def __init__(self, names, weights, fns, device):
        self.names, self.weights, self.fns, self.device = names, weights, fns, device

    @torch.no_grad()
    def __call__(self, images, prompts):
        assert images.dim() == 4 and images.shape[1] == 3, f"images must be (B,3,H,W), got {tuple(images.shape)}"
        assert len(prompts) == images.shape[0], "one prompt per image"
        x = images.detach().to(self.device, torch.float32).clamp(0, 1)
        parts = {n: fn(x, list(prompts)).float().to(images.device) for n, fn in zip(self.names, self.fns)}
        total = sum(w * parts[n] for n, w in zip(self.names, self.weights))
        return total, parts

    def stats(self):
        """Counters of the rewards that keep some (judge failures), e.g. {'qwen_fake/failures': 2}."""
        out = {}
        for n, fn in zip(self.names, self.fns):
            for k, v in getattr(fn, "stats", {}).items():
                out[f"{n}/{k}"] = v
        return out


def build_rewards(spec, device="cpu", clip_ckpt=None, hps_ckpt=None, maniqa_ckpt=None,
                  qwen_path=None, judge_mode="fast", dtype=None, tiny=False, seed=0):
    """Build the scorer for `spec` ("name:weight,..."). Paths override the library caches;
    tiny=True builds the paper rewards with tiny random networks (tests, benchmarks);
    dtype (e.g. torch.bfloat16) is the reward models' compute dtype, default float32."""
    builders = _builders()
    pairs = parse_spec(spec, builders)
    assert judge_mode in ("fast", "generate"), judge_mode
    ctx = SimpleNamespace(device=torch.device(device), dtype=dtype or torch.float32, tiny=tiny,
                          clip_ckpt=clip_ckpt, hps_ckpt=hps_ckpt, maniqa_ckpt=maniqa_ckpt,
                          qwen_path=qwen_path, judge_mode=judge_mode, seed=seed, cache={})
    fns = [builders[n](ctx) for n, _ in pairs]
    return Rewards([n for n, _ in pairs], [w for _, w in pairs], fns, ctx.device)
