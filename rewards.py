"""rewards.py: the reward ensemble of AR-GRPO.

Every reward maps a batch of images (B, 3, H, W), float in [0, 1], and their prompts (a list of
B strings) to one number per image, a tensor (B,). `build_rewards` parses a spec such as
"clip:1,hps:1,maniqa:1,qwen:1" and returns the scorer; REWARDS below lists every name with its
formula:

    scorer = build_rewards("color:1,jpeg:0.5", device="cpu")
    total, parts = scorer(images, prompts)      # total = sum_k w_k * parts[k], all (B,) float32

The paper's rewards (Kwai-Klear/AR-GRPO, img_gen_grpo_rewards.py) keep its scalings: 5 x the CLIP
and HPSv2.1 cosines, their quantised copies Q(cos), 2 x MANIQA over 20 random crops, and three
Qwen2.5-VL-3B judge questions / 4 (every paper weight is 1). The judge has two modes: "generate" is
AR-GRPO's (JPEG round trip, the question then the image, <= 256 new tokens, the answer repaired by
json_repair and its "score" read, 3 attempts, then 0); "fast" is one forward pass reading the
expected score digit (a different, cheaper judge). The weight-free rewards (OFFLINE_REWARDS) need
no download: `color` is a conditional reward a tiny model can learn (each prompt has its own target
colour). The networks load as their libraries load them (plumbing/reward_models.py,
plumbing/t2i_scorers.py: a flag's path, else the library cache, else a download, else one line
naming the file); tiny=True builds every reward from a random stand-in (tests, offline runs).
More: docs/rewards.md.

    python tools/bench.py --rewards            (images/s of each reward, tiny configs)
"""
import hashlib
import io
import json
import math
import re
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from PIL import Image

from plumbing import mnist, t2i_scorers
from plumbing.images import clip_pixels, to_pil_levels
from plumbing.judge import (QWEN_SCORE_PROMPT, YES_NO_PROMPT, judge_answers, judge_inputs,
                            jpeg_round_trip, judge_text)
from plumbing.reward_models import (WEIGHT_ARGS, load_clip, load_maniqa, load_qwen, maniqa_forward,
                                    reward_autocast, weights_dtype)

# ----------------------------------------------------------------------------- the ensemble
# name -> builder(ctx): loads what the reward needs (failing fast on missing weights) and returns
# fn(images, prompts) -> (B,). The lambdas look their targets up when called, so this table can
# open the file, above the functions it names. Q = the paper's step map (quantise).
REWARDS = {
    "color": lambda ctx: reward_color,              # 1 - |mean RGB - c(prompt)| / sqrt(3)
    "brightness": lambda ctx: reward_brightness,    # mean luma
    "colorfulness": lambda ctx: reward_colorfulness,  # Hasler & Suesstrunk (2003)
    "jpeg": lambda ctx: reward_jpeg,                # -(JPEG q95 bytes) / pixels
    "clip": lambda ctx: build_clip(ctx, "clip", quantised=False),  # 5 cos, OpenAI CLIP ViT-B/32
    "clip_q": lambda ctx: build_clip(ctx, "clip", quantised=True),  # Q(cos)
    "hps": lambda ctx: build_clip(ctx, "hps", quantised=False),     # 5 cos, HPSv2.1 (ViT-H-14)
    "hps_q": lambda ctx: build_clip(ctx, "hps", quantised=True),    # Q(cos)
    "maniqa": lambda ctx: build_maniqa(ctx),        # 2 x mean MANIQA over 20 random 224 crops
    "qwen_score": lambda ctx: Judge(ctx, "qwen_score"),  # judge score (0..5) / 4
    "qwen_fake": lambda ctx: Judge(ctx, "qwen_fake"),    # "AI-generated?" 0 / 1, / 4
    "qwen_weird": lambda ctx: Judge(ctx, "qwen_weird"),  # "strange feature?" 0 / 1, / 4
    # the DrawBench scorers of AR-GRPO's T2I table (plumbing/t2i_scorers.py), usable as rewards
    "pickscore": lambda ctx: t2i_scorers.build_pickscore(ctx),  # exp(logit_scale) cos, PickScore_v1
    "imagereward": lambda ctx: t2i_scorers.build_imagereward(ctx),  # normalised ImageReward-v1.0
    "aesthetic": lambda ctx: t2i_scorers.build_aesthetic(ctx),  # LAION aesthetic predictor v2
    # the mnist preset's (plumbing/mnist.py): the semantic reward and a prompt-free quality one
    "digit": lambda ctx: mnist.build_digit(ctx),      # p(prompted digit | x), a CNN on real digits
    "realism": lambda ctx: mnist.build_realism(ctx),  # exp(-r / r_real), r: residual off the PCA
}
OFFLINE_REWARDS = ["color", "brightness", "colorfulness", "jpeg"]   # no weights, no network


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
        x = to_pil_levels(x) if self.ctx.inputs == "pil" else x   # AR-GRPO's uint8: fidelity.md
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


def build_rewards(spec, device="cpu", dtype=None, judge_mode="generate", tiny=False, seed=0,
                  judge_tokens=256, precision="auto", inputs="float", maniqa_full_range=True,
                  **weights):
    """The scorer for `spec` ("name:weight,..."). dtype (e.g. torch.bfloat16): the reward models'
    compute dtype, default float32; tiny=True: random stand-ins (tests, benchmarks); seed: the
    stand-ins' weights; judge_tokens caps a generated answer (256 in the paper); "paper", "pil" and
    False reproduce AR-GRPO's model dtypes, image inputs and crop offsets (docs/fidelity.md);
    weights: the paths of WEIGHT_ARGS (clip_ckpt=..., ...), else the library caches."""
    builders = reward_builders()
    pairs = parse_spec(spec, builders)
    assert judge_mode in ("fast", "generate"), judge_mode
    unknown = set(weights) - set(WEIGHT_ARGS)
    assert not unknown, f"unknown weight paths {unknown}"
    ctx = SimpleNamespace(device=torch.device(device), dtype=dtype or torch.float32, tiny=tiny,
                          judge_mode=judge_mode, seed=seed, judge_tokens=judge_tokens, cache={},
                          precision=precision, inputs=inputs, maniqa_full_range=maniqa_full_range,
                          **{k: weights.get(k) for k in WEIGHT_ARGS})
    fns = [builders[n](ctx) for n, _ in pairs]
    return Rewards([n for n, _ in pairs], [w for _, w in pairs], fns, ctx)


# ----------------------------------------------------------------------------- weight-free
def prompt_color(prompt):
    """A fixed RGB target in [0, 1]^3 for a prompt (md5, so identical across processes,
    unlike Python's salted hash())."""
    digest = hashlib.md5(prompt.encode("utf-8")).digest()
    return torch.tensor([digest[0], digest[1], digest[2]], dtype=torch.float32) / 255.0


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
    u8 = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()  # (B, H, W, 3)
    sizes = []
    for img in u8:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=95)
        sizes.append(buf.tell())                                             # bytes
    h, w = x.shape[-2:]
    return -torch.tensor(sizes, dtype=torch.float32, device=x.device) / (h * w)


# ----------------------------------------------------------------------------- CLIP and HPS
def quantise(s):
    """The paper's step map on a raw similarity s (any shape): <0 -> -1, [0,.3) -> .5,
    [.3,.6) -> 1, >= .6 -> 1.5 (the paper's code crashes for s >= 1; we keep 1.5). NaN stays NaN
    (the paper's code raises), so the run's non-finite stop sees it."""
    s = torch.as_tensor(s, dtype=torch.float32)
    edges = torch.tensor([0.0, 0.3, 0.6], device=s.device)
    values = torch.tensor([-1.0, 0.5, 1.0, 1.5], device=s.device)
    # bucketize(right=True) gives the number of edges <= s: 0 for s<0, ..., 3 for s>=0.6
    return torch.where(s.isnan(), s, values[torch.bucketize(s, edges, right=True)])


def clip_cosine(ctx, kind, x, prompts):
    """cos(f_img, f_txt) per image, (B,). Text features of repeated prompts (a GRPO group
    shares one prompt) are computed once; clip and clip_q share one evaluation per batch."""
    memo = ctx.cache.get(("cos", kind))
    if memo is not None and memo[0] is x and memo[1] == prompts:
        return memo[2]
    model, tokenizer, size = load_clip(ctx, kind)
    pixels = clip_pixels(x, size, kind, ctx.inputs).to(weights_dtype(ctx, kind))  # fidelity.md
    uniq = sorted(set(prompts))
    with reward_autocast(ctx, kind):   # AR-GRPO's HPS: fp16 autocast, the cosine a fp16 matmul
        img = model.encode_image(pixels, normalize=True).float()                   # (B, D)
        txt = model.encode_text(tokenizer(uniq).to(ctx.device), normalize=True).float()  # (U, D)
        txt = txt[torch.tensor([uniq.index(p) for p in prompts], device=txt.device)]  # (B, D)
        cos = (img[:, None] @ txt[:, :, None]).flatten().float()                  # (B,)
    ctx.cache[("cos", kind)] = (x, list(prompts), cos)
    return cos


def build_clip(ctx, kind, quantised):
    load_clip(ctx, kind)            # load now: a missing checkpoint fails at build time
    if quantised:
        return lambda x, prompts: quantise(clip_cosine(ctx, kind, x, prompts))
    return lambda x, prompts: 5.0 * clip_cosine(ctx, kind, x, prompts)


# ----------------------------------------------------------------------------- MANIQA
MANIQA_CROPS, MANIQA_CROP = 20, 224


def maniqa_crops(x, n, size, full_range=True):
    """n random size x size crops per image, offsets 0..h-size from torch's global RNG (train.py
    seeds it from (seed, step, rank)); full_range=False: 0..h-size-1, AR-GRPO's
    np.random.randint(0, h - 224). (B,3,H,W) -> (B*n,3,S,S). Images smaller than a crop (the
    paper's code would crash on them) are first upsampled to 256 px, so their crops differ."""
    h, w = x.shape[-2:]
    if min(h, w) < size:
        x = F.interpolate(x, scale_factor=256 / min(h, w), mode="bicubic", antialias=True)
        x = x.clamp(0, 1)
        h, w = x.shape[-2:]
    tops = torch.randint(0, max(1, h - size + full_range), (x.shape[0], n)).tolist()
    lefts = torch.randint(0, max(1, w - size + full_range), (x.shape[0], n)).tolist()
    return torch.stack([x[b, :, t:t + size, l:l + size]
                        for b in range(x.shape[0]) for t, l in zip(tops[b], lefts[b])])


def build_maniqa(ctx):
    net = ctx.cache["maniqa"] = load_maniqa(ctx)

    def reward(x, prompts):
        crops = maniqa_crops(x, MANIQA_CROPS, MANIQA_CROP, ctx.maniqa_full_range)  # (B*20, 3, S, S)
        scores = torch.cat([maniqa_forward(net, c).float() for c in crops.split(64)])
        return 2.0 * scores.view(x.shape[0], MANIQA_CROPS).mean(1)
    return reward


# ----------------------------------------------------------------------------- the Qwen judge
# The questions, verbatim from the paper's code (plumbing/judge.py: typos kept, the reward is
# defined by these words): the long scoring prompt, and two yes/no questions.
JUDGE = {  # name -> (question template, max score); reward = score / 4 for all three
    "qwen_score": (QWEN_SCORE_PROMPT, 5),
    "qwen_fake": (YES_NO_PROMPT.format("Is the image an AI-generated image?"), 1),
    "qwen_weird": (YES_NO_PROMPT.format("Is there any strange feature in the image?"), 1),
}
QWEN_PARTS = list(JUDGE)
ANSWER_PREFIX = '```json\n{\n    "score": '   # fast mode: the answer up to the score digit
JUDGE_BATCH = 16          # images per judge forward / generate call
JUDGE_ATTEMPTS = 3        # generate mode: AR-GRPO asks again after a failed parse, 3 tries in all


def judge_texts():
    """The texts the tiny judge's tokenizer is trained on: every question and the chat template."""
    return [q for q, _ in JUDGE.values()] + [judge_text("")]


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


class Judge:
    """One judge question as a reward: (B,3,H,W), prompts -> score / 4, (B,). Both modes judge the
    image AR-GRPO's judge sees: after a JPEG round trip (`jpeg_round_trip`), text before image."""

    def __init__(self, ctx, name):
        self.ctx, (self.question, self.max_score) = ctx, JUDGE[name]
        self.model, self.processor = load_qwen(ctx, judge_texts())
        tok = self.processor.tokenizer
        digits = [tok.encode(str(d), add_special_tokens=False) for d in range(self.max_score + 1)]
        assert all(len(d) == 1 for d in digits), "each score digit must be one token"
        self.digit_ids = [d[0] for d in digits]
        # generate mode, cumulative: images judged, answers generated, images scored 0 after
        # JUDGE_ATTEMPTS unparseable answers, non-finite scores (set to 0)
        self.stats = {"answers": 0, "attempts": 0, "failures": 0, "nonfinite": 0}

    def _inputs(self, images, prompts, prefix):  # the chat texts and images, tokenised
        has_slot = "{}" in self.question         # qwen_score quotes the prompt; yes/no ones do not
        questions = [self.question.format(p) if has_slot else self.question for p in prompts]
        return judge_inputs(self.model, self.processor, questions, images, prefix)

    def fast(self, x, prompts):
        """One forward pass: E[score] from p(next token = d | ... '"score": '), d = 0..max."""
        inputs = self._inputs(jpeg_round_trip(x), prompts, ANSWER_PREFIX)
        logits = self.model(**inputs, logits_to_keep=1).logits[:, -1].float()  # (b, V) left padded
        p = logits.softmax(-1)[:, self.digit_ids]                                # (b, max+1)
        d = torch.arange(self.max_score + 1, device=p.device, dtype=p.dtype)
        self.stats["digit_mass"] = p.sum(1).mean().item()   # how much the judge wants a digit here
        return (p * d).sum(1) / p.sum(1)

    def generate(self, x, prompts):
        """AR-GRPO's judge: answer, parse (`judge_score`); an image whose answer does not parse is
        asked again, JUDGE_ATTEMPTS times in all, then scores 0. No range check. A non-finite score
        (json allows NaN) counts 0: AR-GRPO sums the reward components with nansum."""
        images, scores, todo = jpeg_round_trip(x), [None] * len(prompts), list(range(len(prompts)))
        for _ in range(JUDGE_ATTEMPTS):
            if not todo:
                break
            texts = judge_answers(self.model, self.processor, self._inputs(
                [images[i] for i in todo], [prompts[i] for i in todo], ""), self.ctx.judge_tokens)
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
