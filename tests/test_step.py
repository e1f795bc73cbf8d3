"""The GRPO step without redundant passes: pi_old taken from the update forward (one update per rollout)
or from the sampler (--policy cfg, several updates) gives the update of a separate no-grad pass; the
memory flags (--ref-dtype, --grad-checkpoint) run. Tiny random models, train.py in subprocesses."""
import json
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
SAME = ["reward_mean", "loss", "pg_loss", "kl", "entropy", "grad_norm", "clip_frac", "ratio_mean", "approx_kl_old",
        "logp_gap_sampler"]


def train(out, *flags):
    cmd = [sys.executable, os.path.join(ROOT, "train.py"), "--task", "c2i", "--preset", "tiny", "--steps", "3",
           "--save-every", "3", "--image-every", "0", "--out", str(out), *flags]
    r = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    w = torch.load(os.path.join(out, "ckpt.pt"), weights_only=True)["model"]
    return [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))], w


def test_old_logprobs_from_the_update_forward_equal_a_separate_pass(tmp_path):
    # the paper's setting (one update per rollout): pi_old = the update forward's detached log-probs
    for policy in ("cfg", "cond"):
        a, wa = train(tmp_path / f"auto_{policy}", "--policy", policy)
        b, wb = train(tmp_path / f"pass_{policy}", "--policy", policy, "--old-logprobs", "pass")
        for x, y in zip(a, b):  # bit for bit: the same numbers, one forward fewer
            assert {k: x[k] for k in SAME} == {k: y[k] for k in SAME}, policy
        assert all(torch.equal(wa[k], wb[k]) for k in wa), policy


def test_old_logprobs_from_the_sampler_with_several_updates(tmp_path):
    # --policy cfg, two epochs of two minibatches: pi_old = the sampler's log-probs, which equal the
    # teacher-forced ones up to float rounding (logp_gap_sampler), so the update barely moves. (The
    # entropy then comes from the first minibatch's rows only: the rows scored before any update.)
    flags = ["--inner-epochs", "2", "--minibatches", "2"]
    a, wa = train(tmp_path / "auto", *flags)
    b, wb = train(tmp_path / "pass", *flags, "--old-logprobs", "pass")
    for x, y in zip(a, b):
        assert x["logp_gap_sampler_max"] < 1e-4 and y["logp_gap_sampler_max"] < 1e-4
        for k in ["loss", "kl", "grad_norm", "approx_kl_old", "ratio_mean"]:
            assert x[k] == pytest.approx(y[k], rel=1e-3, abs=1e-5), k
    # weights: Adam's g / sqrt(v) amplifies rounding for gradients near 0, so compare the whole update
    from train import build_models, get_args
    w0 = build_models(get_args(["--preset", "tiny"]), torch.device("cpu"))[0].state_dict()
    norm = lambda d: sum(v.double().square().sum() for v in d.values()).sqrt().item()
    diff, update = norm({k: wa[k] - wb[k] for k in wa}), norm({k: wa[k] - w0[k] for k in wa})
    assert update > 0.1 and diff < 1e-3 * update, (diff, update)


def test_memory_flags_run(tmp_path):
    m, _ = train(tmp_path, "--ref-dtype", "bf16", "--grad-checkpoint")
    assert len(m) == 3 and all(torch.isfinite(torch.tensor(x["loss"])) for x in m)
    assert 0 < m[0]["kl"] < 1e-3  # the bf16 reference is the policy up to bf16 rounding


@pytest.mark.parametrize("flags,key", [
    (["--ratio-level", "sequence", "--clip-eps", "3e-4", "--clip-eps-high", "4e-4",
      "--inner-epochs", "2", "--minibatches", "2"], "seq_ratio_std"),
    (["--dual-clip", "3", "--delta", "4", "--inner-epochs", "2", "--minibatches", "2",
      "--adv-std", "none"], "dual_clip_frac"),
    (["--kl-in", "reward", "--kl", "k1", "--kl-cap", "10", "--entropy-coef", "0.01"], "kl")],
    ids=["gspo", "dual-clip+delta+dr-grpo", "kl-in-reward+entropy"])
def test_variants_train(tmp_path, flags, key):
    """Every variant of grpo.py trains end to end from its flags and reports what it adds."""
    m, w = train(tmp_path, *flags)
    assert len(m) == 3 and key in m[0] and all(torch.isfinite(v).all() for v in w.values())
    assert all(torch.isfinite(torch.tensor([x["loss"], x["grad_norm"], x[key]])).all() for x in m)
    if "reward" in flags:  # the KL left the loss (measured only): loss = pg - c x entropy, where the
        # entropy of the pass (pi_old) is the update forward's: one update per rollout
        assert all(x["loss"] == pytest.approx(x["pg_loss"] - 0.01 * x["entropy"], abs=1e-6) for x in m)
        assert all(x["kl"] > 0 for x in m[1:])
