"""How a command stops: a non-finite value stops a run in one line before it reaches the optimizer
or the disk (`NonFinite`), and `run_cli`, the exit of every command (train.py, sample.py,
tools/eval.py, tools/bench.py), turns every expected failure and Ctrl-C into one line and an exit
code, with an exit that cannot abort a torchrun rank. `on_stop` registers what to say then about
the state on disk (train.py: which step ckpt.pt holds and the command that continues)."""
import os
import sys
import traceback

import torch
import torch.distributed as dist

from plumbing import distributed
from plumbing.files import WriteFailed
from plumbing.reward_models import RewardWeightsMissing
from plumbing.weights import BadCheckpoint, MissingCheckpoint

_ON_STOP = []   # at most one function: () -> a phrase on the state on disk, or None


def on_stop(fn):
    """Register fn() -> a phrase saying what is on disk and how to continue, appended to the line
    of an interrupt or a failed write (one per process: the latest wins)."""
    _ON_STOP[:] = [fn]


def stop_line(head):
    """head + '; ' + the registered phrase (if any)."""
    tail = _ON_STOP[0]() if _ON_STOP else None
    return f"{head}; {tail}" if tail else head


def close_bars():
    """Close the open progress bars, so that the last line is the message, on its own line (an
    open tqdm bar would end with the message on its line, and redraw itself at exit)."""
    from tqdm import tqdm
    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


class NonFinite(RuntimeError):
    """A NaN / inf reward, advantage, loss, gradient or weight. The run stops (one line) before it
    reaches the optimizer or the disk: the last checkpoint stays as it was."""


def nonfinite_rewards(parts, rewards_all, adv_all, world, device):
    """{what: count} of the non-finite values of this step, the same on every rank (all-reduced)."""
    counts = torch.tensor([(~torch.isfinite(v.float())).sum().item() for v in parts.values()],
                          dtype=torch.float64, device=device)      # one count per reward component
    if world > 1:
        dist.all_reduce(counts)
    bad = {f"reward {n!r}": int(c) for n, c in zip(parts, counts.tolist()) if c}
    # the total and the advantages are of the global batch: the same on every rank
    for what, x in (("weighted reward total", rewards_all), ("advantage", adv_all)):
        if not bad and not torch.isfinite(x).all():
            bad[what] = int((~torch.isfinite(x)).sum())
    return bad


def stop_if_nonfinite(bad, step, saved):
    """Raise NonFinite for bad = {what: count of non-finite values, or the value itself}, if any;
    saved is the step of the checkpoint on disk (0: none)."""
    if not bad:
        return
    what = ", ".join(f"{k} ({v} non-finite value{'s' if v != 1 else ''})" if isinstance(v, int)
                     else f"{k} ({v})" for k, v in bad.items())
    intact = f"the checkpoint of step {saved} is intact" if saved else "no checkpoint was written"
    raise NonFinite(f"step {step + 1}: {what}: stopped before the update; " + intact)


def run_cli(main, argv=None):
    """main(argv) with one-line errors, and an exit that cannot abort in a distributed run.

    Why torchrun ranks used to die with SIGABRT ("terminate called without an active exception")
    after 'done': DDP's constructor (its parameter-shape check) keeps references to the process
    group that destroy_process_group() cannot drop (torch 2.x), so gloo's two worker threads
    outlive main(). A worker drops its reference to a finished collective a moment after the
    caller's wait() returns; when that is the last reference to a tensor created in Python, the
    drop takes the GIL. If the interpreter is already finalizing (rank 1 exits right after its
    last collective), taking the GIL ends the thread (pthread_exit) inside a noexcept destructor,
    and C++ calls std::terminate. (pytorch/pytorch#179291 describes the same race.) A barrier
    only narrows the window. So a distributed rank, once main() has returned and the process group
    is destroyed, leaves with os._exit after flushing its output: the interpreter is never torn
    down under live gloo threads.
    Every file train.py writes is closed by then (`with` blocks, the TensorBoard writer)."""
    _ON_STOP.clear()  # a phrase is about this command's state on disk
    try:
        main(argv)
        code = 0
    except (MissingCheckpoint, BadCheckpoint, RewardWeightsMissing, NonFinite) as e:
        # one line, no traceback
        code = f"error: {e}"
    except SystemExit as e:
        code = e.code
    except KeyboardInterrupt:  # Ctrl-C: one line (rank 0) on what is on disk, exit 130 (shells')
        close_bars()
        if int(os.environ.get("RANK", 0)) == 0:
            print(stop_line("interrupted"), file=sys.stderr)
        code = 130
    except WriteFailed as e:  # a full disk: the output is the old file or none, never a torn one
        code = stop_line(f"error: {e}")
    except OSError as e:
        # e.g. a full disk while writing metrics: ckpt.pt is the last complete one
        code = stop_line(f"error: {e.strerror or e}" + (f": {e.filename}" if e.filename else ""))
    except BaseException:
        if not distributed.STARTED:
            raise
        traceback.print_exc()
        code = 1
    if isinstance(code, str):
        close_bars()
    if distributed.STARTED:
        if isinstance(code, str):
            print(code, file=sys.stderr)
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code or 0)
    sys.exit(code)
