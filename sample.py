"""Sample images from a LlamaGen (or AR-GRPO-tuned) model: class ids or a prompt file ->
PNG grid (+ .npz).

    tokens ~ generate(GPT, cond, CFG)  (KV cache, model.py)  ->  images = VQ.decode(tokens)  (vq.py)

Examples:
    # offline, random weights
    python sample.py --preset tiny --classes 1,2,3 --out samples/tiny.png
    # released GPT-B
    python sample.py --gpt-ckpt c2i_B_256 --classes 207,360,387,974 --cfg-scale 2.0
    python sample.py --gpt-ckpt t2i_XL_stage1_256 --vq-ckpt vq_ds16_t2i --prompts prompts.txt \
        --cfg-scale 4.0
    python sample.py --gpt-ckpt c2i_L_384 --classes all --per-class 50 --npz samples/L384.npz \
        --image-size-eval 256

The .npz holds `arr_0`, uint8 (N, H, W, 3), the layout of the ADM FID evaluation suite.
"""
import argparse
import copy
import hashlib
import json
import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from checkpoint import BadCheckpoint, run_args
from model import GPT, generate, gpt_config, load_gpt
from text import TextEncoder
from tiny import PaletteVQ
from vq import VQ_PRESETS, VQModel, load_vq

HERE = os.path.dirname(os.path.abspath(__file__))


def read_prompts(path):
    """Prompts from a .txt (one per line), a .jsonl (a `prompt`, `caption` or `text` field per
    line) or a .json list: AR-GRPO's format
    (`[{"id", "conversations": [{"from": "human", "value": PROMPT}, ...]}]`, its COCO training
    captions and DrawBench), or plain strings / objects with a `prompt` field."""
    if os.path.isdir(path):
        raise SystemExit(f"error: prompt file {path} is a directory; "
                         f"pass a .txt, .jsonl or .json file")
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
                raise SystemExit(f"error: {path}:{n} has no string 'prompt', 'caption' "
                                 f"or 'text' field")
        prompts.append(line)
    if not prompts:
        raise SystemExit(f"error: prompt file {path} is empty")
    return prompts


def _prompt_of(row):
    """The prompt of one record: a string, a `prompt`/`caption`/`text` field, or AR-GRPO's first
    human turn."""
    if isinstance(row, str):
        return row
    if not isinstance(row, dict):
        return None
    if "conversations" in row:
        turns = [t for t in row["conversations"]
                 if isinstance(t, dict) and t.get("from") == "human"]
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
        raise SystemExit(f"error: {path} must hold a JSON list of prompts (AR-GRPO's format), "
                         f"got {type(rows).__name__}")
    prompts = []
    for n, row in enumerate(rows):
        prompt = _prompt_of(row)
        if prompt is None:
            raise SystemExit(f"error: {path} entry {n} has no prompt (a string, a 'prompt' "
                             f"field, or a 'conversations' list with a 'from': 'human' turn)")
        if prompt.strip():
            prompts.append(prompt.strip())
    if not prompts:
        raise SystemExit(f"error: prompt file {path} is empty")
    return prompts


def read_geneval(path):
    """GenEval's evaluation_metadata.jsonl: one JSON object per line with at least a string `prompt`
    (and `tag`, `include`, ... which its evaluate_images.py reads back from each folder)."""
    if not os.path.isfile(path):
        raise SystemExit(f"error: GenEval metadata file {path} does not exist")
    rows = []
    for n, line in enumerate(open(path, encoding="utf-8"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise SystemExit(f"error: {path}:{n} is not valid JSON ({e.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
            raise SystemExit(f"error: {path}:{n} is not a GenEval metadata object "
                             f"(a JSON object with a 'prompt')")
        rows.append(row)
    if not rows:
        raise SystemExit(f"error: GenEval metadata file {path} is empty")
    return rows


def write_geneval(rows, out, per_prompt, sample_fn):
    """GenEval's layout, what its evaluate_images.py reads: out/<index:05d>/metadata.jsonl (that
    prompt's metadata object, read with json.load) and out/<index:05d>/samples/<k:04d>.png.
    sample_fn(prompt, index) -> uint8 (N, H, W, 3). Prompt folders that already hold all N images
    are skipped (a re-run resumes); each PNG is written to a temporary name first, so an
    interrupted run never leaves a truncated image behind."""
    from PIL import Image

    def png(i, k):  # image k of prompt i
        return os.path.join(out, f"{i:05d}", "samples", f"{k:04d}.png")

    def done(i):  # all of prompt i's images are on disk
        return all(os.path.isfile(png(i, k)) for k in range(per_prompt))

    todo = [i for i in range(len(rows)) if not done(i)]
    n_done = len(rows) - len(todo)
    if n_done:
        print(f"resuming: {n_done} of {len(rows)} prompts already in {out}")
    for i in tqdm(todo, desc="geneval", unit="prompt", initial=n_done, total=len(rows)):
        folder = os.path.join(out, f"{i:05d}")
        os.makedirs(os.path.join(folder, "samples"), exist_ok=True)
        with open(os.path.join(folder, "metadata.jsonl"), "w", encoding="utf-8") as f:
            f.write(json.dumps(rows[i]) + "\n")
        for k, im in enumerate(sample_fn(rows[i]["prompt"], i).numpy()):
            Image.fromarray(im).save(png(i, k) + ".tmp", format="PNG")
            os.replace(png(i, k) + ".tmp", png(i, k))
    print(f"wrote {out}: {len(rows)} prompt folders x {per_prompt} images (GenEval layout)")


def range_errors(args, checks):
    """The first numeric flag outside its range, as one line for `parser.error`, else None.
    checks: (flag, predicate, what it must be); flags whose value is None (unset) are skipped.
    A NaN fails every predicate, since every comparison with NaN is False."""
    for flag, ok, must in checks:
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None and not ok(value):
            return f"{flag} must be {must}, got {value}"
    return None


# ----------------------------------------------------------------------------- a run's models
# train.py builds its policy with these, eval.py rebuilds a run's base / tuned pair with them.
def mix(*ints):
    """A 63-bit seed from integers, e.g. (seed, step, group): the same on every machine."""
    return int(hashlib.md5(repr(ints).encode()).hexdigest()[:15], 16)


def class_prompts(num_classes=0):
    """'a photo of {class name}' for every ImageNet class id (the first num_classes; 0 = all)."""
    names = open(os.path.join(HERE, "imagenet_classes.txt")).read().splitlines()
    return [f"a photo of {n}" for n in names[: num_classes or None]]


def missing_files(args, gpt_flag="--gpt-ckpt"):
    """Weight files named in args that are not on disk, as 'path (flag)'. A released name (no '/',
    no '.pt') is left to the downloader."""
    need = [(f, p) for f, p in ((gpt_flag, args.gpt_ckpt), ("--vq-ckpt", args.vq_ckpt))
            if p and ("/" in p or p.endswith(".pt"))]
    need += [("--t5-path", args.t5_path)] if args.task == "t2i" and args.t5_path else []
    return [f"{path} ({flag})" for flag, path in need if not os.path.exists(path)]


def path_kind_errors(args, gpt_flag="--gpt-ckpt"):
    """Weight paths that exist but are the wrong kind, one phrase each: a directory where a weights
    file goes, or a file where a model folder goes (an existing directory is not 'missing')."""
    files = [(gpt_flag, args.gpt_ckpt), ("--vq-ckpt", args.vq_ckpt)]
    files += [(f"--{k.replace('_', '-')}", getattr(args, k, None))
              for k in ("clip_ckpt", "hps_ckpt", "maniqa_ckpt")]
    folders = [("--t5-path", args.t5_path if args.task == "t2i" else ""),
               ("--qwen-path", getattr(args, "qwen_path", None))]
    return ([f"{flag} {p} is a directory; pass the weights file in it"
             for flag, p in files if p and os.path.isdir(p)]
            + [f"{flag} {p} is a file; pass the model folder"
               for flag, p in folders if p and os.path.isfile(p)])


def check_t5_width(t5_path, caption_dim):
    """A T5 whose width (d_model in its config.json) is not the GPT's caption_dim cannot condition
    it: say so in one line from the 1 kB config, before the T5 weights (GBs for FLAN-T5-XL)."""
    cfg = os.path.join(t5_path, "config.json")
    # no config: from_pretrained says so
    width = json.load(open(cfg)).get("d_model") if os.path.isfile(cfg) else None
    if width is not None and width != caption_dim:
        raise BadCheckpoint(
            f"--t5-path {t5_path} gives {width}-wide text features (d_model in its config.json) "
            f"but the GPT takes {caption_dim}-wide ones (caption_dim); use the T5 the GPT was "
            f"trained with (FLAN-T5-XL, 2048, for LlamaGen's t2i checkpoints; without --t5-path a "
            f"random GPT gets a tiny T5)")


def build_models(args, device):
    """policy, reference (frozen copy of the initial weights), vq, text encoder (t2i) or None."""
    if args.gpt_ckpt:
        policy = load_gpt(args.gpt_ckpt, image_size=args.image_size, device=device)
    else:  # random init from the seed: a resumed run rebuilds the same reference
        torch.manual_seed(args.seed)
        vq_cfg = VQ_PRESETS["VQ-tiny" if args.vq_model == "palette" else args.vq_model]
        side = args.image_size // vq_cfg.downsample
        policy = GPT(gpt_config(args.gpt_model, model_type=args.task,
                                vocab_size=vq_cfg.codebook_size, block_size=side ** 2)).to(device)
    reference = copy.deepcopy(policy)
    # eval: no dropout, deterministic log-probs
    policy.eval()
    reference.eval().requires_grad_(False)
    if args.vq_ckpt:
        vq = load_vq(args.vq_ckpt, device=device)
    elif args.vq_model == "palette":
        tiny_vq = VQ_PRESETS["VQ-tiny"]
        vq = PaletteVQ(tiny_vq.codebook_size, tiny_vq.downsample, args.seed + 1).to(device)
    else:
        torch.manual_seed(args.seed + 1)
        vq = VQModel(VQ_PRESETS[args.vq_model]).to(device).eval()
    text = None
    if args.task == "t2i":
        dtype = torch.bfloat16 if device.type == "cuda" and args.bf16 else torch.float32
        # runs saved before these flags existed were left-padded, uncleaned: rebuild them as trained
        kw = dict(pad=getattr(args, "caption_pad", "left"),
                  clean=getattr(args, "clean_captions", False))
        if args.t5_path:
            check_t5_width(args.t5_path, policy.config.caption_dim)  # before reading the T5
            text = TextEncoder.from_pretrained(args.t5_path, device=device, dtype=dtype, **kw)
        else:
            text = TextEncoder.tiny(policy.config.caption_dim, seed=args.seed, **kw)
        text.model.to(device)
    return policy, reference, vq, text


# the sampler flags (sample.py, train.py, eval.py compare): temperature 0 / top-p 0 would sample
# greedily
SAMPLER_CHECKS = [
    ("--cfg-scale", lambda v: 0 <= v < math.inf, "a finite number >= 0 (1 = no guidance)"),
    ("--cfg-interval", lambda v: v >= -1, ">= -1 (-1 = guidance at every token)"),
    ("--temperature", lambda v: 0 < v < math.inf, "a finite number > 0"),
    ("--top-k", lambda v: v >= 0, ">= 0 (0 = off)"),
    ("--top-p", lambda v: 0 < v <= 1, "in (0, 1] (1 = off)"),
]


def check_writable(path, flag, is_dir=False, suffixes=None):
    """Stop now, in one line, when `path` cannot be written, rather than after hours of work: the
    directory (or the file's parent) is created and a probe file written and removed there."""
    if not path:
        return
    if suffixes and os.path.splitext(path)[1].lower() not in suffixes:
        raise SystemExit(f"error: {flag} {path}: the file name must end in {' or '.join(suffixes)}")
    if not is_dir and os.path.isdir(path):
        raise SystemExit(f"error: {flag} {path} is a directory; give a file name")
    folder = path if is_dir else os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        probe = os.path.join(folder, f".write_test.{os.getpid()}")
        open(probe, "w").close()
        os.remove(probe)
        if not is_dir and os.path.exists(path) and not os.access(path, os.W_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as e:
        elsewhere = e.filename and os.path.abspath(e.filename) != os.path.abspath(path)
        where = f" ({e.filename})" if elsewhere else ""
        raise SystemExit(f"error: cannot write {flag} {path}: {e.strerror or e}{where}") from None


def to_uint8(images):
    """(B, 3, H, W) in ~[-1, 1] -> (B, H, W, 3) uint8, exactly as LlamaGen/DiT's FID scripts."""
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


# ----------------------------------------------------------------------------- the command line
# main reads as its phases: parse and check the flags, build the models, sample, write.

def make_parser():
    # the first paragraph of the docstring, as one line
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    add_input_flags(p)
    add_sampling_flags(p)
    return p


def add_input_flags(p):
    """The models and what to sample: classes, prompts or GenEval's metadata."""
    p.add_argument("--preset", choices=["tiny"],
                   help="train.py's tiny starting model: random GPT-tiny + palette tokenizer "
                        "(offline, CPU); ignores checkpoints")
    p.add_argument("--gpt-ckpt", default="c2i_B_256", help="GPT checkpoint: path or release name")
    p.add_argument("--vq-ckpt", default=None,
                   help="VQ checkpoint: path or release name (default vq_ds16_c2i / vq_ds16_t2i)")
    p.add_argument("--t5-path", default="google/flan-t5-xl",
                   help="T5 encoder for t2i: HF name or local dir")
    p.add_argument("--image-size", type=int, default=None,
                   help="checked against the checkpoint (256, 384, 512)")
    p.add_argument("--image-size-eval", type=int, default=None,
                   help="resize the .npz samples to this size (bicubic)")
    p.add_argument("--classes", default=None,
                   help="comma-separated class ids, or 'all' (default: 8 demo classes)")
    p.add_argument("--prompts", default=None,
                   help="t2i prompt file (.txt, .jsonl or AR-GRPO's .json list)")
    p.add_argument("--caption-pad", choices=["left", "right"], default=None,
                   help="t2i: left = LlamaGen's sampler, right = AR-GRPO's training and "
                        "evaluation (text.py); default: a train.py checkpoint's own setting, "
                        "else left")
    p.add_argument("--clean-captions", action=argparse.BooleanOptionalAction, default=None,
                   help="t2i: DeepFloyd-IF caption cleaning, twice, before T5 (LlamaGen and "
                        "AR-GRPO do); default: a train.py checkpoint's own setting, else on")
    p.add_argument("--per-class", "--per-prompt", type=int, default=1,
                   help="samples per class id / prompt")
    p.add_argument("--task", choices=["c2i", "t2i"], default=None,
                   help="checked against the model; picks the tiny preset's model")
    p.add_argument("--geneval", default=None,
                   help="GenEval's evaluation_metadata.jsonl: write its folder layout to --out DIR "
                        "(DIR/<index:05d>/metadata.jsonl, DIR/<index:05d>/samples/<k:04d>.png)")


def add_sampling_flags(p):
    """The sampler's settings, the device, and the outputs."""
    p.add_argument("--cfg-scale", type=float, default=4.0)
    p.add_argument("--cfg-interval", type=int, default=-1,
                   help="stop guidance after this token (-1: never)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0,
                   help="0 = off (LlamaGen's scripts use 2000 for c2i at eval)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", choices=["fp32", "bf16"], default=None,
                   help="GPT weights dtype (default bf16 on GPU)")
    p.add_argument("--out", default="samples/grid.png", help="PNG grid path ('' for none)")
    p.add_argument("--npz", default=None,
                   help="also write all samples as uint8 NHWC .npz (for FID)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the decode step (same tokens); default: on for a GPU, off "
                        "on a CPU (README, 'Sampling speed')")


SAMPLE_CHECKS = SAMPLER_CHECKS + [
    ("--per-class", lambda v: v >= 1, ">= 1"),
    ("--batch-size", lambda v: v >= 1, ">= 1"),
    ("--seed", lambda v: v >= 0, ">= 0"),
    ("--image-size", lambda v: v > 0, "> 0"),
    ("--image-size-eval", lambda v: v > 0, "> 0"),
]


def parse_args(argv=None):
    """The flags, range-checked, with the defaults that depend on the device or the checkpoint."""
    p = make_parser()
    args = p.parse_args(argv)
    error = range_errors(args, SAMPLE_CHECKS)
    if error:
        p.error(error)
    if args.compile is None:  # pays for itself on a GPU after a few batches, never on a CPU
        args.compile = args.device.startswith("cuda")
    # T2I text settings: as given, else a train.py checkpoint's own, else LlamaGen's
    run = None if args.preset == "tiny" else run_args(args.gpt_ckpt)
    if args.caption_pad is None:
        args.caption_pad = getattr(run, "caption_pad", "left")
    if args.clean_captions is None:  # runs older than the flag: raw captions
        args.clean_captions = getattr(run, "clean_captions", run is None)
    print(vars(args))
    return args


def check_outputs(args):
    """Bad input and unwritable outputs stop here, before any model is built (a bad --npz must not
    cost the whole sampling run). --geneval implies --task t2i. Returns the GenEval metadata rows,
    or None."""
    geneval = None
    if args.geneval:
        geneval = read_geneval(args.geneval)
        if args.out.endswith(".png") or args.npz or args.prompts or args.classes:
            raise SystemExit("error: --geneval writes a folder: pass --out DIR (not a .png), "
                             "and no --npz, --prompts or --classes")
        if args.task == "c2i":
            raise SystemExit("error: --geneval needs a text-to-image model (--task t2i)")
        args.task = "t2i"
        check_writable(args.out, "--out", is_dir=True)
    else:
        check_writable(args.out, "--out", suffixes=[".png", ".jpg", ".jpeg", ".webp"])
    check_writable(args.npz, "--npz", suffixes=[".npz"])
    return geneval


def load_models(args, dev):
    """GPT (cast to the sampling precision), VQ, and T5 text encoder (t2i) or None."""
    if args.preset == "tiny":
        # the model train.py --preset tiny starts from with this seed: GPT-tiny, palette tokenizer
        t2i = bool(args.prompts) or args.task == "t2i"
        tiny_run = argparse.Namespace(
            task="t2i" if t2i else "c2i", gpt_model="GPT-tiny", gpt_ckpt="", vq_model="palette",
            vq_ckpt="", t5_path="", image_size=16, seed=args.seed, bf16=False,
            caption_pad=args.caption_pad, clean_captions=args.clean_captions)
        model, _, vq, text = build_models(tiny_run, dev)
    else:
        try:
            model = load_gpt(args.gpt_ckpt, args.image_size, dev)
            t2i = model.config.model_type == "t2i"
            vq = load_vq(args.vq_ckpt or ("vq_ds16_t2i" if t2i else "vq_ds16_c2i"), dev)
            text = None
            if t2i:
                text = TextEncoder.from_pretrained(args.t5_path, dev, pad=args.caption_pad,
                                                   clean=args.clean_captions)
        except (FileNotFoundError, ValueError) as e:  # MissingCheckpoint / BadCheckpoint: one line
            raise SystemExit(f"error: {e}\n(offline? try: python sample.py --preset tiny)")
    if args.precision == "bf16" or (args.precision is None and dev.type == "cuda"):
        model = model.to(torch.bfloat16)
    c = model.config
    if args.task and args.task != c.model_type:
        raise SystemExit(f"error: --task {args.task}, but the checkpoint is a {c.model_type} model")
    return model, vq, text


def geneval_sampler(args, model, vq, text, dev):
    """sample_fn for write_geneval: (prompt, index) -> uint8 (per_class, H, W, 3)."""
    def sample_prompt(prompt, index):  # its own seed per prompt: a resumed run gets the same images
        g = torch.Generator(dev).manual_seed(args.seed * 1_000_003 + index)
        return sample_images(args, model, vq, text, [prompt] * args.per_class, dev, g, bar=False)
    return sample_prompt


def conditions(args, c):
    """What to sample, one entry per image: the prompts (t2i) or class ids (c2i), each per_class
    times."""
    if c.model_type == "t2i":
        if not args.prompts:
            raise SystemExit("error: this is a text-to-image model: pass --prompts FILE")
        conds = read_prompts(args.prompts)
    else:
        if args.prompts:
            raise SystemExit("error: --prompts needs a t2i model; "
                             "this one is class-conditional (use --classes)")
        if args.classes is None:
            demo = [207, 360, 387, 974, 88, 979, 417, 279]  # LlamaGen's demo classes
            ids = demo if c.num_classes == 1000 else list(range(min(8, c.num_classes)))
        elif args.classes == "all":
            ids = list(range(c.num_classes))
        else:
            ids = [int(x) for x in args.classes.split(",")]
        bad = [i for i in ids if not 0 <= i < c.num_classes]
        if bad:
            raise SystemExit(f"error: unknown class id(s) {bad}: "
                             f"the model has classes 0..{c.num_classes - 1}")
        conds = ids
    return [x for x in conds for _ in range(args.per_class)]


def sample_images(args, model, vq, text, conds, dev, generator=None, bar=True):
    """All images, in batches of --batch-size, drawn from `generator` (default: seeded with
    --seed): uint8 (len(conds), H, W, 3)."""
    g = generator or torch.Generator(dev).manual_seed(args.seed)
    out = []
    batches = range(0, len(conds), args.batch_size)
    for i in tqdm(batches, desc="sampling", unit="batch", disable=not bar):
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
            size = (args.image_size_eval,) * 2
            images = F.interpolate(images, size=size, mode="bicubic")
        out.append(to_uint8(images))
    return torch.cat(out)


def write_outputs(args, images):
    """The PNG grid (the first 64 images) and the .npz of all of them."""
    if args.out:
        save_grid(images[:64], args.out)
        shown = min(len(images), 64)
        print(f"wrote {args.out} ({shown} of {len(images)} images, {images.shape[1]}px)")
    if args.npz:
        os.makedirs(os.path.dirname(os.path.abspath(args.npz)), exist_ok=True)
        np.savez(args.npz, arr_0=images.numpy())
        print(f"wrote {args.npz}: {tuple(images.shape)} uint8")


def main(argv=None):
    args = parse_args(argv)
    geneval = check_outputs(args)
    dev = torch.device(args.device)
    model, vq, text = load_models(args, dev)
    if args.geneval:
        sample_fn = geneval_sampler(args, model, vq, text, dev)
        return write_geneval(geneval, args.out, args.per_class, sample_fn)
    conds = conditions(args, model.config)
    images = sample_images(args, model, vq, text, conds, dev)
    write_outputs(args, images)


if __name__ == "__main__":
    main()
