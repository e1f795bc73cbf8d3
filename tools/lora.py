"""lora.py: export a LoRA run's checkpoint (train.py --lora-rank R; adapters only) as a plain GPT
checkpoint: the base the run started from, rebuilt from its flags (--gpt-ckpt, or the seed of a
random base), plus (alpha / r) B A folded into every adapted weight (plumbing/lora.py). The file has
LlamaGen's key names and our config, so sample.py --gpt-ckpt, tools/eval.py and train.py read it.

  python tools/lora.py merge RUN/ckpt.pt --out RUN/merged.pt
  python tools/lora.py info RUN/ckpt.pt          # rank, alpha, targets, base, step
"""
import argparse
import os
import sys
from types import SimpleNamespace

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository

from model import GPT, GPTConfig, load_gpt  # noqa: E402  (the repository on the path first)
from plumbing import lora  # noqa: E402
from plumbing.files import WriteFailed, save_atomic  # noqa: E402
from plumbing.formats import load_checkpoint  # noqa: E402
from plumbing.rundir import model_state  # noqa: E402
from plumbing.weights import BadCheckpoint  # noqa: E402


def read_lora(path):
    """(checkpoint, its run's flags) of a LoRA run's ckpt.pt, else one line saying what it is."""
    if not os.path.isfile(path):
        raise SystemExit(f"error: {path}: no such file")
    try:
        ck = load_checkpoint(path)
    except BadCheckpoint as e:
        raise SystemExit(f"error: {e}") from None
    if not isinstance(ck, dict) or "lora" not in ck or not isinstance(ck.get("args"), dict):
        raise SystemExit(f"error: {path} is not a LoRA run's checkpoint (train.py --lora-rank R "
                         f"writes one); a plain GPT needs no merge")
    return ck, SimpleNamespace(**ck["args"])


def base_of(ck, args):
    """The run's base policy, as train.py built it: its --gpt-ckpt, or the seed's random init."""
    if args.gpt_ckpt:
        return load_gpt(args.gpt_ckpt, image_size=args.image_size, flag="the run's --gpt-ckpt")
    torch.manual_seed(args.seed)
    return GPT(GPTConfig(**ck["config"])).eval()


def merged(path):
    """The merged GPT of a LoRA run's checkpoint (its adapters put back, then folded in)."""
    ck, args = read_lora(path)
    model = base_of(ck, args)
    if args.pure_bf16:  # the run trained in bf16: its adapters are bf16 too
        model.to(torch.bfloat16)
    return lora.fold(model, ck["lora"], ck["model"], path), ck, args


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("merge", help="write a plain GPT checkpoint with the adapters folded in")
    m.add_argument("ckpt", help="a LoRA run's ckpt.pt (or a kept ckpt_<step>.pt)")
    m.add_argument("--out", required=True, help="the merged checkpoint to write (atomically)")
    i = sub.add_parser("info", help="what a LoRA checkpoint holds")
    i.add_argument("ckpt")
    args = p.parse_args(argv)
    if args.cmd == "info":
        ck, run = read_lora(args.ckpt)
        base = run.gpt_ckpt or f"a random {run.gpt_model} (seed {run.seed})"
        print(f"{lora.describe(ck['lora'])} | base {base} | step {ck['step']}")
        return
    if os.path.abspath(args.out) == os.path.abspath(args.ckpt):
        raise SystemExit("error: --out is the checkpoint itself: pick another file")
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.access(out_dir, os.W_OK):
        raise SystemExit(f"error: cannot write into {out_dir}")
    model, ck, run = merged(args.ckpt)
    try:
        save_atomic(model_state(model, run.image_size), args.out)
    except WriteFailed as e:
        raise SystemExit(f"error: {e}") from None
    n = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"wrote {args.out}: {n:.2f}M params, {lora.describe(ck['lora'])}, step {ck['step']}")


if __name__ == "__main__":
    main()
