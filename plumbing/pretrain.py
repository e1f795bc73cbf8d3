"""Pretraining the MNIST world (plumbing/mnist.py) once per machine, as LlamaGen is pretrained at
scale: a tokenizer, then a class-conditional GPT trained by next-token cross-entropy with class
dropout (so CFG works), then the reward networks and the judge. `--pretrain mnist` (train.py,
the mnist preset) and `sample.py --preset mnist` call `pretrained`; `tools/pretrain.py` runs it
on its own.

    CACHE/<recipe>-<hash>/tokenizer.pt   PatchVQ's codebook (--vq-ckpt)
                          gpt.pt         the base GPT, our checkpoint layout (--gpt-ckpt)
                          rewards.pt     DigitCNN and the realism subspace (--digit-ckpt)
                          judge.pt       JudgeNet (tools/eval.py compare)

CACHE: --cache-dir, else $ARGRPO_CACHE, else ~/.cache/argrpo. <hash>: of the recipe, so a changed
recipe never reads another's files. Each file is written atomically when complete (an interrupted
pretraining resumes at the first missing one), and a lock file makes a second process wait for
the first rather than train the same models again. Deterministic: every draw comes from a
generator seeded by the recipe (the same recipe on the same machine and thread count makes the
same files); train.py's --seed does not touch the base, so runs of several seeds share it.
"""
import fcntl
import hashlib
import json
import math
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm

from plumbing import mnist
from plumbing.files import save_atomic
from plumbing.formats import run_args
from plumbing.rundir import model_state
from plumbing.standins import seeded

FILES = ("tokenizer", "rewards", "judge", "gpt")   # made in this order


@dataclass(frozen=True)
class Recipe:
    """Everything the pretraining depends on (its hash names the cache folder)."""
    held_out: int = 100          # digits per class held out (the judge's); the other 400 train
    patch: int = 4               # 28 / 4 = 7x7 tokens per image
    codes: int = 256             # the k-means codebook (code 0: the blank patch)
    kmeans_iters: int = 20
    gpt_model: str = "GPT-mnist"  # model.py's GPT_PRESETS
    gpt_steps: int = 1200
    gpt_batch: int = 64
    gpt_lr: float = 2e-3         # peak; warmup, then cosine decay to 0
    shifts: int = 3              # extra copies of each training digit, shifted by <= 2 px
    class_dropout: float = 0.1   # LlamaGen's: the null class (CFG) in 10% of the sequences
    classifier_steps: int = 300  # DigitCNN and JudgeNet, batches of 64 augmented digits
    realism_dims: int = 32
    seed: int = 0


RECIPES = {
    "mnist": Recipe(),
    # the tests' and the smoke run's: 4x4 tokens of 7x7 patches, GPT-tiny, seconds
    "mnist-tiny": Recipe(patch=7, codes=64, kmeans_iters=8, gpt_model="GPT-tiny", gpt_steps=1000,
                         gpt_batch=32, gpt_lr=3e-3, shifts=1, classifier_steps=100,
                         realism_dims=16),
}


def cache_root(cache_dir=""):
    return os.path.expanduser(cache_dir or os.environ.get("ARGRPO_CACHE")
                              or os.path.join("~", ".cache", "argrpo"))


def folder(name, cache_dir=""):
    r = RECIPES[name]
    digest = hashlib.md5(json.dumps(asdict(r), sort_keys=True).encode()).hexdigest()[:8]
    return os.path.join(cache_root(cache_dir), f"{name}-{digest}")


def paths(name, cache_dir=""):
    """{file: path} of a recipe's cached files (they may not exist yet)."""
    return {f: os.path.join(folder(name, cache_dir), f"{f}.pt") for f in FILES}


@contextmanager
def locked(path):
    """An exclusive lock on `path` (created) for the duration: one pretraining at a time."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def pretrained(name, GPT, gpt_config, cache_dir="", log=print):
    """The recipe's files, made first where missing (minutes, once per machine). GPT and
    gpt_config: model.py's (plumbing does not import the reading path). -> {file: path}."""
    if name not in RECIPES:
        raise SystemExit(f"error: unknown pretraining recipe {name!r}; "
                         f"choose from {', '.join(RECIPES)}")
    out = paths(name, cache_dir)
    if all(os.path.isfile(p) for p in out.values()):
        return out
    with locked(os.path.join(folder(name, cache_dir), ".lock")):
        todo = [f for f in FILES if not os.path.isfile(out[f])]    # another process may have made
        if todo:
            log(f"pretraining the {name} world ({', '.join(todo)}) into "
                f"{folder(name, cache_dir)}: once per machine")
            make(RECIPES[name], todo, out, GPT, gpt_config, log)
    return out


def use_pretrained(args, GPT, gpt_config):
    """train.py --pretrain NAME: the recipe's files (made where missing), filled into the empty
    --gpt-ckpt, --vq-ckpt and --digit-ckpt (a flag given keeps its value: e.g. GRPO from a tuned
    run's weights)."""
    files = pretrained(args.pretrain, GPT, gpt_config, args.cache_dir)
    for flag, f in (("gpt_ckpt", "gpt"), ("vq_ckpt", "tokenizer"), ("digit_ckpt", "rewards")):
        if not getattr(args, flag):
            setattr(args, flag, files[f])


def mnist_models(gpt_ckpt, GPT, gpt_config, cache_dir=""):
    """sample.py --preset mnist: (GPT path, tokenizer path): gpt_ckpt (a run of --pretrain) with its
    run's tokenizer, or without one the mnist recipe's pretrained base."""
    if gpt_ckpt and not os.path.isfile(gpt_ckpt):
        raise SystemExit(f"error: --gpt-ckpt {gpt_ckpt} does not exist")
    run = run_args(gpt_ckpt) if gpt_ckpt else None
    if gpt_ckpt and not getattr(run, "pretrain", ""):
        raise SystemExit(f"error: --preset mnist samples the pretrained base or a train.py run of "
                         f"it (--preset mnist); --gpt-ckpt {gpt_ckpt} is not such a run")
    name = run.pretrain if run else "mnist"
    files = pretrained(name, GPT, gpt_config, cache_dir or getattr(run, "cache_dir", ""))
    return gpt_ckpt or files["gpt"], files["tokenizer"]


def make(r, todo, out, GPT, gpt_config, log):
    """Make the files of `todo`, in FILES order, each saved as soon as it is complete."""
    train, held = mnist.split(*mnist.read_digits(), r.held_out, r.seed)
    log(f"data: MNIST-5k, {len(train[0])} training / {len(held[0])} held-out digits")
    for f in todo:
        t0 = time.time()
        if f == "tokenizer":
            state, note = make_tokenizer(r, train)
        elif f == "rewards":
            state, note = make_rewards(r, train, held)
        elif f == "judge":
            state, note = make_judge(r, train, held)
        else:
            vq = mnist.PatchVQ.load(out["tokenizer"])
            state, note = make_gpt(r, train, held, vq, GPT, gpt_config)
        save_atomic(state, out[f])
        log(f"{f}: {note} ({time.time() - t0:.1f} s)")


def make_tokenizer(r, train):
    vq = mnist.PatchVQ.fit(train[0], r.codes, r.patch, r.kmeans_iters, r.seed + 1)
    x = train[0][:1000]
    mse = (vq.decode(vq.encode(x)).mean(1) / 2 + 0.5 - x).pow(2).mean().item()
    return ({"codebook": vq.codebook, "patch": r.patch, "recipe": asdict(r)},
            f"k-means, {r.codes} codes of {r.patch}x{r.patch} patches, "
            f"reconstruction MSE {mse:.4f}")


def fit_classifier(net, x, y, steps, seed, desc, batch=64, lr=3e-3):
    """AdamW on randomly rotated, scaled and shifted digits x (n, H, W), cosine decay."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    net.train()
    for step in tqdm(range(steps), desc=desc, unit="step", leave=False):
        opt.param_groups[0]["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        idx = torch.randint(len(x), (batch,), generator=gen)
        loss = F.cross_entropy(net(mnist.augment(x[idx, None], gen)), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return net.eval().requires_grad_(False)


def make_rewards(r, train, held):
    with seeded(r.seed + 2):
        net = mnist.DigitCNN()
    net = fit_classifier(net, *train, r.classifier_steps, r.seed + 2, "digit reward CNN")
    acc = mnist.accuracy(net, *held)
    sub = mnist.fit_subspace(train[0], r.realism_dims)
    return ({"digit": net.state_dict(), "width": 16, "realism": sub, "held_out_accuracy": acc,
             "recipe": asdict(r)},
            f"digit CNN {100 * acc:.1f}% on the held-out digits; realism: "
            f"{r.realism_dims}-dim principal subspace")


def make_judge(r, train, held):
    with seeded(r.seed + 5):
        net = mnist.JudgeNet()
    net = fit_classifier(net, *held, r.classifier_steps, r.seed + 5, "judge (held-out digits)")
    acc = mnist.accuracy(net, *train)
    return ({"judge": net.state_dict(), "width": 24, "train_accuracy": acc, "recipe": asdict(r)},
            f"judge {100 * acc:.1f}% on the {len(train[0])} training digits it never saw")


def shifted(x, gen, m=2):
    """Each digit of x (n, H, W) moved by its own random (dy, dx), |d| <= m px, zeros moved in."""
    s = torch.randint(-m, m + 1, (len(x), 2), generator=gen)
    pad, (H, W) = F.pad(x, (m, m, m, m)), x.shape[1:]
    out = torch.empty_like(x)
    for dy in range(-m, m + 1):
        for dx in range(-m, m + 1):
            sel = (s[:, 0] == dy) & (s[:, 1] == dx)
            out[sel] = pad[sel, m - dy:m - dy + H, m - dx:m - dx + W]
    return out


def make_gpt(r, train, held, vq, GPT, gpt_config):
    gen = torch.Generator().manual_seed(r.seed + 3)
    x, y = train
    copies = [x] + [shifted(x, gen) for _ in range(r.shifts)]
    tokens = torch.cat([vq.encode(c).flatten(1) for c in copies])            # (n, N)
    labels = y.repeat(len(copies))
    side = mnist.SIDE // r.patch
    with seeded(r.seed + 3):
        gpt = GPT(gpt_config(r.gpt_model, vocab_size=r.codes, block_size=side * side,
                             num_classes=mnist.CLASSES, class_dropout_prob=r.class_dropout))
    train_loss = train_gpt(gpt, tokens, labels, r, gen)
    with torch.no_grad():
        t = vq.encode(held[0]).flatten(1)
        held_loss = F.cross_entropy(gpt(held[1], t).flatten(0, 1), t.flatten()).item()
    n = sum(p.numel() for p in gpt.parameters()) / 1e6
    stats = {"train_loss": train_loss, "held_out_loss": held_loss}
    return ({**model_state(gpt, mnist.SIDE), "pretrain": stats, "recipe": asdict(r)},
            f"{r.gpt_model} {n:.2f}M params, {r.gpt_steps} steps of {r.gpt_batch}; loss "
            f"{train_loss:.3f} (training, last 50 steps) / {held_loss:.3f} (held-out) nats/token")


def train_gpt(gpt, tokens, labels, r, gen):
    """Next-token cross-entropy, teacher forcing, LlamaGen's recipe in small: AdamW (0.9, 0.95),
    weight decay 0.05 on matrices, grad clip 1, class dropout, the model's dropouts on; linear
    warmup then cosine decay. -> the mean loss of the last 50 steps. Leaves gpt in eval mode."""
    decay = [p for p in gpt.parameters() if p.dim() >= 2]
    rest = [p for p in gpt.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": rest}],
                            lr=r.gpt_lr, betas=(0.9, 0.95), weight_decay=0.0)
    warmup, losses = max(1, r.gpt_steps // 20), []
    gpt.train()
    bar = tqdm(range(r.gpt_steps), desc=f"pretrain {r.gpt_model}", unit="step")
    with seeded(r.seed + 4):                  # the model's dropouts draw from the global RNG
        for step in bar:
            lr = r.gpt_lr * min(1, (step + 1) / warmup)
            lr *= 0.5 * (1 + math.cos(math.pi * step / r.gpt_steps))
            for g in opt.param_groups:
                g["lr"] = lr
            idx = torch.randint(len(tokens), (r.gpt_batch,), generator=gen)
            drop = torch.rand(r.gpt_batch, generator=gen) < r.class_dropout
            cond = labels[idx].masked_fill(drop, mnist.CLASSES)        # the null class
            logits = gpt(cond, tokens[idx])                             # (B, N, V)
            loss = F.cross_entropy(logits.flatten(0, 1), tokens[idx].flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(gpt.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
            if step % 20 == 0:
                bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
    gpt.eval()
    return sum(losses[-50:]) / len(losses[-50:])
