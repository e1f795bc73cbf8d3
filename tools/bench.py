"""The benchmarks, one home: the sampler and one GRPO step phase by phase against floors measured
in the same run; the images/s of each reward; the Qwen judge's fast vs generate rank agreement.

Sampling (default). The floor is what no implementation of the same model can beat on this
machine: the bare weight matmuls of one decode step (every Linear of every layer plus the output
head) at the decode batch size (2 x images with CFG), times the number of tokens; and the same
plus the attention over the KV cache that every sampler must read (`floor_attention`: bare SDPA
calls over each layer's filled prefix, step by step; beside it the time to merely read those
prefixes, what an attention at the memory's speed would take). Timed interleaved with them, best
of --repeat: our `generate` eager, `generate(..., compile=True)` (its compilation
timed separately, as "warm-up"), and LlamaGen's generate() loop re-created on the same weights
(`llamagen_style`; a real LlamaGen checkout with --official DIR).

Paper-size step (--step --paper-size): tools/bench_paper.py, which reads every other flag (a paper
preset's step at its real architectures, random weights, phase by phase; --size tiny on a CPU).

GRPO step (--step). One training step of train.py at GPT-B scale with random weights (8 images of
one class, --policy cfg, random VQ-16, the weight-free `color` reward), run as a subprocess; each
phase beside its floor on this machine: the measured matmul time of the same FLOPs (rollout: the
decode floor; reference log-probs: one forward; update: forward + backward) or, for the VQ decode,
its FLOPs at the measured matmul rate, and the peak memory (RSS) of the run.

Rewards (--rewards). images/s of each reward of --reward-list alone on --batch random images of
--image-size pixels (model load excluded, one warm-up call, the mean of --repeat timed calls; a
judge question once per mode, its generate mode one timed call), tiny random models unless --real
(real weights and sizes, from the caches or the path flags as in train.py), and the mean reward.

Rollout precision (--precision). What bf16 autocast changes in a rollout (the paper presets sample
and decode without it, as AR-GRPO's C2I code, in fp32): --model with random weights samples
--images images of one class per --repeat seed from the same uniforms in fp32 and under bf16
autocast (on --device); reported: the share of images whose tokens are all equal, the median first
position where they part, and on the fp32 tokens the teacher-forced conditional log-prob gap
|log p_bf16 - log p_fp32| (mean, max) per token.

Judge agreement (--agreement). The fast and generate judge modes on the same fixed images (the
folder --agreement-images, file names as prompts, or 32 synthetic ones): per question, the
Spearman rank correlation of the two scores (NaN, undefined, when either is constant), the
generate-mode failure fraction and non-finite count, and both means.

    python tools/bench.py                   # GPT-B, random weights, fp32, 4 and 16 images, CFG 2.0
    python tools/bench.py --step            # one GRPO step at GPT-B scale, phases vs floors
    python tools/bench.py --step --paper-size --size tiny   # a paper preset's step: bench_paper.py
    python tools/bench.py --model GPT-L --images 8 --device cuda --dtype bf16
    python tools/bench.py --official ~/LlamaGen  # also the official generate() (a checkout)
    python tools/bench.py --rewards         # images/s of each reward, tiny models, batch 8, 256 px
    python tools/bench.py --rewards --reward-list clip,hps --real --device cuda --dtype bf16
    python tools/bench.py --precision --images 8   # fp32 vs bf16 autocast rollouts, GPT-B random
    python tools/bench.py --agreement       # fast vs generate judge, tiny judge, 32 synthetic pics
    python tools/bench.py --agreement --real --qwen-path DIR --device cuda --agreement-images DIR
"""
import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F
from tqdm import tqdm

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository
sys.path.insert(0, HERE)

from model import GPT, GPT_PRESETS, Sampling, generate, gpt_config  # noqa: E402  (the repository)
from plumbing.files import check_readable, check_writable, read_jsonl, write_json  # noqa: E402
from plumbing.flags import (check_memory, device_error, kv_cache_bytes,  # noqa: E402
                            range_errors)
from plumbing.stops import run_cli  # noqa: E402
from rewards import OFFLINE_REWARDS, QWEN_PARTS, build_rewards, parse_spec  # noqa: E402


def timed(fns, device, repeat, bar=None):
    """Best-of-`repeat` seconds for each function, run interleaved so machine noise hits all
    alike."""
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        if bar is not None:
            bar.update(1)
        for i, fn in enumerate(fns):
            best[i] = min(best[i], once(fn, device))
    return best


def once(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def linears(model):
    return [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]


def floor_step(model, rows, backward=False):
    """The weight matmuls of one forward over `rows` token rows: x (rows, in) through every Linear
    (the FFN's w2 takes the hidden width); with backward, also the two matmuls of its gradient
    (dx = dy W and dW = dy^T x). Attention, norms and the rest are left out: this is a floor."""
    w0 = model.output.weight
    on = dict(device=w0.device, dtype=w0.dtype)
    xs = {w.shape[1]: torch.randn(rows, w.shape[1], **on) for w in linears(model)}  # inputs
    ys = {w.shape[0]: torch.randn(rows, w.shape[0], **on) for w in linears(model)}  # output grads

    def step():
        for w in linears(model):
            F.linear(xs[w.shape[1]], w)
            if backward:
                ys[w.shape[0]] @ w  # dx
                ys[w.shape[0]].t() @ xs[w.shape[1]]  # dW
    return step


def floor_attention(model, rows, read_only=False):
    """The attention every sampler must do on top of the matmuls: at each of the N - 1 decode
    steps, each layer's query (rows, H, 1, hd) attends over the filled part of that layer's own
    k, v cache (its reads grow with the position: at batch 32 they rival the weights). Timed as
    bare SDPA calls on a cache per layer (one shared cache would sit in the CPU's cache).
    read_only: only read those k, v prefixes once (a sum over each), the memory's own speed: what
    an ideal attention kernel would take."""
    c, w0 = model.config, model.output.weight
    on = dict(device=w0.device, dtype=w0.dtype)
    hd, T, N = c.dim // c.n_head, c.cls_token_num, c.block_size
    shape = (rows, c.n_kv_head, T + N, hd)
    caches = [(torch.randn(shape, **on), torch.randn(shape, **on)) for _ in range(c.n_layer)]
    q = torch.randn(rows, c.n_head, 1, hd, **on)

    def all_steps():
        for n in range(T + 2, T + N + 1):  # the prefix a decode step reads, token included
            for kc, vc in caches:
                if read_only:
                    kc[:, :, :n].sum(), vc[:, :, :n].sum()
                else:
                    F.scaled_dot_product_attention(q, kc[:, :, :n], vc[:, :, :n])
    return all_steps


@torch.no_grad()
def llamagen_style_generate(model, cond, cfg_scale, generator=None):
    """LlamaGen's generate() loop (FoundationVision/LlamaGen ce98ec4,
    autoregressive/models/generate.py and gpt.py) re-created on our modules' weights, for a baseline
    without a checkout: the same work per token as the official code: q and k rotated by separate
    calls, k and v written into a full-length cache and attention over all of it behind a slice of
    a (B, S, S) causal mask, k and v repeat_interleave'd, CFG on the split batch, softmax +
    torch.multinomial, tokens kept in a list."""
    c, B = model.config, len(cond)
    T, N, H, D = c.cls_token_num, c.block_size, c.n_head, c.dim
    S, hd, dev, dt = T + N, D // H, model.output.weight.device, model.output.weight.dtype
    cond2 = torch.cat([cond, model.null_cond(cond)])
    B2 = len(cond2)
    on = dict(device=dev, dtype=dt)
    cache = [(torch.zeros(B2, H, S, hd, **on), torch.zeros(B2, H, S, hd, **on))
             for _ in model.layers]
    causal = torch.tril(torch.ones(S, S, dtype=torch.bool, device=dev))
    causal = causal.unsqueeze(0).repeat(B2, 1, 1)
    freqs = torch.view_as_real(model.rope.to(dev))  # (S, hd/2, 2)

    def rope(x, f):  # x (B, L, H, hd), f (L, hd/2, 2): LlamaGen's apply_rotary_emb
        xs = x.float().reshape(*x.shape[:-1], -1, 2)
        f = f.view(1, xs.size(1), 1, xs.size(3), 2)
        real = xs[..., 0] * f[..., 0] - xs[..., 1] * f[..., 1]
        imag = xs[..., 1] * f[..., 0] + xs[..., 0] * f[..., 1]
        return torch.stack([real, imag], -1).flatten(3).type_as(x)

    def forward(h, input_pos):
        mask, f, L = causal[:B2, None, input_pos], freqs[input_pos], h.shape[1]
        for layer, (kc, vc) in zip(model.layers, cache):
            a = layer.attention
            xq, xk, xv = a.wqkv(layer.attention_norm(h)).split([D, D, D], dim=-1)
            xq, xk = rope(xq.view(B2, L, H, hd), f), rope(xk.view(B2, L, H, hd), f)
            xv = xv.view(B2, L, H, hd)
            xq, xk, xv = (t.transpose(1, 2) for t in (xq, xk, xv))
            kc[:, :, input_pos], vc[:, :, input_pos] = xk, xv
            keys, values = kc.repeat_interleave(1, dim=1), vc.repeat_interleave(1, dim=1)
            y = F.scaled_dot_product_attention(xq, keys, values, attn_mask=mask)
            h = h + a.wo(y.transpose(1, 2).contiguous().view(B2, L, D))
            h = h + layer.feed_forward(layer.ffn_norm(h))
        return model.output(model.norm(h)).float()

    def sample(h, input_pos):
        cl, ul = torch.split(forward(h, input_pos), B, dim=0)
        probs = F.softmax((ul + (cl - ul) * cfg_scale)[:, -1, :], dim=-1)
        return torch.multinomial(probs, 1, generator=generator), probs

    nxt, _ = sample(model.embed_cond(cond2), torch.arange(0, T, device=dev))
    tokens, input_pos = [nxt], torch.tensor([T], device=dev, dtype=torch.int)
    for _ in range(N - 1):
        nxt, probs = sample(model.tok_embeddings(torch.cat([nxt, nxt])), input_pos)
        input_pos += 1
        tokens.append(nxt.clone())
        probs.clone()  # LlamaGen copies each step's probabilities too: the same work
    return torch.cat(tokens, 1)


def official_sampler(args, model, dev, dtype):
    """(LlamaGen's GPT with our model's weights, its generate()) from the checkout --official."""
    sys.path.insert(0, args.official)
    from autoregressive.models.generate import generate as official_generate
    from autoregressive.models.gpt import GPT_models
    ref = GPT_models[args.model](vocab_size=16384, block_size=model.config.block_size,
                                 num_classes=1000, cls_token_num=1, model_type="c2i",
                                 resid_dropout_p=0.0, ffn_dropout_p=0.0, token_dropout_p=0.0)
    # strict=False: theirs also holds freqs_cis and the KV caches
    ref.load_state_dict(model.state_dict(), strict=False)
    return ref.to(dev, dtype).eval(), official_generate


def bench_sampling(args, dev, dtype):
    torch.manual_seed(0)
    config = gpt_config(args.model, block_size=(args.image_size // 16) ** 2)
    model = GPT(config).to(dev, dtype).eval()
    N = model.config.block_size
    # the reference implementation, same weights (not part of this project)
    official = official_sampler(args, model, dev, dtype) if args.official else None
    print(f"{args.model} {args.dtype} on {dev} ({torch.get_num_threads()} threads), "
          f"{N} tokens/image, cfg {args.cfg_scale}, best of {args.repeat}, floor timed interleaved")
    rows, sizes = [], [int(x) for x in args.images.split(",")]
    # a run = every column once
    bar = tqdm(total=len(sizes) * args.repeat, desc="bench", unit="run")
    for n in sizes:
        cond = torch.randint(0, model.config.num_classes, (n,), device=dev)
        batch = 2 * n if args.cfg_scale != 1.0 else n
        g = torch.Generator(dev).manual_seed(0)
        s = Sampling(cfg_scale=args.cfg_scale)
        run = lambda compile: generate(model, cond, s, generator=g, compile=compile)
        generate(model, cond[:1], s, generator=g)  # eager warm-up (allocator, threads)
        compiled = args.compile is not False
        warm = once(lambda: run(compiled), dev)  # compilation (one graph per batch) + one run
        step = floor_step(model, batch)
        fns = [lambda: [step() for _ in range(N)], floor_attention(model, batch),
               floor_attention(model, batch, read_only=True),
               lambda: run(False), lambda: run(compiled),
               lambda: llamagen_style_generate(model, cond, args.cfg_scale, g)]
        if official:
            fns.append(lambda: official[1](official[0], cond, N, cfg_scale=args.cfg_scale))
        with torch.no_grad():
            times = timed(fns, dev, args.repeat, bar)
        t_floor, t_attn, t_read, t_eager, t_comp, t_style, *t_off = times
        both = t_floor + t_attn  # matmuls + SDPA over the cache: no sampler built on SDPA beats it
        ms = lambda t: (f"{t:6.2f} s = {1e3 * t / N:6.1f} ms/step ({t / t_floor:.2f}x, "
                        f"{t / both:.2f}x with attention)")
        tqdm.write(f"images {n:3d} (decode batch {batch:3d}): "
                   f"floor {t_floor:6.2f} s = {1e3 * t_floor / N:6.1f} ms/step; "
                   f"+ attention {t_attn:5.2f} s = {both:6.2f} s ({both / t_floor:.2f}x); "
                   f"reading its k, v once: {t_read:5.2f} s ({(t_floor + t_read) / t_floor:.2f}x)")
        tqdm.write(f"  eager    {ms(t_eager)}  {n * N / t_eager:6.1f} tokens/s")
        gain = t_eager - t_comp
        repaid = "never repaid"
        if gain > 0:
            repaid = f"repaid after {max(warm - t_comp, 0) / gain:.0f} calls of this size"
        tqdm.write(f"  compiled {ms(t_comp)}  {n * N / t_comp:6.1f} tokens/s | "
                   f"first call {warm:.1f} s: compilation ~{warm - t_comp:.0f} s, {repaid}")
        tqdm.write(f"  LlamaGen-style loop {ms(t_style)}")
        if t_off:
            tqdm.write(f"  official LlamaGen generate() {ms(t_off[0])}")
        rows.append(dict(images=n, batch=batch, floor=t_floor, attention=t_attn, kv_read=t_read,
                         eager=t_eager, compiled=t_comp,
                         llamagen_style=t_style, official=t_off[0] if t_off else None, warmup=warm))
    bar.close()
    return rows


# ----------------------------------------------------------------------------- one GRPO step

STEP_FLAGS = ["--task", "c2i", "--preset", "tiny", "--vq-model", "VQ-16",
              "--rewards", "color:1", "--prompts-per-rank", "1", "--group-size", "8",
              "--policy", "cfg", "--cfg-scale", "2.0", "--lr", "1e-5", "--beta", "0.1",
              "--image-every", "0"]


def step_config(args):
    """The config of the GPT that --step trains (and its floors are computed for): --model over
    VQ-16's 16384 codes at --image-size (16 px per token), as train.py builds it."""
    return gpt_config(args.model, model_type="c2i", vocab_size=16384,
                      block_size=(args.image_size // 16) ** 2)


def step_command(args, out, extra):
    """The train.py command line that --step times: --model at --image-size (step_config)."""
    return [sys.executable, args.train, *STEP_FLAGS, "--gpt-model", args.model,
            "--image-size", str(args.image_size), "--steps", str(args.steps),
            "--cpu-threads", str(torch.get_num_threads()), "--device", args.device, "--out", out,
            *extra]


def run_step(args, extra):
    """train.py for --steps steps as a subprocess -> (its last step's metrics, its peak RSS in GB,
    its wall time in s)."""
    with tempfile.TemporaryDirectory() as out:
        cmd = step_command(args, out, extra)
        print(" ".join(cmd[1:]).replace(out, "TMP"), flush=True)
        t = time.time()
        cwd = os.path.dirname(os.path.abspath(args.train))
        r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
        if r.returncode:  # train.py's own one-line error, or its last output
            sys.exit(r.stderr.strip().splitlines()[-1] if r.returncode in (1, 2, 130)
                     else r.stdout[-2000:] + r.stderr[-2000:])
        m = read_jsonl(os.path.join(out, "metrics.jsonl"), "metrics file")[-1]
    return m, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2 ** 20, time.time() - t


def bench_step(args, dev, dtype):
    compile_flag = "--compile" if args.compile else "--no-compile"
    m, rss, wall = run_step(args, args.step_flags.split() + [compile_flag])
    torch.manual_seed(0)
    model = GPT(step_config(args)).to(dev, dtype).eval()     # the model the run timed
    from vq import VQ_PRESETS, VQModel
    vq = VQModel(VQ_PRESETS["VQ-16"]).to(dev).eval()
    B, N, T = 8, model.config.block_size, model.config.cls_token_num
    # machine rates, measured now: fp32 matmul FLOP/s (for the VQ decode: convolutions as FLOPs)
    a = torch.randn(2048, 2048, device=dev, dtype=dtype)
    flops = 2 * 2048 ** 3 / min(timed([lambda: a @ a], dev, 5))
    from torch.utils.flop_counter import FlopCounterMode
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        vq.decode(torch.randint(0, 16384, (1, N), device=dev))
    # teacher forcing [cond; null] x (T + N - 1) positions (--policy cfg)
    rows = 2 * B * (T + N - 1)
    dec = floor_step(model, 2 * B)
    fwd = floor_step(model, rows)
    fwdbwd = floor_step(model, rows, backward=True)
    with torch.no_grad():
        t_dec, t_fwd, t_fb = timed([dec, fwd, fwdbwd], dev, 3)
    t_vq = B * fc.get_total_flops() / flops
    floors = {"t_rollout": N * t_dec, "t_reward": t_vq, "t_logp": t_fwd, "t_update": t_fb}
    names = {"t_rollout": "rollout (generate)", "t_reward": "VQ decode + reward",
             "t_logp": "log-prob passes", "t_update": "update (fwd + bwd + AdamW)"}
    print(f"one GRPO step, {args.model}, {B} images, last of {args.steps} steps "
          f"({wall:.0f} s in all), peak RSS {rss:.2f} GB; "
          f"matmul rate now {flops / 1e9:.0f} GFLOP/s")
    for k in names:
        ratio = m[k] / floors[k]
        print(f"  {names[k]:28s} {m[k]:6.2f} s | floor {floors[k]:6.2f} s | {ratio:5.2f}x")
    print(f"  {'step':28s} {m['t_step']:6.2f} s | floor {sum(floors.values()):6.2f} s")
    return dict(metrics={k: m[k] for k in [*names, "t_step"]}, floors=floors, peak_rss_gb=rss)


# ----------------------------------------------------------------------------- rewards

BENCH_REWARDS = OFFLINE_REWARDS + ["clip", "hps", "maniqa", "qwen_fake"]  # --reward-list default


def bench_rewards(names, device="cpu", tiny=True, batch=8, size=256, repeats=3, dtype=None,
                  judge_tokens=256):
    """images/s of each reward alone (model load excluded, one warm-up call), and the fast
    judge vs the paper's generate-and-parse judge on the same images. A fast judge's line also
    shows its digit mass: p(score digit) at the score position, averaged over the last batch.
    -> [(label, images/s, mean reward)], one row per reward and judge mode."""
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    prompts = [f"a photo of class {i // 4}" for i in range(batch)]   # groups share a prompt
    rows = []
    for name in names:
        modes = ["fast", "generate"] if name in QWEN_PARTS else ["fast"]
        for mode in modes:
            scorer = build_rewards(f"{name}:1", device=device, tiny=tiny, dtype=dtype,
                                   judge_mode=mode, judge_tokens=judge_tokens)
            n = 1 if mode == "generate" else repeats          # generation is slow: one timed call
            scorer(x, prompts)                                # warm-up
            t = time.perf_counter()
            for _ in range(n):
                _, parts = scorer(x, prompts)
            if device != "cpu":
                torch.cuda.synchronize()
            ips = batch * n / (time.perf_counter() - t)
            label = name + (f" ({mode})" if name in QWEN_PARTS else "")
            mean = parts[name].mean().item()
            rows.append((label, ips, mean))
            mass = scorer.stats().get(f"{name}/digit_mass") if mode == "fast" else None
            digits = "" if mass is None else f"   digit mass {mass:.3f}"
            print(f"{label:24s} {ips:10.1f} images/s   mean reward {mean:+.3f}{digits}", flush=True)
    return rows


# ----------------------------------------------------------------------------- judge agreement

def spearman(a, b):
    """Spearman rank correlation of two score lists (average ranks for ties); nan when either is
    constant."""
    def ranks(x):
        x = torch.as_tensor(x, dtype=torch.float64)
        r = torch.empty_like(x)
        r[x.argsort()] = torch.arange(len(x), dtype=torch.float64)
        for v in x.unique():                  # ties share their mean rank
            r[x == v] = r[x == v].mean()
        return r - r.mean()
    ra, rb = ranks(a), ranks(b)
    den = (ra.norm() * rb.norm()).item()
    return (ra @ rb).item() / den if den > 0 else float("nan")


def agreement_images(folder=None, n=32, size=256):
    """The fixed image set: the images of `folder` (sorted; prompt = file name, '_' -> ' '), or n
    synthetic ones (seed 0: smooth random colour fields with noise, from flat to busy)."""
    import numpy as np
    from PIL import Image
    if folder:
        files = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_FILES))

        def load(f):   # (3, size, size) uint8
            image = Image.open(os.path.join(folder, f)).convert("RGB").resize((size, size))
            return torch.from_numpy(np.array(image)).permute(2, 0, 1)   # a writable copy
        x = torch.stack([load(f) for f in files]).float() / 255
        return x, [os.path.splitext(f)[0].replace("_", " ") for f in files]
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(n, 3, 4, 4, generator=g)
    x = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    noise = torch.linspace(0, 0.5, n).view(n, 1, 1, 1) * torch.randn(n, 3, size, size, generator=g)
    return (x + noise).clamp(0, 1), ["a photo of a colourful pattern"] * n


def judge_agreement(x, prompts, names=QWEN_PARTS, **kw):
    """Fast vs generate judge on the same images: per question, the Spearman rank correlation of
    the two scores, the generate-mode failure fraction and non-finite count, and both means."""
    out = {}
    for name in names:
        scores, stats = {}, None
        for mode in ("fast", "generate"):
            scorer = build_rewards(f"{name}:1", judge_mode=mode, **kw)
            scores[mode] = torch.cat([scorer(x[i:i + 8], prompts[i:i + 8])[1][name].cpu()
                                      for i in range(0, len(prompts), 8)])
            stats = scorer.stats() if mode == "generate" else stats
        out[name] = {"spearman": spearman(scores["fast"], scores["generate"]),
                     "generate_fail_frac": stats[f"{name}/failures"] / stats[f"{name}/answers"],
                     "generate_nonfinite": stats[f"{name}/nonfinite"],
                     "mean_fast": scores["fast"].mean().item(),
                     "mean_generate": scores["generate"].mean().item()}
        print(name, json.dumps(out[name]), flush=True)
    return out


@torch.no_grad()
def bench_judge_or_rewards(args, names, dtype):
    """--agreement or --rewards: the header line, then the figures (tiny random models unless
    --real)."""
    weights = "real" if args.real else "tiny random"
    if args.agreement:
        x, prompts = agreement_images(args.agreement_images, size=args.image_size)
        print(f"judge agreement: {len(prompts)} images, {weights} judge, {args.device}")
        return judge_agreement(x, prompts, device=args.device, tiny=not args.real,
                               qwen_path=args.qwen_path, dtype=dtype,
                               judge_tokens=args.judge_tokens)
    print(f"device {args.device}, {weights} models, batch {args.batch}, "
          f"{args.image_size} px, {torch.get_num_threads()} threads")
    return bench_rewards(names, args.device, tiny=not args.real, batch=args.batch,
                         size=args.image_size, repeats=args.repeat, dtype=dtype,
                         judge_tokens=args.judge_tokens)


# ----------------------------------------------------------------------------- rollout precision
@torch.no_grad()
def bench_precision(args, dev, n):
    """fp32 vs bf16 autocast rollouts of the same uniforms (see the module docstring)."""
    torch.manual_seed(0)
    model = GPT(gpt_config(args.model, block_size=(args.image_size // 16) ** 2)).to(dev).eval()
    s, equal, first, gaps = Sampling(cfg_scale=args.cfg_scale), 0, [], []
    amp = torch.autocast(dev.type, torch.bfloat16)
    for seed in range(args.repeat):
        cond = torch.full((n,), seed, device=dev)
        t32 = generate(model, cond, s, generator=torch.Generator(dev).manual_seed(seed))
        with amp:
            t16 = generate(model, cond, s, generator=torch.Generator(dev).manual_seed(seed))
        same = t32 == t16                                                    # (n, N)
        equal += same.all(1).sum().item()
        first += [int((~row).nonzero()[0]) for row in same if not row.all()]
        lp32 = model(cond, t32).float().log_softmax(-1).gather(-1, t32[..., None])
        with amp:
            lp16 = model(cond, t32).float().log_softmax(-1).gather(-1, t32[..., None])
        gaps.append((lp16 - lp32).abs().flatten())
    gap, images = torch.cat(gaps), n * args.repeat
    res = {"model": args.model, "images": images, "tokens": model.config.block_size,
           "identical_images": equal / images,
           "median_first_difference": sorted(first)[len(first) // 2] if first else None,
           "logp_gap_mean": gap.mean().item(), "logp_gap_max": gap.max().item()}
    print(json.dumps(res))
    return res


# ----------------------------------------------------------------------------- command line

def parser():
    # the first paragraph of the docstring, as one line
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--model", default="GPT-B", choices=list(GPT_PRESETS),
                   help="GPT preset (random weights)")
    p.add_argument("--images", default="4,16", help="comma-separated numbers of images per batch")
    p.add_argument("--cfg-scale", type=float, default=2.0,
                   help="classifier-free guidance scale (1 = none: half the decode batch)")
    p.add_argument("--image-size", type=int, default=256,
                   help="sampling: pixels of the generated image (tokens = (size / 16)^2); "
                        "--rewards, --agreement: pixels of the scored images")
    p.add_argument("--device", default=None,
                   help="default cpu; --rewards, --agreement: cuda when available")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32",
                   help="the model's (--rewards, --agreement: the reward models') dtype")
    p.add_argument("--repeat", type=int, default=3,
                   help="best of N runs (--rewards: the mean of N timed calls per reward)")
    p.add_argument("--official", default="",
                   help="path to a FoundationVision/LlamaGen checkout: time its generate() too, "
                        "same weights")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--step", action="store_true",
                      help="time one GRPO step of train.py phase by phase instead")
    mode.add_argument("--rewards", action="store_true",
                      help="time each reward of --reward-list (images/s) instead")
    mode.add_argument("--agreement", action="store_true",
                      help="the judge's fast vs generate modes: Spearman rank correlation")
    mode.add_argument("--precision", action="store_true",
                      help="fp32 vs bf16 autocast rollouts: token and log-prob differences")
    p.add_argument("--paper-size", action="store_true",
                   help="--step: a paper preset's step at real size, phase by phase "
                        "(tools/bench_paper.py; see its --help for the flags that follow)")
    p.add_argument("--steps", type=int, default=2,
                   help="--step: train.py steps to run; the last is reported")
    p.add_argument("--step-flags", default="",
                   help="--step: extra train.py flags, e.g. '--compile' or '--grad-checkpoint'")
    p.add_argument("--train", default=os.path.join(HERE, "train.py"),
                   help="--step: the train.py to time (e.g. another checkout's)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="sampling: --no-compile times the eager path in the compiled column too; "
                        "--step: train with --compile")
    p.add_argument("--reward-list", default=",".join(BENCH_REWARDS),
                   help="--rewards: comma-separated reward names ('qwen': its three questions)")
    p.add_argument("--batch", type=int, default=8, help="--rewards: images per reward call")
    p.add_argument("--real", action="store_true",
                   help="--rewards, --agreement: real weights and sizes (caches / flags as usual)")
    p.add_argument("--judge-tokens", type=int, default=256,
                   help="--rewards, --agreement: the generate-mode judge's answer cap in tokens")
    p.add_argument("--agreement-images", default=None,
                   help="--agreement: a folder of images, file names as prompts "
                        "(default: 32 synthetic)")
    p.add_argument("--qwen-path", default=None,
                   help="--rewards, --agreement with --real: a Qwen2.5-VL-3B-Instruct folder")
    p.add_argument("--json", default="", help="also write the figures to this JSON file")
    return p


OFFICIAL_GPT = os.path.join("autoregressive", "models", "gpt.py")  # in a LlamaGen checkout
IMAGE_FILES = (".png", ".jpg", ".jpeg")                             # --agreement-images
RANGE_CHECKS = [
    ("--cfg-scale", lambda v: 0 <= v < math.inf, "a finite number >= 0"),
    ("--image-size", lambda v: 0 < v <= 4096 and v % 16 == 0, "a multiple of 16 in [16, 4096]"),
    ("--repeat", lambda v: v >= 1, ">= 1"),
    ("--steps", lambda v: v >= 1, ">= 1"),
    ("--batch", lambda v: v >= 1, ">= 1"),
    ("--judge-tokens", lambda v: v >= 1, ">= 1"),
]


def parse_args(argv=None):
    """The flags, every one checked before anything runs: numbers, device, names, the paths
    read and the --json written (one line each). -> (args, --images as ints, reward names)."""
    p = parser()
    args = p.parse_args(argv)
    sizes = [x.strip() for x in args.images.split(",")]
    if not all(x.isdigit() for x in sizes):
        p.error(f"--images must be comma-separated integers, got {args.images!r}")
    sizes = [int(x) for x in sizes]
    cuda = (args.rewards or args.agreement) and torch.cuda.is_available()
    args.device = args.device or ("cuda" if cuda else "cpu")
    error = range_errors(args, RANGE_CHECKS) or device_error(args.device)
    if error or min(sizes) < 1:
        p.error(error or f"--images must all be >= 1, got {args.images}")
    names = []
    if args.rewards:
        try:
            names = [n for n, _ in parse_spec(args.reward_list)]
        except ValueError as e:
            p.error(f"--reward-list: {e}")
    if args.step:
        check_readable(args.train, "--train")
    for flag, path in (("--official", args.official), ("--agreement-images",
                       args.agreement_images), ("--qwen-path", args.qwen_path)):
        if path:
            check_readable(path, flag, folder=True)
    if args.official and not os.path.isfile(os.path.join(args.official, OFFICIAL_GPT)):
        p.error(f"--official {args.official} is not a LlamaGen checkout (no {OFFICIAL_GPT})")
    if args.agreement_images and not any(f.lower().endswith(IMAGE_FILES)
                                         for f in os.listdir(args.agreement_images)):
        p.error(f"--agreement-images {args.agreement_images} holds no {'/'.join(IMAGE_FILES)}")
    check_writable(args.json, "--json", suffixes=[".json"])       # not after the benchmark
    return args, sizes, names


def check_bench_memory(args, sizes, dev):
    """The largest allocations must fit: the sampler's KV caches (times 3: ours, the floor's and
    the LlamaGen-style loop's), or the scored images."""
    if args.rewards or args.agreement:
        n = args.batch if args.rewards else 32
        return check_memory(16 * n * args.image_size ** 2 * 3, args.device,
                            f"--batch {n} at --image-size {args.image_size}")
    if not args.step:
        config = gpt_config(args.model, block_size=(args.image_size // 16) ** 2)
        rows = max(sizes) * (1 + (args.cfg_scale != 1.0))
        check_memory(3 * kv_cache_bytes(config, rows), dev,
                     f"--images {max(sizes)} of --model {args.model} at --image-size "
                     f"{args.image_size}")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--paper-size" in argv:   # its own flags: --preset, --size, the variants
        from tools import bench_paper
        return bench_paper.main([a for a in argv if a not in ("--step", "--paper-size")])
    args, sizes, names = parse_args(argv)
    dev = torch.device(args.device)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    check_bench_memory(args, sizes, dev)
    if args.rewards or args.agreement:
        res = bench_judge_or_rewards(args, names, dtype)
    elif args.precision:
        res = bench_precision(args, dev, sizes[0])
    else:
        res = bench_step(args, dev, dtype) if args.step else bench_sampling(args, dev, dtype)
    if args.json:
        write_json(args.json, res)


if __name__ == "__main__":
    run_cli(main)  # one-line errors, Ctrl-C, a failed write (plumbing/stops.py)
