"""Sampling benchmark: our KV-cache sampler against the floor of its own weight matmuls.

The floor is what no implementation of the same model can beat on this machine: the bare matmuls of
one decode step (every Linear of every layer plus the output head) at the decode batch size
(2 x images with CFG), times the number of tokens, measured in the same run. The ratio sampler/floor
shows what attention, RoPE, sampling and Python overhead cost on top.

    python bench.py                                  # GPT-B, random weights, fp32, 4 and 16 images, CFG 2.0
    python bench.py --model GPT-L --images 8 --device cuda --dtype bf16
    python bench.py --official ~/LlamaGen      # also time the official generate() (a LlamaGen checkout)
"""
import argparse
import math
import time

import torch
import torch.nn.functional as F
from tqdm import tqdm

from model import GPT, generate, gpt_config
from sample import range_errors


def timed(fns, device, repeat, bar=None):
    """Best-of-`repeat` seconds for each function, run interleaved so machine noise hits all alike."""
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        if bar is not None:
            bar.update(1)
        for i, fn in enumerate(fns):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            best[i] = min(best[i], time.perf_counter() - t)
    return best


def floor_step(model, batch):
    """The weight matmuls of one decode step: x (batch, dim) through every Linear, in order."""
    weights = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear) and m.weight.shape[1] == model.config.dim]
    hidden = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear) and m.weight.shape[1] != model.config.dim]
    x = torch.randn(batch, model.config.dim, device=model.output.weight.device, dtype=model.output.weight.dtype)
    xh = torch.randn(batch, hidden[0].shape[1], device=x.device, dtype=x.dtype)

    def step():
        for w in weights:
            F.linear(x, w)
        for w in hidden:  # w2 takes the FFN hidden state
            F.linear(xh, w)
    return step


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="GPT-B", help="GPT preset (random weights)")
    p.add_argument("--images", default="4,16", help="comma-separated numbers of images per batch")
    p.add_argument("--cfg-scale", type=float, default=2.0)
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--repeat", type=int, default=3, help="best of N runs")
    p.add_argument("--official", default="", help="path to a FoundationVision/LlamaGen checkout: time its generate() too, same weights")
    args = p.parse_args(argv)
    try:
        sizes = [int(x) for x in args.images.split(",")]
    except ValueError:
        p.error(f"--images must be comma-separated integers, got {args.images!r}")
    error = range_errors(args, [("--cfg-scale", lambda v: 0 <= v < math.inf, "a finite number >= 0"),
                                ("--image-size", lambda v: v > 0 and v % 16 == 0, "a positive multiple of 16"),
                                ("--repeat", lambda v: v >= 1, ">= 1")])
    if error or min(sizes) < 1:
        p.error(error or f"--images must all be >= 1, got {args.images}")
    dev = torch.device(args.device)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    torch.manual_seed(0)
    model = GPT(gpt_config(args.model, block_size=(args.image_size // 16) ** 2)).to(dev, dtype).eval()
    N = model.config.block_size
    official = None
    if args.official:  # the reference implementation, same weights (it is not part of this project)
        import sys
        sys.path.insert(0, args.official)
        from autoregressive.models.generate import generate as official_generate
        from autoregressive.models.gpt import GPT_models
        ref = GPT_models[args.model](vocab_size=16384, block_size=N, num_classes=1000, cls_token_num=1,
                                     model_type="c2i", resid_dropout_p=0.0, ffn_dropout_p=0.0, token_dropout_p=0.0)
        ref.load_state_dict(model.state_dict(), strict=False)  # theirs also holds freqs_cis / caches
        official = (ref.to(dev, dtype).eval(), official_generate)
    print(f"{args.model} {args.dtype} on {dev} ({torch.get_num_threads()} threads), {N} tokens/image, "
          f"cfg {args.cfg_scale}")
    bar = tqdm(total=len(sizes) * args.repeat, desc="bench", unit="run")
    for n in sizes:
        cond = torch.randint(0, model.config.num_classes, (n,), device=dev)
        batch = 2 * n if args.cfg_scale != 1.0 else n
        g = torch.Generator(dev).manual_seed(0)
        generate(model, cond[:1], args.cfg_scale, generator=g)  # warm-up
        step = floor_step(model, batch)
        fns = [lambda: generate(model, cond, args.cfg_scale, generator=g), lambda: [step() for _ in range(N)]]
        if official:
            fns.append(lambda: official[1](official[0], cond, N, cfg_scale=args.cfg_scale))
        with torch.no_grad():
            t_gen, t_floor, *t_off = timed(fns, dev, args.repeat, bar)
        tqdm.write(f"images {n:3d} (decode batch {batch:3d}): sampler {t_gen:7.2f} s = {1e3 * t_gen / N:7.2f} ms/step, "
              f"{n * N / t_gen:8.1f} tokens/s | floor {1e3 * t_floor / N:7.2f} ms/step | ratio {t_gen / t_floor:.2f}x"
              + (f" | official {1e3 * t_off[0] / N:7.2f} ms/step = {t_off[0] / t_floor:.2f}x floor" if t_off else ""))
    bar.close()


if __name__ == "__main__":
    main()
