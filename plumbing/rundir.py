"""A run directory and its bookkeeping: who may write into it (a new run, --resume, --overwrite),
what a --resume may change, the files of a run (args.json, metrics.jsonl, ckpt.pt, summary.json)
and putting a checkpoint's state back. train.py's phases call these; none changes the method.

    OUT/args.json       the flags the run is using (and `resumes`: what each --resume changed)
    OUT/metrics.jsonl   one JSON object per step; on --resume, cut back to the checkpoint's step
    OUT/ckpt.pt         policy + config + AdamW + step + every rank's RNG states + flags (atomic)
    OUT/summary.json    steps and world size, written when the run ends
"""
import json
import os
import shutil
from dataclasses import asdict

import torch
import torch.distributed as dist

from plumbing.files import check_writable, remove_stale_tmp, save_atomic
from plumbing.formats import load_checkpoint
from plumbing.images import save_grid, to_uint8
from plumbing.reward_models import WEIGHT_ARGS


RUN_FILES = ["ckpt.pt", "metrics.jsonl", "summary.json", "args.json"]


# flags that may differ on --resume: run logistics (taken as given, not recorded) and
# hyper-parameters (applied from the resumed step on and recorded); any other flag given with a
# new value is refused
RESUME_FREE = {"resume", "overwrite", "out", "steps", "save_every", "image_every", "tensorboard",
               "device", "cpu_threads", "preset", "resumes", "dry_run", "compile",
               "grad_checkpoint", "old_logprobs", "cache_dir", *WEIGHT_ARGS}


RESUME_APPLIED = {"lr", "weight_decay", "adam_betas", "grad_clip", "beta", "clip_eps",
                  "clip_eps_high", "inner_epochs", "minibatches", "micro_batch", "cfg_scale",
                  "cfg_interval",
                  "temperature", "top_k", "top_p", "lr_decay_steps"}


def given(key, argv):
    """Was --key given on the command line (rather than left to its default or preset)?"""
    flag = "--" + key.replace("_", "-")
    return any(a == flag or a.startswith(flag + "=") or a == f"--no-{flag[2:]}" for a in argv)


def prepare_run(args, argv):
    """Check --out before anything loads; returns (args, the checkpoint to resume or None).
    A directory holding a run is never overwritten silently: --resume continues it, --overwrite
    starts over (removing the run's files), anything else is a one-line error. On --resume, see
    resumed_args."""
    ckpt_path = os.path.join(args.out, "ckpt.pt")
    master = int(os.environ.get("RANK", 0)) == 0
    held = [f for f in ("ckpt.pt", "metrics.jsonl") if os.path.exists(os.path.join(args.out, f))]
    if args.resume and not os.path.isfile(ckpt_path):
        raise SystemExit(f"error: --resume: {ckpt_path} does not exist, nothing to resume "
                         f"(check --out, or drop --resume to start a new run)")
    if held and not args.resume and not args.overwrite:
        raise SystemExit(f"error: {args.out} already holds a run ({', '.join(held)}): pass "
                         f"--resume to continue it or --overwrite to start it over "
                         f"(or choose another --out)")
    if master:
        # unwritable: fails here, not after the models load
        check_writable(args.out, "--out", is_dir=True)
        removed = remove_stale_tmp(ckpt_path)  # left by a run killed while saving
        if removed:
            print(f"removed {len(removed)} stale temporary checkpoint file(s): "
                  f"{', '.join(removed)}")
        if args.overwrite:
            for f in RUN_FILES:
                if os.path.exists(os.path.join(args.out, f)):
                    os.remove(os.path.join(args.out, f))
            for d in ("samples", "tb"):
                shutil.rmtree(os.path.join(args.out, d), ignore_errors=True)
    if not args.resume:
        return args, None
    ck = load_checkpoint(ckpt_path)
    return resumed_args(args, argv, ck, ckpt_path), ck


def resumed_args(args, argv, ck, ckpt_path):
    """--resume: flags not given take the checkpoint's values (so a bare --resume continues
    exactly); a given flag in RESUME_APPLIED changes the run from here on and is recorded in
    args.resumes; any other given change is refused."""
    old, new = dict(ck.get("args") or {}), vars(args)
    changed, refused = {}, []
    for k in sorted(set(old) & set(new) - RESUME_FREE):
        if old[k] == new[k]:
            continue
        if not given(k, argv):
            new[k] = old[k]                        # not asked for: the run continues as it was
        elif k in RESUME_APPLIED:
            changed[k] = [old[k], new[k]]
        else:
            refused.append(f"--{k.replace('_', '-')} ({old[k]} -> {new[k]})")
    if refused:
        raise SystemExit(f"error: --resume cannot change {', '.join(refused)}: it would be another "
                         f"experiment; start a new run (another --out, or --overwrite)")
    if ck["step"] >= args.steps:
        raise SystemExit(f"error: {ckpt_path} is at step {ck['step']}, --steps {args.steps}: "
                         f"nothing to do (raise --steps to train longer)")
    if (args.prompts_per_rank * args.group_size) % args.minibatches:
        raise SystemExit(f"error: --minibatches {args.minibatches} must divide "
                         f"--prompts-per-rank x --group-size = "
                         f"{args.prompts_per_rank * args.group_size}")
    resume = [{"step": ck["step"], "changed": changed}] if changed else []
    args.resumes = list(old.get("resumes", [])) + resume
    return args


# ----------------------------------------------------------------------------- the run's files
def write_args(args):
    """OUT/args.json: every flag's value (after the preset and any --resume)."""
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "args.json"), "w") as f:
        json.dump(vars(args), f, indent=1)


def restore(run, ck):
    """--resume: weights, optimizer, step and RNG states from the checkpoint prepare_run read."""
    args = run.args
    run.policy.load_state_dict(ck["model"])
    run.opt.load_state_dict(ck["optimizer"])
    for group in run.opt.param_groups:  # the stored values unless this command line changed them
        group.update(lr=args.lr, betas=tuple(args.adam_betas), weight_decay=args.weight_decay)
    run.start = run.saved = ck["step"]
    if len(ck["rng"]) == run.world:
        torch.set_rng_state(ck["rng"][run.rank]["cpu"])
        if run.device.type == "cuda" and ck["rng"][run.rank]["cuda"] is not None:
            torch.cuda.set_rng_state(ck["rng"][run.rank]["cuda"])
    last = args.resumes[-1] if args.resumes else None
    changes = last["changed"] if last and last["step"] == run.start else {}
    run.log(f"resumed from {run.ckpt_path} at step {run.start}"
            + "".join(f" | {k} {a} -> {b}" for k, (a, b) in changes.items()))


def start_logs(run):
    """Rank 0: metrics.jsonl keeps only the steps the checkpoint covers (none for a new run), and
    the TensorBoard writer opens (--tensorboard)."""
    if not run.master:
        return
    kept = []
    if run.start and os.path.exists(run.metrics_path):
        with open(run.metrics_path) as f:
            kept = list(f)
    with open(run.metrics_path, "w") as f:
        f.writelines(line for line in kept if json.loads(line)["step"] < run.start)
    if run.args.tensorboard:
        from torch.utils.tensorboard import SummaryWriter
        run.writer = SummaryWriter(os.path.join(run.args.out, "tb"))


def append_metrics(run, m):
    """One metrics.jsonl row (and TensorBoard's scalars)."""
    with open(run.metrics_path, "a") as f:
        f.write(json.dumps(m) + "\n")
    if run.writer:
        for k, v in m.items():
            run.writer.add_scalar(k, v, m["step"])


def log_line(m, step, steps):
    """The step's line above the progress bar."""
    return (f"step {step + 1}/{steps} | reward {m['reward_mean']:.4f} "
            f"(std {m['reward_std']:.4f}) | loss {m['loss']:+.4f} kl {m['kl']:.5f} "
            f"ent {m['entropy']:.3f} clip {m['clip_frac']:.3f} zero-std {m['zero_std_frac']:.2f} "
            f"gnorm {m['grad_norm']:.3f} | {m['t_step']:.2f}s (rollout {m['t_rollout']:.2f} "
            f"reward {m['t_reward']:.2f} logp {m['t_logp']:.2f} update {m['t_update']:.2f}) "
            f"{m['images_per_s']:.1f} img/s")


def save_samples(run, step, images, nrow):
    """OUT/samples/step_<step>.png: images (n, 3, H, W) in [0, 1], nrow to a grid row (and
    TensorBoard's image)."""
    path = os.path.join(run.args.out, "samples", f"step_{step + 1:06d}.png")
    grid = save_grid(to_uint8(images * 2 - 1), path, nrow=nrow, min_px=64)
    if run.writer:
        run.writer.add_image("samples", grid, step, dataformats="HWC")


def model_state(model, image_size=None):
    """A GPT as we save it: the weights plus the config (and the pixel size, which the config
    cannot tell when the VQ is not 16 px per token), so model.load_gpt needs no flags."""
    return {"model": model.state_dict(), "config": asdict(model.config),
            **({"image_size": image_size} if image_size else {})}


def write_checkpoint(run, state, step):
    """ckpt.pt, atomically (rank 0): a full disk is one line, the previous checkpoint intact."""
    try:
        save_atomic(state, run.ckpt_path)
    except OSError as e:  # a full disk: save_atomic left the previous checkpoint as it was
        on_disk = f"step {run.saved} is still on disk" if run.saved else "no checkpoint yet"
        raise SystemExit(f"error: cannot write {run.ckpt_path} at step {step + 1}: "
                         f"{e.strerror or e} ({on_disk})")


def changed_metrics(changed):
    """The hyper-parameters a --resume changed, as numbers for metrics.jsonl:
    changed_<flag> = new value."""
    out = {}
    for k, (_, new) in changed.items():
        if isinstance(new, (list, tuple)):
            out.update({f"changed_{k}_{i}": v for i, v in enumerate(new)})
        elif new is not None:
            out[f"changed_{k}"] = new
    return out


def judge_metrics(before, after):
    """This step's judge counters from the scorer's cumulative stats() (generate mode): the fraction
    of judged images scored 0 because no answer parsed, and answers generated per judged image."""
    d = {k: after[k] - before.get(k, 0) for k in after
         if k.endswith(("/answers", "/attempts", "/failures"))}
    n = sum(v for k, v in d.items() if k.endswith("/answers"))
    if not n:
        return {}
    return {"judge_fail_frac": sum(v for k, v in d.items() if k.endswith("/failures")) / n,
            "judge_attempts": sum(v for k, v in d.items() if k.endswith("/attempts")) / n}


def finish(run):
    """After the last step: close the logs, write summary.json, leave the process group."""
    if run.writer:
        run.writer.close()
    if run.master:
        with open(os.path.join(run.args.out, "summary.json"), "w") as f:
            json.dump({"steps": run.args.steps, "world_size": run.world}, f)
        run.log(f"done: {run.args.out}")
    if run.world > 1:
        dist.destroy_process_group()


def dry_run(args):
    """The resolved configuration, flag names as keys (what a preset means), as one JSON line."""
    print(json.dumps({k.replace("_", "-"): v for k, v in vars(args).items() if k != "dry_run"}))
