"""train.py: online GRPO for LlamaGen (AR-GRPO, Kwai-Klear 2025), one file, top to bottom.

Each step (the math is in grpo.py):
  1. draw P prompts per rank (class ids for c2i, captions for t2i), the same global draw on every rank;
  2. sample G images per prompt with the KV-cache CFG sampler (generate) and decode them with the VQ;
  3. score them (rewards.py), normalise rewards within each group -> one advantage per image;
  4. --inner-epochs passes over the batch in --minibatches optimizer steps (AdamW, grad clipping),
     each an accumulation over micro-batches of  L = mean_tokens(-min(rho A, clip(rho) A) + beta k3)
     with the frozen reference model (not trained, not in DDP, not in checkpoints).

Randomness is derived from (seed, step, ...) only: prompt draw from (seed, step); the samples of
global group j from (seed, step, j); everything else (reward crops) from (seed, step, rank). So
a resumed run repeats the uninterrupted one exactly, and the samples do not depend on how many
ranks share the work. The policy runs in eval mode: LlamaGen's dropout is for pretraining, and
the log-probs of a policy-gradient step must be deterministic.

Gradients across ranks: each rank's loss is the mean over its local tokens (equal counts on every
rank), DDP averages gradients, so the update equals one process running the whole global batch.

  python train.py --task c2i --preset tiny                 # CPU, offline, random tiny models, ~15 s
  torchrun --nproc_per_node 4 train.py --task c2i          # the paper's C2I run (GPT-B 256)
  torchrun --nproc_per_node 4 train.py --task t2i --prompts prompts.txt   # the paper's T2I run
"""
import argparse
import copy
import hashlib
import json
import math
import os
import sys
import time
from contextlib import nullcontext

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from checkpoint import BadCheckpoint, MissingCheckpoint, load_checkpoint, save_atomic
from grpo import diagnostics, group_advantages, grpo_loss, policy_logprobs
from model import GPT, TextEncoder, generate, gpt_checkpoint, gpt_config, load_gpt
from rewards import RewardWeightsMissing, build_rewards, parse_spec
from sample import read_prompts, save_grid, to_uint8
from vq import VQ_PRESETS, VQModel, load_vq

HERE = os.path.dirname(os.path.abspath(__file__))
PAPER_REWARDS = "clip:1,clip_q:1,hps:1,hps_q:1,maniqa:1,qwen:1"  # C2I run of the paper, all weights 1
TINY_PROMPTS = ["a red fox in the snow", "a bowl of blueberries", "a lemon on a table", "a green forest",
                "a purple flower", "an orange sunset", "a white cat", "a night sky"]

# Presets: one plain dict each; any flag given on the command line wins over its preset.
PRESETS = {
    "tiny": dict(gpt_model="GPT-tiny", gpt_ckpt="", vq_model="palette", vq_ckpt="", image_size=16,
                 rewards="color:1", prompts_per_rank=4, group_size=8, steps=100, lr=3e-3, beta=0.01,
                 cfg_scale=2.0, save_every=25, image_every=25, cpu_threads=1),
    "paper-c2i-b256": dict(task="c2i", gpt_ckpt="checkpoints/c2i_B_256.pt", vq_ckpt="checkpoints/vq_ds16_c2i.pt",
                           image_size=256, rewards=PAPER_REWARDS, prompts_per_rank=1, group_size=8,
                           steps=400, beta=0.1, cfg_scale=2.0),
    "paper-c2i-l256": dict(task="c2i", gpt_ckpt="checkpoints/c2i_L_256.pt", vq_ckpt="checkpoints/vq_ds16_c2i.pt",
                           image_size=256, rewards=PAPER_REWARDS, prompts_per_rank=1, group_size=8,
                           steps=400, beta=0.1, cfg_scale=2.0),
    "paper-c2i-xl384": dict(task="c2i", gpt_ckpt="checkpoints/c2i_XL_384.pt", vq_ckpt="checkpoints/vq_ds16_c2i.pt",
                            image_size=384, rewards=PAPER_REWARDS, prompts_per_rank=1, group_size=8,
                            steps=400, beta=0.1, cfg_scale=2.0),
    "paper-t2i-xl": dict(task="t2i", gpt_ckpt="checkpoints/t2i_XL_stage1_256.pt", vq_ckpt="checkpoints/vq_ds16_t2i.pt",
                         t5_path="checkpoints/flan-t5-xl", image_size=256, rewards=PAPER_REWARDS,
                         prompts_per_rank=2, group_size=8, steps=600, beta=1.0, cfg_scale=4.0),
}
DEFAULT_PRESET = {"c2i": "paper-c2i-b256", "t2i": "paper-t2i-xl"}


def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a = p.add_argument
    a("--task", choices=["c2i", "t2i"], default="c2i", help="class-to-image (ImageNet ids) or text-to-image")
    a("--preset", choices=list(PRESETS), default=None, help="hyperparameters + checkpoints; default: the paper's run for --task")
    # models
    a("--gpt-ckpt", default="", help="policy/reference weights: a file, a released name (c2i_B_256), or '' = random --gpt-model")
    a("--gpt-model", default="GPT-B", help="architecture for random init (only without --gpt-ckpt)")
    a("--vq-ckpt", default="", help="VQ tokenizer weights, or '' = random --vq-model")
    a("--vq-model", default="VQ-16", help="VQ architecture for random init (VQ-16, VQ-tiny, ...) or 'palette' (tiny preset)")
    a("--t5-path", default="", help="FLAN-T5-XL directory (t2i); '' = a tiny random T5 (tiny preset)")
    a("--image-size", type=int, default=256)
    # data
    a("--prompts", default="", help="t2i prompts: a .txt (one per line) or .jsonl ('prompt' or 'caption' field)")
    a("--num-classes", type=int, default=0, help="c2i: draw class ids from [0, K) (0 = all classes of the model)")
    # rewards
    a("--rewards", default=PAPER_REWARDS, help="'name:weight,...' (rewards.py); weight-free: color, brightness, colorfulness, jpeg")
    a("--clip-ckpt", default=None), a("--hps-ckpt", default=None), a("--maniqa-ckpt", default=None)
    a("--qwen-path", default=None), a("--judge-mode", default="fast", choices=["fast", "generate"])
    # sampler (the paper: temperature 1, top-k 0, top-p 1, CFG 2.0 for c2i / 4.0 for t2i)
    a("--cfg-scale", type=float, default=2.0), a("--cfg-interval", type=int, default=-1)
    a("--temperature", type=float, default=1.0), a("--top-k", type=int, default=0), a("--top-p", type=float, default=1.0)
    # GRPO
    a("--prompts-per-rank", type=int, default=1, help="P: prompts per rank per step")
    a("--group-size", type=int, default=8, help="G: samples per prompt")
    a("--policy", choices=["cond", "cfg"], default="cfg",
      help="log-probs of the conditional branch (the paper's code) or of the guided distribution sampled from")
    a("--adv-std", choices=["group", "global"], default="group", help="advantage denominator: group std (GRPO) or batch std (Flow-GRPO)")
    a("--beta", type=float, default=0.1, help="weight of the k3 KL to the reference")
    a("--clip-eps", type=float, default=0.2), a("--clip-eps-high", type=float, default=None, help="upper clip (default = --clip-eps)")
    a("--inner-epochs", type=int, default=1, help="passes over each rollout batch (1 = the paper: rho == 1)")
    a("--minibatches", type=int, default=1, help="optimizer steps per pass (each over B/minibatches sequences)")
    a("--micro-batch", type=int, default=0, help="sequences per forward for gradient accumulation (0 = whole minibatch)")
    # optimisation
    a("--lr", type=float, default=1e-5), a("--weight-decay", type=float, default=0.0)
    a("--adam-betas", type=float, nargs=2, default=[0.9, 0.999]), a("--grad-clip", type=float, default=1.0)
    a("--bf16", action=argparse.BooleanOptionalAction, default=True, help="bf16 autocast on GPU (CPU runs fp32)")
    # run
    a("--steps", type=int, default=400), a("--seed", type=int, default=42)
    a("--out", default="out/run", help="metrics.jsonl, args.json, ckpt.pt, samples/")
    a("--resume", action="store_true", help="continue from OUT/ckpt.pt")
    a("--save-every", type=int, default=50), a("--image-every", type=int, default=50)
    a("--tensorboard", action="store_true", help="also write TensorBoard curves and images to OUT/tb")
    a("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a("--cpu-threads", type=int, default=0, help="torch CPU threads (0 = torch's default; tiny models run best on 1)")
    # speed and memory (README, "Sampling speed" and "Training"): none of these changes the update
    a("--compile", action=argparse.BooleanOptionalAction, default=False,
      help="sample with the torch.compile'd decode step (inductor on CPU, CUDA graphs on GPU); same tokens")
    a("--grad-checkpoint", action="store_true",
      help="recompute each layer's activations in the backward pass (less memory, ~1/3 more update compute)")
    a("--ref-dtype", choices=["auto", "bf16", "fp32"], default="auto",
      help="reference model weights; auto = bf16 on GPU with --bf16 (the matmuls run in bf16 under autocast anyway), else fp32")
    a("--old-logprobs", choices=["auto", "pass"], default="auto",
      help="pi_old: auto = the update forward's own log-probs with one update per rollout, the sampler's with "
           "--policy cfg, else a no-grad pass; pass = always a separate no-grad pass (a check: same update)")
    # a preset's values become the defaults, so explicit flags still override them
    first, _ = p.parse_known_args(argv)
    preset = first.preset or DEFAULT_PRESET[first.task]
    if PRESETS[preset].get("task", first.task) != first.task:
        p.error(f"preset {preset} is for --task {PRESETS[preset]['task']}")
    p.set_defaults(**{**PRESETS[preset], "preset": preset, "task": first.task})
    args = p.parse_args(argv)
    # flag combinations that cannot work: one line each, before anything is loaded
    if args.group_size < 2:
        p.error("--group-size must be >= 2: a group of one has no baseline (its advantage is always 0)")
    if (args.prompts_per_rank * args.group_size) % args.minibatches:
        p.error(f"--minibatches {args.minibatches} must divide --prompts-per-rank x --group-size = "
                f"{args.prompts_per_rank * args.group_size}")
    if min(args.steps, args.inner_epochs, args.prompts_per_rank) < 1:
        p.error("--steps, --inner-epochs and --prompts-per-rank must be >= 1")
    try:
        parse_spec(args.rewards)
    except ValueError as e:
        p.error(str(e))
    return args


# ----------------------------------------------------------------------------- distributed
def setup_distributed(device):
    """torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; without them this is a single process."""
    if "RANK" not in os.environ:
        return 0, 1, torch.device(device)
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    if device.startswith("cuda"):
        torch.cuda.set_device(local)
        dist.init_process_group("nccl", device_id=torch.device("cuda", local))
        return rank, world, torch.device("cuda", local)
    dist.init_process_group("gloo")
    return rank, world, torch.device("cpu")


def all_gather(x, world):  # (n, ...) on every rank -> (world * n, ...), rank-major
    if world == 1:
        return x
    out = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out)


def all_reduce(metrics, world, device):
    """Average the metrics over ranks; *_min / *_max keys take the min / max."""
    if world == 1:
        return metrics
    for key, op in (("_min", dist.ReduceOp.MIN), ("_max", dist.ReduceOp.MAX), ("", dist.ReduceOp.SUM)):
        keys = [k for k in metrics if (k.endswith(key) if key else not k.endswith(("_min", "_max")))]
        t = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64, device=device)  # nccl: on GPU
        dist.all_reduce(t, op=op)
        metrics.update({k: v / (world if op == dist.ReduceOp.SUM else 1) for k, v in zip(keys, t.tolist())})
    return metrics


def mix(*ints):
    """A 63-bit seed from integers, e.g. (seed, step, group): the same on every machine."""
    return int(hashlib.md5(repr(ints).encode()).hexdigest()[:15], 16)


# ----------------------------------------------------------------------------- models and prompts
def missing_files(args, gpt_flag="--gpt-ckpt"):
    """Weight files named in args that are not on disk, as 'path (flag)'. A released name (no '/',
    no '.pt') is left to the downloader."""
    need = [(f, p) for f, p in ((gpt_flag, args.gpt_ckpt), ("--vq-ckpt", args.vq_ckpt)) if p and ("/" in p or p.endswith(".pt"))]
    need += [("--t5-path", args.t5_path)] if args.task == "t2i" and args.t5_path else []
    return [f"{path} ({flag})" for flag, path in need if not os.path.exists(path)]


def check_files(args):
    """Stop at once, in one line, when weights are missing (rather than after minutes of loading)."""
    missing = missing_files(args)
    if missing:
        raise MissingCheckpoint(f"missing weights: {', '.join(missing)}; download them (README, 'Training') "
                                f"and pass the flag(s), or run offline on CPU with: python train.py --task {args.task} --preset tiny")


class PaletteVQ(torch.nn.Module):
    """The tiny preset's tokenizer: token k paints its (ds x ds) patch with a fixed random colour.
    A random VQ-tiny cannot stand in: its decoder ends in GroupNorm with one channel per group (an
    instance norm, which removes each image's channel means), so every token grid decodes to nearly
    the same mean colour and a colour reward spans ~0.005: nothing to learn. `--vq-model VQ-tiny` runs too."""
    def __init__(self, codebook_size, downsample, seed):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("palette", torch.rand(codebook_size, 3, generator=g) * 2 - 1)  # (K, 3) in [-1, 1]
        self.ds = downsample

    def decode(self, codes):  # (B, N) -> (B, 3, H, W) in [-1, 1]
        side = math.isqrt(codes.shape[1])
        x = self.palette[codes].view(len(codes), side, side, 3).permute(0, 3, 1, 2)      # (B, 3, h, w)
        return x.repeat_interleave(self.ds, 2).repeat_interleave(self.ds, 3)


def build_models(args, device):
    """policy, reference (frozen copy of the initial weights), vq, text encoder (t2i) or None."""
    if args.gpt_ckpt:
        policy = load_gpt(args.gpt_ckpt, image_size=args.image_size, device=device)
    else:  # random init from the seed: a resumed run rebuilds the same reference
        torch.manual_seed(args.seed)
        vq_cfg = VQ_PRESETS["VQ-tiny" if args.vq_model == "palette" else args.vq_model]
        policy = GPT(gpt_config(args.gpt_model, model_type=args.task, vocab_size=vq_cfg.codebook_size,
                                block_size=(args.image_size // vq_cfg.downsample) ** 2)).to(device)
    reference = copy.deepcopy(policy)
    policy.eval(), reference.eval().requires_grad_(False)  # eval: no dropout, deterministic log-probs
    if args.vq_ckpt:
        vq = load_vq(args.vq_ckpt, device=device)
    elif args.vq_model == "palette":
        vq = PaletteVQ(VQ_PRESETS["VQ-tiny"].codebook_size, VQ_PRESETS["VQ-tiny"].downsample, args.seed + 1).to(device)
    else:
        torch.manual_seed(args.seed + 1)
        vq = VQModel(VQ_PRESETS[args.vq_model]).to(device).eval()
    text = None
    if args.task == "t2i":
        dtype = torch.bfloat16 if device.type == "cuda" and args.bf16 else torch.float32
        text = (TextEncoder.from_pretrained(args.t5_path, device=device, dtype=dtype) if args.t5_path
                else TextEncoder.tiny(policy.config.caption_dim, seed=args.seed))
        text.model.to(device)
    return policy, reference, vq, text


def load_prompts(args):
    """The prompt pool, read before any model is built (a bad prompt file fails at once): for c2i,
    'a photo of {class name}' for every ImageNet class id (cut to the model's classes later)."""
    if args.task == "c2i":
        names = open(os.path.join(HERE, "imagenet_classes.txt")).read().splitlines()
        return [f"a photo of {n}" for n in names[: args.num_classes or None]]
    if not args.prompts:
        if args.preset == "tiny":
            return TINY_PROMPTS
        raise SystemExit("error: t2i needs --prompts FILE (.txt, one prompt per line, or .jsonl with a 'prompt' field)")
    return read_prompts(args.prompts)


# ----------------------------------------------------------------------------- training
def main(argv=None):
    args = get_args(argv)
    check_files(args)
    pool = load_prompts(args)
    if args.cpu_threads:
        torch.set_num_threads(args.cpu_threads)
    rank, world, device = setup_distributed(args.device)
    scorer = build_rewards(args.rewards, device=device, clip_ckpt=args.clip_ckpt, hps_ckpt=args.hps_ckpt,
                           maniqa_ckpt=args.maniqa_ckpt, qwen_path=args.qwen_path, judge_mode=args.judge_mode,
                           dtype=torch.bfloat16 if device.type == "cuda" and args.bf16 else None,
                           seed=args.seed)  # first: missing reward weights stop the run before anything heavy
    master = rank == 0
    log = print if master else (lambda *a, **k: None)
    if master:
        os.makedirs(args.out, exist_ok=True)
        json.dump(vars(args), open(os.path.join(args.out, "args.json"), "w"), indent=1)
        log(json.dumps(vars(args)))
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    amp = torch.autocast("cuda", torch.bfloat16) if device.type == "cuda" and args.bf16 else nullcontext()

    policy, reference, vq, text = build_models(args, device)
    if args.ref_dtype == "bf16" or args.ref_dtype == "auto" and device.type == "cuda" and args.bf16:
        reference.to(torch.bfloat16)  # half the memory; its matmuls ran in bf16 under autocast anyway
    policy.grad_checkpoint = args.grad_checkpoint
    if args.task == "c2i":
        pool = pool[:policy.config.num_classes]  # a model with K classes draws ids from [0, K)
    opt = torch.optim.AdamW(policy.parameters(), lr=args.lr, betas=tuple(args.adam_betas), weight_decay=args.weight_decay)
    model = policy
    if world > 1:  # the reference stays outside: DDP syncs only what is trained
        model = DDP(policy, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False)
    P, G, N = args.prompts_per_rank, args.group_size, policy.config.block_size
    B = P * G  # sequences per rank per step
    mb_size = B // args.minibatches
    micro = args.micro_batch or mb_size
    log(f"policy {sum(p.numel() for p in policy.parameters()) / 1e6:.2f}M params | {world} rank(s) x {P} prompts x {G} "
        f"samples = {world * B} images/step | {len(pool)} prompts | policy log-probs: {args.policy}")

    # resume: weights, optimizer, step, RNG states; metrics of steps not covered by the checkpoint are dropped
    start, ckpt_path, metrics_path = 0, os.path.join(args.out, "ckpt.pt"), os.path.join(args.out, "metrics.jsonl")
    if args.resume and os.path.exists(ckpt_path):
        ck = load_checkpoint(ckpt_path)
        policy.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        start = ck["step"]
        if len(ck["rng"]) == world:
            torch.set_rng_state(ck["rng"][rank]["cpu"])
            if device.type == "cuda" and ck["rng"][rank]["cuda"] is not None:
                torch.cuda.set_rng_state(ck["rng"][rank]["cuda"])
        log(f"resumed from {ckpt_path} at step {start}")
    if master:
        kept = [l for l in open(metrics_path)] if start and os.path.exists(metrics_path) else []
        with open(metrics_path, "w") as f:
            f.writelines(l for l in kept if json.loads(l)["step"] < start)
    writer = None
    if master and args.tensorboard:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(os.path.join(args.out, "tb"))

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.time()

    for step in range(start, args.steps):
        t0 = sync()
        torch.manual_seed(mix(args.seed, step, rank))  # any other randomness of this step (reward crops)
        # -- 1. prompts: one global draw from (seed, step), this rank takes its slice
        g = torch.Generator().manual_seed(mix(args.seed, step))
        draw = torch.randperm(len(pool), generator=g) if len(pool) >= P * world else torch.randint(len(pool), (P * world,), generator=g)
        ids = draw[: P * world][rank * P:(rank + 1) * P].tolist()
        prompts = [pool[i] for i in ids for _ in range(G)]                        # B strings, group-contiguous
        if args.task == "c2i":
            cond, cond_mask = torch.tensor(ids, device=device).repeat_interleave(G), None   # (B,)
        else:
            feats, mask = text([pool[i] for i in ids])                               # (P, 120, C), (P, 120)
            cond, cond_mask = feats.repeat_interleave(G, 0), mask.repeat_interleave(G, 0)

        # -- 2. rollout: each group from its own generator, seeded by (seed, step, global group index)
        tokens, logp_sampler = [], []
        with torch.no_grad(), amp:
            for j in range(P):
                gen = torch.Generator(device).manual_seed(mix(args.seed, step, rank * P + j))
                s = slice(j * G, (j + 1) * G)
                t, lp = generate(policy, cond[s], cfg_scale=args.cfg_scale, temperature=args.temperature, top_k=args.top_k,
                                 top_p=args.top_p, cfg_interval=args.cfg_interval,
                                 cond_mask=None if cond_mask is None else cond_mask[s], generator=gen, return_logprobs=True,
                                 compile=args.compile)
                tokens.append(t), logp_sampler.append(lp)
        tokens, logp_sampler = torch.cat(tokens), torch.cat(logp_sampler)          # (B, N), (B, N)
        t1 = sync()

        # -- 3. decode, score, advantages over the global batch (groups never straddle ranks)
        with torch.no_grad(), amp:
            images = (vq.decode(tokens).float().clamp(-1, 1) + 1) / 2                 # (B, 3, H, W) in [0, 1]
        reward, parts = scorer(images, prompts)                                    # (B,), {name: (B,)}
        rewards_all = all_gather(reward.float().to(device), world)                 # (world * B,)
        adv_all, zero_std_frac = group_advantages(rewards_all, G, std=args.adv_std)
        adv = adv_all[rank * B:(rank + 1) * B]                                     # (B,)
        t2 = sync()

        # -- 4. log-probs of the reference, and of the rollout policy (pi_old) only where nothing gives them:
        # with one update per rollout (the paper) pi_old is the update forward's own detached log-probs
        # (rho == 1, as AR-GRPO's code and TRL); with several and --policy cfg, the sampler's log-probs (the
        # distribution the tokens were drawn from); else (or --old-logprobs pass) a no-grad pass
        def logprobs(m, idx):
            return policy_logprobs(m, cond[idx], tokens[idx], args.policy, args.cfg_scale, args.temperature, args.top_k,
                                   args.top_p, None if cond_mask is None else cond_mask[idx], args.cfg_interval)
        one_update = args.inner_epochs == 1 and args.minibatches == 1
        old_pass = args.old_logprobs == "pass" or not one_update and args.policy == "cond"
        old = logp_sampler.clone() if not (old_pass or one_update) else torch.empty(B, N, device=device)
        ref, ent = torch.empty(B, N, device=device), torch.empty(B, N, device=device)
        with torch.no_grad(), amp:
            for idx in torch.arange(B, device=device).split(micro):
                if old_pass:
                    old[idx], ent[idx] = logprobs(policy, idx)
                ref[idx] = logprobs(reference, idx)[0]
        t3 = sync()

        # -- 5. update: inner epochs x minibatches, gradient accumulation over micro-batches
        stats, first = [], torch.empty(B, N, device=device)  # first: the policy's log-probs before any update
        for epoch in range(args.inner_epochs):
            order = torch.arange(B) if args.minibatches == 1 else \
                torch.randperm(B, generator=torch.Generator().manual_seed(mix(args.seed, step, rank, epoch)))
            for n_mb, mb in enumerate(order.to(device).split(mb_size)):
                chunks = mb.split(micro)
                for k, idx in enumerate(chunks):
                    last = k == len(chunks) - 1
                    with (model.no_sync() if world > 1 and not last else nullcontext()), amp:
                        logp, e = logprobs(model, idx)                                  # (b, N), with grad
                        if epoch == 0:
                            first[idx] = logp.detach()
                            if not old_pass:
                                ent[idx] = e  # pi_old's entropy on the first minibatch, before any update
                            if one_update and not old_pass:
                                old[idx] = logp.detach()                                  # rho == 1
                        loss, pg, kl, ratio = grpo_loss(logp, old[idx], ref[idx], adv[idx], args.beta,
                                                        args.clip_eps, args.clip_eps_high)
                        # mean over this rank's minibatch tokens: weight each micro-batch by its share
                        (loss * len(idx) / len(mb)).backward()
                    stats.append({"loss": loss.item(), "pg_loss": pg.mean().item(), "kl": kl.mean().item(),
                                  **diagnostics(ratio, adv[idx], logp.detach(), old[idx], args.clip_eps, args.clip_eps_high)})
                grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), args.grad_clip).item()
                opt.step()
                opt.zero_grad(set_to_none=True)
                if epoch == 0 and n_mb == 0:
                    pre = mb  # rows whose `first` log-probs come from pi_old itself
        t4 = sync()

        # -- 6. metrics (averaged over ranks), log, images, checkpoint
        m = {k: sum(s[k] for s in stats) / len(stats) for k in stats[0]}
        m["ratio_min"], m["ratio_max"] = min(s["ratio_min"] for s in stats), max(s["ratio_max"] for s in stats)
        m.update({f"reward_{n}": v.float().mean().item() for n, v in parts.items()})
        # the teacher-forced pi_old vs the sampler's log-probs: all rows with the pass, else those scored
        # before any update (all of them with one update per rollout)
        rows = slice(None) if old_pass else pre
        gap = (old if old_pass else first)[rows] - logp_sampler[rows]
        m.update(entropy=ent[rows].mean().item(), logp_gap_sampler=gap.mean().item(),
                 logp_gap_sampler_max=gap.abs().max().item(), grad_norm=grad_norm)
        m = all_reduce(m, world, device)
        m = {"step": step, "reward_mean": rewards_all.mean().item(), "reward_std": rewards_all.std().item(),
             "reward_group_std": rewards_all.view(-1, G).std(1).mean().item() if G > 1 else 0.0,
             **m, "zero_std_frac": zero_std_frac, "lr": opt.param_groups[0]["lr"],
             "t_rollout": t1 - t0, "t_reward": t2 - t1, "t_logp": t3 - t2, "t_update": t4 - t3, "t_step": t4 - t0,
             "images_per_s": world * B / (t4 - t0)}
        if master:
            with open(metrics_path, "a") as f:
                f.write(json.dumps(m) + "\n")
            if writer:
                for k, v in m.items():
                    writer.add_scalar(k, v, step)
            log(f"step {step + 1}/{args.steps} | reward {m['reward_mean']:.4f} (std {m['reward_std']:.4f}) | "
                f"loss {m['loss']:+.4f} kl {m['kl']:.5f} ent {m['entropy']:.3f} clip {m['clip_frac']:.3f} "
                f"zero-std {m['zero_std_frac']:.2f} gnorm {m['grad_norm']:.3f} | {m['t_step']:.2f}s (rollout "
                f"{m['t_rollout']:.2f} reward {m['t_reward']:.2f} logp {m['t_logp']:.2f} update {m['t_update']:.2f}) "
                f"{m['images_per_s']:.1f} img/s")
            if args.image_every and (step + 1) % args.image_every == 0 or step == start:
                n = min(P, 4) * G
                grid = save_grid(to_uint8(images[:n] * 2 - 1), os.path.join(args.out, "samples", f"step_{step + 1:06d}.png"),
                                 nrow=G, min_px=64)  # a row per prompt
                if writer:
                    writer.add_image("samples", grid, step, dataformats="HWC")
        if (step + 1) % args.save_every == 0 or step + 1 == args.steps:
            rng = {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if device.type == "cuda" else None}
            rngs = [rng] * world
            if world > 1:
                dist.all_gather_object(rngs, rng)
            if master:
                save_atomic({**gpt_checkpoint(policy), "optimizer": opt.state_dict(),
                             "step": step + 1, "rng": rngs, "args": vars(args)}, ckpt_path)

    # ranks must hold identical weights: compare per-tensor float64 sums and sums of squares across ranks
    check = torch.stack([f(p.detach().double()) for p in policy.parameters() for f in (torch.sum, lambda x: x.square().sum())])
    sync_diff = (all_gather(check[None].to(device), world) - check.to(device)).abs().max().item()
    if master:
        json.dump({"steps": args.steps, "world_size": world, "rank_weight_diff": sync_diff},
                  open(os.path.join(args.out, "summary.json"), "w"))
        log(f"done: {args.out} | ranks' weights differ by {sync_diff:.3g}")
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    try:
        main()
    except (MissingCheckpoint, BadCheckpoint, RewardWeightsMissing) as e:  # one line, no traceback
        sys.exit(f"error: {e}")
