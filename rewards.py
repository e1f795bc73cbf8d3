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
    Judge modes. "generate" (the paper presets) is AR-GRPO's judge (reward_utils/qwen_vl_reward.py):
    the image after a JPEG round trip (PIL default quality), the question text then the image,
    <= 256 new tokens with the model's own generation config, the answer repaired by json_repair
    and its "score" read (no range check); an unparseable answer is asked again, 3 attempts in
    all, then 0 (counted in stats()). Batched with left padding (AR-GRPO: one image at a time).
    "fast" = ONE forward pass per image and question with the answer prefix
    '```json\n{\n    "score": ' forced, reading the next-token distribution over the score
    digits: E[score] = sum_d d p(d) / sum_d p(d) (d in 0..5 for qwen_score, 0..1 else): a
    different, cheaper judge (README: its rank agreement with "generate").

Weights (checkpoint.find_weights): a local path flag, else the standard library cache
(huggingface_hub for CLIP, HPS and Qwen; pyiqa's cache for MANIQA), else a download when
huggingface.co answers; a missing file raises RewardWeightsMissing, one line naming the file,
where it was looked for and the flag to pass. tiny=True builds every paper reward from its
stand-in in tiny.py (random weights, offline; what the tests use).

T2I evaluation scorers, usable as rewards (section "T2I evaluation scorers" below): pickscore
(PickScore_v1), imagereward (ImageReward-v1.0 on transformers' BLIP), aesthetic (LAION
predictor v2).

Reading order: the ensemble (the REWARDS table, parse_spec, Rewards, build_rewards) opens the
file; the weight-free maps follow, then each paper reward's loader and builder, then the T2I
scorers.

Run:  python bench.py --rewards            (images/s of each reward, tiny configs)
      python bench.py --agreement          (the judge's fast vs generate agreement)
"""
import hashlib
import json
import math
import os
import re
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from checkpoint import BadCheckpoint, find_weights, is_torchscript, read_torchscript_tensors
from tiny import (TINY_BERT_VOCAB, TINY_IMAGEREWARD, TINY_MANIQA, seeded, tiny_clip,
                  tiny_maniqa_vit, tiny_pickscore, tiny_qwen)


class RewardWeightsMissing(RuntimeError):
    """A reward's weights are not on this machine; str() is one line saying what and how."""


# ----------------------------------------------------------------------------- the ensemble
# The rewards by name: name -> builder(ctx), which loads what the reward needs (failing fast on
# missing weights) and returns its function fn(images, prompts) -> (B,). The lambdas look their
# targets up when called, so this table can open the file, above the functions it names.
REWARDS = {
    "color": lambda ctx: OFFLINE["color"],                 # weight-free: nothing to load
    "brightness": lambda ctx: OFFLINE["brightness"],
    "colorfulness": lambda ctx: OFFLINE["colorfulness"],
    "jpeg": lambda ctx: OFFLINE["jpeg"],
    "clip": lambda ctx: build_clip(ctx, kind="clip", quantised=False),
    "clip_q": lambda ctx: build_clip(ctx, kind="clip", quantised=True),
    "hps": lambda ctx: build_clip(ctx, kind="hps", quantised=False),
    "hps_q": lambda ctx: build_clip(ctx, kind="hps", quantised=True),
    "maniqa": lambda ctx: build_maniqa(ctx),
    "qwen_score": lambda ctx: Judge(ctx, name="qwen_score"),
    "qwen_fake": lambda ctx: Judge(ctx, name="qwen_fake"),
    "qwen_weird": lambda ctx: Judge(ctx, name="qwen_weird"),
    "pickscore": lambda ctx: build_pickscore(ctx),
    "imagereward": lambda ctx: build_imagereward(ctx),
    "aesthetic": lambda ctx: build_aesthetic(ctx),
}


def reward_builders():
    """A copy of REWARDS, the table of reward builders (name -> builder(ctx))."""
    return dict(REWARDS)


def parse_spec(spec, valid=None):
    """'a:1,b:0.5' -> [('a', 1.0), ('b', 0.5)]; 'qwen' expands to the three judge prompts."""
    valid = reward_builders() if valid is None else valid
    out = []
    for item in [s.strip() for s in spec.split(",") if s.strip()]:
        name, _, w = item.partition(":")
        name = name.strip()
        try:
            weight = float(w) if w.strip() else 1.0
        except ValueError:
            raise ValueError(f"reward weight must be a number: {item!r} in {spec!r}") from None
        if not math.isfinite(weight):  # a NaN / inf weight would put NaN into every update
            raise ValueError(f"reward weight must be finite: {item!r} in {spec!r}")
        names = QWEN_PARTS if name == "qwen" else [name]
        for n in names:
            if n not in valid:
                known = ", ".join(sorted(valid) + ["qwen"])
                raise ValueError(f"unknown reward {n!r}; valid: {known}")
            if n in [o[0] for o in out]:
                raise ValueError(f"reward {n!r} given twice in {spec!r}")
            out.append((n, weight))
    if not out:
        raise ValueError(f"empty reward spec {spec!r}")
    return out


class Rewards:
    """The scorer: call it with images (B, 3, H, W) in [0, 1] and B prompts."""

    def __init__(self, names, weights, fns, ctx):
        self.names, self.weights, self.fns, self.ctx = names, weights, fns, ctx
        self.device = ctx.device   # ctx.cache holds the (shared, frozen) reward models

    @torch.no_grad()
    def __call__(self, images, prompts):
        assert images.dim() == 4 and images.shape[1] == 3, \
            f"images must be (B,3,H,W), got {tuple(images.shape)}"
        assert len(prompts) == images.shape[0], "one prompt per image"
        x = images.detach().to(self.device, torch.float32).clamp(0, 1)
        parts = {n: fn(x, list(prompts)).float().to(images.device)
                 for n, fn in zip(self.names, self.fns)}           # name -> (B,)
        total = sum(w * parts[n] for n, w in zip(self.names, self.weights))
        return total, parts

    def stats(self):
        """Counters of the rewards that keep some (judge failures), e.g.
        {'qwen_fake/failures': 2}; train.py logs them as judge_fail_frac."""
        out = {}
        for n, fn in zip(self.names, self.fns):
            for k, v in getattr(fn, "stats", {}).items():
                out[f"{n}/{k}"] = v
        return out


# build_rewards' weight paths, one per reward model: train.py and eval.py take each as a flag
# (--clip-ckpt, ...), so a run's weights can be given on the command line and stored with it
WEIGHT_ARGS = ("clip_ckpt", "hps_ckpt", "maniqa_ckpt", "qwen_path", "pickscore_path",
               "imagereward_ckpt", "aesthetic_ckpt", "aesthetic_clip_ckpt")


def build_rewards(spec, device="cpu", clip_ckpt=None, hps_ckpt=None, maniqa_ckpt=None,
                  qwen_path=None, judge_mode="generate", dtype=None, tiny=False, seed=0,
                  judge_tokens=256, pickscore_path=None, imagereward_ckpt=None,
                  aesthetic_ckpt=None, aesthetic_clip_ckpt=None):
    """Build the scorer for `spec` ("name:weight,..."). Paths override the library caches;
    tiny=True builds the paper rewards with tiny random networks (tests, benchmarks);
    dtype (e.g. torch.bfloat16) is the reward models' compute dtype, default float32;
    seed fixes tiny random weights and MANIQA's crop positions; judge_tokens caps the
    generate-mode answer (256 in the paper)."""
    builders = reward_builders()
    pairs = parse_spec(spec, builders)
    assert judge_mode in ("fast", "generate"), judge_mode
    ctx = SimpleNamespace(device=torch.device(device), dtype=dtype or torch.float32, tiny=tiny,
                          clip_ckpt=clip_ckpt, hps_ckpt=hps_ckpt, maniqa_ckpt=maniqa_ckpt,
                          qwen_path=qwen_path, judge_mode=judge_mode, seed=seed,
                          judge_tokens=judge_tokens, cache={}, pickscore_path=pickscore_path,
                          imagereward_ckpt=imagereward_ckpt, aesthetic_ckpt=aesthetic_ckpt,
                          aesthetic_clip_ckpt=aesthetic_clip_ckpt)
    fns = [builders[n](ctx) for n, _ in pairs]
    return Rewards([n for n, _ in pairs], [w for _, w in pairs], fns, ctx)


# ----------------------------------------------------------------------------- pure maps
def quantise(s):
    """The paper's step map on a raw similarity s (any shape): <0 -> -1, [0,.3) -> .5,
    [.3,.6) -> 1, >= .6 -> 1.5 (the paper's code crashes for s >= 1; we keep 1.5)."""
    s = torch.as_tensor(s, dtype=torch.float32)
    edges = torch.tensor([0.0, 0.3, 0.6], device=s.device)
    values = torch.tensor([-1.0, 0.5, 1.0, 1.5], device=s.device)
    # bucketize(right=True) gives the number of edges <= s: 0 for s<0, ..., 3 for s>=0.6
    return values[torch.bucketize(s, edges, right=True)]


def judge_score(text):
    """The judge's score from its answer, exactly as AR-GRPO parses it
    (reward_utils/qwen_vl_reward.py): the body of a ```json block fenced by newlines (else the
    whole answer), repaired by json_repair (trailing commas, a truncated string or object, text
    around the JSON...), json.loads, then float(answer["score"]). None where any step fails
    (AR-GRPO: an exception, then a retry). No range check: a score of 7 is 7 (AR-GRPO's reward
    is then 7/4). Never eval()s."""
    from json_repair import repair_json
    if not isinstance(text, str):
        return None
    m = re.search(r"```json\n(.*?)\n```", text, re.S)
    body = m.group(1).strip() if m else text.strip()
    try:
        return float(json.loads(repair_json(body.strip()))["score"])
    except Exception:   # as AR-GRPO: anything wrong (no JSON, no "score", no number) is a failure
        return None


def jpeg_round_trip(x):
    """What AR-GRPO's judge sees: images (B, 3, H, W) in [0, 1] -> PIL images after
    torchvision's to_pil_image (x * 255, truncated to uint8) and a JPEG save / load at PIL's
    default quality (75)."""
    import io
    from PIL import Image
    u8 = (x.float() * 255).to(torch.uint8)                  # truncated, as to_pil_image
    u8 = u8.permute(0, 2, 3, 1).cpu().numpy()               # (B, H, W, 3)
    out = []
    for img in u8:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG")
        buf.seek(0)
        out.append(Image.open(buf).convert("RGB"))
    return out


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


# ----------------------------------------------------------------------------- finding weights
def _hub_file(repo, filenames, what, flag, path=None):
    """A local path (the flag) if given, else the huggingface_hub cache, else a download if
    huggingface.co answers (the first of `filenames` that exists); otherwise
    RewardWeightsMissing (one line, checkpoint.find_weights)."""
    from huggingface_hub import hf_hub_download

    def fetch(local):  # the first of the candidate file names that exists
        for fn in filenames[:-1]:
            try:
                return hf_hub_download(repo, fn, local_files_only=local)
            except Exception:
                pass
        return hf_hub_download(repo, filenames[-1], local_files_only=local)
    return find_weights(what, flag, path, fetch, file=f"weights {repo}/{filenames[0]}",
                        names=filenames, error=RewardWeightsMissing)


def _torch_load(path, what, flag):
    """torch.load(weights_only=True). A file that needs more (pickled Python objects besides
    tensors) is refused in one line: we never fall back to weights_only=False, which can run code
    from the file."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        held = re.search(r"GLOBAL (\S+)", str(e))
        why = (f"it holds a pickled {held.group(1)}" if held
               else f"{type(e).__name__}: {str(e).splitlines()[0][:120]}")
        raise BadCheckpoint(f"{what}: {path} (from {flag}) cannot be read with "
                            f"torch.load(weights_only=True) ({why}); this project never unpickles "
                            f"arbitrary objects: if you trust the file, re-save just its tensors "
                            f"(a dict of name -> tensor) and pass that") from None


def _frozen(model, ctx):
    """Every reward model: eval mode (no dropout), no grads, on the device in ctx.dtype."""
    model.eval().requires_grad_(False)
    return model.to(ctx.device, ctx.dtype)


# ----------------------------------------------------------------------------- CLIP and HPS
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)   # OpenAI CLIP normalisation (also HPSv2)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_preprocess(x, size):
    """open_clip's eval transform on a batch of tensors: bicubic resize of the short side to
    `size` (antialiased, like PIL), center crop size x size, CLIP mean/std. (B,3,H,W)->(B,3,S,S)"""
    h, w = x.shape[-2:]
    nh = max(size, int(h * size / min(h, w)))        # as torchvision's Resize(size)
    nw = max(size, int(w * size / min(h, w)))
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
        x = x.clamp(0, 1)
    top, left = (nh - size) // 2, (nw - size) // 2
    x = x[..., top:top + size, left:left + size]
    mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


# open_clip architecture of each released file: a config name or a config dict (the tests put tiny
# configs here to load tiny files in the released layouts through the real path)
CLIP_ARCH = {"clip": "ViT-B-32-quickgelu", "hps": "ViT-H-14"}   # OpenAI CLIP uses QuickGELU
CLIP_FILES = ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
OPENAI_JIT_EXTRAS = ("input_resolution", "context_length", "vocab_size")   # ints, not weights


def _open_clip_model(arch):
    """open_clip's CLIP class built from its config with random weights (built directly: open_clip's
    create_model(pretrained=None) would log 'No pretrained weights loaded ... initialized randomly'
    right before we load the weights)."""
    import copy
    from open_clip import get_model_config
    from open_clip.model import CLIP
    return CLIP(**(get_model_config(arch) if isinstance(arch, str) else copy.deepcopy(arch)))


def _load_clip_weights(model, path, what, flag):
    """Load a CLIP / HPS file into `model`, any released layout: safetensors (timm's open_clip
    export); a torch.save file under weights_only=True, bare or {'state_dict': ...} (HPSv2.1, fp16),
    'module.' prefixes; OpenAI's TorchScript ViT-B-32.pt, read as data (checkpoint.py). Keys are
    checked strictly; a mismatch is one line."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        sd = load_file(path)
    elif is_torchscript(path):
        sd = {k: v for k, v in read_torchscript_tensors(path).items() if k not in OPENAI_JIT_EXTRAS}
    else:
        sd = _torch_load(path, what, flag)
        sd = sd.get("state_dict", sd) if isinstance(sd, dict) else sd
    if not isinstance(sd, dict):
        raise BadCheckpoint(f"{what}: {path} (from {flag}) holds a {type(sd).__name__}, "
                            f"not a state dict")
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    own, buffers = model.state_dict(), dict(model.named_buffers())
    # open_clip 3.x owns buffers (attn_mask, logit_bias) that older files predate or carry as
    # non-persistent
    sd = {k: v for k, v in sd.items() if k in own or k not in buffers}
    missing = [k for k in own if k not in sd and k not in ("logit_bias", "attn_mask")]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}"
              for k in own if k in sd and sd[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise BadCheckpoint(f"{what}: {path} (from {flag}) does not fit open_clip's architecture: "
                            f"missing {missing[:3]}, unexpected {unexpected[:3]}, "
                            f"shape mismatch {shapes[:3]}")
    model.load_state_dict(sd, strict=False)
    return model


def load_clip(ctx, kind):
    """kind 'clip' -> OpenAI ViT-B/32; 'hps' -> open_clip ViT-H-14 with the HPSv2.1 weights.
    Shared by the plain and the quantised reward through ctx.cache."""
    if kind in ctx.cache:
        return ctx.cache[kind]
    import open_clip
    if ctx.tiny:
        with seeded(ctx.seed):
            model = tiny_clip(quick_gelu=kind == "clip")
    elif kind == "clip":
        path = _hub_file("timm/vit_base_patch32_clip_224.openai", CLIP_FILES,
                         "CLIP ViT-B/32 (openai)", "--clip-ckpt", ctx.clip_ckpt)
        model = _load_clip_weights(_open_clip_model(CLIP_ARCH["clip"]), path,
                                   "CLIP ViT-B/32 (openai)", "--clip-ckpt")
    else:
        path = _hub_file("xswu/HPSv2", ["HPS_v2.1_compressed.pt"], "HPSv2.1", "--hps-ckpt",
                         ctx.hps_ckpt)
        model = _load_clip_weights(_open_clip_model(CLIP_ARCH["hps"]), path,
                                   "HPSv2.1", "--hps-ckpt")
    image_size = model.visual.image_size
    image_size = image_size[0] if isinstance(image_size, (tuple, list)) else image_size
    ctx.cache[kind] = (_frozen(model, ctx), open_clip.get_tokenizer("ViT-B-32"), image_size)
    return ctx.cache[kind]


def clip_cosine(ctx, kind, x, prompts):
    """cos(f_img, f_txt) per image, (B,). Text features of repeated prompts (a GRPO group
    shares one prompt) are computed once; clip and clip_q share one evaluation per batch."""
    memo = ctx.cache.get(("cos", kind))
    if memo is not None and memo[0] is x and memo[1] == prompts:
        return memo[2]
    model, tokenizer, size = load_clip(ctx, kind)
    pixels = clip_preprocess(x, size).to(ctx.dtype)
    img = model.encode_image(pixels, normalize=True).float()                   # (B, D)
    uniq = sorted(set(prompts))
    txt = model.encode_text(tokenizer(uniq).to(ctx.device), normalize=True).float()   # (U, D)
    txt = txt[torch.tensor([uniq.index(p) for p in prompts], device=txt.device)]      # (B, D)
    cos = (img * txt).sum(-1)
    ctx.cache[("cos", kind)] = (x, list(prompts), cos)
    return cos


def build_clip(ctx, kind, quantised):
    load_clip(ctx, kind)            # load now: a missing checkpoint fails at build time
    if quantised:
        return lambda x, prompts: quantise(clip_cosine(ctx, kind, x, prompts))
    return lambda x, prompts: 5.0 * clip_cosine(ctx, kind, x, prompts)


# ----------------------------------------------------------------------------- MANIQA
MANIQA_CROPS, MANIQA_CROP = 20, 224
# the architecture of pyiqa's 'maniqa' (KonIQ-10k weights): MANIQA's own arguments and timm
# overrides of its 'vit_base_patch8_224' backbone (none for the real file; the tests shrink both to
# load tiny files in the released layouts through the real path)
MANIQA_ARCH = dict(maniqa=dict(embed_dim=768, dim_mlp=768, patch_size=8, window_size=4,
                               num_heads=[4, 4]), vit={})
MANIQA_FILE = "ckpt_koniq10k.pt"


def maniqa_net(vit, embed_dim, dim_mlp, patch_size, window_size, num_heads):
    """pyiqa's MANIQA (KonIQ-10k configuration: depths [2, 2], 224 px, 2 TA blocks, scale 0.8)
    around the ViT `vit` we pass in. pyiqa's constructor builds its own timm ViT with
    pretrained=True (an ImageNet download the MANIQA checkpoint overwrites anyway), so we build
    the same modules under the same names here; pyiqa's forward and checkpoint keys then apply."""
    from pyiqa.archs.maniqa_arch import MANIQA, SaveOutput, TABlock
    from pyiqa.archs.maniqa_swin import SwinTransformer
    from timm.models.vision_transformer import Block
    nn = torch.nn
    net = MANIQA.__new__(MANIQA)
    nn.Module.__init__(net)
    net.img_size, net.patch_size, net.input_size = 224, patch_size, 224 // patch_size
    net.test_sample = 20
    net.patches_resolution = (net.input_size, net.input_size)
    net.vit, net.save_output = vit, SaveOutput()
    for block in vit.modules():           # extract_feature reads the outputs of blocks 6..9
        if isinstance(block, Block):
            block.register_forward_hook(net.save_output)
    swin = dict(patches_resolution=net.patches_resolution, depths=[2, 2], num_heads=num_heads,
                window_size=window_size, dim_mlp=dim_mlp, scale=0.8)
    net.tablock1 = nn.ModuleList([TABlock(net.input_size ** 2) for _ in range(2)])
    net.conv1 = nn.Conv2d(embed_dim * 4, embed_dim, 1, 1, 0)
    net.swintransformer1 = SwinTransformer(embed_dim=embed_dim, **swin)
    net.tablock2 = nn.ModuleList([TABlock(net.input_size ** 2) for _ in range(2)])
    net.conv2 = nn.Conv2d(embed_dim, embed_dim // 2, 1, 1, 0)
    net.swintransformer2 = SwinTransformer(embed_dim=embed_dim // 2, **swin)
    half = embed_dim // 2
    net.fc_score = nn.Sequential(nn.Linear(half, half), nn.ReLU(), nn.Dropout(0.1),
                                 nn.Linear(half, 1), nn.ReLU())
    net.fc_weight = nn.Sequential(nn.Linear(half, half), nn.ReLU(), nn.Dropout(0.1),
                                  nn.Linear(half, 1), nn.Sigmoid())
    net.default_mean = torch.full((1, 3, 1, 1), 0.5)    # pyiqa's IMAGENET_INCEPTION_MEAN / STD
    net.default_std = torch.full((1, 3, 1, 1), 0.5)
    return net


def load_maniqa(ctx):
    """pyiqa's MANIQA network (KonIQ-10k weights) on timm's 'vit_base_patch8_224', or, tiny, on a
    10-block 16-wide ViT with 32 px patches (random weights). The file may be a bare state dict,
    'module.'-prefixed or {'params': ...}, read with weights_only=True."""
    import timm
    if not ctx.tiny:   # find the file before building anything
        cached = os.path.join(torch.hub.get_dir(), "pyiqa", MANIQA_FILE)

        def fetch(local):   # pyiqa's cache, else pyiqa's download
            if os.path.isfile(cached):
                return cached
            if local:
                raise FileNotFoundError(cached)
            from pyiqa.archs.arch_util import get_url_from_name
            from pyiqa.utils.download_util import load_file_from_url
            return load_file_from_url(get_url_from_name(MANIQA_FILE))
        path = find_weights("MANIQA", "--maniqa-ckpt", ctx.maniqa_ckpt, fetch,
                            file=f"weights file {MANIQA_FILE}", where=f"{cached} (pyiqa cache)",
                            names=[MANIQA_FILE], fix="download it and pass --maniqa-ckpt PATH",
                            error=RewardWeightsMissing)
    with seeded(ctx.seed):
        if ctx.tiny:
            net = maniqa_net(tiny_maniqa_vit(), **TINY_MANIQA)
        else:          # the paper's (and pyiqa's 'maniqa' = KonIQ) configuration
            vit = timm.create_model("vit_base_patch8_224", pretrained=False, **MANIQA_ARCH["vit"])
            net = maniqa_net(vit, **MANIQA_ARCH["maniqa"])
    if ctx.tiny:   # random init leaves the ReLU score head dead (all 0); lift it so scores vary
        with torch.no_grad():
            net.fc_score[3].bias.fill_(1.0)
    else:
        state = _torch_load(path, "MANIQA", "--maniqa-ckpt")
        state = state.get("params", state) if isinstance(state, dict) else state
        if not isinstance(state, dict):
            raise BadCheckpoint(f"MANIQA: {path} holds a {type(state).__name__}, not a state dict")
        state = {k.removeprefix("module."): v for k, v in state.items()}
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as e:   # torch lists every key on many lines; the first ones are enough
            raise BadCheckpoint(f"MANIQA: {path} does not fit pyiqa's MANIQA (KonIQ): "
                                f"{' '.join(str(e).split())[:300]}") from None
    return _frozen(net, ctx)


def maniqa_crops(x, n, size, gen):
    """n random size x size crops per image, positions from `gen`: (B,3,H,W) -> (B*n,3,S,S).
    Images smaller than a crop are first upsampled (the paper's code would crash on them)."""
    h, w = x.shape[-2:]
    if min(h, w) < size:
        x = F.interpolate(x, scale_factor=size / min(h, w), mode="bicubic", antialias=True)
        x = x.clamp(0, 1)
        h, w = x.shape[-2:]
    tops = torch.randint(0, h - size + 1, (x.shape[0], n), generator=gen).tolist()
    lefts = torch.randint(0, w - size + 1, (x.shape[0], n), generator=gen).tolist()
    return torch.stack([x[b, :, t:t + size, l:l + size]
                        for b in range(x.shape[0]) for t, l in zip(tops[b], lefts[b])])


def maniqa_forward(net, crops):
    """MANIQA on ready-made 224 crops (pyiqa's forward would re-crop them, after a 225/224
    upsample). ViT blocks 6-9 -> token attention -> Swin -> per-patch score * weight. (N,)"""
    from einops import rearrange
    x = (crops - 0.5) / 0.5                   # MANIQA's normalisation: [0,1] -> [-1,1]
    net.vit(x)
    feats = net.extract_feature(net.save_output)            # (N, P, 4 D) from 4 ViT blocks
    net.save_output.outputs.clear()
    s = net.input_size                                       # P = s * s patches
    x = rearrange(feats, "n (h w) c -> n c (h w)", h=s)
    for tab in net.tablock1:
        x = tab(x)
    x = net.swintransformer1(net.conv1(rearrange(x, "n c (h w) -> n c h w", h=s)))
    x = rearrange(x, "n c h w -> n c (h w)")
    for tab in net.tablock2:
        x = tab(x)
    x = net.swintransformer2(net.conv2(rearrange(x, "n c (h w) -> n c h w", h=s)))
    x = rearrange(x, "n c h w -> n (h w) c")
    score, weight = net.fc_score(x).flatten(1), net.fc_weight(x).flatten(1)  # (N, P) each
    return (weight * score).sum(1) / (weight.sum(1) + 1e-8)


def build_maniqa(ctx):
    net = ctx.cache["maniqa"] = load_maniqa(ctx)
    gen = torch.Generator().manual_seed(ctx.seed)   # crop positions: reproducible per run

    def reward(x, prompts):
        crops = maniqa_crops(x, MANIQA_CROPS, MANIQA_CROP, gen)          # (B*20, 3, 224, 224)
        scores = torch.cat([maniqa_forward(net, c.to(ctx.dtype)).float() for c in crops.split(64)])
        return 2.0 * scores.view(x.shape[0], MANIQA_CROPS).mean(1)
    return reward


# ----------------------------------------------------------------------------- the Qwen judge
# The three questions, verbatim from the paper's code (typos kept: the reward is defined by
# these words). Like the paper, the text comes first and the image after it. A backslash at the
# end of a line continues it: the paper's long lines are wrapped here, not changed.
QWEN_SCORE_PROMPT = """
You are given a text prompt used to generate image: "{}"
Below is one generated image: <image>
1. Describe the image thoroughly (objects, colors, layout,
etc.), do not be affected by the prompt.
2. Score the generation quality from following aspects:
- Is the object in the generated image satisfying the category according to the prompt? (0-1 score)
- Is the generated image completed without missing parts? (0-1 score)
- Does the content of generated image look real and reasonable? (0-1 score)
- Is the generated image clear, bright and in high quality? (0-1 score)
- Is the generated image free of any noises, defects and artifacts? (0-1 score)

Your response should in a **JSON** format following rules below:
1. The final response should have three keys: "description", "score", "explanation".
2. The total score of the image should be store in "score" key, you may use float numbers for \
the scores. The value of total score should be between 0 and 5.
3. The reasoning and scoring process could be write in "explanation" for you to explain your score.
Following is a exmaple of response:
```json
{{
"description": "The image shows a brown dog with one eye and two ears. its mouth is open and \
the its tongue is sticking out.",
"score": 3.5,
"explanation": "The image shows a brown dog matches the prompt 'a photo of a dog' (1 score). \
The image is complete and all part can be seen (1 score). The dog in the photo looks unreal \
becaues it has only one eye and the eye position is not reasonable (0 score). The dog's face is \
clear but its body and backgroud is blurred (0.5 score). The image do not have any noises, \
defects and artifacts (1 score). So the total score of this image is 1+1+0+0.5+1=3.5 .'"
}}
```
"""
_YES_NO_PROMPT = """<image>
You need to inspect the image carefully and give a score according to the question below:
- {} If yes, give 0 score, otherwise give 1 score.
The answer should be in a JSON format like below:
```json
{{
    "score": 0,
}}
```
"""
JUDGE = {  # name -> (question template, max score); reward = score / 4 for all three
    "qwen_score": (QWEN_SCORE_PROMPT, 5),
    "qwen_fake": (_YES_NO_PROMPT.format("Is the image an AI-generated image?"), 1),
    "qwen_weird": (_YES_NO_PROMPT.format("Is there any strange feature in the image?"), 1),
}
QWEN_PARTS = list(JUDGE)
QWEN_REPO = "Qwen/Qwen2.5-VL-3B-Instruct"
ANSWER_PREFIX = '```json\n{\n    "score": '   # fast mode: the answer up to the score digit
JUDGE_BATCH = 16          # images per judge forward / generate call
JUDGE_ATTEMPTS = 3        # generate mode: AR-GRPO asks again after a failed parse, 3 tries in all


def judge_text(question, answer_prefix=""):
    """Qwen2.5-VL's chat format (what its chat template renders for one user turn holding
    the text and then one image), ending where the assistant starts (+ a forced prefix)."""
    return ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
            f"{question}<|vision_start|><|image_pad|><|vision_end|><|im_end|>\n"
            f"<|im_start|>assistant\n{answer_prefix}")


def judge_texts():
    """The texts the tiny judge's tokenizer is trained on: every question and the chat template."""
    return [q for q, _ in JUDGE.values()] + [judge_text("")]


def _qwen_processor(path):
    """The judge's processor, read before the weights (a bad snapshot fails in a second, not
    after 7 GB). A snapshot whose preprocessor_config.json predates transformers' rename
    (image_processor_type 'Qwen2_5_VLImageProcessor', the files of early 2025) is assembled from
    its parts: Qwen2.5-VL uses Qwen2-VL's image processor, which reads the same file (min_pixels,
    max_pixels, patch sizes)."""
    from transformers import (AutoProcessor, AutoTokenizer, Qwen2_5_VLProcessor,
                              Qwen2VLImageProcessor, Qwen2VLVideoProcessor)
    refresh = (f"refresh the snapshot: hf download {QWEN_REPO} (unchanged files are not fetched "
               f"again; add --local-dir FOLDER for a --qwen-path folder)")
    try:
        return AutoProcessor.from_pretrained(path)
    except (ValueError, OSError, KeyError) as e:
        first = f"{type(e).__name__}: {str(e).splitlines()[0][:150] if str(e) else ''}"
        cfg = os.path.join(path, "preprocessor_config.json")
        kind = json.load(open(cfg)).get("image_processor_type") if os.path.isfile(cfg) else None
        old = kind == "Qwen2_5_VLImageProcessor"
        if not old:
            raise BadCheckpoint(f"Qwen judge: cannot load the processor in {path} ({first}); "
                                f"{refresh}") from None
    try:
        return Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor.from_pretrained(path),
                                   tokenizer=AutoTokenizer.from_pretrained(path),
                                   video_processor=Qwen2VLVideoProcessor())
    except Exception as e:
        raise BadCheckpoint(f"Qwen judge: the old-format processor files in {path} do not load "
                            f"({type(e).__name__}); {refresh}") from None


def load_qwen(ctx):
    """(model, processor), shared by the three judge rewards."""
    if "qwen" in ctx.cache:
        return ctx.cache["qwen"]
    from transformers import Qwen2_5_VLForConditionalGeneration
    if ctx.tiny:
        model, processor = tiny_qwen(ctx.seed, judge_texts())
    else:
        from huggingface_hub import snapshot_download
        path = find_weights("Qwen judge", "--qwen-path", ctx.qwen_path,
                            lambda local: snapshot_download(QWEN_REPO, local_files_only=local),
                            file=f"model {QWEN_REPO}", arg="FOLDER", folder=True,
                            error=RewardWeightsMissing)
        processor = _qwen_processor(path)
        model, info = Qwen2_5_VLForConditionalGeneration.from_pretrained(path, dtype=ctx.dtype,
                                                                         output_loading_info=True)
        if info["missing_keys"]:   # transformers would leave them random and only log it
            missing = info["missing_keys"]
            raise BadCheckpoint(f"Qwen judge: {path} lacks {len(missing)} weights of Qwen2.5-VL, "
                                f"e.g. {sorted(missing)[:3]}")
    processor.tokenizer.padding_side = "left"   # batched generation: prompts end at one column
    ctx.cache["qwen"] = (_frozen(model, ctx), processor)
    return ctx.cache["qwen"]


class Judge:
    """One judge question as a reward: (B,3,H,W), prompts -> score / 4, (B,). Both modes judge the
    image AR-GRPO's judge sees: after a JPEG round trip (`jpeg_round_trip`), text before image."""

    def __init__(self, ctx, name):
        self.ctx, (self.question, self.max_score) = ctx, JUDGE[name]
        self.model, self.processor = load_qwen(ctx)
        tok = self.processor.tokenizer
        digits = [tok.encode(str(d), add_special_tokens=False) for d in range(self.max_score + 1)]
        assert all(len(d) == 1 for d in digits), "each score digit must be one token"
        self.digit_ids = [d[0] for d in digits]
        # generate mode, cumulative: images judged, answers generated, images scored 0 after
        # JUDGE_ATTEMPTS unparseable answers, non-finite scores (set to 0)
        self.stats = {"answers": 0, "attempts": 0, "failures": 0, "nonfinite": 0}

    def _inputs(self, images, prompts, prefix):
        has_slot = "{}" in self.question         # qwen_score quotes the prompt; yes/no ones do not
        questions = [self.question.format(p) if has_slot else self.question for p in prompts]
        texts = [judge_text(q, prefix) for q in questions]
        # uint8 PIL images: the processor divides by 255
        inputs = self.processor(text=texts, images=images, padding=True, return_tensors="pt")
        inputs = inputs.to(self.ctx.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.ctx.dtype)
        return inputs

    def fast(self, x, prompts):
        """One forward pass: E[score] from p(next token = d | ... '"score": '), d = 0..max."""
        inputs = self._inputs(jpeg_round_trip(x), prompts, ANSWER_PREFIX)
        logits = self.model(**inputs, logits_to_keep=1).logits[:, -1].float()  # (b, V) left padded
        p = logits.softmax(-1)[:, self.digit_ids]                                # (b, max+1)
        d = torch.arange(self.max_score + 1, device=p.device, dtype=p.dtype)
        self.stats["digit_mass"] = p.sum(1).mean().item()   # how much the judge wants a digit here
        return (p * d).sum(1) / p.sum(1)

    def answer(self, images, prompts):
        """One generated answer per image: <= judge_tokens new tokens (256 in AR-GRPO) with the
        model's own generation config (do_sample, temperature, top-k/p as its
        generation_config.json says), batched with left padding. The sampling seed is drawn from
        the global RNG, which train.py seeds per step: a run (and its resume) repeats exactly."""
        inputs = self._inputs(images, prompts, "")
        seed = int(torch.randint(2 ** 62, (1,)).item())
        devices = [self.ctx.device] if self.ctx.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            out = self.model.generate(**inputs, max_new_tokens=self.ctx.judge_tokens)
        answers = out[:, inputs["input_ids"].shape[1]:]          # (b, <= judge_tokens) new tokens
        return self.processor.tokenizer.batch_decode(answers, skip_special_tokens=True)

    def generate(self, x, prompts):
        """AR-GRPO's judge: answer, parse (`judge_score`); an image whose answer does not parse is
        asked again, JUDGE_ATTEMPTS times in all, then scores 0. No range check. A non-finite score
        (json allows NaN) counts 0: AR-GRPO sums the reward components with nansum."""
        images, scores, todo = jpeg_round_trip(x), [None] * len(prompts), list(range(len(prompts)))
        for _ in range(JUDGE_ATTEMPTS):
            if not todo:
                break
            texts = self.answer([images[i] for i in todo], [prompts[i] for i in todo])
            self.stats["attempts"] += len(todo)
            for i, t in zip(todo, texts):
                scores[i] = judge_score(t)
            todo = [i for i in todo if scores[i] is None]
        self.stats["answers"] += len(prompts)
        self.stats["failures"] += len(todo)
        nonfinite = [s is not None and not math.isfinite(s) for s in scores]
        self.stats["nonfinite"] += sum(nonfinite)
        scores = [0.0 if s is None or bad else s for s, bad in zip(scores, nonfinite)]
        return torch.tensor(scores, device=x.device)

    def __call__(self, x, prompts):
        run = self.fast if self.ctx.judge_mode == "fast" else self.generate
        scores = [run(x[i:i + JUDGE_BATCH], prompts[i:i + JUDGE_BATCH])
                  for i in range(0, len(prompts), JUDGE_BATCH)]
        return torch.cat(scores).float().to(x.device) / 4.0


# ----------------------------------------------------------------------------- T2I scorers
# T2I evaluation scorers: the extra DrawBench scorers of AR-GRPO's T2I table (its
# test_t2i_rewards.py), usable as rewards too:
#   pickscore    PickScore_v1 (Kirstain et al. 2023): transformers CLIPModel (CLIP-H/14 fine-tuned
#                on Pick-a-Pic) with the processor of laion/CLIP-ViT-H-14-laion2B-s32B-b79K, as
#                PickScore's README loads them; score = exp(logit_scale) * cos(f_img, f_txt), the
#                checkpoint's own scale (CLIP training caps it at 100). AR-GRPO's scorer divides
#                this by 26 (eval.py reports both).
#   imagereward  ImageReward-v1.0 (Xu et al. 2023): BLIP ViT-L/16 image tokens cross-attended by a
#                BERT-base text encoder; the [CLS] output goes through a 5-layer MLP with no
#                activations; score = (mlp - 0.16717) / 1.03334, the library's normalisation;
#                unbounded, higher = preferred. The BLIP towers are transformers' BlipVisionModel /
#                BlipTextModel (what the HF BLIP conversion maps Salesforce's BLIP onto);
#                ImageReward.pt keys are renamed, strictly.
#   aesthetic    LAION aesthetic predictor v2 (improved-aesthetic-predictor): OpenAI CLIP ViT-L/14
#                image embedding (open_clip "ViT-L-14-quickgelu", the openai weights),
#                L2-normalised, through the sac+logos+ava1-l14-linearMSE MLP (768-1024-128-64-16-1,
#                dropouts, no activations: an affine map), regressed on 1-10 ratings; unbounded,
#                higher = more aesthetic; prompts unused.
# DeQA (AR-GRPO's sixth scorer) runs behind its own server (reward-server); not implemented here.
PICKSCORE_REPO = "yuvalkirstain/PickScore_v1"
PICKSCORE_PROCESSOR_REPO = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
IMAGEREWARD_REPO, IMAGEREWARD_FILE = "THUDM/ImageReward", "ImageReward.pt"
IMAGEREWARD_MEAN, IMAGEREWARD_STD = 0.16717362830052426, 1.0333394966054072   # ImageReward.py
BERT_REPO = "google-bert/bert-base-uncased"      # the BLIP tokenizer's vocabulary (vocab.txt)
AESTHETIC_FILE = "sac+logos+ava1-l14-linearMSE.pth"
AESTHETIC_URL = ("https://github.com/christophschuhmann/improved-aesthetic-predictor/raw/main/"
                 "sac%2Blogos%2Bava1-l14-linearMSE.pth")
AESTHETIC_CLIP_REPO = "timm/vit_large_patch14_clip_224.openai"   # open_clip's "openai" ViT-L/14


def to_uint8_hwc(x):
    """(B, 3, H, W) in [0, 1] -> a list of (H, W, 3) uint8 arrays, as AR-GRPO hands PIL images
    over."""
    u8 = (x * 255).round().clamp(0, 255).to(torch.uint8)
    return list(u8.permute(0, 2, 3, 1).cpu().numpy())


def _has_files(d, need):
    """Whether folder d holds every name of `need`; a tuple in `need` = any one of its names."""
    def present(names):
        names = names if isinstance(names, tuple) else (names,)
        return any(os.path.isfile(os.path.join(d, f)) for f in names)
    return bool(d) and all(present(n) for n in need)


def _hub_dir(repo, what, flag, path, need, patterns=None):
    """A model folder: the flag's path, else the huggingface_hub snapshot (cache first, then the
    network). `need`: file names that must be inside (a tuple = any one of them). One-line
    RewardWeightsMissing."""
    complete = lambda d: _has_files(d, need)
    if path:
        if not os.path.isdir(path):
            raise RewardWeightsMissing(f"{what}: model folder {path} (from {flag}) does not exist")
        if not complete(path):
            raise RewardWeightsMissing(f"{what}: model folder {path} (from {flag}) "
                                       f"lacks one of {need}")
        return path
    from huggingface_hub import snapshot_download

    def fetch(local):
        d = snapshot_download(repo, allow_patterns=patterns, local_files_only=local)
        if not complete(d):
            raise FileNotFoundError(d)
        return d
    names = ", ".join(n if isinstance(n, str) else n[0] for n in need)
    return find_weights(what, flag, fetch=fetch, file=f"{repo} ({names})", arg="FOLDER",
                        error=RewardWeightsMissing)


class LinearHead(torch.nn.Module):
    """The MLP head shared by ImageReward and the LAION aesthetic predictor: the same `layers`
    nn.Sequential in both libraries (their ReLUs are commented out, so it is an affine map);
    weights at layers.{0,2,4,6,7}."""

    def __init__(self, dim):
        super().__init__()
        nn = torch.nn
        self.layers = nn.Sequential(
            nn.Linear(dim, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
            nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1))

    def forward(self, x):  # (B, dim) -> (B, 1)
        return self.layers(x)


def load_pickscore(ctx):
    """(transformers CLIPModel, CLIPProcessor, exp(logit_scale))."""
    if "pickscore" in ctx.cache:
        return ctx.cache["pickscore"]
    from transformers import CLIPModel, CLIPProcessor
    if ctx.tiny:
        model, processor = tiny_pickscore(ctx.seed)
    else:
        path = _hub_dir(PICKSCORE_REPO, "PickScore", "--pickscore-path", ctx.pickscore_path,
                        ["config.json", ("model.safetensors", "pytorch_model.bin")])
        # the processor of the README (laion's); the PickScore_v1 repo carries a copy, used when
        # laion's is absent
        need = [("preprocessor_config.json", "processor_config.json"), "tokenizer_config.json"]
        try:
            proc_dir = _hub_dir(PICKSCORE_PROCESSOR_REPO, "PickScore processor", "--pickscore-path",
                                None, need, ["*.json", "*.txt"])
        except RewardWeightsMissing:
            if not _has_files(path, need):
                raise RewardWeightsMissing(
                    f"PickScore: processor {PICKSCORE_PROCESSOR_REPO} (preprocessor_config.json, "
                    f"tokenizer files) not in the huggingface_hub cache and not in {path}; "
                    f"download it into the cache") from None
            proc_dir = path
        model = CLIPModel.from_pretrained(path)
        processor = CLIPProcessor.from_pretrained(proc_dir)
    scale = model.logit_scale.detach().float().exp().item()  # before a bf16 cast rounds it (~1 %)
    ctx.cache["pickscore"] = (_frozen(model, ctx), processor, scale)
    return ctx.cache["pickscore"]


def build_pickscore(ctx):
    model, processor, scale = load_pickscore(ctx)

    def reward(x, prompts):
        pix = processor(images=to_uint8_hwc(x), return_tensors="pt")["pixel_values"]
        pix = pix.to(ctx.device, ctx.dtype)
        pooled = model.vision_model(pixel_values=pix).pooler_output
        img = model.visual_projection(pooled).float()                                 # (B, D)
        uniq = sorted(set(prompts))
        t = processor(text=uniq, padding=True, truncation=True, max_length=77, return_tensors="pt")
        t = t.to(ctx.device)
        pooled = model.text_model(input_ids=t["input_ids"],
                                  attention_mask=t["attention_mask"]).pooler_output
        txt = model.text_projection(pooled).float()                                   # (U, D)
        txt = txt[torch.tensor([uniq.index(p) for p in prompts], device=txt.device)]  # (B, D)
        cos = F.cosine_similarity(img, txt, dim=-1)
        return scale * cos
    return reward


class ImageRewardNet(torch.nn.Module):
    """ImageReward-v1.0 on transformers' BLIP: vision_model (BLIP ViT), text_encoder (BERT with
    cross-attention to the image tokens), mlp (the head). forward -> the normalised score (B,)."""

    def __init__(self, vision_cfg, text_cfg):
        super().__init__()
        from transformers import BlipTextModel, BlipVisionModel
        self.vision_model = BlipVisionModel(vision_cfg)
        self.text_encoder = BlipTextModel(text_cfg, add_pooling_layer=False)
        self.mlp = LinearHead(text_cfg.hidden_size)

    def forward(self, pixel_values, input_ids, attention_mask):
        img = self.vision_model(pixel_values=pixel_values).last_hidden_state     # (B, 1 + P, Dv)
        img_mask = torch.ones(img.shape[:2], dtype=torch.long, device=img.device)
        out = self.text_encoder(input_ids=input_ids, attention_mask=attention_mask,
                                encoder_hidden_states=img, encoder_attention_mask=img_mask)
        txt = out.last_hidden_state[:, 0]                                        # (B, Dt) [CLS]
        r = self.mlp(txt.float()).squeeze(-1)              # (B,) the head in fp32, as the library
        return (r - IMAGEREWARD_MEAN) / IMAGEREWARD_STD


def imagereward_configs(tiny):
    """(BlipVisionConfig, BlipTextConfig): BLIP ViT-L/16 at 224 px (LayerNorm eps 1e-6 as BLIP's
    vit.py; transformers' default is 1e-5) and ImageReward's med_config.json (BERT-base, vocab
    30522 + [DEC], [ENC])."""
    from transformers import BlipTextConfig, BlipVisionConfig
    if tiny:
        v = BlipVisionConfig(**TINY_IMAGEREWARD["vision"], layer_norm_eps=1e-6)
        t = TINY_IMAGEREWARD["text"]
    else:
        v = BlipVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                             num_attention_heads=16, image_size=224, patch_size=16,
                             layer_norm_eps=1e-6)
        t = dict(vocab_size=30524, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                 num_attention_heads=12, max_position_embeddings=512)
    # is_decoder=True only makes transformers build the cross-attention layers; the forward is
    # bidirectional
    text = BlipTextConfig(**t, encoder_hidden_size=v.hidden_size, layer_norm_eps=1e-12,
                          is_decoder=True, hidden_act="gelu", pad_token_id=0)
    return v, text


_VIT_NAMES = {"cls_token": "embeddings.class_embedding",
              "pos_embed": "embeddings.position_embedding",
              "patch_embed.proj.weight": "embeddings.patch_embedding.weight",
              "patch_embed.proj.bias": "embeddings.patch_embedding.bias",
              "norm.weight": "post_layernorm.weight", "norm.bias": "post_layernorm.bias"}
_VIT_BLOCK_NAMES = {"norm1": "layer_norm1", "norm2": "layer_norm2", "attn.qkv": "self_attn.qkv",
                    "attn.proj": "self_attn.projection", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
IMAGEREWARD_UNUSED = ("blip.vision_proj.", "blip.text_proj.",
                      "blip.text_encoder.embeddings.position_ids")


def imagereward_state_dict(sd):
    """ImageReward.pt (the ImageReward module's state dict: blip.visual_encoder.* in BLIP's
    timm-style ViT names, blip.text_encoder.* in med.py's BERT names, mlp.layers.*) ->
    ImageRewardNet's names. Keys the score does not use (the ITC projections, med.py's persistent
    position_ids) are dropped by name; any other is an error."""
    out, unknown = {}, []
    for k, v in sd.items():
        if k.startswith(IMAGEREWARD_UNUSED):
            continue
        m = re.fullmatch(r"blip\.visual_encoder\.(?:blocks\.(\d+)\."
                         r"(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\."
                         r"(weight|bias)|(.+))", k)
        if m and m.group(1):
            block, layer, kind = m.group(1), _VIT_BLOCK_NAMES[m.group(2)], m.group(3)
            out[f"vision_model.encoder.layers.{block}.{layer}.{kind}"] = v
        elif m and m.group(4) in _VIT_NAMES:
            out["vision_model." + _VIT_NAMES[m.group(4)]] = v
        elif k.startswith("blip.text_encoder."):
            # med.py and BlipTextModel share names
            out["text_encoder." + k[len("blip.text_encoder."):]] = v
        elif k.startswith("mlp.layers."):
            out[k] = v
        else:
            unknown.append(k)
    if unknown:
        raise ValueError(f"ImageReward checkpoint: unexpected keys {unknown[:5]}")
    return out


def imagereward_from_state(sd, vision_cfg, text_cfg):
    """ImageRewardNet from ImageReward.pt's state dict, built on the meta device (no random init
    of 450M parameters: every weight comes from the file; strict, so a missing or unexpected key
    is an error)."""
    with torch.device("meta"):
        net = ImageRewardNet(vision_cfg, text_cfg)
    net.load_state_dict(imagereward_state_dict(sd), strict=True, assign=True)
    emb = net.text_encoder.embeddings      # the one non-persistent buffer: positions 0..max-1
    emb.position_ids = torch.arange(text_cfg.max_position_embeddings).expand(1, -1)
    return net


def blip_tokenizer(vocab):
    """BLIP's tokenizer (blip.init_tokenizer): BERT WordPiece, uncased, plus [DEC] (bos) and
    [ENC]."""
    from transformers import BertTokenizer
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    tok.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    return tok


def load_imagereward(ctx):
    """(ImageRewardNet, tokenizer)."""
    if "imagereward" in ctx.cache:
        return ctx.cache["imagereward"]
    if ctx.tiny:
        with seeded(ctx.seed):
            net = ImageRewardNet(*imagereward_configs(tiny=True))
        tok = blip_tokenizer(TINY_BERT_VOCAB)
    else:
        path = _hub_file(IMAGEREWARD_REPO, [IMAGEREWARD_FILE], "ImageReward", "--imagereward-ckpt",
                         ctx.imagereward_ckpt)
        side = os.path.join(os.path.dirname(path), "vocab.txt")   # bert-base-uncased's, next to it
        try:
            vocab = side if os.path.isfile(side) else _hub_file(BERT_REPO, ["vocab.txt"], "", "")
        except RewardWeightsMissing:
            raise RewardWeightsMissing(
                f"ImageReward: BLIP's tokenizer vocabulary {BERT_REPO}/vocab.txt is neither "
                f"next to {path} nor in the huggingface_hub cache; put it next to the "
                f"--imagereward-ckpt file") from None
        net = imagereward_from_state(torch.load(path, map_location="cpu", weights_only=True),
                                     *imagereward_configs(tiny=False))
        tok = blip_tokenizer([w.rstrip("\n") for w in open(vocab, encoding="utf-8")])
    net = _frozen(net, ctx)
    net.mlp.float()
    ctx.cache["imagereward"] = (net, tok)
    return ctx.cache["imagereward"]


def build_imagereward(ctx):
    net, tok = load_imagereward(ctx)
    size = net.vision_model.config.image_size

    def reward(x, prompts):
        # ImageReward.score: prompt padded to 35 tokens ([CLS] first, not [ENC]); CLIP's 224 px
        # transform
        t = tok(list(prompts), padding="max_length", truncation=True, max_length=35,
                return_tensors="pt")
        t = t.to(ctx.device)
        pixels = clip_preprocess(x, size).to(ctx.dtype)
        return net(pixels, t["input_ids"], t["attention_mask"]).float()
    return reward


def load_aesthetic(ctx):
    """(open_clip ViT-L/14, MLP, image size)."""
    if "aesthetic" in ctx.cache:
        return ctx.cache["aesthetic"]
    import open_clip
    if ctx.tiny:
        with seeded(ctx.seed):
            clip, mlp = tiny_clip(quick_gelu=True), LinearHead(32)
    else:
        places = (os.path.expanduser(f"~/.cache/ImageReward/{AESTHETIC_FILE}"),
                  os.path.join(torch.hub.get_dir(), "checkpoints", AESTHETIC_FILE))

        def fetch(local):   # ImageReward's and AR-GRPO's download folders, then torch hub's
            found = [p for p in places if os.path.isfile(p)]
            if found:
                return found[0]
            if local:
                raise FileNotFoundError(AESTHETIC_FILE)
            torch.hub.download_url_to_file(AESTHETIC_URL, places[1])
            return places[1]
        path = find_weights("LAION aesthetic", "--aesthetic-ckpt", ctx.aesthetic_ckpt, fetch,
                            file=f"MLP {AESTHETIC_FILE}", where="~/.cache/ImageReward or torch hub",
                            names=[AESTHETIC_FILE], error=RewardWeightsMissing,
                            fix=f"download {AESTHETIC_URL} and pass --aesthetic-ckpt PATH")
        clip_path = _hub_file(AESTHETIC_CLIP_REPO, CLIP_FILES,
                              "LAION aesthetic: CLIP ViT-L/14 (openai)", "--aesthetic-clip-ckpt",
                              ctx.aesthetic_clip_ckpt)
        clip = open_clip.create_model("ViT-L-14-quickgelu", pretrained=None)
        open_clip.load_checkpoint(clip, clip_path)
        mlp = LinearHead(768)
        state = torch.load(path, map_location="cpu", weights_only=True)
        mlp.load_state_dict(state)                      # strict: layers.{0,2,4,6,7}
    size = clip.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    head = _frozen(mlp, ctx).float()                    # the head in fp32, as the library
    ctx.cache["aesthetic"] = (_frozen(clip, ctx), head, size)
    return ctx.cache["aesthetic"]


def build_aesthetic(ctx):
    clip, mlp, size = load_aesthetic(ctx)

    def reward(x, prompts):   # prompts unused: an image-only score
        f = clip.encode_image(clip_preprocess(x, size).to(ctx.dtype)).float()     # (B, 768)
        f = f / f.norm(dim=-1, keepdim=True)
        return mlp(f).squeeze(-1)
    return reward
