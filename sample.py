"""Sample images from a LlamaGen (or AR-GRPO-tuned) model: class ids or a prompt file -> PNG grid (+ .npz).

    tokens ~ generate(GPT, cond, CFG)  (KV cache, model.py)  ->  images = VQ.decode(tokens)  (vq.py)

Examples:
    python sample.py --preset tiny --classes 1,2,3 --out samples/tiny.png          # offline, random weights
    python sample.py --gpt-ckpt c2i_B_256 --classes 207,360,387,974 --cfg-scale 2.0  # released GPT-B
    python sample.py --gpt-ckpt t2i_XL_stage1_256 --vq-ckpt vq_ds16_t2i --prompts prompts.txt --cfg-scale 4.0
    python sample.py --gpt-ckpt c2i_L_384 --classes all --per-class 50 --npz samples/L384.npz --image-size-eval 256

The .npz holds `arr_0`, uint8 (N, H, W, 3), the layout of the ADM FID evaluation suite.
"""
import argparse
import json
import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from model import GPT, TextEncoder, generate, gpt_config, load_gpt
from vq import VQ_PRESETS, VQModel, load_vq


def read_prompts(path):
    """Prompts from a .txt (one per line), a .jsonl (a `prompt`, `caption` or `text` field per line) or a
    .json list: AR-GRPO's format (`[{"id", "conversations": [{"from": "human", "value": PROMPT}, ...]}]`,
    its COCO training captions and DrawBench), or plain strings / objects with a `prompt` field."""
    if os.path.isdir(path):
        raise SystemExit(f"error: prompt file {path} is a directory; pass a .txt, .jsonl or .json file")
    if not os.path.isfile(path):
        raise SystemExit(f"error: prompt file {path} does not exist")
    if path.endswith(".json"):
        return _read_json_prompts(path)
    prompts = []
    for n, line in enumerate(open(path, encoding="utf-8"), 1):
        line = line.strip()
        if not line:
            continue
        if path.endswith(".jsonl"):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise SystemExit(f"error: {path}:{n} is not valid JSON ({e.msg})") from None
            line = _prompt_of(row)
            if line is None:
                raise SystemExit(f"error: {path}:{n} has no string 'prompt', 'caption' or 'text' field")
        prompts.append(line)
    if not prompts:
        raise SystemExit(f"error: prompt file {path} is empty")
    return prompts


def _prompt_of(row):
    """The prompt of one record: a string, a `prompt`/`caption`/`text` field, or AR-GRPO's first human turn."""
    if isinstance(row, str):
        return row
    if not isinstance(row, dict):
        return None
    if "conversations" in row:
        turns = [t for t in row["conversations"] if isinstance(t, dict) and t.get("from") == "human"]
        value = turns[0].get("value") if turns else None
        return value if isinstance(value, str) else None
    value = next((row[k] for k in ("prompt", "caption", "text") if k in row), None)
    return value if isinstance(value, str) else None


def _read_json_prompts(path):
    try:
        rows = json.load(open(path, encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise SystemExit(f"error: {path} is not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(rows, list):
        raise SystemExit(f"error: {path} must hold a JSON list of prompts (AR-GRPO's format), got {type(rows).__name__}")
    prompts = []
    for n, row in enumerate(rows):
        prompt = _prompt_of(row)
        if prompt is None:
            raise SystemExit(f"error: {path} entry {n} has no prompt (a string, a 'prompt' field, or a "
                             f"'conversations' list with a 'from': 'human' turn)")
        if prompt.strip():
            prompts.append(prompt.strip())
    if not prompts:
        raise SystemExit(f"error: prompt file {path} is empty")
    return prompts


def to_uint8(images):  # (B, 3, H, W) in ~[-1, 1] -> (B, H, W, 3) uint8, exactly as LlamaGen/DiT's FID scripts
    return (127.5 * images.float() + 128.0).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu()


def save_grid(images_u8, path, nrow=None, min_px=0):
    """uint8 (N, H, W, 3) -> one PNG, `nrow` images per row; images smaller than min_px are upscaled
    (nearest) so tiny test images stay visible. Returns the grid (rows*H, nrow*W, 3)."""
    from PIL import Image
    s = max(1, min_px // images_u8.shape[1])
    images_u8 = images_u8.repeat_interleave(s, 1).repeat_interleave(s, 2)
    n, h, w, _ = images_u8.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    grid = np.zeros((rows * h, nrow * w, 3), np.uint8)
    for i, im in enumerate(images_u8.numpy()):
        grid[(i // nrow) * h:(i // nrow + 1) * h, (i % nrow) * w:(i % nrow + 1) * w] = im
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(grid).save(path)
    return grid


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", choices=["tiny"], help="tiny random GPT + VQ (offline, CPU); ignores checkpoints")
    p.add_argument("--gpt-ckpt", default="c2i_B_256", help="GPT checkpoint: path or release name")
    p.add_argument("--vq-ckpt", default=None, help="VQ checkpoint: path or release name (default vq_ds16_c2i / vq_ds16_t2i)")
    p.add_argument("--t5-path", default="google/flan-t5-xl", help="T5 encoder for t2i: HF name or local dir")
    p.add_argument("--image-size", type=int, default=None, help="checked against the checkpoint (256, 384, 512)")
    p.add_argument("--image-size-eval", type=int, default=None, help="resize the .npz samples to this size (bicubic)")
    p.add_argument("--classes", default=None, help="comma-separated class ids, or 'all' (default: 8 demo classes)")
    p.add_argument("--prompts", default=None, help="t2i prompt file (.txt or .jsonl)")
    p.add_argument("--per-class", type=int, default=1, help="samples per class id / prompt")
    p.add_argument("--cfg-scale", type=float, default=4.0)
    p.add_argument("--cfg-interval", type=int, default=-1, help="stop guidance after this token (-1: never)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0, help="0 = off (LlamaGen's scripts use 2000 for c2i at eval)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", choices=["fp32", "bf16"], default=None, help="GPT weights dtype (default bf16 on GPU)")
    p.add_argument("--out", default="samples/grid.png", help="PNG grid path ('' for none)")
    p.add_argument("--npz", default=None, help="also write all samples as uint8 NHWC .npz (for FID)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                   help="torch.compile the decode step (same tokens; pays off over many batches: README, 'Sampling speed')")
    args = p.parse_args(argv)
    print(vars(args))

    dev = torch.device(args.device)
    if args.preset == "tiny":
        torch.manual_seed(args.seed)
        model = GPT(gpt_config("GPT-tiny", model_type="t2i" if args.prompts else "c2i")).to(dev).eval()
        vq = VQModel(VQ_PRESETS["VQ-tiny"]).to(dev).eval()
        text = TextEncoder.tiny(model.config.caption_dim) if args.prompts else None
    else:
        try:
            model = load_gpt(args.gpt_ckpt, args.image_size, dev)
            vq = load_vq(args.vq_ckpt or ("vq_ds16_t2i" if model.config.model_type == "t2i" else "vq_ds16_c2i"), dev)
            text = TextEncoder.from_pretrained(args.t5_path, dev) if model.config.model_type == "t2i" else None
        except (FileNotFoundError, ValueError) as e:  # MissingCheckpoint / BadCheckpoint: one line
            raise SystemExit(f"error: {e}\n(offline? try: python sample.py --preset tiny)")
    if args.precision == "bf16" or (args.precision is None and dev.type == "cuda"):
        model = model.to(torch.bfloat16)
    c = model.config
    if c.model_type == "t2i":
        if not args.prompts:
            raise SystemExit("error: this is a text-to-image model: pass --prompts FILE")
        conds = read_prompts(args.prompts)
    else:
        if args.prompts:
            raise SystemExit("error: --prompts needs a t2i model; this one is class-conditional (use --classes)")
        if args.classes is None:
            ids = [207, 360, 387, 974, 88, 979, 417, 279] if c.num_classes == 1000 else list(range(min(8, c.num_classes)))
        else:
            ids = list(range(c.num_classes)) if args.classes == "all" else [int(x) for x in args.classes.split(",")]
        bad = [i for i in ids if not 0 <= i < c.num_classes]
        if bad:
            raise SystemExit(f"error: unknown class id(s) {bad}: the model has classes 0..{c.num_classes - 1}")
        conds = ids
    conds = [x for x in conds for _ in range(args.per_class)]

    g = torch.Generator(dev).manual_seed(args.seed)
    out = []
    for i in tqdm(range(0, len(conds), args.batch_size), desc="sampling"):
        chunk = conds[i:i + args.batch_size]
        mask = None
        if text is not None:
            cond, mask = text(chunk)
        else:
            cond = torch.tensor(chunk, device=dev)
        tokens = generate(model, cond, args.cfg_scale, args.temperature, args.top_k, args.top_p,
                          args.cfg_interval, cond_mask=mask, generator=g, compile=args.compile)
        images = vq.decode(tokens)
        if args.image_size_eval and args.image_size_eval != images.shape[-1]:
            images = F.interpolate(images, size=(args.image_size_eval,) * 2, mode="bicubic")
        out.append(to_uint8(images))
    out = torch.cat(out)
    if args.out:
        save_grid(out[:64], args.out)
        print(f"wrote {args.out} ({min(len(out), 64)} of {len(out)} images, {out.shape[1]}px)")
    if args.npz:
        os.makedirs(os.path.dirname(os.path.abspath(args.npz)), exist_ok=True)
        np.savez(args.npz, arr_0=out.numpy())
        print(f"wrote {args.npz}: {tuple(out.shape)} uint8")


if __name__ == "__main__":
    main()
