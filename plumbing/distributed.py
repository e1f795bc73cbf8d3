"""torchrun's processes: the process group, and the collectives train.py's bookkeeping needs.
`setup_distributed` notes that a group was started: plumbing/stops.run_cli then leaves such a
process through os._exit (see there why)."""
import os
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

STARTED = False   # a process group was started in this process


def setup_distributed(device):
    """torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; without them this is a single process.
    -> (rank, world size, device)."""
    if "RANK" not in os.environ:
        return 0, 1, torch.device(device)
    global STARTED
    STARTED = True  # from here on, leave through run_cli's os._exit
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    local = int(os.environ["LOCAL_RANK"])
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
    for key, op in (("_min", dist.ReduceOp.MIN), ("_max", dist.ReduceOp.MAX),
                    ("", dist.ReduceOp.SUM)):
        keys = [k for k in metrics
                if (k.endswith(key) if key else not k.endswith(("_min", "_max")))]
        t = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64,
                         device=device)  # nccl: on GPU
        dist.all_reduce(t, op=op)
        divisor = world if op == dist.ReduceOp.SUM else 1
        metrics.update({k: v / divisor for k, v in zip(keys, t.tolist())})
    return metrics


def all_gather_objects(obj, world):
    """[obj of rank 0, ..., obj of rank world - 1] (picklable objects, e.g. RNG states)."""
    objs = [obj] * world
    if world > 1:
        dist.all_gather_object(objs, obj)
    return objs


def ddp(module, world, device):
    """`module` in DDP for several ranks (DDP syncs what it wraps: train.py wraps the policy only,
    the frozen reference stays outside); the module itself for one."""
    if world == 1:
        return module
    device_ids = [device.index] if device.type == "cuda" else None
    return DDP(module, device_ids=device_ids, broadcast_buffers=False)


def sync(device):
    """The time, once the GPU has finished the work queued so far (phase timings)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.time()
