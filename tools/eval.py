"""eval.py: what a user measures and sees after an AR-GRPO run. Four commands:

  python tools/eval.py compare --tuned out/tiny/ckpt.pt --diversity pixel --out out/tiny/eval
      base vs tuned: rewards, diversity, entropy, a grid
  python tools/eval.py fid --npz samples/B256.npz --ref VIRTUAL_imagenet256_labeled.npz
      FID / IS / precision / recall
  python tools/eval.py plot out/tiny
      training curves -> PNG
  python tools/eval.py drawbench --tuned RUN/ckpt.pt --prompts drawbench_test_1000.json --out DIR
      T2I scorers, base vs tuned

drawbench: base vs tuned on a prompt set (AR-GRPO's DrawBench JSON), --per-prompt images of prompt
j from the seed mix(seed, j) for both models (the base at --base-cfg-scale when given: AR-GRPO's
maintainer evaluated the LlamaGen baseline at 7.5), scored by --scorers (any reward; default clip,
hps, pickscore, imagereward, aesthetic). Per scorer: mean over images, sem = std of the per-prompt
means / sqrt(P), delta = tuned - base with the paired sem of the per-prompt differences;
`argrpo_scale` = the means as AR-GRPO's script prints them; `cfg_scale` of base and tuned.
Resumable: every prompt's scores are appended to DIR/scores.jsonl, and a re-run skips the prompts
there.

compare: base = the run's initial weights (its --gpt-ckpt, or its seeded random init, rebuilt
exactly as train.py builds its reference), unless --base names a file. For condition j (a class id
or a prompt) both models sample --per-class images from the same generator seed (seed, j), so base
and tuned differ only by their weights. Per model, means over the images:
  rewards    every component of --rewards (default: the run's) and the weighted total;
  diversity  mean over conditions of the mean over pairs i < j of d(x_i, x_j) within a condition:
             lpips  LPIPS (Zhang et al. 2018, AlexNet, via pyiqa): the real path, needs its weights;
             pixel  1 - cos(x_i, x_j) of the images in [-1, 1]: weight-free. Identical images -> 0;
  entropy    H = mean_t -sum_v p(v | c, x_<t) log p(v | c, x_<t),
             p = sampling_logprobs(cfg_logits(..)).exp(): the distribution the sampler draws from
             (CFG, temperature, top-k, top-p); uniform -> log V.
It writes OUT/report.json and OUT/grid.png (a row per condition: base images | tuned images).

fid: the ADM protocol (Dhariwal & Nichol 2021, guided-diffusion/evaluations) on the uint8 NHWC .npz
that sample.py writes (384 px models: sample.py --image-size-eval 256, bicubic, as LlamaGen does).
Features f: TF Inception-v3 (2015-12-05) as ported by pytorch-fid and shipped in pyiqa; images are
resized to 299 with TF1's bilinear rule and scaled (x - 128) / 128 as the TF graph does; f = pool3
(2048), logits = f W^T (1008, no bias, as ADM's evaluator).
  FID       = |mu_r - mu_g|^2 + Tr(S_r + S_g - 2 (S_r S_g)^1/2)
              (r: the reference's stored mu, sigma)
  IS        = exp(E_x KL(p(y|x) || p(y))), per split of 5000 samples, averaged
              (Salimans et al. 2016)
  precision = share of generated f inside the real manifold; recall = share of real f inside the
              generated one; manifold = union of balls around each point of a set, radius = distance
              to its k-th (k = 3) nearest neighbour in that set (Kynkaanniemi et al. 2019; ADM).
Why pyiqa: already required (the MANIQA reward), and it ships the TF-Inception port with its
1008-way head (for IS) and TF1's resize; torch-fidelity or clean-fid would add a dependency for the
same network.

plot: reward (total and per component), KL, entropy, clip fraction and zero-std fraction over steps
from RUN/metrics.jsonl to RUN/plots/*.png (and RUN/tb with --tensorboard).
"""
import argparse
import json
import math
import os
import sys
from contextlib import nullcontext
from dataclasses import asdict, replace

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository

from grpo import policy_logprobs  # noqa: E402  (the repository on the path first)
from model import GPT, Sampling, generate, gpt_config  # noqa: E402
from plumbing import lora  # noqa: E402
from plumbing.files import (WriteFailed, atomic_write, check_readable,  # noqa: E402
                            check_writable, read_json, read_jsonl, read_npz, write_json)
from plumbing.flags import (CPU_THREADS_CHECK, SAMPLER_CHECKS, SEED_CHECK,  # noqa: E402
                            check_memory, device_error, forward_bytes, kv_cache_bytes,
                            missing_files, path_kind_errors, range_errors)
from plumbing.formats import (check_keys, load_checkpoint, run_args,  # noqa: E402
                              state_dict_of)
from plumbing.images import save_grid, to_uint8  # noqa: E402
from plumbing.mnist import HeldOutJudge  # noqa: E402
from plumbing.pretrain import RECIPES, pretrained  # noqa: E402
from plumbing.prompts import class_prompts, read_prompts  # noqa: E402
from plumbing.reward_models import WEIGHT_ARGS, reward_options  # noqa: E402
from plumbing.standins import TINY_PROMPTS  # noqa: E402
from plumbing.stops import on_stop, run_cli  # noqa: E402
from plumbing.weights import BadCheckpoint, MissingCheckpoint, find_weights  # noqa: E402
from rewards import build_rewards, parse_spec  # noqa: E402
from train import build_models, mix  # noqa: E402
from train import get_args as train_args  # noqa: E402


# ----------------------------------------------------------------------------- metrics
# Pure functions of features, logits and images: no weights, no files.
def fid_from_stats(mu1, sigma1, mu2, sigma2):
    """Frechet distance of two Gaussians, in float64. Tr((S1 S2)^1/2) = sum of the square roots of
    the eigenvalues of S1 S2 (real, >= 0: S1 S2 is similar to S1^1/2 S2 S1^1/2); rounding leaves
    tiny negative / imaginary parts, which .sqrt().real drops."""
    mu1, s1, mu2, s2 = (torch.as_tensor(np.asarray(x), dtype=torch.float64)
                        for x in (mu1, sigma1, mu2, sigma2))
    tr_sqrt = torch.linalg.eigvals(s1 @ s2).sqrt().real.sum()
    return ((mu1 - mu2).square().sum() + s1.trace() + s2.trace() - 2 * tr_sqrt).item()


def feature_stats(f):  # (n, d) -> mean (d,), covariance (d, d)
    f = torch.as_tensor(f, dtype=torch.float64)
    return f.mean(0), torch.cov(f.T)


def inception_score(logits, split_size=5000):
    """exp(mean_x KL(p(y|x) || p(y))) per split of split_size samples (ADM's evaluator),
    averaged."""
    scores = []
    for chunk in torch.as_tensor(logits, dtype=torch.float64).split(split_size):
        logp = chunk.log_softmax(-1)                        # (n, C)
        logp_y = logp.exp().mean(0).log()                   # (C,) the marginal over the split
        scores.append((logp.exp() * (logp - logp_y)).sum(1).mean().exp().item())
    return float(np.mean(scores))


def knn_radii(x, k=3, block=2048):
    """(n, d) -> (n,): distance of each point to its k-th nearest neighbour in x (itself is the
    0th)."""
    return torch.cat([torch.cdist(b, x).kthvalue(k + 1, dim=1).values for b in x.split(block)])


def coverage(q, x, radii, block=2048):
    """Share of the points q (m, d) inside at least one ball (x_i, radii_i)."""
    inside = torch.cat([(torch.cdist(b, x) <= radii).any(1) for b in q.split(block)])   # (m,)
    return inside.float().mean().item()


def precision_recall(real, fake, k=3):
    real, fake = torch.as_tensor(real).float(), torch.as_tensor(fake).float()
    return coverage(fake, real, knn_radii(real, k)), coverage(real, fake, knn_radii(fake, k))


def cosine_distance(a, b):  # (n, ...) x2 -> (n,) 1 - cos of the flattened pairs
    return 1 - F.cosine_similarity(a.flatten(1).double(), b.flatten(1).double(), dim=1)


def pairwise_diversity(x, dist=cosine_distance, block=256):
    """x (G, ...): the images of one condition -> mean of dist(x_i, x_j) over the pairs i < j
    (G (G - 1) / 2 pairs, scored `block` pairs at a time: LPIPS at 256 px is memory-hungry)."""
    i, j = torch.triu_indices(len(x), len(x), 1)
    pairs = zip(i.split(block), j.split(block))
    return torch.cat([dist(x[a], x[b]) for a, b in pairs]).mean().item()


@torch.no_grad()
def token_entropy(model, cond, tokens, s, cond_mask=None):
    """(B,): per image, the mean over its N tokens of the entropy of the distribution the sampler
    drew from with the settings s (model.Sampling)."""
    _, ent = policy_logprobs(model, cond, tokens, "cfg", s, cond_mask)
    return ent.mean(1)                                                # (B, N) -> (B,)


# ----------------------------------------------------------------------------- feature networks
# The networks behind FID / IS / P / R and LPIPS, and where their weights are found.
INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
# pyiqa's cache, torchvision's cache
LPIPS_FILES = ["LPIPS_v0.1_alex-df73285e.pth", "alexnet-owt-7be5be79.pth"]
# below this AlexNet's second max-pool has no output (measured: 30 px fails, 31 works)
LPIPS_MIN_PX = 31


def build_inception(ckpt="", device="cpu"):
    """The FID Inception. ckpt: a file, '' = pyiqa's cache (downloaded if huggingface.co answers),
    or 'random' = random weights, for offline tests of the pipeline only (the numbers mean
    nothing)."""
    import torchvision
    from pyiqa.archs.inception import (FID_WEIGHTS_URL, FIDInceptionA, FIDInceptionC,
                                       FIDInceptionE_1, FIDInceptionE_2)
    from pyiqa.utils.download_util import DEFAULT_CACHE_DIR, load_file_from_url
    torch.manual_seed(0)
    net = torchvision.models.inception_v3(weights=None, aux_logits=False, num_classes=1008,
                                          init_weights=False)
    tf_blocks = [("Mixed_5b", FIDInceptionA(192, 32)), ("Mixed_5c", FIDInceptionA(256, 64)),
                 ("Mixed_5d", FIDInceptionA(288, 64)), ("Mixed_6b", FIDInceptionC(768, 128)),
                 ("Mixed_6c", FIDInceptionC(768, 160)), ("Mixed_6d", FIDInceptionC(768, 160)),
                 ("Mixed_6e", FIDInceptionC(768, 192)), ("Mixed_7b", FIDInceptionE_1(1280)),
                 ("Mixed_7c", FIDInceptionE_2(2048))]
    for name, block in tf_blocks:
        setattr(net, name, block)                     # the TF graph's variants of these blocks
    if ckpt != "random":
        cached = os.path.join(DEFAULT_CACHE_DIR, INCEPTION_FILE)

        def fetch(local):   # pyiqa's cache, else pyiqa's download
            if os.path.isfile(cached):
                return cached
            if local:
                raise FileNotFoundError(cached)
            return load_file_from_url(FID_WEIGHTS_URL)
        path = find_weights("FID Inception", "--inception-ckpt", ckpt, fetch, file=INCEPTION_FILE,
                            where=f"{cached} (pyiqa cache)", names=[INCEPTION_FILE],
                            fix=f"download {FID_WEIGHTS_URL} and pass --inception-ckpt PATH")
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return net.to(device).eval().requires_grad_(False)


@torch.no_grad()
def inception_features(net, images, batch_size=100, desc="inception"):
    """uint8 (n, H, W, 3) -> pool3 features (n, 2048), unbiased logits (n, 1008), float64 on the
    CPU."""
    from pyiqa.archs.interpolate_compat_tensorflow import (
        interpolate_bilinear_2d_like_tensorflow1x as tf_resize)
    dev, pools = next(net.parameters()).device, []
    for i in tqdm(range(0, len(images), batch_size), desc=desc, unit="batch"):
        x = torch.as_tensor(images[i:i + batch_size]).to(dev)
        x = x.permute(0, 3, 1, 2).float()                            # (b, 3, H, W) in [0, 255]
        x = (tf_resize(x, size=(299, 299), align_corners=False) - 128) / 128
        for name, layer in net.named_children():
            if name in ("dropout", "fc"):
                break
            x = layer(x)
        pools.append(x.flatten(1).double().cpu())                     # (b, 2048)
    pool = torch.cat(pools)
    return pool, pool @ net.fc.weight.double().cpu().T


def build_lpips(device):
    """LPIPS distance fn(a, b) -> (n,) on images in [0, 1]; one-line MissingCheckpoint offline
    without weights."""
    from pyiqa.utils.download_util import DEFAULT_CACHE_DIR
    paths = [os.path.join(DEFAULT_CACHE_DIR, LPIPS_FILES[0]),
             os.path.join(torch.hub.get_dir(), "checkpoints", LPIPS_FILES[1])]

    def fetch(local):   # both files cached; else pyiqa downloads them when it builds the metric
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing and local:
            raise FileNotFoundError(", ".join(missing))
        return paths
    find_weights("LPIPS", None, fetch=fetch, file=" and ".join(LPIPS_FILES),
                 where="the pyiqa / torchvision caches (under TORCH_HOME)",
                 fix=f"put them there ({', '.join(paths)}), or use --diversity pixel")
    import pyiqa
    net = pyiqa.create_metric("lpips", device=device, as_loss=False)
    return lambda a, b: net(a, b).flatten().double()


# ----------------------------------------------------------------------------- shared
# What compare and drawbench share: the two models, the sampler, the scorer, the grid.
SAMPLER_SETTINGS = ("cfg_scale", "temperature", "top_k", "top_p", "cfg_interval")


def load_pair(args, device):
    """(base, tuned, vq, text encoder or None, the run's train args) from the tuned checkpoint,
    which must hold a GPT (one line naming what it holds otherwise)."""
    ck = load_checkpoint(args.tuned)
    adapted = isinstance(ck, dict) and ck.get("lora")  # a LoRA run: adapters, folded in below
    sd = ck["model"] if adapted else state_dict_of(ck, args.tuned, "--tuned", "gpt")
    if isinstance(ck.get("args"), dict):
        targs = argparse.Namespace(**ck["args"])
    else:   # a bare GPT file: train.py's defaults for the task (its presets live there)
        targs = train_args(["--task", args.task])
    for key, flag in (("base", "gpt_ckpt"), ("vq_ckpt", "vq_ckpt"), ("t5_path", "t5_path")):
        if getattr(args, key):
            setattr(targs, flag, getattr(args, key))
    wrong = path_kind_errors(targs, gpt_flag="--base")
    if wrong:
        raise BadCheckpoint("; ".join(wrong))
    missing = missing_files(targs, gpt_flag="--base")
    if missing:
        raise MissingCheckpoint(f"missing weights: {', '.join(missing)}; "
                                f"pass the file(s) with the flag(s)")
    targs.lora_rank = 0   # base and tuned both built plain (a LoRA run's base: its --gpt-ckpt)
    tuned, base, vq, text = build_models(targs, device)        # base: the run's initial weights
    if adapted:           # the run's policy: its base, the saved adapters on it, merged
        lora.fold(tuned, adapted, sd, f"--tuned {args.tuned}")
    else:
        check_keys(tuned, sd, what=f"--tuned {args.tuned}")
        tuned.load_state_dict(sd)
    return base, tuned, vq, text, targs


def sampler_settings(args, targs):
    """The evaluation's sampler (model.Sampling): each setting from its flag, else the run's."""
    settings = {}
    for k in SAMPLER_SETTINGS:
        flag = getattr(args, k)
        settings[k] = getattr(targs, k) if flag is None else flag
    return Sampling(**settings)


def base_description(targs):
    """What the base model is, for the report: its file, or the run's seeded random init."""
    return targs.gpt_ckpt or f"random init, seed {targs.seed} ({targs.gpt_model})"


def build_scorer(spec, args, targs, device, **kw):
    """The reward scorer of an evaluation: each weights path from its flag here, else the run's
    (targs may be None); the run's judge mode (else fast) and reward inputs, precision and MANIQA
    crop range (docs/fidelity.md); bf16 reward models on CUDA. The rewards' random numbers (MANIQA's
    crops) come from torch's global RNG: the callers seed it per condition."""
    options = reward_options(targs)
    options.update({k: getattr(args, k) for k in WEIGHT_ARGS if getattr(args, k, None)})
    return build_rewards(spec, device=device, judge_mode=getattr(targs, "judge_mode", "fast"),
                         seed=args.seed, dtype=torch.bfloat16 if device.type == "cuda" else None,
                         **kw, **options)


def autocast_like_run(device, targs):
    """bf16 autocast on CUDA when the run trained in bf16, else nothing."""
    if device.type == "cuda" and targs.bf16:
        return torch.autocast("cuda", torch.bfloat16)
    return nullcontext()


def side_by_side(base_rows, tuned_rows, min_px=64):
    """uint8 rows (k, H, W, 3) -> (one grid, images per grid row): base | white gap | tuned per
    row, small images upscaled, framed."""
    rows = []
    for b, t in zip(base_rows, tuned_rows):
        rows += [b, torch.full_like(b[:1], 255), t]
    x = torch.cat(rows)                                          # (rows * (2k + 1), H, W, 3)
    s = max(1, min_px // x.shape[1])
    x = x.repeat_interleave(s, 1).repeat_interleave(s, 2)
    x = F.pad(x, (0, 0, 1, 1, 1, 1), value=255)                  # a 1 px white frame
    return x, 2 * len(base_rows[0]) + 1


def save_side_by_side(base_rows, tuned_rows, path):
    """The grid of base | tuned rows at `path` (written atomically); none for no rows
    (--grid-rows 0). -> whether a grid was written."""
    if not base_rows:
        return False
    grid, ncol = side_by_side(base_rows, tuned_rows)
    save_grid(grid, path, nrow=ncol)
    return True


# ----------------------------------------------------------------------------- compare
# Base vs tuned on the same seeds: rewards, diversity, entropy.
@torch.no_grad()
def evaluate(model, vq, text, conds, prompts, scorer, diversity, s, args, amp, desc="evaluate",
             judge=None):
    """Sample, score and measure one model on every condition (and judge it: judge_metrics);
    returns (metrics, a few uint8 images per condition)."""
    rewards, parts, ents, divs, keep, judged = [], {}, [], [], [], []
    dev, G = next(model.parameters()).device, args.per_class
    conditions = list(zip(conds, prompts))
    for j, (c, prompt) in enumerate(tqdm(conditions, desc=desc, unit="condition")):
        mask = None
        if text is None:
            cond = torch.full((G,), c, device=dev)                       # (G,) class ids
        else:
            feats, mask = text([c])
            cond, mask = feats.expand(G, -1, -1), mask.expand(G, -1)     # (G, 120, C), (G, 120)
        gen = torch.Generator(dev).manual_seed(mix(args.seed, j))   # the same for base and tuned
        with amp:
            tokens = generate(model, cond, s, cond_mask=mask, generator=gen,
                              compile=args.compile)                                  # (G, N)
            images = vq.decode(tokens).float().clamp(-1, 1)          # (G, 3, H, W) in [-1, 1]
            for b in torch.arange(G).split(args.batch_size):
                ents.append(token_entropy(model, cond[b], tokens[b], s,
                                          None if mask is None else mask[b]))
        torch.manual_seed(mix(args.seed, j))          # the rewards' crops: the same for both models
        total, p = scorer((images + 1) / 2, [prompt] * G)
        rewards.append(total.float().cpu())
        for k, v in p.items():
            parts.setdefault(k, []).append(v.float().cpu())
        if diversity is None:        # pixel: cosine distance of the images in [-1, 1]
            divs.append(pairwise_diversity(images, cosine_distance))
        else:                        # LPIPS, on images in [0, 1]
            divs.append(pairwise_diversity((images + 1) / 2, diversity))
        if j < args.grid_rows:
            keep.append(to_uint8(images[:args.grid_cols]))
        if judge is not None:
            judged.append((*judge((images + 1) / 2), c))
    r, ent = torch.cat(rewards), torch.cat(ents).float()
    m = {"reward": r.mean().item(), "reward_sem": (r.std() / math.sqrt(len(r))).item()}
    m.update({f"reward_{k}": torch.cat(v).mean().item() for k, v in parts.items()})
    m.update(diversity=float(np.mean(divs)), entropy=ent.mean().item(), images=len(r))
    if judge is not None:
        m.update(judge_metrics(judge, judged))
    return m, keep


def build_judge(targs, device):
    """The held-out judge of a --pretrain run (the mnist preset: plumbing/mnist.py), else None."""
    name = getattr(targs, "pretrain", "")
    if not name:
        return None
    files = pretrained(name, GPT, gpt_config, targs.cache_dir)
    return HeldOutJudge(files["judge"], RECIPES[name].held_out, RECIPES[name].seed, device)


def judge_metrics(judge, judged):
    """judged: per condition (p(class) (G, 10), features (G, F), the class id) ->
      judge_accuracy    share of images the judge classifies as their prompted class
      judge_confidence  mean judge p(prompted class)
      judge_fd          Frechet distance of the images' judge features to the held-out digits'
      judge_fd_real     the same for as many real training digits per class: the floor
      judge_diversity   mean over classes of the mean pairwise 1 - cos of the judge features."""
    probs, feats = torch.cat([p for p, _, _ in judged]), torch.cat([f for _, f, _ in judged])
    want = torch.cat([torch.full((len(p),), c) for p, _, c in judged])
    held, train = judge.real_features(per_class=len(judged[0][0]))
    return {"judge_accuracy": (probs.argmax(1) == want).float().mean().item(),
            "judge_confidence": probs.gather(1, want[:, None]).mean().item(),
            "judge_fd": fid_from_stats(*feature_stats(feats), *feature_stats(held)),
            "judge_fd_real": fid_from_stats(*feature_stats(train), *feature_stats(held)),
            "judge_diversity": float(np.mean([pairwise_diversity(f, cosine_distance)
                                              for _, f, _ in judged])),
            "judge_real_accuracy": judge.real_accuracy}


def build_diversity(args, config, vq, device):
    """The pairwise distance of --diversity: LPIPS (checked: image size, weights) or None for
    the weight-free pixel distance."""
    side = math.isqrt(config.block_size) * vq.config.downsample
    if args.diversity == "lpips" and side < LPIPS_MIN_PX:
        raise SystemExit(f"error: these images are {side} px but LPIPS-AlexNet needs at least "
                         f"{LPIPS_MIN_PX} px; use --diversity pixel")
    return build_lpips(device) if args.diversity == "lpips" else None   # missing weights stop here


def compare_conditions(args, config, targs):
    """(conditions, prompts): the held-out prompts twice (t2i), or class ids and their
    "a photo of {class name}" prompts (c2i)."""
    if config.model_type == "t2i":
        prompts = args.prompt_list or (TINY_PROMPTS if targs.preset == "tiny" else None)
        if prompts is None or args.classes:
            raise SystemExit("error: t2i evaluation needs --prompts FILE "
                             "(held-out captions, one per line), and no --classes")
        return prompts, prompts
    if args.prompts:
        raise SystemExit("error: --prompts is for a t2i run; this run is class-conditional "
                         "(use --classes)")
    names = class_prompts(pretrain=getattr(targs, "pretrain", ""))   # "a photo of {class name}"
    if args.classes:
        conds = args.classes                                  # a list of ids (check_command)
    else:                                                     # 10 evenly spaced ids
        conds = list(range(0, config.num_classes, max(1, config.num_classes // 10)))[:10]
    if any(not 0 <= x < config.num_classes for x in conds):
        raise SystemExit(f"error: --classes must be in [0, {config.num_classes})")
    return conds, [names[x] for x in conds]


def check_eval_memory(args, config, s, rows, device):
    """The sampler's KV caches for `rows` images at once and the entropy's forward over
    --batch-size of them (both doubled by CFG) must fit (plumbing/flags.py)."""
    cfg = 1 + (s.cfg_scale != 1.0)
    forward = forward_bytes(config, min(args.batch_size, rows) * 2, grad=False)
    check_memory(max(kv_cache_bytes(config, rows * cfg), forward), device,
                 f"{rows} images at once (--per-class, --per-prompt, --batch-size)")


def cmd_compare(args):
    device = torch.device(args.device)
    base, tuned, vq, text, targs = load_pair(args, device)
    diversity = build_diversity(args, base.config, vq, device)
    conds, prompts = compare_conditions(args, base.config, targs)
    s = sampler_settings(args, targs)
    check_eval_memory(args, base.config, s, args.per_class, device)
    spec = args.rewards or targs.rewards
    scorer = build_scorer(spec, args, targs, device)
    amp = autocast_like_run(device, targs)
    judge = build_judge(targs, device)
    results, grids = {}, {}
    for name, model in (("base", base), ("tuned", tuned)):
        results[name], grids[name] = evaluate(model, vq, text, conds, prompts, scorer, diversity,
                                              s, args, amp, name, judge)
        tqdm.write(f"{name:6s} " + " ".join(f"{k} {v:.4f}" for k, v in results[name].items()))
    delta = {k: results["tuned"][k] - results["base"][k]
             for k in results["base"] if k not in ("images", "reward_sem")}
    report = {"tuned_ckpt": args.tuned, "base_ckpt": base_description(targs),
              "task": base.config.model_type, "conditions": conds, "per_class": args.per_class,
              "seed": args.seed, "rewards": spec, "diversity_metric": args.diversity,
              "sampler": asdict(s), **results, "delta": delta}
    write_json(os.path.join(args.out, f"{args.prefix}report.json"), report)
    grid = save_side_by_side(grids["base"], grids["tuned"],
                             os.path.join(args.out, f"{args.prefix}grid.png"))
    print(f"wrote {args.out}/{args.prefix}report.json"
          + (f" and {args.prefix}grid.png (a row per condition: base | tuned)" if grid else ""))
    return report


# ----------------------------------------------------------------------------- drawbench
# T2I scorers, base vs tuned, on a prompt set.
DRAWBENCH_SCORERS = "clip,hps,pickscore,imagereward,aesthetic"
# AR-GRPO's test_t2i_rewards.py prints clip / 5 (the cosine), hps / 5 (HPSv2's raw score) and
# PickScore / 26 (inside its PickScore class); ImageReward and the aesthetic score unchanged.
# report.json's `argrpo_scale`.
ARGRPO_SCALE = {"clip": 1 / 5, "hps": 1 / 5, "pickscore": 1 / 26}
ARGRPO_SCORERS = DRAWBENCH_SCORERS.split(",")


@torch.no_grad()
def drawbench_prompt(model, vq, text, prompt, j, scorer, s, args, amp):
    """N images of prompt j from the generator seed mix(seed, j) (the same for base and tuned),
    scored: ({scorer: [N floats]}, uint8 images (N, H, W, 3))."""
    dev, N = next(model.parameters()).device, args.per_prompt
    feats, mask = text([prompt])
    gen = torch.Generator(dev).manual_seed(mix(args.seed, j))
    images = []
    for b in range(0, N, args.batch_size):              # one generator: chunks change nothing
        n = min(args.batch_size, N - b)
        with amp:
            tokens = generate(model, feats.expand(n, -1, -1), s, cond_mask=mask.expand(n, -1),
                              generator=gen, compile=args.compile)                # (n, T)
            images.append(vq.decode(tokens).float().clamp(-1, 1))                 # (n, 3, H, W)
    images = torch.cat(images)
    torch.manual_seed(mix(args.seed, j))           # the rewards' crops: the same for both models
    _, parts = scorer((images + 1) / 2, [prompt] * N)
    return {k: v.float().cpu().tolist() for k, v in parts.items()}, to_uint8(images)


def read_done(path):
    """The per-prompt records of an interrupted run, by prompt index; a torn last line (killed
    mid-write) is dropped and its prompt sampled again (read_jsonl)."""
    rows = read_jsonl(path, "scores file", key="index") if os.path.isfile(path) else []
    return {row["index"]: row for row in rows}


def mean_sem(values):
    """Per-prompt means (P,) -> {mean, sem}: the standard error over prompts (None for one
    prompt)."""
    x = torch.tensor(values, dtype=torch.float64)
    sem = (x.std() / math.sqrt(len(x))).item() if len(x) > 1 else None
    return {"mean": x.mean().item(), "sem": sem}


def drawbench_report(rows, names):
    """mean over all images (= mean of per-prompt means: every prompt has N images) and the
    standard error over prompts; delta = tuned - base, its standard error from the per-prompt
    paired differences."""
    out = {"base": {}, "tuned": {}, "delta": {}, "argrpo_scale": {"base": {}, "tuned": {}}}
    for n in names:
        per = {m: [float(np.mean(r[m][n])) for r in rows] for m in ("base", "tuned")}
        for m in ("base", "tuned"):
            out[m][n] = mean_sem(per[m])
            if n in ARGRPO_SCORERS:
                out["argrpo_scale"][m][n] = out[m][n]["mean"] * ARGRPO_SCALE.get(n, 1.0)
        out["delta"][n] = mean_sem([t - b for b, t in zip(per["base"], per["tuned"])])
    return out


def drawbench_prompts(args, targs):
    """The prompts of --prompts (the tiny preset's own without it), the first --max-prompts."""
    if args.prompts:
        prompts = args.prompt_list                            # read by check_command
    elif targs is not None and targs.preset == "tiny":
        prompts = TINY_PROMPTS
    else:
        raise SystemExit("error: drawbench needs --prompts FILE "
                         "(e.g. AR-GRPO's drawbench_test_1000.json)")
    return prompts[:args.max_prompts or None]


def scorer_names(scorers):
    """--scorers 'a,b' -> the reward names, checked by rewards.parse_spec (one-line error)."""
    spec = ",".join(f"{n}:1" for n in scorers.split(",") if n.strip())
    try:
        return [n for n, _ in parse_spec(spec)]
    except ValueError as e:
        raise SystemExit(f"error: --scorers: {e}") from None


def row_path(out, j, model):
    """Where prompt j's grid images of `model` ('base' or 'tuned') are kept, for a resumed run."""
    return os.path.join(out, "rows", f"{j:05d}_{model}.npy")


def resume(out, config, prompts):
    """Check OUT against this evaluation's config and read what an earlier run scored there:
    (scores.jsonl path, {prompt index: record})."""
    cfg_path, log_path = os.path.join(out, "config.json"), os.path.join(out, "scores.jsonl")
    if (os.path.isfile(cfg_path)
            and read_json(cfg_path, "drawbench config") != json.loads(json.dumps(config))):
        raise SystemExit(f"error: {out} holds another evaluation (config.json differs); "
                         f"pass another --out")
    write_json(cfg_path, config)
    done = read_done(log_path)
    on_stop(lambda: f"{len(read_done(log_path))} of {len(prompts)} prompts are scored in "
                    f"{log_path}: the same command continues")
    todo = [j for j in range(len(prompts)) if j not in done]
    if done:
        print(f"resuming: {len(prompts) - len(todo)} of {len(prompts)} prompts already scored "
              f"in {log_path}")
    return log_path, done


def score_prompts(models, vq, text, prompts, scorer, samplers, args, amp, log_path, done):
    """Sample and score every prompt not in `done` with both models, each with its sampler; each
    prompt's record is appended to scores.jsonl (and synced) as soon as it is complete, and added
    to `done`."""
    todo = [j for j in range(len(prompts)) if j not in done]
    with open(log_path, "a", encoding="utf-8") as log:
        for j in tqdm(todo, desc="drawbench", unit="prompt", initial=len(prompts) - len(todo),
                      total=len(prompts)):
            row = {"index": j, "prompt": prompts[j]}
            for name, model in models.items():
                row[name], images = drawbench_prompt(model, vq, text, prompts[j], j, scorer,
                                                     samplers[name], args, amp)
                if j < args.grid_rows:            # kept on disk: a resumed run still has them
                    with atomic_write(row_path(args.out, j, name)) as f:
                        np.save(f, images[:args.grid_cols].numpy())
            try:
                log.write(json.dumps(row) + "\n")
                log.flush()
                os.fsync(log.fileno())
            except OSError as e:  # a full disk: one line; a torn line is dropped on the re-run
                raise WriteFailed(log_path, e) from None
            done[j] = row


def save_drawbench_grid(args, n_prompts):
    """grid.png from the kept rows of the first --grid-rows prompts (a resumed run may lack
    some); no file when none is there. -> whether a grid was written."""
    grid_rows = [j for j in range(min(args.grid_rows, n_prompts))
                 if all(os.path.isfile(row_path(args.out, j, m)) for m in ("base", "tuned"))]

    def load(j, m):
        return torch.from_numpy(np.load(row_path(args.out, j, m)))
    return save_side_by_side([load(j, "base") for j in grid_rows],
                             [load(j, "tuned") for j in grid_rows],
                             os.path.join(args.out, f"{args.prefix}grid.png"))


def print_drawbench_table(report, names):
    print(f"cfg scale: base {report['cfg_scale']['base']}, tuned {report['cfg_scale']['tuned']}")
    for n in names:
        b, t, d = report["base"][n], report["tuned"][n], report["delta"][n]
        sem = f" +- {d['sem']:.4f}" if d["sem"] is not None else ""
        print(f"{n:12s} base {b['mean']:.4f}  tuned {t['mean']:.4f}  delta {d['mean']:+.4f}"
              + sem)


def cmd_drawbench(args):
    # set up: prompts, scorers (missing weights stop here, before the GPTs), models, sampler
    device = torch.device(args.device)
    args.task = "t2i"                           # for a --tuned file without train.py's args
    targs = run_args(args.tuned)                # the run's flags, for the defaults below
    prompts = drawbench_prompts(args, targs)
    names = scorer_names(args.scorers)
    scorer = build_scorer(",".join(f"{n}:1" for n in names), args, targs, device,
                          tiny=args.tiny_scorers)
    base, tuned, vq, text, targs = load_pair(args, device)
    if base.config.model_type != "t2i":
        raise SystemExit("error: drawbench evaluates text-to-image models; "
                         "this checkpoint is class-conditional")
    s = sampler_settings(args, targs)
    check_eval_memory(args, base.config, s, min(args.batch_size, args.per_prompt), device)
    base_cfg = s.cfg_scale if args.base_cfg_scale is None else args.base_cfg_scale
    samplers = {"base": replace(s, cfg_scale=base_cfg), "tuned": s}
    amp = autocast_like_run(device, targs)
    config = {"tuned_ckpt": args.tuned, "base_ckpt": base_description(targs),
              "prompts_file": args.prompts, "prompts": prompts, "per_prompt": args.per_prompt,
              "seed": args.seed, "scorers": names, "tiny_scorers": args.tiny_scorers,
              "sampler": asdict(s), "cfg_scale": {m: samplers[m].cfg_scale for m in samplers}}
    # sample and score, resuming where an interrupted run stopped
    log_path, done = resume(args.out, config, prompts)
    score_prompts({"base": base, "tuned": tuned}, vq, text, prompts, scorer, samplers, args, amp,
                  log_path, done)
    # report
    rows = [done[j] for j in range(len(prompts))]
    report = {**config, "prompts": len(prompts),
              "images_per_model": len(prompts) * args.per_prompt,
              **drawbench_report(rows, names)}
    write_json(os.path.join(args.out, f"{args.prefix}report.json"), report)
    grid = save_drawbench_grid(args, len(prompts))
    print_drawbench_table(report, names)
    print(f"wrote {args.out}/{args.prefix}report.json"
          + (f" and {args.prefix}grid.png (a row per prompt: base | tuned)" if grid else ""))
    return report


# ----------------------------------------------------------------------------- fid
def read_fid_inputs(args):
    """(the reference's arrays, the samples (N, H, W, 3) uint8, what produced them (the .npz's
    `meta`, else {})), checked: one-line errors."""
    npz = read_npz(args.npz, "--npz", need=["arr_0"])
    samples, record = npz["arr_0"], json.loads(str(npz["meta"])) if "meta" in npz else {}
    ref = read_npz(args.ref, "--ref", one_of=["arr_0", "mu"])
    if "arr_0" not in ref and "sigma" not in ref:
        raise SystemExit(f"error: --ref {args.ref} has mu but no sigma")
    if samples.dtype != np.uint8 or samples.ndim != 4 or samples.shape[-1] != 3:
        raise SystemExit(f"error: {args.npz} arr_0 must be uint8 (N, H, W, 3), "
                         f"got {samples.dtype} {samples.shape}")
    # AR-GRPO's protocol scores 384 px samples against the 256 px reference (the Inception resizes
    # both to 299); LlamaGen's resizes them to 256 first
    native = record.get("protocol") == "argrpo"
    if "arr_0" in ref and ref["arr_0"].shape[1:] != samples.shape[1:] and not native:
        ref_px = ref["arr_0"].shape[1]
        raise SystemExit(f"error: samples are {samples.shape[1]} px but the reference is "
                         f"{ref_px} px: resample with sample.py --image-size-eval {ref_px} "
                         f"(--protocol llamagen), or sample with --protocol argrpo")
    return ref, samples, record


def fid_report_path(args):
    return args.out or os.path.splitext(args.npz)[0] + "_fid.json"


def cmd_fid(args):
    ref, samples, record = read_fid_inputs(args)
    net = build_inception(args.inception_ckpt, args.device)
    pool, logits = inception_features(net, samples, args.batch_size, "inception (samples)")
    ref_pool = None                      # the reference's own features, when it holds images
    if "arr_0" in ref:
        ref_pool = inception_features(net, ref["arr_0"], args.batch_size,
                                      "inception (reference)")[0]
    mu_r, sigma_r = (ref["mu"], ref["sigma"]) if "mu" in ref else feature_stats(ref_pool)
    report = {"npz": args.npz, "ref": args.ref, "samples": len(samples), "size": samples.shape[1],
              "protocol": record.get("protocol"), "sampler": record,
              "features": args.inception_ckpt or INCEPTION_FILE,
              "fid": fid_from_stats(*feature_stats(pool), mu_r, sigma_r),
              "inception_score": inception_score(logits)}
    if ref_pool is not None:
        report["precision"], report["recall"] = precision_recall(
            ref_pool.to(args.device), pool.to(args.device), k=3)
    print(json.dumps(report, indent=1))
    write_json(fid_report_path(args), report)
    return report


# ----------------------------------------------------------------------------- plot
def moving_average(y, w):
    """Trailing moving average over w points (the first ones padded with y[0])."""
    return np.convolve(np.pad(y, (w - 1, 0), mode="edge"), np.ones(w) / w, "valid")


def draw_panel(ax, steps, column, name, keys, w):
    """One panel: each metric of `keys` raw (faint) and as a w-step moving average;
    column(key) -> its values over the steps."""
    for k in keys:
        y = column(k)
        line, = ax.plot(steps, y, alpha=0.3, lw=1)
        ax.plot(steps, moving_average(y, w), color=line.get_color(), label=k)
    if name == "reward":                         # +- the std over the step's images
        mean, std = column("reward_mean"), column("reward_std")
        ax.fill_between(steps, mean - std, mean + std, alpha=0.15)
    ax.set(title=name, xlabel="step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def cmd_plot(args):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = read_jsonl(os.path.join(args.run, "metrics.jsonl"), "metrics file", key="step")
    if not rows:
        raise SystemExit(f"error: {args.run}/metrics.jsonl is empty")
    steps = np.array([r["step"] + 1 for r in rows])
    not_parts = ("reward_mean", "reward_std", "reward_group_std")
    parts = sorted(k for k in rows[0] if k.startswith("reward_") and k not in not_parts)
    panels = {"reward": ["reward_mean"], "reward_components": parts, "kl": ["kl"],
              "entropy": ["entropy"], "clip_frac": ["clip_frac"],
              "zero_std_frac": ["zero_std_frac"]}
    column = lambda k: np.array([r.get(k, np.nan) for r in rows], dtype=float)
    w = max(1, len(rows) // 20)                  # trailing moving average over ~5% of the run

    out = plot_dir(args)

    def save(fig, name, dpi):  # atomically: a complete PNG or none
        fig.tight_layout()
        with atomic_write(os.path.join(out, f"{args.prefix}{name}.png")) as f:
            fig.savefig(f, format="png", dpi=dpi)
        plt.close(fig)
    fig_all, axes = plt.subplots(2, 3, figsize=(15, 7))
    for ax_all, (name, keys) in zip(axes.flat, panels.items()):
        fig, ax = plt.subplots(figsize=(5, 3.5))
        draw_panel(ax, steps, column, name, keys, w)
        draw_panel(ax_all, steps, column, name, keys, w)
        save(fig, name, 100)
    save(fig_all, "curves", 80)
    if args.tensorboard:                         # train.py --tensorboard logs these live
        from torch.utils.tensorboard import SummaryWriter
        with SummaryWriter(os.path.join(args.run, "tb")) as writer:
            for r in rows:
                for k, v in r.items():
                    writer.add_scalar(k, v, r["step"])
    print(f"wrote {out}/{args.prefix}{{curves, {', '.join(panels)}}}.png from {len(rows)} steps")


# ----------------------------------------------------------------------------- command line
SAMPLER_FLAGS = (("--cfg-scale", float), ("--temperature", float), ("--top-k", int),
                 ("--top-p", float), ("--cfg-interval", int))
# every numeric flag in its range, checked in one line before anything loads
RANGE_CHECKS = {
    "compare": SAMPLER_CHECKS + [
        ("--per-class", lambda v: v >= 2, ">= 2 (diversity is a mean over pairs)"),
        ("--batch-size", lambda v: v >= 1, ">= 1"),
        SEED_CHECK,
        ("--grid-rows", lambda v: v >= 0, ">= 0 (0 = no grid)"),
        ("--grid-cols", lambda v: v >= 1, ">= 1"),
        CPU_THREADS_CHECK],
    "drawbench": SAMPLER_CHECKS + [
        ("--base-cfg-scale", lambda v: 0 <= v < math.inf, "a finite number >= 0"),
        ("--per-prompt", lambda v: v >= 1, ">= 1"),
        ("--max-prompts", lambda v: v >= 0, ">= 0 (0 = all)"),
        ("--batch-size", lambda v: v >= 1, ">= 1"),
        SEED_CHECK,
        ("--grid-rows", lambda v: v >= 0, ">= 0 (0 = no grid)"),
        ("--grid-cols", lambda v: v >= 1, ">= 1"),
        CPU_THREADS_CHECK],
    "fid": [("--batch-size", lambda v: v >= 1, ">= 1"), CPU_THREADS_CHECK],
    "plot": [],
}


def add_compare_args(sub, dev):
    c = sub.add_parser("compare",
                       help="base vs tuned on the same seeds: rewards, diversity, entropy, grid")
    a = c.add_argument
    a("--tuned", required=True,
      help="tuned weights: train.py's OUT/ckpt.pt (or any GPT file, then give --base and "
           "--vq-ckpt)")
    a("--base", default="",
      help="base weights ('' = the run's initial weights: its --gpt-ckpt or its seeded random "
           "init)")
    a("--vq-ckpt", default="", help="VQ weights ('' = the run's)")
    a("--t5-path", default="", help="t2i: FLAN-T5-XL directory ('' = the run's)")
    a("--task", choices=["c2i", "t2i"], default="c2i",
      help="only for a --tuned file without train.py's args")
    a("--classes", default="",
      help="c2i: comma-separated class ids ('' = 10 evenly spaced ids)")
    a("--prompts", default="", help="t2i: held-out prompt file (.txt or .jsonl)")
    a("--per-class", type=int, default=8,
      help="images per class / prompt (the diversity group)")
    a("--rewards", default="",
      help="'name:weight,...' ('' = the run's); e.g. add hps:1 for a preference score")
    a("--diversity", choices=["lpips", "pixel"], default="lpips",
      help="pairwise distance (pixel: weight-free)")
    a("--clip-ckpt", default=None,
      help="CLIP ViT-B/32 weights file (default: the run's flag, else the HF cache)")
    a("--hps-ckpt", default=None,
      help="HPS_v2.1_compressed.pt (default: the run's flag, else the HF cache)")
    a("--maniqa-ckpt", default=None,
      help="MANIQA ckpt_koniq10k.pt (default: the run's flag, else pyiqa's cache)")
    a("--qwen-path", default=None,
      help="Qwen2.5-VL-3B-Instruct folder (default: the run's, else the HF cache)")
    for flag in WEIGHT_ARGS[4:]:  # the T2I scorers' weights (see drawbench)
        a("--" + flag.replace("_", "-"), default=None,
          help="scorer weights (default: the run's, else the cache)")
    for flag, typ in SAMPLER_FLAGS:
        a(flag, type=typ, default=None, help="sampler setting (default: the run's)")
    a("--seed", type=int, default=0,
      help="condition j samples from seed mix(seed, j), the same for both models")
    a("--batch-size", type=int, default=16, help="sequences per entropy forward")
    a("--compile", action=argparse.BooleanOptionalAction, default=None,
      help="sample with the torch.compile'd decode step (same tokens; see docs/performance.md); "
           "default: on for a GPU, off on a CPU")
    a("--grid-rows", type=int, default=8, help="conditions in grid.png (0 = no grid)")
    a("--grid-cols", type=int, default=8, help="images per model per grid row")
    a("--out", default="out/eval", help="directory for report.json and grid.png")
    a("--prefix", default="", help="output file name prefix, e.g. tiny_")
    a("--device", default=dev, help="cpu, cuda or cuda:N")
    a("--cpu-threads", type=int, default=0, help="torch CPU threads (0 = default)")


def add_fid_args(sub, dev):
    f = sub.add_parser("fid", help="FID / IS / precision / recall of a sample.py .npz against an "
                                   "ADM reference batch")
    a = f.add_argument
    a("--npz", required=True, help="samples: arr_0 uint8 (N, H, W, 3)")
    a("--ref", required=True,
      help="ADM reference batch, e.g. VIRTUAL_imagenet256_labeled.npz (arr_0, mu, sigma)")
    a("--inception-ckpt", default="",
      help=f"{INCEPTION_FILE} ('' = pyiqa's cache; 'random' = tests only)")
    a("--batch-size", type=int, default=100, help="images per Inception forward")
    a("--out", default="", help="report path ('' = NPZ_fid.json)")
    a("--device", default=dev, help="cpu, cuda or cuda:N")
    a("--cpu-threads", type=int, default=0, help="torch CPU threads (0 = default)")


def add_drawbench_args(sub):
    d = sub.add_parser("drawbench", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       help="T2I: base vs tuned on a prompt set (DrawBench), N images per prompt, "
                            "scored by CLIP/HPS/PickScore/ImageReward/Aesthetic (any reward) "
                            "-> report.json, grid")
    a = d.add_argument
    a("--tuned", required=True,
      help="tuned T2I weights: train.py's OUT/ckpt.pt (or any GPT file, then give --base, "
           "--vq-ckpt)")
    a("--base", default="", help="base weights ('' = the run's initial weights)")
    a("--vq-ckpt", default="", help="VQ weights ('' = the run's)")
    a("--t5-path", default="", help="FLAN-T5-XL directory ('' = the run's)")
    a("--prompts", default="",
      help="prompt file: AR-GRPO's drawbench_test_1000.json, .txt or .jsonl")
    a("--max-prompts", type=int, default=0, help="only the first K prompts (0 = all)")
    a("--scorers", default=DRAWBENCH_SCORERS,
      help="comma-separated reward names of rewards.py (any)")
    a("--per-prompt", type=int, default=4,
      help="images per prompt and model (AR-GRPO's script: 4)")
    for flag, typ in SAMPLER_FLAGS:
        a(flag, type=typ, default=None,
          help="sampler setting (default: the run's; AR-GRPO's test_t2i_rewards.py: cfg 7.5, "
               "top-k 2000, its .sh wrapper passes cfg 2.0)")
    a("--base-cfg-scale", type=float, default=None,
      help="the base model's CFG scale (default: --cfg-scale's; AR-GRPO's maintainer: the LlamaGen "
           "baseline at 7.5)")
    a("--seed", type=int, default=0,
      help="prompt j samples from seed mix(seed, j), the same for both models")
    a("--batch-size", type=int, default=16, help="images per sampling call")
    a("--compile", action=argparse.BooleanOptionalAction, default=None,
      help="sample with the torch.compile'd decode step (same tokens; see docs/performance.md); "
           "default: on for a GPU, off on a CPU")
    for flag in WEIGHT_ARGS:
        a("--" + flag.replace("_", "-"), default=None,
          help="scorer weights (default: the run's, else the cache)")
    a("--tiny-scorers", action="store_true",
      help="tiny random scorer networks: offline tests only (meaningless)")
    a("--grid-rows", type=int, default=8, help="prompts in grid.png (0 = no grid)")
    a("--grid-cols", type=int, default=4, help="images per model per grid row")
    a("--out", default="out/drawbench",
      help="folder: report.json, grid.png, scores.jsonl (resume), config.json")
    a("--prefix", default="", help="report / grid file name prefix")
    a("--device", default="cuda" if torch.cuda.is_available() else "cpu",
      help="cpu, cuda or cuda:N")
    a("--cpu-threads", type=int, default=0, help="torch CPU threads (0 = default)")


def add_plot_args(sub):
    pl = sub.add_parser("plot", help="training curves from RUN/metrics.jsonl as PNG")
    pl.add_argument("run", help="a train.py --out directory")
    pl.add_argument("--out", default="", help="PNG directory ('' = RUN/plots)")
    pl.add_argument("--tensorboard", action="store_true", help="also write the curves to RUN/tb")
    pl.add_argument("--prefix", default="", help="output file name prefix, e.g. tiny_")


def parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    add_compare_args(sub, dev)
    add_fid_args(sub, dev)
    add_drawbench_args(sub)
    add_plot_args(sub)
    return p


def parse_args(argv=None):
    """The flags of the command, every one checked (numbers, device, names) before anything
    loads."""
    p = parser()
    args = p.parse_args(argv)
    error = range_errors(args, RANGE_CHECKS[args.cmd]) or flag_error(args)
    if error:
        p.error(error)
    if getattr(args, "compile", False) is None:  # pays for itself on a GPU, never on a CPU
        args.compile = args.device.startswith("cuda")
    return args


def flag_error(args):
    """The first flag (other than a number out of range) that cannot work, as one line: the
    device, the reward / scorer names and weights, the class ids. None when all can."""
    if args.cmd == "plot":
        return None
    error = device_error(args.device)
    try:
        if args.cmd == "compare" and args.rewards:
            parse_spec(args.rewards)
        if args.cmd == "drawbench":
            parse_spec(",".join(f"{n}:1" for n in args.scorers.split(",") if n.strip()))
    except ValueError as e:
        error = error or f"{'--rewards' if args.cmd == 'compare' else '--scorers'}: {e}"
    if args.cmd == "compare" and args.classes and not error:
        ids = args.classes.split(",")
        if not all(x.strip().isdigit() for x in ids):
            return f"--classes must be comma-separated class ids, got {args.classes!r}"
        args.classes = [int(x) for x in ids]
    return error


def check_files(args):
    """Every input file and output path of the command, before any model loads: one line each.
    The prompts of --prompts are read here (args.prompt_list)."""
    if args.cmd == "plot":
        check_readable(os.path.join(args.run, "metrics.jsonl"), "metrics file")
        return check_writable(plot_dir(args), "--out", is_dir=True)
    if args.cmd == "fid":
        check_readable(args.npz, "--npz")
        check_readable(args.ref, "--ref")
        return check_writable(fid_report_path(args), "--out")
    check_readable(args.tuned, "--tuned")
    for flag, path in (("--base", args.base), ("--vq-ckpt", args.vq_ckpt)):
        if path and ("/" in path or path.endswith(".pt")):       # else a released name
            check_readable(path, flag)
    if args.t5_path:
        check_readable(args.t5_path, "--t5-path", folder=True)
    for k in WEIGHT_ARGS:                     # the loaders tell a file from a folder
        if getattr(args, k, None) and not os.path.exists(getattr(args, k)):
            raise SystemExit(f"error: --{k.replace('_', '-')} {getattr(args, k)} does not exist")
    args.prompt_list = read_prompts(args.prompts) if args.prompts else None
    check_writable(args.out, "--out", is_dir=True)                   # before hours of sampling


def plot_dir(args):
    return args.out or os.path.join(args.run, "plots")


def main(argv=None):
    args = parse_args(argv)
    print(json.dumps(vars(args)))
    check_files(args)
    if getattr(args, "cpu_threads", 0):
        torch.set_num_threads(args.cpu_threads)
    commands = {"compare": cmd_compare, "fid": cmd_fid, "plot": cmd_plot,
                "drawbench": cmd_drawbench}
    return commands[args.cmd](args)


if __name__ == "__main__":
    run_cli(main)  # one-line errors, Ctrl-C, a failed write (plumbing/stops.py)
