"""Sample images from a LlamaGen (or AR-GRPO-tuned) model: class ids or a prompt file ->
PNG grid (+ .npz).

    tokens ~ generate(GPT, cond, CFG)  (KV cache, model.py)  ->  images = VQ.decode(tokens)  (vq.py)

Examples:
    # offline, random weights
    python sample.py --preset tiny --classes 1,2,3 --out samples/tiny.png
    # the mnist preset's pretrained base (made once per machine), or a run of it
    python sample.py --preset mnist [--gpt-ckpt RUN/ckpt.pt] --classes all --per-class 10 \
        --npz samples/mnist.npz --out samples/mnist.png
    # released GPT-B
    python sample.py --gpt-ckpt c2i_B_256 --classes 207,360,387,974 --cfg-scale 2.0
    python sample.py --gpt-ckpt t2i_XL_stage1_256 --vq-ckpt vq_ds16_t2i --prompts prompts.txt \
        --cfg-scale 4.0
    python sample.py --gpt-ckpt c2i_L_384 --classes all --per-class 50 --npz samples/L384.npz \
        --protocol llamagen       # or argrpo: C2I evaluation protocols (docs/evaluation.md)

The .npz holds `arr_0`, uint8 (N, H, W, 3), the layout of the ADM FID evaluation suite, for
class-conditional models `arr_1`, the class ids (N,), and `meta` (the checkpoint, the protocol, the
sampler's settings, as JSON).
"""
import torch
import torch.nn.functional as F
from tqdm import tqdm

from model import GPT, Sampling, generate, gpt_config, load_gpt
from plumbing.files import check_writable, write_npz
from plumbing.flags import check_sample_memory, parse_sample_args, protocol_cfg, sample_record
from plumbing.precision import sample_autocast, sample_dtypes
from plumbing.images import save_grid, to_uint8
from plumbing.mnist import PatchVQ
from plumbing.pretrain import mnist_models
from plumbing.prompts import read_geneval, read_prompts, write_geneval
from plumbing.standins import PaletteVQ
from plumbing.stops import run_cli
from plumbing.weights import MissingCheckpoint
from text import TextEncoder
from vq import VQ_PRESETS, load_vq


def main(argv=None):
    # the flags (plumbing/flags.py): the docstring's first paragraph describes the command
    args = parse_sample_args(argv, " ".join(__doc__.split("\n\n")[0].split()))
    geneval, prompts = check_files(args)
    dev = torch.device(args.device)
    model, vq, text = load_models(args, dev)
    protocol_cfg(args, model.config)   # --cfg-scale, else by model under --protocol llamagen
    if args.geneval:
        sample_fn = geneval_sampler(args, model, vq, text, dev)
        return write_geneval(geneval, args.out, args.per_class, sample_fn, sample_record(args))
    conds = conditions(args, model.config, prompts)  # a refusal, not an out-of-memory kill:
    check_sample_memory(model.config, vq.config.downsample, args, len(conds) * args.per_class, dev)
    conds = [x for x in conds for _ in range(args.per_class)]  # each --per-class times
    images = sample_images(args, model, vq, text, conds, dev)
    write_outputs(args, images, conds if model.config.model_type == "c2i" else None)


def check_files(args):
    """Bad inputs and unwritable outputs stop here, before any model is built (a bad --npz must not
    cost the whole sampling run). --geneval implies --task t2i. Returns the GenEval metadata rows
    and the prompts of --prompts (each None without its flag)."""
    geneval, prompts = None, read_prompts(args.prompts) if args.prompts else None
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
    return geneval, prompts


def load_models(args, dev):
    """GPT (cast to the sampling precision), VQ, and T5 text encoder (t2i) or None."""
    if args.preset == "tiny":  # train.py --preset tiny's starting model, from the same seed
        task = "t2i" if args.prompts or args.task == "t2i" else "c2i"
        torch.manual_seed(args.seed)
        model = GPT(gpt_config("GPT-tiny", model_type=task)).to(dev).eval()  # 4x4 of 64 codes
        palette = VQ_PRESETS["VQ-tiny"]
        vq = PaletteVQ(palette.codebook_size, palette.downsample, args.seed + 1).to(dev)
        text = None if task == "c2i" else TextEncoder.build(
            "", model.config.caption_dim, dev, seed=args.seed, pad=args.caption_pad,
            clean=args.clean_captions)
    elif args.preset == "mnist":  # the pretrained base (made once per machine) or a run of it
        gpt_path, vq_path = mnist_models(args.gpt_ckpt, GPT, gpt_config, args.cache_dir)
        model, vq, text = load_gpt(gpt_path, device=dev), PatchVQ.load(vq_path, dev), None
    else:
        try:
            model = load_gpt(args.gpt_ckpt, args.image_size, dev)
            t2i = model.config.model_type == "t2i"
            vq = load_vq(args.vq_ckpt or ("vq_ds16_t2i" if t2i else "vq_ds16_c2i"), dev)
            text = None
            if t2i:
                text = TextEncoder.from_pretrained(args.t5_path, dev, pad=args.caption_pad,
                                                   clean=args.clean_captions)
        except MissingCheckpoint as e:  # one line, with the offline way out
            raise SystemExit(f"error: {e} (offline? try: python sample.py --preset tiny)")
    model, vq = sample_dtypes(args, model, vq, dev)
    c = model.config
    if args.task and args.task != c.model_type:
        raise SystemExit(f"error: --task {args.task}, but the checkpoint is a {c.model_type} model")
    return model, vq, text


def conditions(args, c, prompts):
    """What to sample: the prompts (t2i) or class ids (c2i)."""
    if c.model_type == "t2i":
        if not args.prompts or args.classes:
            raise SystemExit("error: this is a text-to-image model: pass --prompts FILE "
                             "(and no --classes)")
        conds = prompts
    else:
        if args.prompts:
            raise SystemExit("error: --prompts needs a t2i model; "
                             "this one is class-conditional (use --classes)")
        if args.classes is None:
            demo = [207, 360, 387, 974, 88, 979, 417, 279]  # LlamaGen's demo classes
            ids = demo if c.num_classes == 1000 else list(range(min(8, c.num_classes)))
        elif args.classes == "all":
            ids = list(range(c.num_classes))
        else:  # a list of ids (plumbing/flags.py)
            ids = args.classes
        bad = [i for i in ids if not 0 <= i < c.num_classes]
        if bad:
            raise SystemExit(f"error: unknown class id(s) {bad}: "
                             f"the model has classes 0..{c.num_classes - 1}")
        conds = ids
    return conds


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
        with sample_autocast(args, dev):      # --precision fp16: AR-GRPO's test.py
            tokens = generate(model, cond, Sampling.of(args), cond_mask=mask, generator=g,
                              compile=args.compile)
            images = vq.decode(tokens)
        if args.image_size_eval and args.image_size_eval != images.shape[-1]:
            size = (args.image_size_eval,) * 2
            images = F.interpolate(images, size=size, mode="bicubic")
        out.append(to_uint8(images, truncate=args.protocol == "argrpo"))   # test.py truncates
    return torch.cat(out)


def geneval_sampler(args, model, vq, text, dev):
    """sample_fn for write_geneval: (prompt, index) -> uint8 (per_class, H, W, 3)."""
    def sample_prompt(prompt, index):  # its own seed per prompt: a resumed run gets the same images
        g = torch.Generator(dev).manual_seed(args.seed * 1_000_003 + index)
        return sample_images(args, model, vq, text, [prompt] * args.per_class, dev, g, bar=False)
    return sample_prompt


def write_outputs(args, images, labels=None):
    """The grid (the first 64 images, small ones scaled up to 128 px to be seen) and the .npz of
    all of them (as sampled, with their class ids), each written atomically."""
    if args.out:
        save_grid(images[:64], args.out, min_px=128)
        shown = min(len(images), 64)
        print(f"wrote {args.out} ({shown} of {len(images)} images, {images.shape[1]}px)")
    if args.npz:
        write_npz(args.npz, arr_0=images.numpy(), meta=sample_record(args),
                  **({} if labels is None else {"arr_1": labels}))
        print(f"wrote {args.npz}: {tuple(images.shape)} uint8")


if __name__ == "__main__":
    run_cli(main)
