"""The paper's GRPO step at real size, phase by phase: where the time and the memory go.

One or more GRPO steps of a paper preset (`paper-c2i-xl384`: GPT-XL, 384 px, 576 tokens per image;
`paper-t2i-xl`: GPT-XL T2I with FLAN-T5-XL) with every model at its real architecture and RANDOM
weights built from its library's config (no download): the GPT and VQ-16 (model.py, vq.py),
FLAN-T5-XL's encoder (transformers T5Config), CLIP ViT-B/32 and HPSv2.1's ViT-H-14 (open_clip),
MANIQA on timm's ViT-B/8 (pyiqa's modules, plumbing/reward_models.py) and the Qwen2.5-VL-3B judge
(transformers Qwen2_5_VLConfig). The step is train.py's own phase functions (draw_prompts, rollout,
logprobs_before_update, score, update) on a Run assembled here, so what is timed is what trains;
inside `score` the VQ decode and each reward are timed apart. Per phase: seconds (after
torch.cuda.synchronize) and peak memory (CUDA: max_memory_allocated since the phase began; CPU: the
process's resident set at the phase's end; the run's high-water mark once, peak_rss_gb).

--size real needs a GPU (paper-c2i-xl384: 26 GiB of weights and optimizer state, counted by
--weights, plus activations) and refuses a CPU unless --force; --size tiny runs the same code with
every model scaled down (the stand-ins of plumbing/standins.py, GPT-tiny,
VQ-tiny), in seconds on a CPU (the tests). Random weights change two things, both reported: the
judge never writes a parseable answer, so it always generates --judge-tokens tokens (the paper's
cap, the worst case) and --judge-attempts is 1 by default (the paper's 3 retries would all run); the
judge's tokenizer is the stand-in's (the real one is a download), so its prompt lengths differ from
Qwen's (printed). Estimates: a paper run of S steps on W GPUs (DDP, each GPU one rank with the
preset's per-rank batch) takes S x t_step (+ the all-reduce of the gradient, not measured here).

    python tools/bench_paper.py --size tiny                          # CPU, seconds
    python tools/bench_paper.py --preset paper-t2i-xl --size tiny --judge-mode fast
    python tools/bench_paper.py --size real --rollout-dtype bf16 --compile --json out.json  # GPU
    tools/gpu_paper_step.sh                                          # every variant, GPU
"""
import argparse
import contextlib
import copy
import json
import os
import resource
import sys
import tempfile
import time
from types import SimpleNamespace

import torch

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository
sys.path.insert(0, HERE)

import rewards  # noqa: E402  (the repository)
import train  # noqa: E402
from grpo import Objective  # noqa: E402
from model import GPT, Sampling, gpt_config  # noqa: E402
from plumbing.files import check_writable, write_json  # noqa: E402
from plumbing.precision import training_dtypes  # noqa: E402
from plumbing.prompts import class_prompts  # noqa: E402
from plumbing.reward_models import (CLIP_ARCH, MANIQA_ARCH, frozen, maniqa_net,  # noqa: E402
                                    open_clip_model, reward_options, weights_dtype)
from plumbing.standins import TINY_PROMPTS, seeded, tiny_qwen, tiny_t5  # noqa: E402
from plumbing.stops import run_cli  # noqa: E402
from text import TextEncoder  # noqa: E402
from vq import VQ_PRESETS, VQModel  # noqa: E402

# the GPT each paper preset fine-tunes (its checkpoint's architecture; train.py reads it from the
# file)
PAPER_GPT = {"paper-c2i-b256": "GPT-B", "paper-c2i-b384": "GPT-B", "paper-c2i-l384": "GPT-L",
             "paper-c2i-xl384": "GPT-XL", "paper-t2i-xl": "GPT-XL"}

REAL_VQ = "VQ-16"   # LlamaGen's tokenizer for every paper preset: 16 px per token, 16384 codes

# google/flan-t5-xl's config.json (T5 v1.1 XL): the encoder is what LlamaGen's T2I reads
FLAN_T5_XL = dict(vocab_size=32128, d_model=2048, d_kv=64, d_ff=5120, num_layers=24, num_heads=32,
                  feed_forward_proj="gated-gelu", relative_attention_num_buckets=32,
                  tie_word_embeddings=False, dropout_rate=0.0)

# Qwen/Qwen2.5-VL-3B-Instruct's config.json (text: 36 layers, 2048 wide, 16 heads, 2 KV heads,
# MLP 11008, vocab 151936, tied embeddings, M-RoPE sections 16/24/24, theta 1e6; vision: 32 blocks,
# 1280 wide, 16 heads, MLP 3420, 14 px patches merged 2 x 2 into 2048, window 112, full attention
# in blocks 7/15/23/31) and its preprocessor_config.json (min / max pixels). The special tokens' ids
# are the stand-in tokenizer's (the real tokenizer is a download); they change no cost.
QWEN_3B_TEXT = dict(vocab_size=151936, hidden_size=2048, intermediate_size=11008,
                    num_hidden_layers=36, num_attention_heads=16, num_key_value_heads=2,
                    rms_norm_eps=1e-6, max_position_embeddings=128000, hidden_act="silu",
                    tie_word_embeddings=True,
                    rope_parameters=dict(rope_type="default", rope_theta=1e6,
                                         mrope_section=[16, 24, 24]))
QWEN_3B_VISION = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16,
                      out_hidden_size=2048, patch_size=14, spatial_merge_size=2,
                      temporal_patch_size=2, window_size=112, fullatt_block_indexes=[7, 15, 23, 31],
                      hidden_act="silu")
QWEN_PIXELS = dict(min_pixels=3136, max_pixels=12845056)

# published parameter counts (tests/test_bench_paper.py checks the real builds against them)
PUBLISHED_PARAMS = {
    "GPT-XL (c2i)": 775e6,          # LlamaGen README
    "CLIP ViT-B/32": 151.28e6,      # open_clip's model table (ViT-B-32)
    "HPSv2.1 ViT-H-14": 986.11e6,   # open_clip's model table (ViT-H-14)
    "Qwen2.5-VL-3B": 3.75e9,        # Qwen/Qwen2.5-VL-3B-Instruct's model card (3.75B params)
    "FLAN-T5-XL encoder": 1.22e9,   # half of flan-t5-xl's 2.85B (its 24-layer encoder + embedding)
}


# ----------------------------------------------------------------------------- the models
def gpt_for(preset, task, size):
    """The policy's architecture: the preset's GPT over VQ-16 at its resolution, or GPT-tiny over
    VQ-tiny (16 tokens)."""
    if size == "tiny":
        return gpt_config("GPT-tiny", model_type=task)
    vq = VQ_PRESETS[REAL_VQ]
    side = train.PRESETS[preset]["image_size"] // vq.downsample
    return gpt_config(PAPER_GPT[preset], model_type=task, vocab_size=vq.codebook_size,
                      block_size=side ** 2)


def real_t5():
    from transformers import T5Config, T5EncoderModel
    return T5EncoderModel(T5Config(**FLAN_T5_XL))


def real_qwen(dtype=None):
    """Qwen2.5-VL-3B with random weights (in `dtype`, e.g. on the meta device for a count)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    cfg = Qwen2_5_VLConfig(text_config=QWEN_3B_TEXT, vision_config=QWEN_3B_VISION,
                           tie_word_embeddings=True)
    return Qwen2_5_VLForConditionalGeneration._from_config(cfg, dtype=dtype)


def real_maniqa():
    import timm
    vit = timm.create_model("vit_base_patch8_224", pretrained=False, **MANIQA_ARCH["vit"])
    return maniqa_net(vit, **MANIQA_ARCH["maniqa"])


def real_reward_models():
    """name -> builder of each paper reward network at its real size, random weights (the param
    count test builds them on the meta device)."""
    return {"CLIP ViT-B/32": lambda: open_clip_model(CLIP_ARCH["clip"]),
            "HPSv2.1 ViT-H-14": lambda: open_clip_model(CLIP_ARCH["hps"]),
            "MANIQA (ViT-B/8)": real_maniqa, "Qwen2.5-VL-3B": real_qwen,
            "FLAN-T5-XL encoder": real_t5}


def count(model):
    return sum(p.numel() for p in model.parameters())


def weight_budget(preset):
    """What the preset's models hold at real size on a GPU before any activation, in the paper's
    dtypes (train.py's rules: fp32 policy, gradient, AdamW moments and reference, or all bf16 with
    --pure-bf16; T5 bf16; CLIP, HPS, MANIQA fp32; the judge bf16), counted on the meta device
    (MANIQA on the CPU: pyiqa's Swin calls .item() while building). -> {row: (params, GB)}."""
    p = train.PRESETS[preset]
    w = 2 if p["pure_bf16"] else 4                     # bytes per policy / reference / VQ value
    with torch.device("meta"):
        gpt = count(GPT(gpt_for(preset, p["task"], "real")))
        vq = count(VQModel(VQ_PRESETS[REAL_VQ]))
        nets = {k: count(b()) for k, b in real_reward_models().items()
                if not k.startswith("MANIQA") and (p["task"] == "t2i" or not k.startswith("FLAN"))}
    nets["MANIQA (ViT-B/8)"] = count(real_maniqa())
    rows = {"policy weights": (gpt, w), "policy gradient": (gpt, w),
            "AdamW moments (2)": (2 * gpt, w), "reference": (gpt, w), "VQ-16": (vq, w)}
    rows.update({k: (n, 2 if k.startswith(("FLAN", "Qwen")) else 4) for k, n in nets.items()})
    return {k: (n, n * b / 2 ** 30) for k, (n, b) in rows.items()}


@contextlib.contextmanager
def real_size_loaders():
    """rewards.py's model loaders swapped for builders of the real architectures with random
    weights, while build_rewards builds the scorer; they cache under the loaders' keys, so the
    scorer's later look-ups find these models."""
    import open_clip
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    def clip(ctx, kind):
        if kind not in ctx.cache:
            with seeded(ctx.seed), torch.device(ctx.device):   # initialised in place
                model = open_clip_model(CLIP_ARCH[kind])
            size = model.visual.image_size
            size = size[0] if isinstance(size, (tuple, list)) else size
            ctx.cache[kind] = (frozen(model, ctx, kind), open_clip.get_tokenizer("ViT-B-32"), size)
        return ctx.cache[kind]

    def maniqa(ctx):
        with seeded(ctx.seed), torch.device(ctx.device):
            return frozen(real_maniqa(), ctx, "maniqa")

    def qwen(ctx, texts):
        if "qwen" not in ctx.cache:
            _, stand_in = tiny_qwen(ctx.seed, texts)          # its tokenizer only
            with seeded(ctx.seed), torch.device(ctx.device):  # built in place: 3.75B on the GPU
                model = real_qwen(dtype=weights_dtype(ctx, "qwen"))
            pixels = Qwen2VLImageProcessor(**QWEN_PIXELS)
            processor = Qwen2_5_VLProcessor(image_processor=pixels,
                                            tokenizer=stand_in.tokenizer,
                                            video_processor=Qwen2VLVideoProcessor())
            ids = {t: stand_in.tokenizer.convert_tokens_to_ids(t) for t in
                   ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>",
                    "<|im_end|>", "<|endoftext|>")}
            model.config.image_token_id = ids["<|image_pad|>"]
            model.config.video_token_id = ids["<|video_pad|>"]
            model.config.vision_start_token_id = ids["<|vision_start|>"]
            model.config.vision_end_token_id = ids["<|vision_end|>"]
            for c in (model.generation_config, model.config):
                c.eos_token_id, c.pad_token_id = ids["<|im_end|>"], ids["<|endoftext|>"]
            ctx.cache["qwen"] = (frozen(model, ctx, "qwen"), processor)
        return ctx.cache["qwen"]

    saved = rewards.load_clip, rewards.load_maniqa, rewards.load_qwen
    rewards.load_clip, rewards.load_maniqa, rewards.load_qwen = clip, maniqa, qwen
    try:
        yield
    finally:
        rewards.load_clip, rewards.load_maniqa, rewards.load_qwen = saved


# ----------------------------------------------------------------------------- phase timing
class Phases:
    """Seconds and peak memory per named phase; phases nest (a parent's peak includes its
    children's). Repeated names add their seconds."""

    def __init__(self, device):
        self.device, self.rows, self.stack = device, {}, []

    @contextlib.contextmanager
    def __call__(self, name):
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self.stack.append(0)                     # the children's peak, bytes
        t = time.perf_counter()
        try:
            yield
        finally:
            if cuda:
                torch.cuda.synchronize()
            dt = time.perf_counter() - t
            children = self.stack.pop()
            if cuda:   # a child's reset hid what came before it: take the max with the children
                peak = max(torch.cuda.max_memory_allocated(), children)
                torch.cuda.reset_peak_memory_stats()
            else:
                peak = rss_bytes()
            if self.stack:
                self.stack[-1] = max(self.stack[-1], peak)
            row = self.rows.setdefault(name, {"s": 0.0, "peak_gb": 0.0})
            row["s"] += dt
            row["peak_gb"] = max(row["peak_gb"], peak / 2 ** 30)


def rss_bytes():
    """This process's resident set now (Linux /proc; else its high-water mark)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class TimedReward:
    """A reward function of the scorer, timed as phase 'reward <name>' (its counters kept)."""

    def __init__(self, fn, name, phases):
        self.fn, self.name, self.phases = fn, name, phases

    @property
    def stats(self):
        return getattr(self.fn, "stats", {})

    def __call__(self, x, prompts):
        with self.phases(f"reward {self.name}"):
            return self.fn(x, prompts)


class TimedVQ:
    """The VQ with its decode timed as phase 'vq decode'."""

    def __init__(self, vq, phases):
        self.vq, self.phases = vq, phases

    def decode(self, codes):
        with self.phases("vq decode"):
            return self.vq.decode(codes)


# ----------------------------------------------------------------------------- the run
def paper_args(a, out):
    """train.py's flags for the preset (its parser, its checks) with the variant's overrides; the
    weights are built here, so no checkpoint paths."""
    argv = ["--preset", a.preset, "--task", train.PRESETS[a.preset]["task"], "--out", out, "--device", a.device,
            "--judge-mode", a.judge_mode, "--micro-batch", str(a.micro_batch),
            "--compile" if a.compile else "--no-compile"]
    args = train.get_args(argv)
    args.gpt_ckpt = args.vq_ckpt = args.t5_path = ""
    return args


def build_run(a, phases):
    """A train.Run for the preset at --size with random weights, its VQ and rewards timed."""
    dev = torch.device(a.device)
    args = paper_args(a, tempfile.gettempdir())
    torch.manual_seed(args.seed)
    config = gpt_for(a.preset, args.task, a.size)
    with torch.device(dev):            # built in place (GPT-XL: 3 GB fp32, twice)
        policy = GPT(config)
        torch.manual_seed(args.seed + 1)
        vq = VQModel(VQ_PRESETS["VQ-tiny" if a.size == "tiny" else REAL_VQ]).eval()
    reference = copy.deepcopy(policy)     # a frozen copy of the initial weights, as train.py
    policy.eval()
    reference.eval().requires_grad_(False)
    text = None
    if args.task == "t2i":
        dtype = torch.bfloat16 if dev.type == "cuda" and args.bf16 else torch.float32
        model, tok = tiny_t5(config.caption_dim, args.seed)   # the stand-in's tokenizer: offline
        if a.size == "real":
            model = real_t5()
        text = TextEncoder(model.to(dev, dtype), tok, pad=args.caption_pad,
                           clean=args.clean_captions)
    policy, reference, vq, text = training_dtypes(args, dev, policy, reference, vq, text)
    torch.backends.cuda.matmul.allow_tf32 = args.tf32     # as train.setup: off in the presets
    bf16 = dev.type == "cuda" and args.bf16
    amp = torch.autocast("cuda", torch.bfloat16) if bf16 else contextlib.nullcontext()
    rollout_amp = (torch.autocast(dev.type, torch.bfloat16) if a.rollout_dtype == "bf16"
                   else contextlib.nullcontext())
    loaders = real_size_loaders() if a.size == "real" else contextlib.nullcontext()
    with loaders:
        scorer = rewards.build_rewards(args.rewards, device=dev, judge_mode=args.judge_mode,
                                       dtype=torch.bfloat16 if bf16 else None, seed=args.seed,
                                       tiny=a.size == "tiny", judge_tokens=a.judge_tokens,
                                       **reward_options(args))
    scorer.fns = [TimedReward(fn, n, phases) for fn, n in zip(scorer.fns, scorer.names)]
    pool = class_prompts(config.num_classes) if args.task == "c2i" else TINY_PROMPTS
    P, G = args.prompts_per_rank, args.group_size
    opt = torch.optim.AdamW(policy.parameters(), lr=args.lr, betas=tuple(args.adam_betas),
                            weight_decay=args.weight_decay)
    return train.Run(args=args, rank=0, world=1, device=dev, log=print, amp=amp,
                     rollout_amp=rollout_amp, scorer=scorer, policy=policy, reference=reference,
                     vq=TimedVQ(vq, phases), text=text, model=policy, opt=opt, pool=pool,
                     sampling=Sampling.of(args), objective=Objective.of(args), P=P, G=G,
                     N=config.block_size, micro=args.micro_batch or P * G // args.minibatches,
                     old_from=train.pi_old_source(args), ckpt_path="", metrics_path="")


def grpo_step(run, step, phases):
    """One step of train.main's loop, each phase timed (the logging and saving left out)."""
    torch.manual_seed(train.mix(run.args.seed, step, run.rank))
    with phases("step"):
        with phases("prompts" if run.args.task == "c2i" else "text encoder"):
            batch = train.draw_prompts(run, step)
        with phases("rollout"):
            batch.tokens, batch.logp_sampler = train.rollout(run, batch, step)
        with phases("reference log-probs"):
            ref, old, _ = train.logprobs_before_update(run, batch)
        with phases("score"):
            scores = train.score(run, batch, ref, old, step)
        with phases("update"):
            train.update(run, batch, scores.adv, ref, old, step)


def report(a, run, phases, steps):
    """The last step's phases as printed lines and a dict: seconds, share of the step, peak GB;
    images/s; the judge's share; the time of a paper run on 4 GPUs."""
    rows, t_step = phases.rows, phases.rows["step"]["s"]
    rewards_s = sum(r["s"] for k, r in rows.items() if k.startswith("reward "))
    judge_s = sum(r["s"] for k, r in rows.items() if k.startswith("reward qwen"))
    rows["score: inputs, advantages"] = {
        "s": rows["score"]["s"] - rows["vq decode"]["s"] - rewards_s,
        "peak_gb": rows["score"]["peak_gb"]}
    B, paper_steps = run.B, train.PRESETS[a.preset]["steps"]
    res = {"preset": a.preset, "size": a.size, "device": device_name(run.device),
           "variant": {k: getattr(a, k) for k in ("rollout_dtype", "compile", "judge_mode",
                                                  "micro_batch", "judge_tokens", "judge_attempts",
                                                  "judge_batch")},
           "images_per_rank": B, "tokens_per_image": run.N, "steps": steps,
           "phases": {k: {**v, "share": v["s"] / t_step} for k, v in rows.items()},
           "t_step": t_step, "images_per_s": B / t_step, "judge_s": judge_s,
           "judge_share": judge_s / t_step, "judge_prompt_tokens": judge_prompt_tokens(run),
           "paper_steps": paper_steps,
           "hours_400_steps_4_gpus": 400 * t_step / 3600,
           "hours_paper_run_4_gpus": paper_steps * t_step / 3600,
           "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20}
    mem = "peak GB (CUDA allocated)" if run.device.type == "cuda" else "RSS GB at its end"
    print(f"{a.preset} at {a.size} size on {res['device']}: {B} images of {run.N} tokens per "
          f"rank, last of {steps} steps; {json.dumps(res['variant'])}")
    print(f"  {'phase':34s} {'seconds':>9s} {'share':>7s}  {mem}")
    order = ["text encoder", "prompts", "rollout", "reference log-probs", "score", "vq decode",
             *[k for k in rows if k.startswith("reward ")], "score: inputs, advantages", "update",
             "step"]
    for k in [k for k in order if k in rows]:
        r = rows[k]
        indent = "    " if k.startswith(("reward ", "vq ", "score: ")) else "  "
        print(f"{indent}{k:{36 - len(indent)}s} {r['s']:9.3f} {100 * r['s'] / t_step:6.1f}% "
              f"{r['peak_gb']:8.2f}")
    print(f"  images/s of the step {res['images_per_s']:.3f}; the judge (3 questions) "
          f"{judge_s:.3f} s = {100 * res['judge_share']:.1f}% of the step; judge prompt tokens "
          f"{res['judge_prompt_tokens']}")
    print(f"  a paper run on 4 such GPUs (4 ranks x {B} images, + the gradient all-reduce): "
          f"400 steps x {t_step:.2f} s = {res['hours_400_steps_4_gpus']:.2f} h"
          + (f"; its {paper_steps} steps {res['hours_paper_run_4_gpus']:.2f} h"
             if paper_steps != 400 else ""))
    return res


def judge_prompt_tokens(run):
    """The judge's prompt length in its tokenizer's tokens (text only; each image adds its
    patches / 4), per question; {} without a judge."""
    qwen = run.scorer.ctx.cache.get("qwen")
    if qwen is None:
        return {}
    from plumbing.judge import judge_text
    tok = qwen[1].tokenizer
    fill = lambda q: q.format("a photo of a dog") if "{}" in q else q   # as Judge._inputs
    return {n: len(tok(judge_text(fill(q)))["input_ids"]) for n, (q, _) in rewards.JUDGE.items()}


def device_name(dev):
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"CPU, {torch.get_num_threads()} threads"


# ----------------------------------------------------------------------------- command line
def parser():
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--preset", default="paper-c2i-xl384", choices=list(PAPER_GPT),
                   help="the paper preset whose step is timed")
    p.add_argument("--size", choices=["real", "tiny"], default="tiny",
                   help="real: every model at its real architecture (a GPU); tiny: the same code "
                        "with the stand-ins (a CPU, seconds)")
    p.add_argument("--force", action="store_true", help="--size real on a CPU anyway")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--steps", type=int, default=2,
                   help="GRPO steps to run; the last is reported (the first warms up)")
    p.add_argument("--rollout-dtype", choices=["fp32", "bf16"], default="fp32",
                   help="sample and VQ-decode in fp32 (AR-GRPO's C2I) or under bf16 autocast")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                   help="the compiled sampler (train.py --compile); its compilation falls in the "
                        "first step")
    p.add_argument("--judge-mode", choices=["generate", "fast"], default="generate",
                   help="the judge's mode: generate (the paper's) or fast (one forward pass)")
    p.add_argument("--judge-tokens", type=int, default=256,
                   help="the generate judge's answer cap (the paper's 256); random weights reach it")
    p.add_argument("--judge-attempts", type=int, default=1,
                   help="generate attempts per image (the paper's 3 retry a failed parse; random "
                        "weights fail every parse, so 3 would time the worst case)")
    p.add_argument("--judge-batch", type=int, default=rewards.JUDGE_BATCH,
                   help="images per judge call (1: the paper's code, one image at a time)")
    p.add_argument("--micro-batch", type=int, default=0,
                   help="sequences per forward in the log-prob passes and the update (0: all)")
    p.add_argument("--weights", action="store_true",
                   help="only print what the preset's models hold at real size (params, GB in "
                        "the paper's dtypes; counted on the meta device, no memory used)")
    p.add_argument("--cpu-threads", type=int, default=0,
                   help="torch CPU threads (0: torch's default; 1 on a busy machine)")
    p.add_argument("--json", default="", help="also write the figures to this JSON file")
    return p


def parse_args(argv=None):
    p = parser()
    a = p.parse_args(argv)
    a.device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    for flag, v in (("--steps", a.steps), ("--judge-tokens", a.judge_tokens),
                    ("--judge-attempts", a.judge_attempts), ("--judge-batch", a.judge_batch)):
        if v < 1:
            p.error(f"{flag} must be >= 1, got {v}")
    if a.cpu_threads < 0:
        p.error(f"--cpu-threads must be >= 0, got {a.cpu_threads}")
    preset = train.PRESETS[a.preset]
    batch = preset["prompts_per_rank"] * preset["group_size"]
    if not 0 <= a.micro_batch <= batch:
        p.error(f"--micro-batch must be in [0, {batch}] ({a.preset}: {batch} images per rank), "
                f"got {a.micro_batch}")
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        p.error(f"--device {a.device}: no CUDA GPU on this machine")
    if a.size == "real" and not a.device.startswith("cuda") and not a.force:
        p.error("--size real builds GPT-XL, ViT-H-14, Qwen2.5-VL-3B ... at full size (see --weights) "
                "and runs them: it needs a CUDA GPU; use --size tiny on a CPU, or --force")
    check_writable(a.json, "--json", suffixes=[".json"])
    return a


def main(argv=None):
    a = parse_args(argv)
    if a.cpu_threads:
        torch.set_num_threads(a.cpu_threads)
    if a.weights:
        budget = weight_budget(a.preset)
        print(f"{a.preset}: weights and optimizer state at real size, the paper's dtypes")
        for k, (n, gb) in budget.items():
            print(f"  {k:24s} {n / 1e6:9.1f} M {gb:7.2f} GB")
        print(f"  {'total':24s} {'':11s} {sum(gb for _, gb in budget.values()):7.2f} GB")
        return budget
    phases = Phases(torch.device(a.device))
    run = build_run(a, phases)   # train.py's flag checks (e.g. --micro-batch too large) ran here
    saved = rewards.JUDGE_ATTEMPTS, rewards.JUDGE_BATCH
    rewards.JUDGE_ATTEMPTS, rewards.JUDGE_BATCH = a.judge_attempts, a.judge_batch
    try:
        for step in range(a.steps):
            phases.rows.clear()     # the last step's figures
            grpo_step(run, step, phases)
    finally:
        rewards.JUDGE_ATTEMPTS, rewards.JUDGE_BATCH = saved
    res = report(a, run, phases, a.steps)
    if a.json:
        write_json(a.json, res)
    return res


if __name__ == "__main__":
    run_cli(main)  # one-line errors, Ctrl-C, a failed write (plumbing/stops.py)
