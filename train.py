"""train.py: online GRPO for LlamaGen (AR-GRPO, Kwai-Klear 2025), one file, top to bottom.

The presets open the file; main() sets up, then runs GRPO steps of six phases (math: grpo.py):
  1. draw_prompts: P prompts per rank (class ids for c2i, captions for t2i), one global draw;
  2. rollout: G images per prompt with the KV-cache CFG sampler (model.generate);
  3. logprobs_before_update: the frozen reference's log-probs (not trained, not in DDP, not saved),
     and the rollout policy pi_old's where nothing else gives them;
  4. score: VQ decode, rewards (rewards.py), normalised within each group: one advantage per image;
  5. update: --inner-epochs passes of --minibatches AdamW steps (grad clipping), each accumulated
     over micro-batches of L = mean_tokens(-min(rho A, clip(rho) A) + beta k3);
  6. step_metrics, log_step, save_checkpoint: metrics.jsonl, the log line, sample grids, ckpt.pt.

Randomness comes from (seed, step, ...) only: the prompt draw from (seed, step), the samples of
global group j from (seed, step, j), the rest (reward crops) from (seed, step, rank). So a resumed
run repeats the uninterrupted one exactly, and the samples do not depend on the number of ranks.
The policy runs in eval mode: LlamaGen's dropout is for pretraining, and a policy-gradient step
needs deterministic log-probs. Each rank's loss is the mean over its own tokens (equal counts),
DDP averages gradients: the update equals one process running the whole global batch. Flags,
checks and the run directory's bookkeeping live in plumbing/ (flags.py, rundir.py, stops.py).

  python train.py --task c2i --preset tiny                 # CPU, offline, random tiny models, ~15 s
  torchrun --nproc_per_node 4 train.py --task c2i          # AR-GRPO's C2I recipe on GPT-B 256
  torchrun --nproc_per_node 4 train.py --task c2i --preset paper-c2i-xl384  # run_c2i_train.sh
  torchrun --nproc_per_node 4 train.py --task t2i --prompts coco_captions_30000.json  # the paper
  python train.py --task t2i --dry-run                     # what a preset means: every flag as JSON
"""
import argparse
import hashlib
import json
import math
import os
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from types import SimpleNamespace

import torch
from tqdm import tqdm

from grpo import (Objective, diagnostics, group_advantages, grpo_loss, kl_penalized_rewards,
                  policy_logprobs)
from model import GPT, Sampling, generate, gpt_config, load_gpt
from plumbing import lora, rundir, sharding
from plumbing.distributed import (all_gather, all_gather_objects, all_reduce,
                                  setup_distributed, sync)
from plumbing.flags import check_files, check_run_memory, parse_train_args
from plumbing.mnist import PatchVQ
from plumbing.pretrain import use_pretrained
from plumbing.precision import training_dtypes
from plumbing.prompts import class_pool, load_prompts
from plumbing.reward_models import reward_options
from plumbing.standins import PaletteVQ
from plumbing.stops import nonfinite_rewards, run_cli, stop_if_nonfinite
from rewards import build_rewards, parse_spec
from text import TextEncoder
from vq import VQ_PRESETS, VQModel, load_vq

PAPER_REWARDS = "clip:1,clip_q:1,hps:1,hps_q:1,maniqa:1,qwen:1"  # the paper's C2I run, weights 1

# AR-GRPO's released code (Kwai-Klear/AR-GRPO 65947ad), what every paper preset shares on top of
# its model: docs/fidelity.md lists each item with its file, line and alternative.
PAPER_CODE = dict(policy="cond", judge_mode="generate", zero_flat_groups=False, caption_pad="right",
                  clean_captions=True, pure_bf16=False, lr=1e-5, ref_dtype="fp32", kl_clamp=0.0,
                  rollout_autocast=False, tf32=False, reward_dtype="paper", reward_input="pil",
                  maniqa_full_range=False, raw_prompts=True, keep_every=100)
# HF Trainer's linear decay to 0 over num_train_epochs=20 epochs of (prompts / prompts per step)
# steps: ImageNet's train images at 4 prompts per step (4 GPUs x 8 / G 8), and
# coco_captions_30000.json at 8 prompts per step (4 GPUs x 16 / 8)
LR_DECAY_C2I = 20 * 1281167 // 4
LR_DECAY_T2I = 20 * 30000 // 8


def paper_c2i(gpt_ckpt, image_size):
    """A C2I paper preset: AR-GRPO's C2I recipe on one of LlamaGen's released C2I GPTs."""
    return dict(task="c2i", gpt_ckpt=gpt_ckpt, vq_ckpt="checkpoints/vq_ds16_c2i.pt",
                image_size=image_size, rewards=PAPER_REWARDS, prompts_per_rank=1, group_size=8,
                steps=400, beta=0.1, cfg_scale=2.0, lr_decay_steps=LR_DECAY_C2I, **PAPER_CODE)


# Presets: one plain dict each; any flag given on the command line wins over its preset.
PRESETS = {
    "tiny": dict(gpt_model="GPT-tiny", gpt_ckpt="", vq_model="palette", vq_ckpt="", image_size=16,
                 rewards="color:1", prompts_per_rank=4, group_size=8, steps=100, lr=3e-3,
                 beta=0.01, cfg_scale=2.0, save_every=25, image_every=25, cpu_threads=1,
                 policy="cfg", judge_mode="fast", zero_flat_groups=True, caption_pad="left",
                 tiny_rewards=True),
    # the paper's pipeline in miniature on real digits, on a CPU: a GPT-mnist pretrained here once
    # (plumbing/pretrain.py), a digit classifier (semantic) + realism reward; the paper's cond
    # policy, G 8, k3 at beta 0.1, one update per rollout, CFG 2; unlike it (docs/mnist.md): lr
    # 1e-5 -> 3e-4 and steps 400 -> 100 (a 0.5M model, 3 CPU minutes), P 4 -> 8 (of 10 classes)
    "mnist": dict(pretrain="mnist", gpt_ckpt="", vq_model="patches", vq_ckpt="", image_size=28,
                  rewards="digit:1,realism:1", prompts_per_rank=8, group_size=8, steps=100,
                  lr=3e-4, beta=0.1, cfg_scale=2.0, save_every=50, image_every=50, policy="cond",
                  cpu_threads=1),
    # the LlamaGen C2I models AR-GRPO released RL-tuned versions of (HF user CSshihao)
    "paper-c2i-b256": paper_c2i("checkpoints/c2i_B_256.pt", 256),
    "paper-c2i-b384": paper_c2i("checkpoints/c2i_B_384.pt", 384),
    "paper-c2i-l384": paper_c2i("checkpoints/c2i_L_384.pt", 384),
    "paper-c2i-xl384": paper_c2i("checkpoints/c2i_XL_384.pt", 384),
    "paper-t2i-xl": dict(task="t2i", gpt_ckpt="checkpoints/t2i_XL_stage1_256.pt",
                         vq_ckpt="checkpoints/vq_ds16_t2i.pt", t5_path="checkpoints/flan-t5-xl",
                         image_size=256, rewards=PAPER_REWARDS, prompts_per_rank=2, group_size=8,
                         steps=600, beta=1.0, cfg_scale=2.0, lr_decay_steps=LR_DECAY_T2I,
                         **{**PAPER_CODE, "pure_bf16": True}),
}
DEFAULT_PRESET = {"c2i": "paper-c2i-b256", "t2i": "paper-t2i-xl"}


def main(argv=None):
    """Set up, then run the GRPO steps: each is the phases of the module docstring, in order."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = get_args(argv)
    if args.dry_run:
        return rundir.dry_run(args)
    run = setup(args, argv)
    args = run.args
    bar = tqdm(total=args.steps, initial=run.start, desc="train", unit="step",
               disable=not run.master, dynamic_ncols=True)
    for step in range(run.start, args.steps):
        t0 = sync(run.device)
        for group in run.opt.param_groups:
            group["lr"] = get_lr(args, step)
        torch.manual_seed(mix(args.seed, step, run.rank))  # any other randomness (reward crops)
        batch = draw_prompts(run, step)                               # 1. B prompts, condition
        batch.tokens, batch.logp_sampler = rollout(run, batch, step)  # 2. (B, N), (B, N)
        t1 = sync(run.device)
        ref, old, old_ent = logprobs_before_update(run, batch)        # 3. reference, pi_old (B, N)
        t2 = sync(run.device)
        scores = score(run, batch, ref, old, step)                    # 4. images, rewards, adv (B,)
        t3 = sync(run.device)
        stats, grad_norm, first = update(run, batch, scores.adv, ref, old, step)  # 5. AdamW step(s)
        t4 = sync(run.device)
        m = step_metrics(run, step, stats, grad_norm, batch, scores, old_ent, old, first,
                         (t0, t1, t2, t3, t4))
        log_step(run, step, m, scores.images)                         # 6. log and save
        if rundir.save_due(args, step):  # --save-every, --keep-every, the last step
            save_checkpoint(run, step)
        bar.update(1)
    bar.close()
    rundir.finish(run)


def get_args(argv=None):
    """The flags (their table: plumbing/flags.py), the --preset's values as their defaults."""
    return parse_train_args(argv, PRESETS, DEFAULT_PRESET, __doc__.split("\n")[0], PAPER_REWARDS,
                            check_rewards=parse_spec)


# ----------------------------------------------------------------------------- setup
@dataclass
class Run:
    """What setup() builds once and every phase reads. Each step, this rank handles B = P x G
    sequences (P prompts, G samples each, group-contiguous) of N image tokens."""
    args: argparse.Namespace
    rank: int
    world: int
    device: torch.device
    log: object                 # a line above the progress bar (rank 0; elsewhere a no-op)
    amp: object                 # bf16 autocast on GPU with --bf16, else a no-op context
    rollout_amp: object         # amp, or a no-op (--no-rollout-autocast, AR-GRPO: docs/fidelity.md)
    scorer: object              # rewards.py: (images, prompts) -> (B,) total, {name: (B,)}
    policy: torch.nn.Module
    reference: torch.nn.Module  # the frozen initial model: not trained, not in DDP, not saved
    vq: torch.nn.Module
    text: object                # t2i: captions -> T5 features (P, 120, C), mask (P, 120); c2i: None
    model: torch.nn.Module      # the policy, in DDP when world > 1 (the reference stays outside)
    opt: torch.optim.Optimizer
    pool: list                  # the prompts to draw from
    sampling: Sampling          # the sampler's settings (--cfg-scale, --temperature, ...)
    objective: Objective        # the loss's settings (--beta, --clip-eps, the variants)
    P: int
    G: int
    N: int
    micro: int                  # sequences per forward (--micro-batch, or a whole minibatch)
    old_from: str               # where pi_old's log-probs come from: see pi_old_source
    ckpt_path: str
    metrics_path: str
    writer: object = None       # TensorBoard (--tensorboard, rank 0)
    start: int = 0              # the first step to run (the checkpoint's on --resume)
    saved: int = 0              # the step of the checkpoint on disk (0: none yet)

    @property
    def master(self):
        return self.rank == 0

    @property
    def B(self):  # sequences per rank per step
        return self.P * self.G


def setup(args, argv):
    """Everything before the first step, in the order that fails fastest: the run directory,
    the weights' files, the prompts, then the processes, the rewards and the models."""
    args, ck = rundir.prepare_run(args, argv)
    if args.pretrain:  # the preset's own base: made once per machine, its paths filled in
        use_pretrained(args, GPT, gpt_config)
    check_files(args, lambda: gpt_config(args.gpt_model, model_type="t2i").caption_dim)
    pool = load_prompts(args)
    if args.cpu_threads:
        torch.set_num_threads(args.cpu_threads)
    rank, world, device = setup_distributed(args.device)
    # the rewards first: missing reward weights stop before anything heavy
    scorer = build_rewards(args.rewards, device=device, judge_mode=args.judge_mode,
                           dtype=torch.bfloat16 if device.type == "cuda" and args.bf16 else None,
                           seed=args.seed, tiny=args.tiny_rewards, **reward_options(args))
    log = tqdm.write if rank == 0 else (lambda *a, **k: None)  # lines above the progress bar
    if rank == 0:
        rundir.write_args(args)
        log(json.dumps(vars(args)))
    torch.backends.cuda.matmul.allow_tf32 = args.tf32  # AR-GRPO: off; cuDNN: on (fidelity.md)
    bf16 = device.type == "cuda" and args.bf16
    amp = torch.autocast("cuda", torch.bfloat16) if bf16 else nullcontext()
    policy, reference, vq, text = training_dtypes(args, device, *build_models(args, device))
    if args.task == "c2i":  # a model with K classes draws ids from [0, K)
        pool = class_pool(pool, policy.config.num_classes, args.num_classes)
    model = sharding.wrap(policy, args, world, device)  # DDP, FSDP2 (--fsdp: in place) or itself
    opt = torch.optim.AdamW(policy.parameters(), lr=args.lr, betas=tuple(args.adam_betas),
                            weight_decay=args.weight_decay)
    P, G = args.prompts_per_rank, args.group_size
    run = Run(args=args, rank=rank, world=world, device=device, log=log, amp=amp, scorer=scorer,
              rollout_amp=sharding.Gathered(  # --fsdp: the policy gathered whole for the rollout
                  policy, amp if args.rollout_autocast else nullcontext()),
              policy=policy, reference=reference, vq=vq, text=text, opt=opt, pool=pool, model=model,
              sampling=Sampling.of(args), objective=Objective.of(args), P=P, G=G,
              N=policy.config.block_size,
              micro=args.micro_batch or P * G // args.minibatches, old_from=pi_old_source(args),
              ckpt_path=os.path.join(args.out, "ckpt.pt"),
              metrics_path=os.path.join(args.out, "metrics.jsonl"))
    check_run_memory(policy, args, G, run.micro, device)  # a refusal, not an out-of-memory kill
    params, trained = (sum(p.numel() for p in policy.parameters() if p.requires_grad >= t) / 1e6
                       for t in (0, 1))
    log(f"policy {params:.2f}M params ({trained:.3g}M trained) | {world} rank(s) x {P} prompts x "
        f"{G} samples = {world * run.B} images/step | {len(pool)} prompts | policy log-probs: "
        f"{args.policy}")
    if ck is not None:  # read by prepare_run: weights, optimizer, step and RNG states
        rundir.restore(run, ck)
    rundir.start_logs(run)
    return run


def build_models(args, device):
    """A run's models from its flags (tools/eval.py rebuilds a run's base with it): the policy,
    the reference (a frozen copy of the initial weights), the VQ, the text encoder (t2i) or None."""
    if args.gpt_ckpt:
        policy = load_gpt(args.gpt_ckpt, image_size=args.image_size, device=device)
    else:  # random init from the seed: a resumed run rebuilds the same reference
        torch.manual_seed(args.seed)
        vq_cfg = VQ_PRESETS["VQ-tiny" if args.vq_model == "palette" else args.vq_model]
        side = args.image_size // vq_cfg.downsample
        policy = GPT(gpt_config(args.gpt_model, model_type=args.task,
                                vocab_size=vq_cfg.codebook_size, block_size=side ** 2)).to(device)
    reference = lora.reference_for(policy, args)  # a copy; --lora-rank: the policy, adapters off
    policy.eval()  # eval: no dropout, deterministic log-probs
    reference.eval().requires_grad_(False)
    if args.vq_ckpt:  # patches: the mnist preset's k-means codebook (plumbing/mnist.py)
        vq = (PatchVQ.load if args.vq_model == "patches" else load_vq)(args.vq_ckpt, device=device)
    elif args.vq_model == "palette":
        tiny_vq = VQ_PRESETS["VQ-tiny"]
        vq = PaletteVQ(tiny_vq.codebook_size, tiny_vq.downsample, args.seed + 1).to(device)
    else:
        torch.manual_seed(args.seed + 1)
        vq = VQModel(VQ_PRESETS[args.vq_model]).to(device).eval()
    text = None
    if args.task == "t2i":  # runs saved before the caption flags were left-padded, uncleaned
        dtype = torch.bfloat16 if device.type == "cuda" and args.bf16 else torch.float32
        text = TextEncoder.build(args.t5_path, policy.config.caption_dim, device, dtype, args.seed,
                                 pad=getattr(args, "caption_pad", "left"),
                                 clean=getattr(args, "clean_captions", False))
    return policy, reference, vq, text


def pi_old_source(args):
    """Where pi_old's log-probs come from: with one update per rollout (the paper), the update's
    own first forward ("update": rho == 1, as AR-GRPO and TRL); with several and --policy cfg, the
    sampler's ("sampler": the distribution sampled from); else a no-grad pass ("pass")."""
    one_update = args.inner_epochs == 1 and args.minibatches == 1
    # the KL in the reward needs pi_old before the update: a pass
    if args.old_logprobs == "pass" or not one_update and args.policy == "cond" or \
            args.kl_in == "reward":
        return "pass"
    return "update" if one_update else "sampler"


def mix(*ints):
    """A 63-bit seed from integers, e.g. (seed, step, group): the same on every machine."""
    return int(hashlib.md5(repr(ints).encode()).hexdigest()[:15], 16)


def get_lr(args, step):
    """HF Trainer's linear schedule (no warmup) over --lr-decay-steps, or a constant --lr.
    Stateless, a function of the step: resume-proof."""
    if not args.lr_decay_steps:
        return args.lr
    return args.lr * max(0.0, 1 - step / args.lr_decay_steps)


# ----------------------------------------------------------------------------- one GRPO step
def draw_prompts(run, step):
    """1. One global draw of P x world prompts from (seed, step), the same on every rank; this rank
    takes its slice and repeats each prompt G times. -> the batch: prompts (B strings,
    group-contiguous), cond (class ids (B,) or caption features (B, 120, C)), cond_mask ((B, 120)
    or None); main adds rollout's tokens and logp_sampler."""
    P, G, pool = run.P, run.G, run.pool
    g = torch.Generator().manual_seed(mix(run.args.seed, step))
    if len(pool) >= P * run.world:
        draw = torch.randperm(len(pool), generator=g)
    else:  # fewer prompts than the global batch: with repetition
        draw = torch.randint(len(pool), (P * run.world,), generator=g)
    ids = draw[: P * run.world][run.rank * P:(run.rank + 1) * P].tolist()
    prompts = [pool[i] for i in ids for _ in range(G)]
    if run.args.task == "c2i":
        cond = torch.tensor(ids, device=run.device).repeat_interleave(G)     # (B,)
        return SimpleNamespace(prompts=prompts, cond=cond, cond_mask=None)
    feats, mask = run.text([pool[i] for i in ids])                       # (P, 120, C), (P, 120)
    return SimpleNamespace(prompts=prompts, cond=feats.repeat_interleave(G, 0),
                           cond_mask=mask.repeat_interleave(G, 0))


def rollout(run, batch, step):
    """2. G samples per prompt with the KV-cache CFG sampler, each group from its own generator,
    seeded by (seed, step, global group index). -> tokens (B, N), the sampler's log-probs (B, N)."""
    G, tokens, logp_sampler = run.G, [], []
    with torch.no_grad(), run.rollout_amp:
        for j in range(run.P):
            group = run.rank * run.P + j                                  # global group index
            gen = torch.Generator(run.device).manual_seed(mix(run.args.seed, step, group))
            s = slice(j * G, (j + 1) * G)
            mask = None if batch.cond_mask is None else batch.cond_mask[s]
            t, lp = generate(run.policy, batch.cond[s], run.sampling, cond_mask=mask,
                             generator=gen, return_logprobs=True, compile=run.args.compile)
            tokens.append(t)
            logp_sampler.append(lp)
    return torch.cat(tokens), torch.cat(logp_sampler)                    # (B, N), (B, N)


def score(run, batch, ref, old, step):
    """4. Decode, score, and the advantages over the global batch (groups never straddle ranks);
    with --kl-in reward the KL to the reference under pi_old (ref, old (B, N)) leaves each reward
    first. Stops the run on a non-finite reward or advantage. -> images (B, 3, H, W) in [0, 1],
    parts {reward name: (B,)}, rewards_all (world * B,), adv (B,), zero_std_frac, judge."""
    args = run.args
    with torch.no_grad(), run.rollout_amp:
        images = (run.vq.decode(batch.tokens).float().clamp(-1, 1) + 1) / 2  # (B, 3, H, W)
    judge_before = run.scorer.stats()
    reward, parts = run.scorer(images, batch.prompts)                         # (B,), {name: (B,)}
    judge = rundir.judge_metrics(judge_before, run.scorer.stats())
    rewards_all = all_gather(reward.float().to(run.device), run.world)   # (world * B,)
    r = rewards_all
    if run.objective.kl_in == "reward":  # PPO-RLHF's KL penalty (docs/variants.md)
        r = all_gather(kl_penalized_rewards(reward.float().to(run.device), old, ref,
                                            run.objective), run.world)
    adv_all, zero_std_frac = group_advantages(r, run.G, std=args.adv_std,
                                              zero_flat=args.zero_flat_groups)  # docs/fidelity.md
    adv = adv_all[run.rank * run.B:(run.rank + 1) * run.B]               # (B,)
    bad = nonfinite_rewards(parts, rewards_all, adv_all, run.world, run.device)
    stop_if_nonfinite(bad, step, run.saved)
    return SimpleNamespace(images=images, parts=parts, rewards_all=rewards_all, adv=adv,
                           zero_std_frac=zero_std_frac, judge=judge)


def sequence_logprobs(run, model, batch, idx, ent_grad=False):
    """Teacher-forced log-probs (b, N) of the sampled tokens of rows idx under `model` (the policy,
    its DDP wrapper or the reference), with the entropies (b, N)."""
    mask = None if batch.cond_mask is None else batch.cond_mask[idx]
    # AR-GRPO's training pass (right padding, cond): padded caption rows do not see themselves;
    # cfg keeps the sampler's mask (rho == 1 on-policy); docs/fidelity.md
    self_attend = run.args.caption_pad == "left" or run.args.policy == "cfg"
    return policy_logprobs(model, batch.cond[idx], batch.tokens[idx], run.args.policy,
                           run.sampling, mask, pad_self_attend=self_attend, ent_grad=ent_grad)


def logprobs_before_update(run, batch):
    """3. No-grad log-probs (B, N) of the frozen reference, and pi_old's where nothing else gives
    them (pi_old_source). -> ref; old: the sampler's ("sampler"), a no-grad pass's ("pass"), or
    None ("update": the update's own first forward gives them); old_ent: pi_old's entropies where
    the pass computed them, else None."""
    B, N, device = run.B, run.N, run.device
    ref = torch.empty(B, N, device=device)
    old, old_ent = (torch.empty(B, N, device=device), torch.empty(B, N, device=device)) \
        if run.old_from == "pass" else (None, None)
    with torch.no_grad(), run.amp:
        for idx in torch.arange(B, device=device).split(run.micro):
            if run.old_from == "pass":
                old[idx], old_ent[idx] = sequence_logprobs(run, run.policy, batch, idx)
            ref[idx] = sequence_logprobs(run, run.reference, batch, idx)[0]
    if run.old_from == "sampler":
        old = batch.logp_sampler
    return ref, old, old_ent


def update(run, batch, adv, ref, old, step):
    """5. --inner-epochs passes over the batch, each in --minibatches AdamW steps, each step a
    gradient accumulation over micro-batches. old None: pi_old is the first forward itself
    (rho == 1, one update per rollout). -> the statistics of every micro-batch, the last gradient
    norm, and `first`: the first minibatch's rows with the policy's log-probs and entropies before
    any update (rows (b,), logp (b, N), ent (b, N))."""
    args, stats, first = run.args, [], []
    for epoch in range(args.inner_epochs):
        if args.minibatches == 1:
            order = torch.arange(run.B)
        else:
            g = torch.Generator().manual_seed(mix(args.seed, step, run.rank, epoch))
            order = torch.randperm(run.B, generator=g)
        for n_mb, mb in enumerate(order.to(run.device).split(run.B // args.minibatches)):
            chunks = mb.split(run.micro)
            for k, idx in enumerate(chunks):
                sync_grads = k == len(chunks) - 1  # DDP all-reduces on the last micro-batch only
                s, logp, ent = backward_micro_batch(run, batch, idx, adv, ref, old, len(mb),
                                                    sync_grads)
                stats.append(s)
                if epoch == 0 and n_mb == 0:  # scored before any optimizer step: pi_old itself
                    first.append((idx, logp, ent))
            grad_norm = optimizer_step(run, step)
    rows, logp, ent = (torch.cat(t) for t in zip(*first))
    return stats, grad_norm, SimpleNamespace(rows=rows, logp=logp, ent=ent)


def backward_micro_batch(run, batch, idx, adv, ref, old, mb_len, sync_grads):
    """The GRPO loss of rows idx, part of a minibatch of mb_len rows, and its backward.
    -> (its statistics, this forward's log-probs and entropies (b, N), detached)."""
    obj = run.objective
    no_sync = run.model.no_sync() if run.world > 1 and not sync_grads else nullcontext()
    with no_sync, run.amp:
        # (b, N) each, logp with grad; ent too with an entropy bonus
        logp, ent = sequence_logprobs(run, run.model, batch, idx, ent_grad=obj.entropy_coef > 0)
        logp_old = logp.detach() if old is None else old[idx]                # None: rho == 1
        loss, pg, kl, ratio = grpo_loss(logp, logp_old, ref[idx], adv[idx], obj, ent)
        # mean over this rank's minibatch tokens: weight each micro-batch by its share
        (loss * len(idx) / mb_len).backward()
    s = {"loss": loss.item(), "pg_loss": pg.mean().item(), "kl": kl.mean().item(),
         **diagnostics(ratio, adv[idx], logp.detach(), logp_old, obj)}
    return s, logp.detach(), ent.detach()


def optimizer_step(run, step):
    """Clip the accumulated gradient, step AdamW, zero the gradient. -> the norm before clipping."""
    grad_norm = torch.nn.utils.clip_grad_norm_(run.policy.parameters(), run.args.grad_clip).item()
    # the gradient is all-reduced, so every rank sees the same norm and stops together
    stop_if_nonfinite({} if math.isfinite(grad_norm) else {"gradient norm": grad_norm}, step,
                      run.saved)
    run.opt.step()
    run.opt.zero_grad(set_to_none=True)
    return grad_norm


def step_metrics(run, step, stats, grad_norm, batch, scores, old_ent, old, first, times):
    """6. One metrics.jsonl row: this rank's statistics averaged over the ranks (*_min / *_max:
    their extremes), the global batch's rewards, the learning rate and each phase's seconds."""
    m = {k: sum(s[k] for s in stats) / len(stats) for k in stats[0]}
    m["ratio_min"] = min(s["ratio_min"] for s in stats)
    m["ratio_max"] = max(s["ratio_max"] for s in stats)
    m.update({f"reward_{n}": v.float().mean().item() for n, v in scores.parts.items()})
    # pi_old (entropy; teacher forcing vs the sampler's log-probs): every row where a pass scored
    # it, else the rows the update scored before any optimizer step
    rows, logp_old, ent = ((slice(None), old, old_ent) if old_ent is not None
                           else (first.rows, first.logp, first.ent))
    gap = logp_old - batch.logp_sampler[rows]
    m.update(entropy=ent.mean().item(), logp_gap_sampler=gap.mean().item(),
             logp_gap_sampler_max=gap.abs().max().item(), grad_norm=grad_norm, **scores.judge)
    m = all_reduce(m, run.world, run.device)
    r, G = scores.rewards_all, run.G                                     # (world * B,)
    t0, t1, t2, t3, t4 = times
    m = {"step": step, "reward_mean": r.mean().item(), "reward_std": r.std().item(),
         "reward_group_std": r.view(-1, G).std(1).mean().item() if G > 1 else 0.0,
         **m, "zero_std_frac": scores.zero_std_frac, "lr": run.opt.param_groups[0]["lr"],
         "t_rollout": t1 - t0, "t_reward": t3 - t2, "t_logp": t2 - t1, "t_update": t4 - t3,
         "t_step": t4 - t0, "images_per_s": run.world * run.B / (t4 - t0)}
    resumes = run.args.resumes if step == run.start and run.start else None
    if resumes and resumes[-1]["step"] == run.start:
        m.update(resumed_at=run.start, **rundir.changed_metrics(resumes[-1]["changed"]))
    return m


def log_step(run, step, m, images):
    """6. Rank 0: the metrics.jsonl row (and TensorBoard's), the log line, and a grid of samples
    (a row per prompt) on the first step and every --image-every steps."""
    if run.master:
        rundir.append_metrics(run, m)
        run.log(rundir.log_line(m, step, run.args.steps))
        if run.args.image_every and (step + 1) % run.args.image_every == 0 or step == run.start:
            rundir.save_samples(run, step, images[:min(run.P, 4) * run.G], nrow=run.G)


def save_checkpoint(run, step):
    """6. ckpt.pt after this step, written atomically by rank 0: the policy and its config, AdamW,
    the step, every rank's RNG states and the flags. Non-finite weights are never saved."""
    cuda_rng = torch.cuda.get_rng_state() if run.device.type == "cuda" else None
    rngs = all_gather_objects({"cpu": torch.get_rng_state(), "cuda": cuda_rng}, run.world)
    bad = sharding.nonfinite(run.policy)
    stop_if_nonfinite({f"weight {bad[0]}": float("nan")} if bad else {}, step, run.saved)
    model, optimizer = sharding.full_state(run.policy, run.opt)  # every rank: FSDP gathers here
    if run.master:
        rundir.write_checkpoint(run, {**rundir.model_state(run.policy, run.args.image_size, model),
                                      "optimizer": optimizer, "step": step + 1,
                                      "rng": rngs, "args": vars(run.args)}, step)
    run.saved = step + 1


if __name__ == "__main__":
    run_cli(main)
