"""The command lines of train.py and sample.py: their flag tables (argparse, --kebab-case, with
help), the range check of every numeric flag (one line each, before anything loads), and the
checks of weight paths (missing, or the wrong kind of path) that run before any model is built.
"""
import argparse
import json
import math
import os

import torch

from plumbing.formats import run_args
from plumbing.reward_models import WEIGHT_ARGS
from plumbing.weights import BadCheckpoint, MissingCheckpoint


def range_errors(args, checks):
    """The first numeric flag outside its range, as one line for `parser.error`, else None.
    checks: (flag, predicate, what it must be); flags whose value is None (unset) are skipped.
    A NaN fails every predicate, since every comparison with NaN is False."""
    for flag, ok, must in checks:
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None and not ok(value):
            return f"{flag} must be {must}, got {value}"
    return None


# (flag, predicate, what it must be): the sampler flags (sample.py, train.py, tools/eval.py
# compare); temperature 0 / top-p 0 would sample greedily
SAMPLER_CHECKS = [
    ("--cfg-scale", lambda v: 0 <= v < math.inf, "a finite number >= 0 (1 = no guidance)"),
    ("--cfg-interval", lambda v: v >= -1, ">= -1 (-1 = guidance at every token)"),
    ("--temperature", lambda v: 0 < v < math.inf, "a finite number > 0"),
    ("--top-k", lambda v: v >= 0, ">= 0 (0 = off)"),
    ("--top-p", lambda v: 0 < v <= 1, "in (0, 1] (1 = off)"),
]


# ----------------------------------------------------------------------------- train.py
def train_parser(presets, description, rewards_default):
    """train.py's flags; a preset's values become their defaults in parse_train_args."""
    # allow_abbrev=False: --resume tells given flags from defaults by their full names
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                allow_abbrev=False)
    a = p.add_argument
    a("--task", choices=["c2i", "t2i"], default="c2i",
      help="class-to-image (ImageNet ids) or text-to-image")
    a("--preset", choices=list(presets), default=None,
      help="hyperparameters + checkpoints; default: AR-GRPO's recipe for --task "
           "(paper-c2i-b256 / paper-t2i-xl)")
    # models
    a("--gpt-ckpt", default="",
      help="policy/reference weights: a file, a released name (c2i_B_256), "
           "or '' = random --gpt-model")
    a("--gpt-model", default="GPT-B", help="architecture for random init (only without --gpt-ckpt)")
    a("--vq-ckpt", default="", help="VQ tokenizer weights, or '' = random --vq-model")
    a("--vq-model", default="VQ-16",
      help="VQ architecture for random init (VQ-16, VQ-tiny, ...) or 'palette' (tiny preset); "
           "'patches': --vq-ckpt is a k-means patch codebook (mnist preset)")
    a("--t5-path", default="",
      help="FLAN-T5-XL directory (t2i); '' = a tiny random T5 (tiny preset)")
    a("--image-size", type=int, default=256)
    a("--pretrain", default="", choices=["", "mnist", "mnist-tiny"],
      help="first pretrain, once per machine, the base GPT, tokenizer and reward networks named "
           "(plumbing/pretrain.py; mnist-tiny: the same in seconds, for tests) and fill in their "
           "--gpt-ckpt, --vq-ckpt, --digit-ckpt; '' = none")
    a("--cache-dir", default="",
      help="where --pretrain keeps what it makes ('' = $ARGRPO_CACHE, else ~/.cache/argrpo)")
    # data
    a("--prompts", default="",
      help="t2i prompts: a .txt (one per line), a .jsonl ('prompt' or 'caption' field) "
           "or AR-GRPO's .json list (coco_captions_30000.json)")
    a("--num-classes", type=int, default=0,
      help="c2i: draw class ids from [0, K) (0 = all classes of the model)")
    # rewards
    a("--rewards", default=rewards_default,
      help="'name:weight,...' (rewards.py); weight-free: color, brightness, colorfulness, jpeg")
    a("--clip-ckpt", default=None)
    a("--hps-ckpt", default=None)
    a("--maniqa-ckpt", default=None)
    a("--qwen-path", default=None)
    a("--judge-mode", default="generate", choices=["fast", "generate"],
      help="generate = AR-GRPO's judge (answer, repair, parse, 3 attempts); "
           "fast = one forward pass, E[score digit]")
    for flag in WEIGHT_ARGS[4:-1]:  # the T2I scorers
        a("--" + flag.replace("_", "-"), default=None,
          help="weights of the pickscore / imagereward / aesthetic rewards (rewards.py)")
    a("--digit-ckpt", default=None,
      help="the MNIST reward networks of the digit / realism rewards (--pretrain fills it in)")
    # sampler (the paper: temperature 1, top-k 0, top-p 1, CFG 2.0 for c2i / 4.0 for t2i)
    a("--cfg-scale", type=float, default=2.0)
    a("--cfg-interval", type=int, default=-1)
    a("--temperature", type=float, default=1.0)
    a("--top-k", type=int, default=0)
    a("--top-p", type=float, default=1.0)
    # GRPO
    a("--prompts-per-rank", type=int, default=1, help="P: prompts per rank per step")
    a("--group-size", type=int, default=8, help="G: samples per prompt")
    a("--policy", choices=["cond", "cfg"], default="cond",
      help="log-probs of the conditional branch (the paper's code) or of the guided distribution "
           "sampled from")
    a("--adv-std", choices=["group", "global"], default="group",
      help="advantage denominator: group std (GRPO) or batch std (Flow-GRPO)")
    a("--beta", type=float, default=0.1, help="weight of the k3 KL to the reference")
    a("--clip-eps", type=float, default=0.2)
    a("--clip-eps-high", type=float, default=None, help="upper clip (default = --clip-eps)")
    a("--inner-epochs", type=int, default=1,
      help="passes over each rollout batch (1 = the paper: rho == 1)")
    a("--minibatches", type=int, default=1,
      help="optimizer steps per pass (each over B/minibatches sequences)")
    a("--micro-batch", type=int, default=0,
      help="sequences per forward for gradient accumulation (0 = whole minibatch)")
    # optimisation
    a("--lr", type=float, default=1e-5)
    a("--weight-decay", type=float, default=0.0)
    a("--adam-betas", type=float, nargs=2, default=[0.9, 0.999])
    a("--grad-clip", type=float, default=1.0)
    a("--bf16", action=argparse.BooleanOptionalAction, default=True,
      help="bf16 autocast on GPU (CPU runs fp32)")
    # run
    a("--steps", type=int, default=400)
    a("--seed", type=int, default=42)
    a("--out", default="out/run", help="metrics.jsonl, args.json, ckpt.pt, samples/")
    a("--resume", action="store_true",
      help="continue from OUT/ckpt.pt (an error if there is none)")
    a("--overwrite", action="store_true",
      help="start over in an OUT that already holds a run (its files are replaced)")
    a("--save-every", type=int, default=50)
    a("--image-every", type=int, default=50)
    a("--tensorboard", action="store_true",
      help="also write TensorBoard curves and images to OUT/tb")
    a("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a("--cpu-threads", type=int, default=0,
      help="torch CPU threads (0 = torch's default; tiny models run best on 1)")
    # fidelity to AR-GRPO's code (docs/fidelity.md): the paper presets set these
    a("--zero-flat-groups", action=argparse.BooleanOptionalAction, default=False,
      help="advantage exactly 0 for a group whose rewards are all equal (AR-GRPO: no special case, "
           "(r - mean) / (std + 1e-4) whatever rounding leaves)")
    a("--lr-decay-steps", type=int, default=0,
      help="linear LR decay to 0 over this many steps, as HF Trainer over AR-GRPO's 20 epochs "
           "(0 = constant)")
    a("--caption-pad", choices=["left", "right"], default="right",
      help="t2i caption features: right = AR-GRPO (padded rows kept), left = LlamaGen's sampler "
           "(zeroed)")
    a("--clean-captions", action=argparse.BooleanOptionalAction, default=True,
      help="t2i: DeepFloyd-IF caption cleaning, twice, before T5 (LlamaGen and AR-GRPO do)")
    a("--pure-bf16", action=argparse.BooleanOptionalAction, default=False,
      help="bf16 weights, grads and AdamW state for policy, reference and VQ (AR-GRPO's t2i "
           "--force_model_bf16); updates below half a bf16 ulp are lost")
    a("--dry-run", action="store_true",
      help="print the resolved configuration as JSON (flag names) and exit")
    # speed and memory (docs/performance.md): none of these changes the update
    a("--compile", action=argparse.BooleanOptionalAction, default=None,
      help="sample with the torch.compile'd decode step (inductor on CPU, CUDA graphs on GPU); "
           "same tokens; default: on for a GPU (20x faster sampling there), off on a CPU "
           "(docs/performance.md)")
    a("--grad-checkpoint", action="store_true",
      help="recompute each layer's activations in the backward pass "
           "(less memory, ~1/3 more update compute)")
    a("--ref-dtype", choices=["auto", "bf16", "fp32"], default="auto",
      help="reference model weights; auto = bf16 on GPU with --bf16 (the matmuls run in bf16 "
           "under autocast anyway), else fp32")
    a("--old-logprobs", choices=["auto", "pass"], default="auto",
      help="pi_old: auto = the update forward's own log-probs with one update per rollout, the "
           "sampler's with --policy cfg, else a no-grad pass; pass = always a separate no-grad "
           "pass (a check: same update)")
    return p


def parse_train_args(argv, presets, default_preset, description, rewards_default, check_rewards):
    """train.py's parsed flags: the --preset's values (default_preset[task] without one) as
    defaults, explicit flags over them, every value checked (check_rewards: the --rewards spec)."""
    p = train_parser(presets, description, rewards_default)
    first, _ = p.parse_known_args(argv)
    preset = first.preset or default_preset[first.task]
    if presets[preset].get("task", first.task) != first.task:
        p.error(f"preset {preset} is for --task {presets[preset]['task']}")
    p.set_defaults(**{**presets[preset], "preset": preset, "task": first.task})
    args = p.parse_args(argv)
    check_train_args(p, args, check_rewards)
    if args.compile is None:  # compiling pays for itself on a GPU in a few steps, never on a CPU
        args.compile = args.device.startswith("cuda")
    return args


def check_train_args(p, args, check_rewards):
    """Flag combinations and values that cannot work: one line each (p.error), before anything
    is loaded."""
    if args.group_size < 2:
        p.error("--group-size must be >= 2: a group of one has no baseline "
                "(its advantage is always 0)")
    if (args.prompts_per_rank * args.group_size) % args.minibatches:
        p.error(f"--minibatches {args.minibatches} must divide --prompts-per-rank x --group-size = "
                f"{args.prompts_per_rank * args.group_size}")
    if min(args.steps, args.inner_epochs, args.prompts_per_rank) < 1:
        p.error("--steps, --inner-epochs and --prompts-per-rank must be >= 1")
    try:
        check_rewards(args.rewards)
    except ValueError as e:
        p.error(str(e))
    # every numeric flag in its meaningful range, one line each (NaN fails every comparison)
    error = range_errors(args, SAMPLER_CHECKS + TRAIN_CHECKS)
    if error is None and args.clip_eps_high is not None and not 0 < args.clip_eps_high < math.inf:
        error = f"--clip-eps-high must be a finite number > 0, got {args.clip_eps_high}"
    if error is None and not all(0 <= b < 1 for b in args.adam_betas):
        error = f"--adam-betas must both be in [0, 1), got {args.adam_betas}"
    if error is None and args.resume and args.overwrite:
        error = "--resume continues the run in --out, --overwrite starts it over: pass one of them"
    if error:
        p.error(error)


TRAIN_CHECKS = [
    ("--image-size", lambda v: v > 0, "> 0"),
    ("--num-classes", lambda v: v >= 0, ">= 0 (0 = all classes)"),
    ("--beta", lambda v: 0 <= v < math.inf, "a finite number >= 0"),
    ("--clip-eps", lambda v: 0 < v < 1, "in (0, 1)"),
    ("--micro-batch", lambda v: v >= 0, ">= 0 (0 = the whole minibatch)"),
    ("--minibatches", lambda v: v >= 1, ">= 1"),
    ("--lr", lambda v: 0 < v < math.inf, "a finite number > 0"),
    ("--weight-decay", lambda v: 0 <= v < math.inf, "a finite number >= 0"),
    ("--grad-clip", lambda v: 0 < v < math.inf, "a finite number > 0"),
    ("--seed", lambda v: v >= 0, ">= 0"),
    ("--save-every", lambda v: v >= 1, ">= 1 (steps between checkpoints)"),
    ("--image-every", lambda v: v >= 0, ">= 0 (0 = only the first step)"),
    ("--cpu-threads", lambda v: v >= 0, ">= 0 (0 = torch's default)"),
    ("--lr-decay-steps", lambda v: v >= 0, ">= 0 (0 = constant)"),
]


# ----------------------------------------------------------------------------- weight paths
def check_files(args, caption_dim):
    """Stop at once, in one line, when weights are missing (not after minutes of loading).
    caption_dim(): the text width of the random t2i GPT that --gpt-model builds."""
    wrong = path_kind_errors(args)
    if wrong:
        raise BadCheckpoint("; ".join(wrong))
    if args.task == "t2i" and args.t5_path and not args.gpt_ckpt:  # a random GPT: width known now
        check_t5_width(args.t5_path, caption_dim())
    missing = missing_files(args)
    if missing:
        raise MissingCheckpoint(f"missing weights: {', '.join(missing)}; download them "
                                f"(docs/training.md) and pass the flag(s), or run offline on CPU "
                                f"with: python train.py --task {args.task} --preset tiny")


def missing_files(args, gpt_flag="--gpt-ckpt"):
    """Weight files named in args that are not on disk, as 'path (flag)'. A released name (no '/',
    no '.pt') is left to the downloader."""
    need = [(f, p) for f, p in ((gpt_flag, args.gpt_ckpt), ("--vq-ckpt", args.vq_ckpt))
            if p and ("/" in p or p.endswith(".pt"))]
    need += [("--t5-path", args.t5_path)] if args.task == "t2i" and args.t5_path else []
    return [f"{path} ({flag})" for flag, path in need if not os.path.exists(path)]


def path_kind_errors(args, gpt_flag="--gpt-ckpt"):
    """Weight paths that exist but are the wrong kind, one phrase each: a directory where a weights
    file goes, or a file where a model folder goes (an existing directory is not 'missing')."""
    files = [(gpt_flag, args.gpt_ckpt), ("--vq-ckpt", args.vq_ckpt)]
    files += [(f"--{k.replace('_', '-')}", getattr(args, k, None))
              for k in ("clip_ckpt", "hps_ckpt", "maniqa_ckpt")]
    folders = [("--t5-path", args.t5_path if args.task == "t2i" else ""),
               ("--qwen-path", getattr(args, "qwen_path", None))]
    return ([f"{flag} {p} is a directory; pass the weights file in it"
             for flag, p in files if p and os.path.isdir(p)]
            + [f"{flag} {p} is a file; pass the model folder"
               for flag, p in folders if p and os.path.isfile(p)])


def check_t5_width(t5_path, caption_dim):
    """A T5 whose width (d_model in its config.json) is not the GPT's caption_dim cannot condition
    it: say so in one line from the 1 kB config, before the T5 weights (GBs for FLAN-T5-XL)."""
    cfg = os.path.join(t5_path, "config.json")
    # no config: from_pretrained says so
    width = json.load(open(cfg)).get("d_model") if os.path.isfile(cfg) else None
    if width is not None and width != caption_dim:
        raise BadCheckpoint(
            f"--t5-path {t5_path} gives {width}-wide text features (d_model in its config.json) "
            f"but the GPT takes {caption_dim}-wide ones (caption_dim); use the T5 the GPT was "
            f"trained with (FLAN-T5-XL, 2048, for LlamaGen's t2i checkpoints; without --t5-path a "
            f"random GPT gets a tiny T5)")


# ----------------------------------------------------------------------------- sample.py
def sample_parser(description):
    p = argparse.ArgumentParser(description=description)
    add_input_flags(p)
    add_sampling_flags(p)
    return p


def add_input_flags(p):
    """The models and what to sample: classes, prompts or GenEval's metadata."""
    p.add_argument("--preset", choices=["tiny", "mnist"],
                   help="tiny: train.py's tiny starting model, random GPT-tiny + palette tokenizer "
                        "(offline, CPU; ignores checkpoints); mnist: the mnist preset's pretrained "
                        "base (made once per machine), or the mnist run of --gpt-ckpt")
    p.add_argument("--gpt-ckpt", default=None,
                   help="GPT checkpoint: path or release name (default c2i_B_256; with --preset "
                        "mnist: the pretrained base)")
    p.add_argument("--cache-dir", default="",
                   help="--preset mnist: where the pretrained base is kept ('' = $ARGRPO_CACHE, "
                        "else ~/.cache/argrpo)")
    p.add_argument("--vq-ckpt", default=None,
                   help="VQ checkpoint: path or release name (default vq_ds16_c2i / vq_ds16_t2i)")
    p.add_argument("--t5-path", default="google/flan-t5-xl",
                   help="T5 encoder for t2i: HF name or local dir")
    p.add_argument("--image-size", type=int, default=None,
                   help="checked against the checkpoint (256, 384, 512)")
    p.add_argument("--image-size-eval", type=int, default=None,
                   help="resize the .npz samples to this size (bicubic)")
    p.add_argument("--classes", default=None,
                   help="comma-separated class ids, or 'all' (default: 8 demo classes)")
    p.add_argument("--prompts", default=None,
                   help="t2i prompt file (.txt, .jsonl or AR-GRPO's .json list)")
    p.add_argument("--caption-pad", choices=["left", "right"], default=None,
                   help="t2i: left = LlamaGen's sampler, right = AR-GRPO's training and "
                        "evaluation (text.py); default: a train.py checkpoint's own setting, "
                        "else left")
    p.add_argument("--clean-captions", action=argparse.BooleanOptionalAction, default=None,
                   help="t2i: DeepFloyd-IF caption cleaning, twice, before T5 (LlamaGen and "
                        "AR-GRPO do); default: a train.py checkpoint's own setting, else on")
    p.add_argument("--per-class", "--per-prompt", type=int, default=1,
                   help="samples per class id / prompt")
    p.add_argument("--task", choices=["c2i", "t2i"], default=None,
                   help="checked against the model; picks the tiny preset's model")
    p.add_argument("--geneval", default=None,
                   help="GenEval's evaluation_metadata.jsonl: write its folder layout to --out DIR "
                        "(DIR/<index:05d>/metadata.jsonl, DIR/<index:05d>/samples/<k:04d>.png)")


def add_sampling_flags(p):
    """The sampler's settings, the device, and the outputs."""
    p.add_argument("--cfg-scale", type=float, default=None,
                   help="default 4.0; --preset mnist: the run's (the preset's 2.0)")
    p.add_argument("--cfg-interval", type=int, default=-1,
                   help="stop guidance after this token (-1: never)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0,
                   help="0 = off (LlamaGen's scripts use 2000 for c2i at eval)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", choices=["fp32", "bf16"], default=None,
                   help="GPT weights dtype (default bf16 on GPU)")
    p.add_argument("--out", default="samples/grid.png", help="PNG grid path ('' for none)")
    p.add_argument("--npz", default=None,
                   help="also write all samples as uint8 NHWC .npz (for FID)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the decode step (same tokens); default: on for a GPU, off "
                        "on a CPU (docs/performance.md)")


SAMPLE_CHECKS = SAMPLER_CHECKS + [
    ("--per-class", lambda v: v >= 1, ">= 1"),
    ("--batch-size", lambda v: v >= 1, ">= 1"),
    ("--seed", lambda v: v >= 0, ">= 0"),
    ("--image-size", lambda v: v > 0, "> 0"),
    ("--image-size-eval", lambda v: v > 0, "> 0"),
]


def parse_sample_args(argv, description):
    """The flags, range-checked, with the defaults that depend on the device or the checkpoint."""
    p = sample_parser(description)
    args = p.parse_args(argv)
    error = range_errors(args, SAMPLE_CHECKS)
    if error:
        p.error(error)
    if args.compile is None:  # pays for itself on a GPU after a few batches, never on a CPU
        args.compile = args.device.startswith("cuda")
    if args.gpt_ckpt is None and args.preset != "mnist":
        args.gpt_ckpt = "c2i_B_256"                                  # LlamaGen's released GPT-B
    run = None if args.preset == "tiny" or not args.gpt_ckpt else run_args(args.gpt_ckpt)
    if args.cfg_scale is None:  # the mnist preset samples as it trains: a run's own, else 2.0
        args.cfg_scale = getattr(run, "cfg_scale", 2.0) if args.preset == "mnist" else 4.0
    # T2I text settings: as given, else a train.py checkpoint's own, else LlamaGen's
    if args.caption_pad is None:
        args.caption_pad = getattr(run, "caption_pad", "left")
    if args.clean_captions is None:  # runs older than the flag: raw captions
        args.clean_captions = getattr(run, "clean_captions", run is None)
    print(vars(args))
    return args
