"""pretrain.py: pretrain the mnist preset's world on its own (train.py --preset mnist and
sample.py --preset mnist do it when it is not cached): the tokenizer, the base GPT, the reward
networks and the judge (plumbing/pretrain.py), once per machine, into the cache.

  python tools/pretrain.py                       # the mnist recipe (minutes on a CPU)
  python tools/pretrain.py --recipe mnist-tiny   # the tests' recipe (seconds)
  python tools/pretrain.py --force               # make the files again
  python tools/pretrain.py --show                # where the files are, what the recipe is
"""
import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import asdict

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository

from model import GPT, gpt_config  # noqa: E402  (the repository on the path first)
from plumbing.pretrain import RECIPES, folder, paths, pretrained  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--recipe", choices=list(RECIPES), default="mnist")
    p.add_argument("--cache-dir", default="",
                   help="'' = $ARGRPO_CACHE, else ~/.cache/argrpo")
    p.add_argument("--force", action="store_true", help="remove the recipe's files, then make them")
    p.add_argument("--show", action="store_true",
                   help="print the recipe and its files; make nothing")
    p.add_argument("--cpu-threads", type=int, default=0, help="torch CPU threads (0 = default)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.cpu_threads:
        torch.set_num_threads(args.cpu_threads)
    files = paths(args.recipe, args.cache_dir)
    if args.show:
        print(json.dumps({"recipe": asdict(RECIPES[args.recipe]),
                          "files": {k: [v, os.path.isfile(v)] for k, v in files.items()}},
                         indent=1))
        return files
    if args.force:
        shutil.rmtree(folder(args.recipe, args.cache_dir), ignore_errors=True)
    t0 = time.time()
    files = pretrained(args.recipe, GPT, gpt_config, args.cache_dir)
    print(f"{args.recipe}: ready in {folder(args.recipe, args.cache_dir)} "
          f"({time.time() - t0:.1f} s)")
    return files


if __name__ == "__main__":
    main()
