"""A run directory and its bookkeeping: who may write into it (one process at a time; a new run,
--resume, --overwrite), what a --resume may change, the files of a run (args.json, metrics.jsonl,
ckpt.pt, summary.json), putting a checkpoint's state back, and what an interrupted or failed run
says about the state on disk. train.py's phases call these; none changes the method.

    OUT/.lock           held (flock) by the process that owns OUT; the kernel releases it on exit
    OUT/args.json       the flags the run is using (and `resumes`: what each --resume changed)
    OUT/metrics.jsonl   one JSON object per step; on --resume, cut back to the checkpoint's step
    OUT/ckpt.pt         policy + config + AdamW + step + every rank's RNG states + flags (atomic)
    OUT/ckpt_<step>.pt  a kept copy of ckpt.pt every --keep-every steps (a hard link when it can)
    OUT/summary.json    steps and world size, written when the run ends
    OUT/samples/step_<step>.png, OUT/tb/events.out.tfevents.*   sample grids, TensorBoard
"""
import fcntl
import glob
import json
import os
import shlex
import shutil
import sys
from dataclasses import asdict

import torch
import torch.distributed as dist

from plumbing import lora, sharding, stops
from plumbing.files import (WriteFailed, check_writable, read_jsonl, remove_stale_tmp,
                            save_atomic, write_json)
from plumbing.formats import check_run_checkpoint, load_checkpoint
from plumbing.images import save_grid, to_uint8
from plumbing.reward_models import WEIGHT_ARGS


RUN_FILES = ["ckpt.pt", "metrics.jsonl", "summary.json", "args.json"]
# what else a run writes, the only files --overwrite removes besides RUN_FILES
RUN_GLOBS = ["samples/step_*.png", "tb/events.out.tfevents.*", "ckpt_[0-9]*.pt"]
LOCK = ".lock"
_OWNED = []      # the open lock file of the run directory this process owns
_ON_DISK = {}    # out, argv, saved, steps: what an interrupted or failed run says (stop_hint)


# flags that may differ on --resume: run logistics (taken as given, not recorded) and
# hyper-parameters (applied from the resumed step on and recorded); any other flag given with a
# new value is refused
RESUME_FREE = {"resume", "overwrite", "out", "steps", "save_every", "image_every", "tensorboard",
               "device", "cpu_threads", "preset", "resumes", "dry_run", "compile",
               "grad_checkpoint", "old_logprobs", "keep_every", "cache_dir", *WEIGHT_ARGS}


RESUME_APPLIED = {"lr", "weight_decay", "adam_betas", "grad_clip", "beta", "clip_eps",
                  "clip_eps_high", "dual_clip", "delta", "kl_clamp", "kl_cap", "entropy_coef",
                  "inner_epochs", "minibatches", "micro_batch", "cfg_scale",
                  "cfg_interval",
                  "temperature", "top_k", "top_p", "lr_decay_steps", "kl_clamp", "kl_cap"}


def given(key, argv):
    """Was --key given on the command line (rather than left to its default or preset)?"""
    flag = "--" + key.replace("_", "-")
    return any(a == flag or a.startswith(flag + "=") or a == f"--no-{flag[2:]}" for a in argv)


def prepare_run(args, argv):
    """Check --out before anything loads; returns (args, the checkpoint to resume or None).
    Rank 0 owns OUT (own_run_dir) before it looks at what OUT holds. A directory holding a run is
    never overwritten silently: --resume continues it, --overwrite starts over (removing only the
    run's own files), anything else is a one-line error. On --resume, see resumed_args."""
    ckpt_path = os.path.join(args.out, "ckpt.pt")
    master = int(os.environ.get("RANK", 0)) == 0
    if args.resume and not os.path.isfile(ckpt_path):
        raise SystemExit(f"error: --resume: {ckpt_path} does not exist, nothing to resume "
                         f"(check --out, or drop --resume to start a new run)")
    if master:
        # unwritable: fails here, not after the models load
        check_writable(args.out, "--out", is_dir=True)
        own_run_dir(args.out)
    held = [f for f in ("ckpt.pt", "metrics.jsonl") if os.path.exists(os.path.join(args.out, f))]
    if held and not args.resume and not args.overwrite:
        raise SystemExit(f"error: {args.out} already holds a run ({', '.join(held)}): pass "
                         f"--resume to continue it or --overwrite to start it over "
                         f"(or choose another --out)")
    ck = None
    if args.resume:
        ck = load_checkpoint(ckpt_path)
        check_run_checkpoint(ck, ckpt_path)
        args = resumed_args(args, argv, ck, ckpt_path)
    if master:
        removed = remove_stale_tmp(ckpt_path)  # left by a run killed while saving
        if removed:
            print(f"removed {len(removed)} stale temporary checkpoint file(s): "
                  f"{', '.join(removed)}")
        if args.overwrite:
            remove_run_files(args.out)
    _ON_DISK.update(out=args.out, argv=list(argv), saved=ck["step"] if ck else 0, steps=args.steps)
    stops.on_stop(stop_hint)
    return args, ck


def own_run_dir(out):
    """Make this process the owner of OUT: an exclusive flock on OUT/.lock, held until the process
    ends, however it ends (the kernel releases it, kill -9 included: a killed run never leaves it
    stuck). A second process on the same OUT stops in one line; this process's earlier lock (a
    previous run in the same process) is released first."""
    release_run_dir()
    f = open(os.path.join(out, LOCK), "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        pid = f.read().strip() or "?"
        f.close()
        raise SystemExit(f"error: {out} is in use by another process (pid {pid}, which holds "
                         f"{os.path.join(out, LOCK)}): one run directory, one run; wait for it to "
                         f"end or choose another --out") from None
    f.truncate(0)
    f.write(f"{os.getpid()}\n")
    f.flush()
    _OWNED.append(f)


def release_run_dir():
    while _OWNED:
        _OWNED.pop().close()


def remove_run_files(out):
    """--overwrite: remove what a run writes (RUN_FILES, RUN_GLOBS), nothing else; the folders
    samples/ and tb/ go only if that leaves them empty."""
    paths = [os.path.join(out, f) for f in RUN_FILES]
    paths += [p for g in RUN_GLOBS for p in glob.glob(os.path.join(glob.escape(out), g))]
    for p in paths:
        if os.path.isfile(p):
            os.remove(p)
    for d in ("samples", "tb"):
        if os.path.isdir(os.path.join(out, d)) and not os.listdir(os.path.join(out, d)):
            os.rmdir(os.path.join(out, d))


def stop_hint():
    """What an interrupted or failed run says (plumbing/stops.py): the step ckpt.pt holds and the
    command that continues the run."""
    out, argv, saved = _ON_DISK["out"], _ON_DISK["argv"], _ON_DISK["saved"]
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        again = "the same torchrun command plus"
    else:
        script = sys.argv[0] if sys.argv[0].endswith("train.py") else "train.py"
        again = f"python {script} " + shlex.join(a for a in argv if a not in ("--resume",
                                                                                "--overwrite"))
    if not saved:
        return f"no checkpoint was written: start over with {again.strip()} --overwrite"
    ckpt = os.path.join(out, "ckpt.pt")
    return (f"{ckpt} holds step {saved} of {_ON_DISK['steps']}: continue with "
            f"{again.strip()} --resume")


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
    world, was = int(os.environ.get("WORLD_SIZE", 1)), len(ck["rng"])  # one RNG state per rank
    if world != was:  # the global batch = ranks x prompts per rank x group size
        P, G = args.prompts_per_rank, args.group_size
        refused.append(f"the number of ranks ({was} -> {world}: a global batch of {was} x {P} x "
                       f"{G} = {was * P * G} -> {world * P * G} images)")
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
    write_json(os.path.join(args.out, "args.json"), vars(args))


def restore(run, ck):
    """--resume: weights, optimizer, step and RNG states from the checkpoint prepare_run read."""
    args = run.args
    if sharding.sharded(run.policy):  # --fsdp: the full state dicts split over the ranks
        sharding.load_state(run.policy, run.opt, ck["model"], ck["optimizer"])
    else:
        if "lora" in ck:  # the adapters only (the base was rebuilt from the run's flags)
            lora.load_adapter_state(run.policy, ck["model"], run.ckpt_path)
        else:
            run.policy.load_state_dict(ck["model"])
        run.opt.load_state_dict(ck["optimizer"])
    for group in run.opt.param_groups:  # the stored values unless this command line changed them
        group.update(lr=args.lr, betas=tuple(args.adam_betas), weight_decay=args.weight_decay)
    run.start = run.saved = ck["step"]
    torch.set_rng_state(ck["rng"][run.rank]["cpu"])  # as many states as ranks: resumed_args
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
    if run.start and os.path.exists(run.metrics_path):  # a torn last line (killed) is dropped
        kept = read_jsonl(run.metrics_path, "metrics file", key="step")
    try:
        with open(run.metrics_path, "w") as f:
            f.writelines(json.dumps(m) + "\n" for m in kept if m["step"] < run.start)
    except OSError as e:
        raise WriteFailed(run.metrics_path, e) from None
    if run.args.tensorboard:
        from torch.utils.tensorboard import SummaryWriter
        run.writer = SummaryWriter(os.path.join(run.args.out, "tb"))


def append_metrics(run, m):
    """One metrics.jsonl row (and TensorBoard's scalars). A row cut by a kill or a full disk is
    dropped by the next --resume (read_jsonl)."""
    try:
        with open(run.metrics_path, "a") as f:
            f.write(json.dumps(m) + "\n")
    except OSError as e:
        raise WriteFailed(run.metrics_path, e) from None
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


def model_state(model, image_size=None, sd=None):
    """A GPT as we save it: the weights plus the config (and the pixel size, which the config
    cannot tell when the VQ is not 16 px per token), so model.load_gpt needs no flags."""
    size = {"image_size": image_size} if image_size else {}
    if lora.adapters(model):  # a LoRA run: the adapters; the base is the run's --gpt-ckpt / seed
        return {"model": lora.adapter_state(model), "config": asdict(model.config),
                "lora": lora.settings(model), **size}
    return {"model": model.state_dict() if sd is None else sd, "config": asdict(model.config), **size}


def save_due(args, step):
    """Is ckpt.pt written after this step: every --save-every steps, every --keep-every steps (for
    its kept copy), and after the last step."""
    done = step + 1
    keep = args.keep_every and done % args.keep_every == 0
    return done % args.save_every == 0 or keep or done == args.steps


def kept_checkpoints(out):
    """The step-numbered copies --keep-every left in OUT, oldest first."""
    return sorted(glob.glob(os.path.join(out, "ckpt_[0-9]*.pt")))


def write_checkpoint(run, state, step):
    """ckpt.pt, atomically (rank 0): a full disk is one line (WriteFailed, and plumbing/stops.py
    adds which step is still on disk), the previous checkpoint intact; every --keep-every steps
    also OUT/ckpt_<step>.pt, the same file (AR-GRPO keeps its checkpoint-100, -200, ...: an
    intermediate step can be evaluated afterwards)."""
    save_atomic(state, run.ckpt_path)
    _ON_DISK["saved"] = step + 1
    keep = getattr(run.args, "keep_every", 0)
    if keep and (step + 1) % keep == 0:
        dst = os.path.join(run.args.out, f"ckpt_{step + 1:06d}.pt")
        try:
            keep_copy(run.ckpt_path, dst)
        except OSError as e:
            raise WriteFailed(dst, e) from None


def keep_copy(src, dst):
    """dst becomes a copy of src, atomically: a hard link (no disk space: ckpt.pt is later replaced
    by a rename, never rewritten in place, so the link keeps this step's bytes), else a copy."""
    tmp = f"{dst}.tmp.{os.getpid()}"
    try:
        os.link(src, tmp)
    except OSError:   # a file system without hard links
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


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
        write_json(os.path.join(run.args.out, "summary.json"),
                   {"steps": run.args.steps, "world_size": run.world}, indent=None)
        run.log(f"done: {run.args.out}")
    release_run_dir()
    if run.world > 1:
        dist.destroy_process_group()


def dry_run(args):
    """The resolved configuration, flag names as keys (what a preset means), as one JSON line."""
    print(json.dumps({k.replace("_", "-"): v for k, v in vars(args).items() if k != "dry_run"}))
