"""memory.py: what one GRPO rank needs, and which flags fit a 24, 40, 80 or 141 GB GPU
(docs/memory.md). Computed, not measured: every model is built on the meta device, so its parameter
count is exact (the GPT and its LoRA adapters, VQ-16, FLAN-T5-XL's encoder, CLIP ViT-B/32, HPSv2.1's
ViT-H-14, MANIQA, the Qwen2.5-VL-3B judge: tools/bench_paper.py's real architectures), and the
activations use the estimate train.py refuses runs with (plumbing/flags.py: forward_bytes,
kv_cache_bytes). Per rank (DDP replicates everything on each GPU):

  policy weights            P x 4 bytes (2 with --pure-bf16); / N with --fsdp on N GPUs
  gradient + AdamW moments  3 x trained x 4 (2 with --pure-bf16), / N with --fsdp: trained = P, or
                            the adapters (LoRA)
  reference                 P x 2 (--ref-dtype bf16) or 4 (fp32); 0 with LoRA (the base, adapters off)
  VQ-16, text encoder       fp32 VQ; FLAN-T5-XL's encoder in bf16 (t2i)
  reward models             bf16 (--reward-dtype auto), or the paper's dtypes (paper: CLIP, HPS and
                            MANIQA fp32, the judge bf16)
  + the larger of the rollout (KV caches of G x 2 rows, fp32) and the update's activations (a
    micro-batch; --grad-checkpoint keeps one layer's full activations and each layer's input;
    --fsdp adds the policy gathered whole in bf16 to the rollout, and two blocks to the update).

  python tools/memory.py                                   # the table: models x flags x GPUs
  python tools/memory.py one --model GPT-XL --image-size 384 --lora-rank 16   # by part
  python tools/memory.py measure                           # this CPU: peak RSS vs the estimate
"""
import argparse
import os
import subprocess
import sys
from types import SimpleNamespace

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository

from model import GPT, gpt_config  # noqa: E402  (the repository on the path first)
from plumbing import lora  # noqa: E402
from plumbing.flags import forward_bytes, kv_cache_bytes  # noqa: E402
from vq import VQ_PRESETS, VQModel  # noqa: E402

GB = 1e9
GPUS = (24, 40, 80, 141)
# LlamaGen's released GPTs at their released resolution (C2I), and the T2I XL
MODELS = [("GPT-B", "c2i", 256), ("GPT-L", "c2i", 384), ("GPT-XL", "c2i", 384),
          ("GPT-XXL", "c2i", 384), ("GPT-3B", "c2i", 384), ("GPT-XL", "t2i", 256)]
# flag sets a user chooses between, by their train.py flags (the FSDP sets named for the table),
# with estimate()'s keywords; every one on the paper's batch per rank
FLAG_SETS = {"full": {}, "--grad-checkpoint": {"grad_checkpoint": True},
             "--lora-rank 16": {"lora_rank": 16},
             "--lora-rank 16 --grad-checkpoint": {"lora_rank": 16, "grad_checkpoint": True},
             "--fsdp, 8 GPUs": {"fsdp": 8},
             "--fsdp, 8 GPUs, --grad-checkpoint": {"fsdp": 8, "grad_checkpoint": True}}


def count(model):
    return sum(p.numel() for p in model.parameters())


def reward_params():
    """Parameters of each paper reward model at real size (bench_paper's builders, meta device;
    MANIQA on the CPU, as there) and of FLAN-T5-XL's encoder."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_paper import real_maniqa, real_reward_models
    with torch.device("meta"):
        n = {k: count(b()) for k, b in real_reward_models().items() if not k.startswith("MANIQA")}
    return n | {"MANIQA": count(real_maniqa())}


def estimate(model="GPT-XL", task="c2i", image_size=384, images=8, micro=8, policy="cond",
             cfg=True, lora_rank=0, grad_checkpoint=False, pure_bf16=False, ref_dtype="bf16",
             reward_dtype="auto", rewards=None, fsdp=0):
    """Bytes per rank by part: {part: bytes}. `rewards`: {name: params} (reward_params()).
    fsdp=N: the policy's weights, gradient and moments split N ways; the whole policy gathered in
    bf16 for the rollout (plumbing/sharding.py: Gathered), one block at a time in the update."""
    c = gpt_config(model, model_type=task, block_size=(image_size // 16) ** 2)
    with torch.device("meta"):
        gpt = GPT(c)
        total = count(gpt)
        trained = count(lora.add_adapters(gpt, lora_rank, lora_rank)) - total if lora_rank else total
        vq = count(VQModel(VQ_PRESETS["VQ-16"]))
    w = 2 if pure_bf16 else 4
    n = fsdp or 1
    parts = {"policy weights": total * w // n, "gradient + AdamW": 3 * trained * w // n,
             "reference": 0 if lora_rank else total * (2 if ref_dtype == "bf16" else 4),
             "VQ-16": vq * 4}
    for name, n in (rewards or {}).items():
        if name.startswith("FLAN") and task != "t2i":
            continue
        fp32 = reward_dtype == "paper" and not name.startswith(("Qwen", "FLAN"))
        parts[name] = n * (4 if fp32 else 2)
    rows = micro * (2 if policy == "cfg" else 1)
    if grad_checkpoint:   # each layer's input kept, one layer's activations alive at a time
        one = replace_layers(c, 1)
        update = forward_bytes(one, rows, True) + 4 * rows * (c.cls_token_num + c.block_size) * \
            c.n_layer * c.dim
    else:
        update = forward_bytes(c, rows, True)
    rollout = kv_cache_bytes(c, images * (1 + cfg)) + 32 * images * (1 + cfg) * c.vocab_size
    if fsdp:
        rollout += total * 2                          # gathered whole (bf16) while it samples
        update += 2 * total * 2 // c.n_layer          # a block gathered (and the next prefetched)
    parts["activations (max of rollout, update)"] = max(rollout, update)
    return parts


def replace_layers(c, n):
    return SimpleNamespace(**{**vars(c), "n_layer": n})


def table(rewards):
    """Markdown: per model and flag set, GB per rank and the GPUs it fits (paper batch per rank,
    the paper's reward set in bf16, reference in bf16)."""
    lines = ["| model | flags | GB per rank | " + " | ".join(f"{g} GB" for g in GPUS) + " |",
             "|---|---|---|" + "---|" * len(GPUS)]
    for model, task, size in MODELS:
        n = 16 if task == "t2i" else 8   # the paper's images per rank (paper-t2i-xl: 2 x 8)
        for name, flags in FLAG_SETS.items():
            gb = sum(estimate(model, task, size, n, n, rewards=rewards, **flags).values()) / GB
            fits = " | ".join("fits" if gb < 0.9 * g else "-" for g in GPUS)  # 10% for the allocator
            lines.append(f"| {model} {task} {size} px | {name} | {gb:.1f} | {fits} |")
    return "\n".join(lines)


MEASURE_FLAGS = ["--task", "c2i", "--preset", "tiny", "--gpt-model", "GPT-B", "--vq-model", "VQ-16",
                 "--image-size", "256", "--rewards", "color:1", "--prompts-per-rank", "1",
                 "--group-size", "8", "--policy", "cond", "--steps", "1", "--image-every", "0",
                 "--cpu-threads", "2"]   # tools/bench.py --step's run: GPT-B, random weights
PEAK = ("import resource, runpy, sys; sys.argv = sys.argv[1:]\n"
        "try:\n    runpy.run_path(sys.argv[0], run_name='__main__') if sys.argv else None\n"
        "finally:\n    print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")


def peak_rss(args):
    """The peak resident set (bytes) of a child that runs `args` (a script and its flags; none:
    only Python, torch and the repository's imports)."""
    code = PEAK if args else "import train\n" + PEAK
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if r.returncode:
        raise SystemExit(f"error: {' '.join(args)} failed: " + r.stderr.strip()[-500:])
    return int(r.stdout.split("PEAK")[-1]) * 1024


def measure(out="/tmp/memory_measure"):
    """GPT-B at 256 px with random weights, one GRPO step on this CPU (fp32: no autocast off a
    GPU), per flag set: the peak RSS above the imports' own, beside this tool's estimate of the
    same run (fp32 reference, no reward model)."""
    base = peak_rss([])
    rows = []
    for name, flags in FLAG_SETS.items():
        if "fsdp" in flags:   # needs torchrun and one GPU per rank to mean anything
            continue
        extra = [] if name == "full" else name.split()   # the set's name is its flags
        peak = peak_rss(["train.py", *MEASURE_FLAGS, "--out", out, "--overwrite", *extra])
        est = sum(estimate("GPT-B", "c2i", 256, 8, 8, ref_dtype="fp32", **flags).values())
        rows.append((name, (peak - base) / GB, est / GB))
    return base / GB, rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd")
    one = sub.add_parser("one", help="one configuration, part by part")
    one.add_argument("--model", default="GPT-XL", choices=sorted({m for m, _, _ in MODELS}))
    one.add_argument("--task", default="c2i", choices=["c2i", "t2i"])
    one.add_argument("--image-size", type=int, default=384, choices=[256, 384, 512])
    one.add_argument("--images", type=int, default=8, help="images per rank per step (P x G)")
    one.add_argument("--micro-batch", type=int, default=0, help="0 = all the images")
    one.add_argument("--policy", default="cond", choices=["cond", "cfg"])
    one.add_argument("--lora-rank", type=int, default=0)
    one.add_argument("--fsdp", type=int, default=0, help="shard over this many GPUs (0 = DDP)")
    one.add_argument("--grad-checkpoint", action="store_true")
    one.add_argument("--pure-bf16", action="store_true")
    one.add_argument("--ref-dtype", default="bf16", choices=["bf16", "fp32"])
    one.add_argument("--reward-dtype", default="auto", choices=["auto", "paper"])
    sub.add_parser("table", help="the table of docs/memory.md (the default)")
    sub.add_parser("measure", help="peak RSS of small real runs on this CPU")
    a = p.parse_args(argv)
    if a.cmd == "one":
        if a.images < 1 or a.micro_batch < 0 or a.lora_rank < 0 or a.fsdp < 0:
            p.error("--images >= 1, --micro-batch >= 0, --lora-rank >= 0 and --fsdp >= 0")
        parts = estimate(a.model, a.task, a.image_size, a.images, a.micro_batch or a.images,
                         a.policy, True, a.lora_rank, a.grad_checkpoint, a.pure_bf16, a.ref_dtype,
                         a.reward_dtype, reward_params(), a.fsdp)
        for k, v in parts.items():
            print(f"{k:40s} {v / GB:8.2f} GB")
        print(f"{'total per rank':40s} {sum(parts.values()) / GB:8.2f} GB")
    elif a.cmd == "measure":
        base, rows = measure()
        print(f"imports alone: {base:.2f} GB peak RSS")
        print("| GPT-B c2i 256 px, 8 images, one step | measured (peak RSS - imports) | estimate |")
        print("|---|---|---|")
        for name, got, est in rows:
            print(f"| {name} | {got:.2f} GB | {est:.2f} GB |")
    else:
        print(table(reward_params()))


if __name__ == "__main__":
    main()
