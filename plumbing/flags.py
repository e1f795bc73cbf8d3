"""The command lines of train.py and sample.py: their flag tables (argparse, --kebab-case, with
help), the range check of every numeric flag (one line each, before anything loads), the device
check, the checks of weight paths (missing, or the wrong kind of path) that run before any model
is built, and the memory check of the batch sizes once the model's size is known (a refusal in
one line rather than an out-of-memory kill of a shared machine). tools/eval.py and tools/bench.py
use the same checks.
"""
import argparse
import math
import os

import torch

from plumbing.files import read_json
from plumbing.formats import run_args
from plumbing.lora import TARGETS as LORA_TARGETS, parse_targets
from plumbing.reward_models import WEIGHT_ARGS
from plumbing.weights import BadCheckpoint, MissingCheckpoint

INT64 = 2 ** 63   # every integer flag fits a 64-bit integer (torch's seeds, sizes and indices)
SEED_CHECK = ("--seed", lambda v: 0 <= v < 2 ** 32, "in [0, 2^32)")
CPU_THREADS_CHECK = ("--cpu-threads", lambda v: 0 <= v <= (os.cpu_count() or 1),
                     f"in [0, {os.cpu_count() or 1}] (0 = torch's default; this machine's cores)")


def range_errors(args, checks):
    """The first numeric flag outside its range, as one line for `parser.error`, else None.
    checks: (flag, predicate, what it must be); flags whose value is None (unset) are skipped.
    A NaN fails every predicate, since every comparison with NaN is False; an integer beyond 64
    bits fails before its predicate."""
    for flag, ok, must in checks:
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if isinstance(value, int) and not -INT64 <= value < INT64:
            return f"{flag} {value} is beyond a 64-bit integer; it must be {must}"
        if value is not None and not ok(value):
            return f"{flag} must be {must}, got {value}"
    return None


def device_error(name, flag="--device"):
    """One line when `name` is not a device this machine has (cpu, cuda, cuda:N), else None."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        return f"{flag} {name!r} is not a device: use cpu, cuda or cuda:N"
    if device.type == "cpu":
        return None
    if device.type != "cuda":
        return f"{flag} {name}: only cpu and cuda devices are supported"
    if not torch.cuda.is_available():
        return f"{flag} {name}: there is no CUDA GPU here; use --device cpu"
    if device.index is not None and device.index >= torch.cuda.device_count():
        return (f"{flag} {name}: this machine has {torch.cuda.device_count()} GPU(s), "
                f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return None


# ----------------------------------------------------------------------------- memory
# Lower estimates of the largest allocations, from the model's config: a command refuses, in one
# line, a batch that cannot fit in the free memory, instead of being killed by the kernel (or
# killing its neighbours) minutes later. c is a GPTConfig (model.py), duck-typed.
def kv_cache_bytes(c, rows, itemsize=4):
    """The sampler's KV caches: k and v of every layer over the T + N positions of `rows`
    sequences (2 x the images with CFG)."""
    hd, heads = c.dim // c.n_head, c.n_kv_head or c.n_head
    return 2 * c.n_layer * rows * heads * (c.cls_token_num + c.block_size) * hd * itemsize


def forward_bytes(c, rows, grad):
    """A teacher-forced forward over `rows` sequences: the fp32 logits and their copies (~8 per
    token: log-softmax, the guided mix, top-k/top-p masks, entropy) and, with grad, every layer's
    activations (~12 floats of width dim per token; measured 2026-12-04 on the tiny preset: the
    real peak is ~1.5x this estimate)."""
    per_token = 8 * c.vocab_size + (c.n_layer if grad else 1) * 12 * c.dim
    return 4 * rows * (c.cls_token_num + c.block_size) * per_token


def free_bytes(device):
    """The memory a new allocation can take on `device`: a GPU's free memory, the host's
    MemAvailable (Linux; None elsewhere: no check)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def check_memory(need, device, what):
    """Refuse, in one line, work that needs more than the free memory of `device`."""
    free = free_bytes(device)
    if free is not None and need > free:
        raise SystemExit(f"error: {what} needs at least {need / 2 ** 30:.1f} GiB on {device}, "
                         f"{free / 2 ** 30:.1f} GiB are free; make it smaller")


def check_sample_memory(c, downsample, args, n_images, device):
    """sample.py: the sampler's KV caches for one --batch-size batch (doubled by CFG), and every
    image (uint8 on the host until the .npz is written; twice while the batches are joined)."""
    side = args.image_size_eval or math.isqrt(c.block_size) * downsample
    rows = min(args.batch_size, n_images) * (1 + (args.cfg_scale != 1.0))
    check_memory(kv_cache_bytes(c, rows) + 32 * rows * c.vocab_size, device,
                 f"--batch-size {args.batch_size}")
    check_memory(2 * n_images * side * side * 3, "cpu",
                 f"{n_images} images of {side} px (the conditions x --per-class)")


def check_run_memory(model, args, G, micro, device):
    """train.py, once the policy is built: the rollout (G images per generate call, doubled by
    CFG) or the update (micro-batches, doubled by --policy cfg, plus the gradient and the two
    AdamW moments) must fit."""
    c, cfg = model.config, args.cfg_scale != 1.0
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    rollout = kv_cache_bytes(c, G * (1 + cfg)) + 32 * G * (1 + cfg) * c.vocab_size  # + logits
    update = forward_bytes(c, micro * (1 + (args.policy == "cfg")), True) + 3 * params
    check_memory(max(rollout, update), device,
                 f"--group-size {G} with a micro-batch of {micro} sequences (--prompts-per-rank "
                 f"{args.prompts_per_rank}, --minibatches, --micro-batch)")


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
    a("--gpt-model", default=None,
      help="architecture for random init (default GPT-B); with --gpt-ckpt the checkpoint's own")
    a("--vq-ckpt", default="", help="VQ tokenizer weights, or '' = random --vq-model")
    a("--vq-model", default="VQ-16",
      help="VQ architecture for random init (VQ-16, VQ-tiny, ...) or 'palette' (tiny preset); "
           "'patches': --vq-ckpt is a k-means patch codebook (mnist preset)")
    a("--t5-path", default="",
      help="FLAN-T5-XL directory (t2i); '' = a tiny random T5 (tiny preset)")
    a("--image-size", type=int, default=256,
      help="pixels per side of the generated images (a checkpoint's own size is checked)")
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
    a("--clip-ckpt", default=None,
      help="OpenAI CLIP ViT-B/32 weights file (clip, clip_q rewards; default: the HF cache)")
    a("--hps-ckpt", default=None,
      help="HPS_v2.1_compressed.pt (hps, hps_q rewards; default: the HF cache)")
    a("--maniqa-ckpt", default=None,
      help="MANIQA ckpt_koniq10k.pt (maniqa reward; default: pyiqa's cache)")
    a("--qwen-path", default=None,
      help="Qwen2.5-VL-3B-Instruct folder (qwen rewards; default: the HF cache)")
    a("--judge-mode", default="generate", choices=["fast", "generate"],
      help="generate = AR-GRPO's judge (answer, repair, parse, 3 attempts); "
           "fast = one forward pass, E[score digit]")
    a("--tiny-rewards", action=argparse.BooleanOptionalAction, default=False,
      help="every reward from its tiny random stand-in (offline; the tiny preset): the paper "
           "rewards' pipeline without their weights, numbers meaningless")
    for flag in WEIGHT_ARGS[4:-1]:  # the T2I scorers
        a("--" + flag.replace("_", "-"), default=None,
          help="weights of the pickscore / imagereward / aesthetic rewards (rewards.py)")
    a("--digit-ckpt", default=None,
      help="the MNIST reward networks of the digit / realism rewards (--pretrain fills it in)")
    # sampler (the paper: temperature 1, top-k 0, top-p 1, CFG 2.0; run_t2i_train.sh: 4.0 for t2i)
    a("--cfg-scale", type=float, default=2.0, help="classifier-free guidance scale (1 = none)")
    a("--cfg-interval", type=int, default=-1,
      help="guidance only for the first tokens, up to this one (-1 = every token)")
    a("--temperature", type=float, default=1.0, help="sampling temperature")
    a("--top-k", type=int, default=0, help="sample among the k likeliest tokens (0 = off)")
    a("--top-p", type=float, default=1.0, help="nucleus sampling mass (1 = off)")
    # GRPO
    a("--prompts-per-rank", type=int, default=1, help="P: prompts per rank per step")
    a("--group-size", type=int, default=8, help="G: samples per prompt")
    a("--policy", choices=["cond", "cfg"], default="cond",
      help="log-probs of the conditional branch (the paper's code) or of the guided distribution "
           "sampled from")
    a("--adv-std", choices=["group", "batch", "none", "global"], default="group",
      help="advantage denominator: the group's std (GRPO), the batch's (TRL scale_rewards='batch'; "
           "'global' is its old name) or none (Dr. GRPO)")
    a("--beta", type=float, default=0.1, help="weight of the KL to the reference")
    a("--clip-eps", type=float, default=0.2,
      help="PPO clip of the ratio: [1 - eps, 1 + eps] (acts with several updates per rollout)")
    a("--clip-eps-high", type=float, default=None, help="upper clip (default = --clip-eps)")
    # GRPO variants (grpo.py; docs/variants.md): the paper presets use none
    a("--ratio-level", choices=["token", "sequence"], default="token",
      help="importance ratio per token (PPO) or per image (GSPO: mind a small --clip-eps, 3e-4)")
    a("--dual-clip", type=float, default=None,
      help="dual-clip c > 1: the loss of a negative advantage is at most -c A (verl; e.g. 3)")
    a("--delta", type=float, default=None,
      help="TRL's two-sided clipping: the unclipped ratio clamped at delta (> 1 + clip-eps-high)")
    a("--kl", choices=["k1", "k2", "k3"], default="k3",
      help="the KL estimator: k1 = log pi/pi_ref, k2 = its square / 2, k3 = exp(d) - d - 1")
    a("--kl-clamp", type=float, default=20.0,
      help="d = log pi_ref - log pi clamped to [-X, X] before the estimate (0 = no clamp)")
    a("--kl-cap", type=float, default=0.0,
      help="the estimate clamped to [-X, X] (verl caps k3 at 10; 0 = no cap)")
    a("--kl-in", choices=["loss", "reward"], default="loss",
      help="the KL as a loss term (GRPO) or out of each image's reward (PPO-RLHF)")
    a("--entropy-coef", type=float, default=0.0,
      help="entropy bonus: loss -= c x mean token entropy (verl's entropy_coeff)")
    a("--inner-epochs", type=int, default=1,
      help="passes over each rollout batch (1 = the paper: rho == 1)")
    a("--minibatches", type=int, default=1,
      help="optimizer steps per pass (each over B/minibatches sequences)")
    a("--micro-batch", type=int, default=0,
      help="sequences per forward for gradient accumulation (0 = whole minibatch)")
    # optimisation
    a("--lr", type=float, default=1e-5, help="AdamW learning rate")
    a("--weight-decay", type=float, default=0.0, help="AdamW weight decay")
    a("--adam-betas", type=float, nargs=2, default=[0.9, 0.999], help="AdamW betas")
    a("--grad-clip", type=float, default=1.0, help="clip the gradient norm to this value")
    a("--bf16", action=argparse.BooleanOptionalAction, default=True,
      help="bf16 autocast on GPU (CPU runs fp32)")
    # run
    a("--steps", type=int, default=400, help="GRPO steps (a --resume may raise it)")
    a("--seed", type=int, default=42,
      help="every random number comes from (seed, step, ...): same seed, same run")
    a("--out", default="out/run", help="metrics.jsonl, args.json, ckpt.pt, samples/")
    a("--resume", action="store_true",
      help="continue from OUT/ckpt.pt (an error if there is none)")
    a("--overwrite", action="store_true",
      help="start over in an OUT that already holds a run (its files are replaced)")
    a("--save-every", type=int, default=50,
      help="write OUT/ckpt.pt every this many steps (and after the last)")
    a("--keep-every", type=int, default=0,
      help="also keep OUT/ckpt_<step>.pt every N steps, loadable like ckpt.pt (AR-GRPO keeps "
           "every 100; 0 = only ckpt.pt)")
    a("--image-every", type=int, default=50,
      help="write a grid of samples to OUT/samples every this many steps (0 = the first only)")
    a("--tensorboard", action="store_true",
      help="also write TensorBoard curves and images to OUT/tb")
    a("--device", default="cuda" if torch.cuda.is_available() else "cpu",
      help="cpu or cuda (torchrun: each rank takes its LOCAL_RANK's GPU)")
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
    a("--rollout-autocast", action=argparse.BooleanOptionalAction, default=True,
      help="sample and VQ-decode under bf16 autocast (with --bf16 on a GPU); AR-GRPO's generate "
           "bypasses autocast: the weights' own dtype (fp32 for c2i)")
    a("--tf32", action=argparse.BooleanOptionalAction, default=True,
      help="TF32 matmuls on a GPU (AR-GRPO: off, torch's default; cuDNN convolutions use TF32 "
           "either way, torch's default)")
    a("--reward-dtype", choices=["auto", "paper"], default="auto",
      help="reward models: auto = bf16 on a GPU with --bf16, else fp32; paper = AR-GRPO's: CLIP "
           "fp32, HPS fp32 under fp16 autocast (GPU), MANIQA fp32, Qwen bf16")
    a("--reward-input", choices=["float", "pil"], default="float",
      help="float = the decoded image, one torch bicubic resize (clamped); pil = AR-GRPO's: "
           "to_pil_image's uint8 truncation, then CLIP's processor (PIL bicubic), HPS's tensor "
           "resize (unclamped)")
    a("--maniqa-full-range", action=argparse.BooleanOptionalAction, default=True,
      help="MANIQA crop offsets over 0..h-224; --no-: 0..h-225, as AR-GRPO's "
           "np.random.randint(0, h - 224)")
    a("--raw-prompts", action=argparse.BooleanOptionalAction, default=False,
      help="AR-GRPO's .json prompts: conversations[0]['value'] as is (no strip, empty kept, any "
           "role); --no-: the first human turn, stripped, empty ones dropped")
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
    a("--fsdp", action="store_true",
      help="shard the policy's weights, gradient and AdamW state over the ranks with torch's FSDP2 "
           "(fully_shard per block; the reference stays a full copy); same checkpoints, same "
           "torchrun commands (docs/memory.md)")
    a("--lora-rank", type=int, default=0,
      help="train low-rank adapters of this rank on --lora-targets, the base frozen (0 = off: "
           "every weight trains); the reference is the base with the adapters off, no second copy "
           "(--ref-dtype then has no effect); ckpt.pt holds the adapters: tools/lora.py merge "
           "exports a plain GPT (docs/memory.md)")
    a("--lora-alpha", type=float, default=0,
      help="LoRA's alpha: the update is (alpha / rank) B A x; 0 = the rank (scale 1)")
    a("--lora-targets", default=",".join(LORA_TARGETS),
      help="comma-separated linears of every block that get adapters: wqkv, wo (attention), "
           "w1, w2, w3 (SwiGLU FFN)")
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
    if args.gpt_model is None and not args.gpt_ckpt:  # with a checkpoint: its own architecture
        args.gpt_model = "GPT-B"
    return args


def check_train_args(p, args, check_rewards):
    """Flag combinations and values that cannot work, and flags that would be ignored: one line
    each (p.error), before anything is loaded."""
    # every numeric flag in its meaningful range, one line each (NaN fails every comparison)
    error = range_errors(args, SAMPLER_CHECKS + TRAIN_CHECKS)
    if error is None and args.clip_eps_high is not None and not 0 < args.clip_eps_high < math.inf:
        error = f"--clip-eps-high must be a finite number > 0, got {args.clip_eps_high}"
    if error is None and not all(0 <= b < 1 for b in args.adam_betas):
        error = f"--adam-betas must both be in [0, 1), got {args.adam_betas}"
    if error:
        p.error(error)
    if args.fsdp and int(os.environ.get("WORLD_SIZE", 1)) < 2:
        p.error("--fsdp shards the policy over the ranks of a torchrun launch: run it with "
                "`torchrun --nproc_per_node N train.py ...` (N >= 2), or drop --fsdp")
    if args.fsdp and (args.lora_rank or args.compile):
        p.error(f"--fsdp with {'--lora-rank' if args.lora_rank else '--compile'} is not supported "
                f"yet: drop one of them")
    bad = set(parse_targets(args.lora_targets)) - set(LORA_TARGETS)
    if bad or not args.lora_targets.strip():
        p.error(f"--lora-targets: {', '.join(sorted(bad)) or 'none given'}: choose among "
                f"{', '.join(LORA_TARGETS)}")
    P, G = args.prompts_per_rank, args.group_size
    if (P * G) % args.minibatches:
        p.error(f"--minibatches {args.minibatches} must divide --prompts-per-rank x --group-size = "
                f"{P * G}")
    if args.micro_batch > P * G // args.minibatches:
        p.error(f"--micro-batch {args.micro_batch} is larger than a minibatch (--prompts-per-rank "
                f"x --group-size / --minibatches = {P * G // args.minibatches})")
    try:
        check_rewards(args.rewards)
    except ValueError as e:
        p.error(str(e))
    if args.task == "c2i" and args.prompts:
        p.error("--prompts is for --task t2i (captions); --task c2i draws ImageNet class ids "
                "(--num-classes)")
    if args.task == "t2i" and args.num_classes:
        p.error("--num-classes is for --task c2i; --task t2i draws captions from --prompts")
    error = device_error(args.device)
    if error is None and args.resume and args.overwrite:
        error = "--resume continues the run in --out, --overwrite starts it over: pass one of them"
    if error:
        p.error(error)


TRAIN_CHECKS = [
    ("--group-size", lambda v: v >= 2, ">= 2: a group of one has no baseline (its advantage is "
                                       "always 0)"),
    ("--prompts-per-rank", lambda v: v >= 1, ">= 1"),
    ("--steps", lambda v: v >= 1, ">= 1"),
    ("--inner-epochs", lambda v: v >= 1, ">= 1"),
    ("--image-size", lambda v: 0 < v <= 4096, "in [1, 4096] (LlamaGen's: 256, 384, 512)"),
    ("--num-classes", lambda v: 0 <= v <= 1000, "in [0, 1000] (0 = all the model's classes)"),
    ("--beta", lambda v: 0 <= v < math.inf, "a finite number >= 0"),
    ("--dual-clip", lambda v: 1 < v < math.inf, "a finite number > 1"),
    ("--delta", lambda v: 1 < v < math.inf, "a finite number > 1"),
    ("--lora-rank", lambda v: 0 <= v <= 4096, "in [0, 4096] (0 = off)"),
    ("--lora-alpha", lambda v: 0 <= v < math.inf, "a finite number >= 0 (0 = the rank)"),
    ("--kl-clamp", lambda v: 0 <= v < math.inf, "a finite number >= 0 (0 = no clamp)"),
    ("--kl-cap", lambda v: 0 <= v < math.inf, "a finite number >= 0 (0 = no cap)"),
    ("--entropy-coef", lambda v: 0 <= v < math.inf, "a finite number >= 0"),
    ("--clip-eps", lambda v: 0 < v < 1, "in (0, 1)"),
    ("--micro-batch", lambda v: v >= 0, ">= 0 (0 = the whole minibatch)"),
    ("--minibatches", lambda v: v >= 1, ">= 1"),
    ("--lr", lambda v: 0 < v < math.inf, "a finite number > 0"),
    ("--weight-decay", lambda v: 0 <= v < math.inf, "a finite number >= 0"),
    ("--grad-clip", lambda v: 0 < v < math.inf, "a finite number > 0"),
    SEED_CHECK,
    ("--save-every", lambda v: v >= 1, ">= 1 (steps between checkpoints)"),
    ("--image-every", lambda v: v >= 0, ">= 0 (0 = only the first step)"),
    CPU_THREADS_CHECK,
    ("--lr-decay-steps", lambda v: v >= 0, ">= 0 (0 = constant)"),
    ("--keep-every", lambda v: v >= 0, ">= 0 (0 = only ckpt.pt)"),
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
    config = read_json(cfg, "--t5-path config") if os.path.isfile(cfg) else {}
    width = config.get("d_model") if isinstance(config, dict) else None
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
                   help="tiny: train.py's tiny starting model, random GPT-tiny + palette tokenizer, "
                        "16 px (offline, CPU; takes no checkpoint flags); mnist: the mnist "
                        "preset's pretrained base (made once per machine), or the mnist run of "
                        "--gpt-ckpt")
    p.add_argument("--gpt-ckpt", default=None,
                   help="GPT checkpoint: path or release name (default c2i_B_256; with --preset "
                        "mnist: the pretrained base)")
    p.add_argument("--cache-dir", default="",
                   help="--preset mnist: where the pretrained base is kept ('' = $ARGRPO_CACHE, "
                        "else ~/.cache/argrpo)")
    p.add_argument("--vq-ckpt", default=None,
                   help="VQ checkpoint: path or release name (default vq_ds16_c2i / vq_ds16_t2i)")
    p.add_argument("--t5-path", default=None,
                   help="T5 encoder for t2i: HF name or local dir (default google/flan-t5-xl)")
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
    p.add_argument("--protocol", choices=list(PROTOCOLS), default=None,
                   help="C2I evaluation protocol, its settings where a flag is not given: argrpo = "
                        "AR-GRPO's test.py (native size, fp16, CFG 2.0, truncated uint8); llamagen "
                        "= LlamaGen's sample_c2i_ddp.py (resized to 256, bf16, CFG 2.0 for B/L, "
                        "1.75 for XL/XXL, 1.65 for 3B); both top-k 0 and TF32 on; the .npz records "
                        "it (docs/evaluation.md)")
    p.add_argument("--cfg-scale", type=float, default=None,
                   help="classifier-free guidance scale (1 = none); default: the --protocol's; "
                        "--preset mnist: the run's (the preset's 2.0); else 4.0")
    p.add_argument("--cfg-interval", type=int, default=-1,
                   help="stop guidance after this token (-1: never)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    p.add_argument("--top-k", type=int, default=0,
                   help="0 = off (LlamaGen's scripts use 2000 for c2i at eval)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1 = off)")
    p.add_argument("--seed", type=int, default=0,
                   help="the random init (--preset tiny) and the sampler's generator")
    p.add_argument("--batch-size", type=int, default=32, help="images per generate call")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cpu, cuda or cuda:N")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default=None,
                   help="GPT weights dtype (default: the --protocol's, else bf16 on GPU); fp16 = "
                        "AR-GRPO's test.py: GPT and VQ in fp16 under fp16 autocast")
    p.add_argument("--out", default="samples/grid.png", help="PNG grid path ('' for none)")
    p.add_argument("--npz", default=None,
                   help="also write all samples as uint8 NHWC .npz (for FID)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the decode step (same tokens); default: on for a GPU, off "
                        "on a CPU (docs/performance.md)")


SAMPLE_CHECKS = SAMPLER_CHECKS + [
    ("--per-class", lambda v: v >= 1, ">= 1"),
    ("--batch-size", lambda v: v >= 1, ">= 1"),
    SEED_CHECK,
    ("--image-size", lambda v: 0 < v <= 4096, "in [1, 4096]"),
    ("--image-size-eval", lambda v: 0 < v <= 4096, "in [1, 4096]"),
]
TINY_IGNORES = ("--gpt-ckpt", "--vq-ckpt", "--t5-path", "--image-size")  # --preset tiny's own


# C2I evaluation protocols: what each sets where its flag is not given (cfg_scale None: by model)
PROTOCOLS = {
    # AR-GRPO's test.py / test.sh: fp16 weights + autocast, CFG 2.0, top-k 0, PNGs at native size
    "argrpo": dict(cfg_scale=2.0, top_k=0, precision="fp16", image_size_eval=None),
    # LlamaGen's sample_c2i_ddp.py and its README's FIDs: bf16 GPT, resized to 256 (bicubic)
    "llamagen": dict(cfg_scale=None, top_k=0, precision="bf16", image_size_eval=256),
}
LLAMAGEN_CFG = {768: 2.0, 1024: 2.0, 1280: 1.75, 1536: 1.75, 3200: 1.65}   # by width: B L XL XXL 3B


def protocol_cfg(args, config):
    """args.cfg_scale once the model is known: the flag's, LlamaGen's for the model's width under
    --protocol llamagen, else 4.0 (printed)."""
    if args.cfg_scale is None:
        args.cfg_scale = LLAMAGEN_CFG.get(config.dim, 2.0) if args.protocol == "llamagen" else 4.0
        print(f"cfg scale {args.cfg_scale} (--protocol {args.protocol})")


def sample_record(args):
    """What a sample.py output records (the .npz's `meta`, GenEval's DIR/sampler.json): the
    checkpoint, the protocol and the sampler's settings."""
    keys = ("preset", "gpt_ckpt", "vq_ckpt", "protocol", "cfg_scale", "cfg_interval", "temperature",
            "top_k", "top_p", "seed", "precision", "image_size_eval", "per_class", "caption_pad",
            "clean_captions")
    tiny = args.preset == "tiny"   # its random models, not the checkpoint flags
    return {k: None if tiny and k.endswith("_ckpt") else getattr(args, k) for k in keys}


def parse_sample_args(argv, description):
    """The flags, range-checked, with the defaults that depend on the device or the checkpoint."""
    p = sample_parser(description)
    first, _ = p.parse_known_args(argv)
    if first.protocol:   # its settings become the defaults: a flag given still wins
        p.set_defaults(**PROTOCOLS[first.protocol])
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # both do
    args = p.parse_args(argv)
    error = range_errors(args, SAMPLE_CHECKS) or device_error(args.device)
    given = [f for f in TINY_IGNORES if getattr(args, f[2:].replace("-", "_")) is not None]
    if not error and args.preset == "tiny" and given:
        error = (f"--preset tiny samples train.py's 16 px tiny starting model: drop "
                 f"{', '.join(given)}")
    if not error and args.prompts and args.classes:
        error = "--prompts (t2i) and --classes (c2i) exclude each other"
    if not error and args.classes not in (None, "all"):
        ids = args.classes.split(",")
        if not all(x.strip().isdigit() for x in ids):
            error = f"--classes must be comma-separated class ids or 'all', got {args.classes!r}"
        args.classes = [int(x) for x in ids] if not error else None
    if error:
        p.error(error)
    args.t5_path = args.t5_path or "google/flan-t5-xl"
    if args.compile is None:  # pays for itself on a GPU after a few batches, never on a CPU
        args.compile = args.device.startswith("cuda")
    if args.gpt_ckpt is None and args.preset != "mnist":
        args.gpt_ckpt = "c2i_B_256"                                  # LlamaGen's released GPT-B
    run = None if args.preset == "tiny" or not args.gpt_ckpt else run_args(args.gpt_ckpt)
    if args.cfg_scale is None and args.preset == "mnist":  # as it trains: a run's own, else 2.0
        args.cfg_scale = getattr(run, "cfg_scale", 2.0)   # (others: protocol_cfg, once loaded)
    # T2I text settings: as given, else a train.py checkpoint's own, else LlamaGen's
    if args.caption_pad is None:
        args.caption_pad = getattr(run, "caption_pad", "left")
    if args.clean_captions is None:  # runs older than the flag: raw captions
        args.clean_captions = getattr(run, "clean_captions", run is None)
    print(vars(args))
    return args
