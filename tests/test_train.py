"""The training loop: log-prob consistency, learning, DDP equivalence, exact resume, error messages.
Tiny random models on CPU; train.py runs in subprocesses (as a user runs it)."""
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from grpo import Objective, grpo_loss, policy_logprobs
from model import GPT, Sampling, generate, gpt_config
from text import TextEncoder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# one thread per process: tiny models gain nothing from more, and the CI machine has 2 cores
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
KEYS = ["step", "reward_mean", "reward_std", "reward_color", "loss", "kl", "entropy", "clip_frac", "zero_std_frac",
        "grad_norm", "lr", "t_rollout", "t_reward", "t_update", "images_per_s"]


def train_cmd(out, *flags, nproc=1):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1 else [sys.executable]
    return launcher + [os.path.join(ROOT, "train.py"), "--task", "c2i", "--preset", "tiny", "--out", str(out), *flags]


def train(out, *flags, nproc=1):
    r = subprocess.run(train_cmd(out, *flags, nproc=nproc), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]


def train_here(out, *flags):
    """train.main in this process (no interpreter start-up: the paper rewards' libraries load once);
    the same metrics as a subprocess's (tests/test_faults.py checks t2i across processes)."""
    import train as train_py
    threads = torch.get_num_threads()
    try:
        train_py.main(["--task", "c2i", "--preset", "tiny", "--out", str(out), *flags])
    finally:
        torch.set_num_threads(threads)           # the tiny preset sets one thread
    return [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]


def weights(out):
    return torch.load(os.path.join(out, "ckpt.pt"), weights_only=True)["model"]


def tiny_model_and_cond(task):
    torch.manual_seed(0)
    model = GPT(gpt_config("GPT-tiny", model_type=task)).eval()
    with torch.no_grad():  # sharper than the 0.02-std init, so cond / guided distributions really differ
        model.output.weight.mul_(30)
    if task == "c2i":
        return model, torch.tensor([1, 2, 3, 4]), None
    feats, mask = TextEncoder.tiny(model.config.caption_dim)(["a red fox", "a cat", "x", "a long prompt about dogs"])
    return model, feats, mask


@pytest.mark.parametrize("task,cfg,interval,temperature,top_k,top_p", [
    ("c2i", 2.0, -1, 1.0, 0, 1.0), ("c2i", 2.0, -1, 0.8, 20, 0.9), ("c2i", 3.0, 5, 0.9, 20, 0.8),
    ("t2i", 2.0, -1, 1.0, 0, 1.0), ("t2i", 4.0, 2, 0.9, 20, 0.8)])
def test_sampler_logprobs_equal_teacher_forcing(task, cfg, interval, temperature, top_k, top_p):
    """THE log-prob invariant (also with a CFG interval and top-k / top-p): the KV-cache sampler's
    log-probs are the teacher-forced ones train.py computes for the same tokens."""
    model, cond, mask = tiny_model_and_cond(task)
    s = Sampling(cfg, temperature, top_k, top_p, interval)
    tokens, lp = generate(model, cond, s, cond_mask=mask, generator=torch.Generator().manual_seed(0),
                          return_logprobs=True)
    with torch.no_grad():
        tf, ent = policy_logprobs(model, cond, tokens, "cfg", s, mask)
        cond_only, _ = policy_logprobs(model, cond, tokens, "cond", s, mask)
    assert torch.isfinite(tf).all() and (ent >= 0).all()
    assert (tf - lp).abs().max() < 1e-4, (tf - lp).abs().max()             # KV-cache sampler == teacher forcing
    assert (cond_only - lp).abs().max() > 1e-2                               # the paper's `cond` policy is another distribution


def test_on_policy_ratio_is_exactly_one_in_cfg_mode():
    model, cond, _ = tiny_model_and_cond("c2i")
    s = Sampling(cfg_scale=2.0)
    tokens, lp = generate(model, cond, s, generator=torch.Generator().manual_seed(1), return_logprobs=True)
    with torch.no_grad():
        old, _ = policy_logprobs(model, cond, tokens, "cfg", s)              # pi_old, as train.py computes it
    new, _ = policy_logprobs(model, cond, tokens, "cfg", s)                  # the update's forward, with grad
    loss, pg, kl, ratio = grpo_loss(new, old, old, torch.tensor([1.0, -1.0, 0.5, 0.0]), Objective(beta=0.1))
    assert torch.equal(ratio, torch.ones_like(ratio)) and kl.abs().max() == 0
    assert torch.allclose(torch.exp(new.detach() - lp), torch.ones_like(lp), atol=1e-4)  # also vs the sampler's own log-probs
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_tiny_preset_learns(tmp_path):
    m = train(tmp_path)
    assert len(m) == 100 and all(k in m[0] for k in KEYS)
    first = sum(x["reward_mean"] for x in m[:5]) / 5
    last = sum(x["reward_mean"] for x in m[-5:]) / 5
    spread = sum(x["reward_std"] for x in m[:5]) / 5                      # std over all images of a step
    print(f"tiny preset: reward {first:.3f} -> {last:.3f}, within-step std {spread:.3f}")
    assert last - first > 2 * spread
    assert m[-1]["entropy"] < m[0]["entropy"]                                # sharper policy, as in the paper
    assert m[0]["logp_gap_sampler_max"] < 1e-4                               # cfg mode: rollout log-probs reproduced
    for f in ["args.json", "ckpt.pt", "summary.json", "samples/step_000025.png", "samples/step_000100.png"]:
        assert os.path.exists(tmp_path / f), f


def test_ddp_two_ranks_match_single_process(tmp_path):
    ddp = train(tmp_path / "ddp", "--steps", "2", "--prompts-per-rank", "2", nproc=2)
    one = train(tmp_path / "one", "--steps", "2", "--prompts-per-rank", "4")
    assert json.load(open(tmp_path / "ddp" / "summary.json")) == {"steps": 2, "world_size": 2}  # finished
    for a, b in zip(ddp, one):                                               # same prompts, same samples, same rewards
        assert a["reward_mean"] == pytest.approx(b["reward_mean"], abs=1e-6)
        # the gradient itself (Adam would hide a wrong scale, the norm does not)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    # weights: equal up to float summation order, which Adam's g / sqrt(v) amplifies for gradients
    # near 0 (a few elements move by ~1e-5): compare the whole update, relative to its size
    from train import build_models, get_args
    w0 = build_models(get_args(["--preset", "tiny"]), torch.device("cpu"))[0].state_dict()
    wa, wb = weights(tmp_path / "ddp"), weights(tmp_path / "one")
    norm = lambda d: sum(v.double().square().sum() for v in d.values()).sqrt().item()
    diff, update = norm({k: wa[k] - wb[k] for k in wa}), norm({k: wa[k] - w0[k] for k in wa})
    print(f"DDP vs single process: |w_ddp - w_single| = {diff:.2e}, |w - w0| = {update:.2e}")
    assert update > 0.1 and diff < 1e-3 * update

def kill_after(out, flags, rows):
    """Start a run, kill -9 it once metrics.jsonl holds `rows` steps (possibly while it writes a
    checkpoint); returns the step of the checkpoint it left."""
    p = subprocess.Popen(train_cmd(out, *flags), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = out / "metrics.jsonl"
    while p.poll() is None and not (metrics.exists() and len(metrics.read_text().splitlines()) >= rows):
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)
    p.wait()
    return torch.load(out / "ckpt.pt", weights_only=True)["step"]


def test_resume_after_kill_equals_uninterrupted_run(tmp_path):
    flags = ["--steps", "12", "--save-every", "1"]
    full = train(tmp_path / "full", *flags)
    out = tmp_path / "killed"
    stopped_at = kill_after(out, flags, 4)
    assert 3 <= stopped_at < 12, stopped_at
    resumed = train(out, *flags, "--resume")
    assert [x["step"] for x in resumed] == list(range(12))
    assert [x["reward_mean"] for x in resumed] == [x["reward_mean"] for x in full]
    wa, wb = weights(out), weights(tmp_path / "full")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    oa = torch.load(out / "ckpt.pt", weights_only=True)["optimizer"]["state"]
    ob = torch.load(tmp_path / "full" / "ckpt.pt", weights_only=True)["optimizer"]["state"]
    assert all(torch.equal(oa[i]["exp_avg_sq"], ob[i]["exp_avg_sq"]) for i in oa)


# ----------------------------------------------------------------------------- the paper rewards, offline
# The paper's reward set on its tiny stand-ins (--tiny-rewards, the tiny preset), with the switches the
# paper presets set (AR-GRPO's inputs, precisions, crop offsets, unclamped k3), at 2 prompts x 4 images
PAPER_TINY = ["--rewards", "clip:1,clip_q:1,hps:1,hps_q:1,maniqa:1,qwen:1", "--prompts-per-rank", "2",
              "--group-size", "4", "--reward-input", "pil", "--reward-dtype", "paper", "--no-maniqa-full-range",
              "--no-rollout-autocast", "--no-tf32", "--kl-clamp", "0", "--policy", "cond"]
PAPER_PARTS = [f"reward_{n}" for n in ("clip", "clip_q", "hps", "hps_q", "maniqa", "qwen_score", "qwen_fake", "qwen_weird")]


def test_paper_rewards_resume_after_kill_equals_uninterrupted_run(tmp_path):
    """kill -9 and --resume with every paper reward: every component, the loss and the weights equal the
    uninterrupted run's. MANIQA's crops come from (seed, step, rank) like every other random number, so
    the resumed run draws the crops the uninterrupted one drew (they used to restart from the run's seed).
    --keep-every 2 leaves the same step copies in both."""
    flags = [*PAPER_TINY, "--steps", "6", "--save-every", "1", "--keep-every", "2"]
    full = train_here(tmp_path / "full", *flags)
    out = tmp_path / "killed"
    stopped_at = kill_after(out, flags, 3)
    assert 2 <= stopped_at < 6, stopped_at
    resumed = train_here(out, *flags, "--resume")
    exact = lambda m: [(x["step"], x["reward_mean"], x["loss"], x["grad_norm"], *(x[k] for k in PAPER_PARTS)) for x in m]
    assert exact(resumed) == exact(full)
    assert len({x["reward_maniqa"] for x in full}) == 6                    # the crops (and images) change
    for name in ("ckpt.pt", "ckpt_000002.pt", "ckpt_000004.pt", "ckpt_000006.pt"):
        wa, wb = (torch.load(d / name, weights_only=True)["model"] for d in (out, tmp_path / "full"))
        assert all(torch.equal(wa[k], wb[k]) for k in wa), name


def test_paper_rewards_ddp_two_ranks(tmp_path):
    """The paper reward set through 2 DDP ranks (gloo): the run finishes, and the rewards that draw no
    random numbers equal one process's over the same global batch (MANIQA's crops are each rank's own)."""
    flags = [*PAPER_TINY, "--steps", "2"]
    ddp = train(tmp_path / "ddp", *flags, "--prompts-per-rank", "1", nproc=2)
    one = train_here(tmp_path / "one", *flags)
    assert json.load(open(tmp_path / "ddp" / "summary.json")) == {"steps": 2, "world_size": 2}
    for a, b in zip(ddp, one):
        for k in ("reward_clip", "reward_clip_q", "reward_hps", "reward_hps_q"):
            assert a[k] == pytest.approx(b[k], abs=1e-6), k
        for k in ("reward_qwen_score", "reward_qwen_fake", "reward_qwen_weird"):   # a bf16 judge, other batches
            assert a[k] == pytest.approx(b[k], abs=2e-2), k
        assert all(math.isfinite(a[k]) for k in PAPER_PARTS + ["loss", "grad_norm"])


def test_t2i_inner_epochs_and_tensorboard(tmp_path):
    # several updates per rollout batch: the ratio leaves 1 and the clip statistics become live
    m = train(tmp_path, "--task", "t2i", "--steps", "2", "--inner-epochs", "2", "--minibatches", "2",
              "--micro-batch", "8", "--tensorboard", "--image-every", "1")
    assert len(m) == 2 and m[1]["approx_kl_old"] > 0 and m[1]["ratio_max"] > 1 > m[1]["ratio_min"]
    assert os.listdir(tmp_path / "tb") and os.path.exists(tmp_path / "samples" / "step_000002.png")


@pytest.mark.parametrize("flags,words", [
    (["--task", "c2i"], ["c2i_B_256.pt", "--gpt-ckpt", "--vq-ckpt", "--preset tiny"]),        # the paper run, no weights
    (["--task", "c2i", "--preset", "tiny", "--rewards", "hps:1", "--no-tiny-rewards"], ["--hps-ckpt"]),  # no weights
])
def test_missing_weights_stop_with_one_line(tmp_path, flags, words):
    t = time.time()
    r = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *flags, "--out", str(tmp_path)],
                       cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert all(w in r.stderr for w in words), r.stderr
    assert time.time() - t < 60


# ----------------------------------------------------------------------------- fidelity to AR-GRPO's code
def test_dry_run_shows_the_paper_presets_offline(capsys):
    """--dry-run prints the resolved flags as one JSON object and exits before any weights
    (the paper checkpoints are not on this machine). Every paper preset shows AR-GRPO's code."""
    import train
    assert not os.path.exists(os.path.join(ROOT, "checkpoints", "c2i_B_256.pt"))
    train.main(["--task", "c2i", "--dry-run"])
    c2i = json.loads(capsys.readouterr().out)
    assert c2i["preset"] == "paper-c2i-b256" and c2i["gpt-ckpt"] == "checkpoints/c2i_B_256.pt"
    assert (c2i["policy"], c2i["judge-mode"], c2i["zero-flat-groups"], c2i["pure-bf16"]) == ("cond", "generate", False, False)
    assert c2i["lr"] == 1e-5 and c2i["lr-decay-steps"] == 20 * 1281167 // 4 and "dry-run" not in c2i
    assert c2i["gpt-model"] is None                                      # the architecture is the checkpoint's
    paper = {"rollout-autocast": False, "tf32": False, "reward-dtype": "paper", "reward-input": "pil",
             "maniqa-full-range": False, "kl-clamp": 0.0, "kl-cap": 0.0, "keep-every": 100, "raw-prompts": True,
             "cfg-scale": 2.0, "top-k": 0, "ref-dtype": "fp32"}
    released = {"paper-c2i-b256": "c2i_B_256", "paper-c2i-b384": "c2i_B_384", "paper-c2i-l384": "c2i_L_384",
                "paper-c2i-xl384": "c2i_XL_384", "paper-t2i-xl": "t2i_XL_stage1_256"}
    assert sorted(p for p in train.PRESETS if p.startswith("paper")) == sorted(released)
    for preset, name in released.items():
        train.main(["--task", "t2i" if "t2i" in preset else "c2i", "--preset", preset, "--dry-run"])
        shown = json.loads(capsys.readouterr().out)
        assert {k: shown[k] for k in paper} == paper and name in shown["gpt-ckpt"], preset
        assert shown["image-size"] == (384 if preset.endswith("384") else 256)
    train.main(["--task", "t2i", "--dry-run", "--beta", "0.5", "--cfg-scale", "4.0"])
    t2i = json.loads(capsys.readouterr().out)
    assert (t2i["preset"], t2i["caption-pad"], t2i["clean-captions"], t2i["pure-bf16"], t2i["beta"], t2i["cfg-scale"]) == \
        ("paper-t2i-xl", "right", True, True, 0.5, 4.0)                 # a flag still overrides its preset
    train.main(["--task", "c2i", "--preset", "tiny", "--dry-run"])
    tiny = json.loads(capsys.readouterr().out)
    assert (tiny["policy"], tiny["tiny-rewards"], tiny["kl-clamp"], tiny["gpt-model"]) == ("cfg", True, 20.0, "GPT-tiny")


def test_t2i_ar_grpo_json_prompts_right_padding_pure_bf16_lr_decay(tmp_path):
    rows = [{"id": f"coco_{i}", "image_num": 0,
             "conversations": [{"from": "human", "value": v}, {"from": "gpt", "value": ""}]}
            for i, v in enumerate(["A RED fox &amp; the SNOW", "<b>blue</b> sky http://x.com/a.png",
                                   "一只猫 a green cat", "a yellow lemon 🍋", "", "  spaces  "])]
    (tmp_path / "coco.json").write_text(json.dumps(rows))
    m = train(tmp_path / "run", "--task", "t2i", "--prompts", str(tmp_path / "coco.json"), "--steps", "3",
              "--caption-pad", "right", "--policy", "cond", "--pure-bf16", "--lr-decay-steps", "4",
              "--raw-prompts")       # AR-GRPO's reading: the empty caption is a prompt too
    assert [x["lr"] for x in m] == pytest.approx([3e-3, 3e-3 * 0.75, 3e-3 * 0.5])   # linear decay, no warmup
    assert all(math.isfinite(x["loss"]) and math.isfinite(x["reward_mean"]) for x in m)
    ck = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=True)
    assert all(v.dtype == torch.bfloat16 for v in ck["model"].values() if v.is_floating_point())
    assert all(s["exp_avg"].dtype == torch.bfloat16 for s in ck["optimizer"]["state"].values())
    assert ck["args"]["caption_pad"] == "right" and ck["args"]["clean_captions"] is True and ck["args"]["raw_prompts"]


def test_judge_metrics_per_step():
    from plumbing.rundir import judge_metrics
    before = {"qwen_score/answers": 8, "qwen_score/attempts": 9, "qwen_score/failures": 1, "qwen_score/digit_mass": 0.3,
              "qwen_fake/answers": 8, "qwen_fake/attempts": 8, "qwen_fake/failures": 0}
    after = {"qwen_score/answers": 16, "qwen_score/attempts": 21, "qwen_score/failures": 3, "qwen_score/digit_mass": 0.5,
             "qwen_fake/answers": 16, "qwen_fake/attempts": 16, "qwen_fake/failures": 0}
    assert judge_metrics(before, after) == {"judge_fail_frac": 2 / 16, "judge_attempts": 20 / 16}
    assert judge_metrics({}, {}) == {}                                     # no generate-mode judge


def test_pure_bf16_loses_small_updates():
    """AR-GRPO's T2I run keeps weights and AdamW state in bf16: an update smaller than half a bf16 ulp
    of its weight rounds away. Measured on GPT-tiny (random init, std 0.02) with a real GRPO
    gradient, AdamW at lr 1e-5 (its first steps move every weight by ~lr)."""
    lost = []
    for dtype in (torch.float32, torch.bfloat16):
        torch.manual_seed(0)
        model = GPT(gpt_config("GPT-tiny")).to(dtype)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.0)
        cond = torch.arange(8) % 4
        frac = []
        for step in range(5):
            tokens = generate(model, cond, Sampling(cfg_scale=2.0), generator=torch.Generator().manual_seed(step))
            logp, _ = policy_logprobs(model, cond, tokens, "cond", Sampling(cfg_scale=2.0))
            loss, *_ = grpo_loss(logp, logp.detach(), logp.detach(), torch.randn(8, generator=torch.Generator().manual_seed(step)), Objective(beta=0.1))
            opt.zero_grad()
            loss.backward()
            before = [p.detach().clone() for p in model.parameters()]
            opt.step()
            moved = sum((p.detach() != b).sum().item() for p, b in zip(model.parameters(), before))
            frac.append(1 - moved / sum(p.numel() for p in model.parameters() if p.grad is not None))
        lost.append(sum(frac) / len(frac))
    print(f"lr 1e-5 AdamW updates lost: fp32 {lost[0]:.4f}, pure bf16 {lost[1]:.4f}")
    assert lost[0] < 0.01 and lost[1] > 0.5
