"""The mnist preset on its test recipe (mnist-tiny: 7x7-patch tokens, GPT-tiny, seconds): the real
digits and their split, the patch tokenizer, the pretraining cache, the rewards, and the whole
pipeline: pretrain, GRPO, sample, and a held-out judge that sees the tuned model beat its base."""
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from plumbing import mnist, pretrain
from rewards import build_rewards

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One mnist-tiny world for the module, in its own cache (made once: seconds)."""
    root = str(tmp_path_factory.mktemp("argrpo_cache"))
    from model import GPT, gpt_config
    files = pretrain.pretrained("mnist-tiny", GPT, gpt_config, root, log=lambda *a: None)
    return root, files


def env(root):
    return {**os.environ, "OMP_NUM_THREADS": "1", "ARGRPO_CACHE": root}


def run(cmd, root, timeout=600):
    r = subprocess.run([sys.executable, *cmd], cwd=ROOT, env=env(root), capture_output=True,
                       text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


# ----------------------------------------------------------------------------- data, tokenizer
def test_real_digits_and_a_fixed_split():
    x, y = mnist.read_digits()
    assert x.shape == (5000, 28, 28) and 0 <= x.min() and x.max() == 1
    assert torch.bincount(y).tolist() == [500] * 10
    (a, ya), (b, yb) = mnist.split(x, y, held_out=100)
    assert len(a) == 4000 and len(b) == 1000 and torch.bincount(yb).tolist() == [100] * 10
    (a2, _), (b2, _) = mnist.split(x, y, held_out=100)
    assert torch.equal(a, a2) and torch.equal(b, b2)                         # fixed
    flat = lambda t: {tuple(r) for r in (t.flatten(1) * 255).round().int().tolist()}
    assert not flat(a) & flat(b)                                             # disjoint images


def test_patch_tokenizer_is_vq_shaped_and_reconstructs():
    x, _ = mnist.read_digits()
    vq = mnist.PatchVQ.fit(x[:500], codes=64, patch=4, iters=5, seed=0)
    images = x[500:508][:, None].expand(-1, 3, -1, -1) * 2 - 1               # (8, 3, 28, 28) in [-1, 1]
    codes = vq.encode(images)
    assert codes.shape == (8, 7, 7) and codes.dtype == torch.long and codes.max() < 64
    out = vq.decode(codes.flatten(1))                                        # (B, N) as train.py
    assert out.shape == (8, 3, 28, 28) and out.min() >= -1 and out.max() <= 1
    assert torch.equal(out[:, 0], out[:, 2])                                 # grey
    assert ((out - images) ** 2).mean() < 0.1 * (images + 1).pow(2).mean()   # a digit, not noise
    blank = vq.decode(vq.encode(-torch.ones(1, 3, 28, 28)))
    assert torch.equal(blank, -torch.ones(1, 3, 28, 28))                     # code 0 is exact


# ----------------------------------------------------------------------------- rewards
def test_digit_and_realism_rewards(cache):
    _, files = cache
    s = build_rewards("digit:1,realism:0.5", digit_ckpt=files["rewards"])
    x, y = mnist.read_digits()
    images = x[y == 3][:8][:, None].expand(-1, 3, -1, -1)                   # real 3s in [0, 1]
    total, parts = s(images, [mnist.PROMPTS[3]] * 8)
    _, wrong = s(images, [mnist.PROMPTS[8]] * 8)
    assert parts["digit"].mean() > 0.5 > wrong["digit"].mean()              # p(prompted digit)
    assert torch.equal(parts["realism"], wrong["realism"])                  # no prompt
    assert torch.allclose(total, parts["digit"] + 0.5 * parts["realism"])
    noise = torch.rand(8, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    assert s(noise, [mnist.PROMPTS[3]] * 8)[1]["realism"].max() < parts["realism"].min()
    with pytest.raises(ValueError, match="handwritten digit"):
        s(images[:1], ["a photo of a cat"])


def test_rewards_without_their_networks_stop_in_one_line():
    from plumbing.reward_models import RewardWeightsMissing
    with pytest.raises(RewardWeightsMissing, match="--pretrain mnist"):
        build_rewards("digit:1")
    assert build_rewards("digit:1,realism:1", tiny=True)(torch.rand(2, 3, 28, 28),
                                                         mnist.PROMPTS[:2])[0].shape == (2,)


# ----------------------------------------------------------------------------- the cache
def test_pretraining_is_cached_resumable_and_deterministic(cache, tmp_path, monkeypatch):
    root, files = cache
    from model import GPT, gpt_config
    make, asked = pretrain.make, []
    monkeypatch.setattr(pretrain, "make", lambda r, todo, *a: asked.append(todo) or make(r, todo, *a))
    assert pretrain.pretrained("mnist-tiny", GPT, gpt_config, root) == files and not asked  # cached
    # a recipe of its own (a few steps): its own folder; made twice, the same bytes
    micro = dataclasses.replace(pretrain.RECIPES["mnist-tiny"], gpt_steps=20, classifier_steps=10)
    monkeypatch.setitem(pretrain.RECIPES, "mnist-micro", micro)
    a, b = (pretrain.pretrained("mnist-micro", GPT, gpt_config, str(tmp_path / d), log=print)
            for d in "ab")
    assert a["gpt"] != b["gpt"] and os.path.dirname(a["gpt"]) != os.path.dirname(files["gpt"])
    for f in pretrain.FILES:
        assert open(a[f], "rb").read() == open(b[f], "rb").read(), f
    # interrupted after the judge (gpt.pt missing): only the GPT is made again
    os.remove(a["gpt"])
    asked.clear()
    pretrain.pretrained("mnist-micro", GPT, gpt_config, str(tmp_path / "a"), log=print)
    assert asked == [["gpt"]] and open(a["gpt"], "rb").read() == open(b["gpt"], "rb").read()


# ----------------------------------------------------------------------------- the pipeline
def test_grpo_beats_the_base_on_the_held_out_judge(cache, tmp_path):
    """train.py --preset mnist on the test recipe, then tools/eval.py compare: the tuned model's
    reward rises in training, and on fresh seeds the held-out judge (another network, trained on
    other digits) finds the prompted digit more often than in the base's samples."""
    root, files = cache
    out = tmp_path / "run"
    run(["train.py", "--task", "c2i", "--preset", "mnist", "--pretrain", "mnist-tiny",
         "--rewards", "digit:1", "--steps", "30", "--out", str(out)], root)
    args = json.load(open(out / "args.json"))
    assert args["gpt_ckpt"] == files["gpt"] and args["digit_ckpt"] == files["rewards"]
    m = [json.loads(line) for line in open(out / "metrics.jsonl")]
    first, last = (np.mean([r["reward_digit"] for r in rows]) for rows in (m[:5], m[-5:]))
    assert last > first + 0.05, (first, last)
    run(["tools/eval.py", "compare", "--tuned", str(out / "ckpt.pt"), "--diversity", "pixel",
         "--per-class", "20", "--out", str(tmp_path / "eval"), "--cpu-threads", "1"], root)
    report = json.load(open(tmp_path / "eval" / "report.json"))
    base, tuned = report["base"], report["tuned"]
    print(f"judge accuracy {base['judge_accuracy']:.3f} -> {tuned['judge_accuracy']:.3f}, "
          f"reward {base['reward']:.3f} -> {tuned['reward']:.3f}")
    assert tuned["judge_accuracy"] > base["judge_accuracy"] + 0.05
    assert tuned["reward_digit"] > base["reward_digit"]
    for k in ("judge_confidence", "judge_fd", "judge_fd_real", "judge_diversity", "entropy"):
        assert np.isfinite(base[k]) and np.isfinite(tuned[k]), k


def test_sample_writes_the_npz_with_class_ids(cache, tmp_path):
    root, files = cache
    npz, png = tmp_path / "s.npz", tmp_path / "s.png"
    out = tmp_path / "run"
    run(["train.py", "--task", "c2i", "--preset", "mnist", "--pretrain", "mnist-tiny",
         "--steps", "1", "--out", str(out)], root)
    run(["sample.py", "--preset", "mnist", "--gpt-ckpt", str(out / "ckpt.pt"), "--classes", "all",
         "--per-class", "2", "--npz", str(npz), "--out", str(png)], root)
    arr, ids = np.load(npz)["arr_0"], np.load(npz)["arr_1"]
    assert arr.shape == (20, 28, 28, 3) and arr.dtype == np.uint8
    assert ids.tolist() == [c for c in range(10) for _ in range(2)]
