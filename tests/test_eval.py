"""eval.py: each metric on small inputs with known answers, the report format, the one-line errors.
Tiny random models on CPU, random-weight Inception for the FID pipeline; no weights needed."""
import json
import math
import os

import numpy as np
import pytest
import torch

from tools import eval as ev
from plumbing.weights import MissingCheckpoint
from conftest import one_line_error, save_tiny_run
from model import GPT, Sampling, gpt_config

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


# ----------------------------------------------------------------------------- metrics with known answers
def test_fid_known_answers():
    f = torch.randn(500, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mu, sigma = ev.feature_stats(f)
    assert abs(ev.fid_from_stats(mu, sigma, mu, sigma)) < 1e-8                         # identical sets: 0
    assert ev.fid_from_stats(mu, sigma, mu + 1, sigma) == pytest.approx(6, abs=1e-8)    # mean shift: |1|^2 * d
    I = torch.eye(4, dtype=torch.float64)                                               # Tr(I + 4I - 2 sqrt(4 I)) = 4
    assert ev.fid_from_stats(torch.zeros(4), I, torch.zeros(4), 4 * I) == pytest.approx(4, abs=1e-8)
    # rank-deficient covariances (fewer samples than dimensions, as in a small test run): ~0 up to the
    # rounding of the zero eigenvalues, not NaN
    mu, sigma = ev.feature_stats(torch.randn(5, 32, dtype=torch.float64))
    assert abs(ev.fid_from_stats(mu, sigma, mu, sigma)) < 1e-6 * sigma.trace()


def test_inception_score_known_answers():
    C = 10
    confident = torch.eye(C).repeat(3, 1) * 50                                          # every class equally often, certain
    assert ev.inception_score(confident) == pytest.approx(C, rel=1e-6)
    assert ev.inception_score(torch.randn(1, C).repeat(30, 1)) == pytest.approx(1.0)    # one prediction for all: 1
    assert ev.inception_score(confident, split_size=10) == pytest.approx(C, rel=1e-6)   # each split sees all classes


def test_precision_recall_known_answers():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(200, 8, generator=g)
    assert ev.precision_recall(real, real.clone()) == (1.0, 1.0)                         # identical sets
    assert ev.precision_recall(real, real + 100) == (0.0, 0.0)                           # disjoint sets
    # generated = a tight cluster at the centre of the real cloud: all inside (precision 1), covers little (recall < 0.5)
    p, r = ev.precision_recall(real, 0.01 * torch.randn(200, 8, generator=g))
    assert p == 1.0 and r < 0.5
    x = torch.tensor([[0.0], [1.0], [3.0], [6.0], [10.0]])                               # by hand: 3rd neighbour distances
    assert ev.knn_radii(x, k=3).tolist() == [6.0, 5.0, 3.0, 5.0, 9.0]


def test_diversity_known_answers():
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert ev.pairwise_diversity(x[:1].repeat(5, 1, 1, 1)) == pytest.approx(0, abs=1e-12)     # identical images: 0
    assert ev.pairwise_diversity(torch.stack([x[0], -x[0]])) == pytest.approx(2.0)            # opposite: 1 - (-1)
    e = torch.eye(3).view(3, 3, 1, 1)                                                          # orthogonal: 1
    assert ev.pairwise_diversity(e) == pytest.approx(1.0)
    # the pair mean counts each unordered pair once: [a, a, b] with d(a, b) = 2 -> (0 + 2 + 2) / 3
    assert ev.pairwise_diversity(torch.stack([x[0], x[0], -x[0]])) == pytest.approx(4 / 3)
    y = torch.randn(9, 3, 4, 4, generator=torch.Generator().manual_seed(1))                   # 36 pairs: blocks change nothing
    assert ev.pairwise_diversity(y, block=5) == pytest.approx(ev.pairwise_diversity(y), abs=1e-12)


def test_entropy_uniform_is_log_vocab():
    torch.manual_seed(0)
    model = GPT(gpt_config("GPT-tiny")).eval()
    cond, tokens = torch.tensor([1, 2]), torch.randint(64, (2, 16))
    with torch.no_grad():
        model.output.weight.zero_()                                                    # logits 0: uniform over V = 64
    assert ev.token_entropy(model, cond, tokens, Sampling(cfg_scale=2.0)).tolist() == pytest.approx([math.log(64)] * 2, abs=1e-5)
    with torch.no_grad():                                                              # ties broken: top-k keeps k tokens
        model.output.weight.copy_(torch.randn(64, 64) * 1e-3)
    assert ev.token_entropy(model, cond, tokens, Sampling(cfg_scale=2.0, top_k=8)).tolist() == pytest.approx([math.log(8)] * 2, abs=1e-3)
    with torch.no_grad():
        model.output.weight.mul_(3e4)                                                  # sharp: well below log V
    assert (ev.token_entropy(model, cond, tokens, Sampling(cfg_scale=2.0)) < 0.5 * math.log(64)).all()


# ----------------------------------------------------------------------------- compare: the report
def compare(tmp_path, ckpt, *flags):
    return ev.main(["compare", "--tuned", str(ckpt), "--diversity", "pixel", "--per-class", "4", "--classes", "1,2,3",
                    "--out", str(tmp_path / "eval"), *flags])


def test_compare_of_the_initial_weights_has_zero_delta(tmp_path):
    # the base is rebuilt from the run's seed: it must equal train.py's initial weights, sampled on the same seeds
    save_tiny_run(tmp_path / "ckpt.pt")
    r = compare(tmp_path, tmp_path / "ckpt.pt")
    assert all(v == 0 for v in r["delta"].values()), r["delta"]
    assert 0 < r["base"]["diversity"] <= 2 and 0 < r["base"]["entropy"] <= math.log(64) + 1e-5


def test_compare_report_format_and_grid(tmp_path):
    save_tiny_run(tmp_path / "ckpt.pt", steps=1)
    r = compare(tmp_path, tmp_path / "ckpt.pt", "--rewards", "color:1,brightness:0.5", "--grid-rows", "2", "--grid-cols", "3")
    on_disk = json.load(open(tmp_path / "eval" / "report.json"))
    assert on_disk == json.loads(json.dumps(r))
    assert {"tuned_ckpt", "base_ckpt", "task", "conditions", "per_class", "seed", "rewards", "diversity_metric",
            "sampler", "base", "tuned", "delta"} <= set(on_disk)
    assert on_disk["conditions"] == [1, 2, 3] and on_disk["sampler"]["cfg_scale"] == 2.0    # the run's sampler
    m = on_disk["tuned"]
    assert set(m) == {"reward", "reward_sem", "reward_color", "reward_brightness", "diversity", "entropy", "images"}
    assert m["images"] == 12 and m["reward"] == pytest.approx(m["reward_color"] + 0.5 * m["reward_brightness"], rel=1e-5)
    assert on_disk["delta"]["entropy"] == pytest.approx(m["entropy"] - on_disk["base"]["entropy"]) != 0
    from PIL import Image
    w, h = Image.open(tmp_path / "eval" / "grid.png").size          # 2 rows x (3 + gap + 3), 16 px x4 + 1 px frame
    assert (w, h) == (7 * 66, 2 * 66)


def test_compare_missing_base_is_one_line(tmp_path):
    save_tiny_run(tmp_path / "ckpt.pt")
    err = one_line_error(["tools/eval.py", "compare", "--tuned", str(tmp_path / "ckpt.pt"),
                          "--base", str(tmp_path / "nope.pt"), "--diversity", "pixel"], ENV, 120)
    assert "nope.pt" in err and "--base" in err


def test_lpips_missing_weights_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))                                    # empty caches
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingCheckpoint) as e:
        ev.build_lpips("cpu")
    msg = str(e.value)
    assert "\n" not in msg and ev.LPIPS_FILES[0] in msg and "--diversity pixel" in msg


# ----------------------------------------------------------------------------- fid
def test_fid_pipeline_with_random_inception(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "ref.npz", arr_0=imgs)                                          # no mu/sigma: computed from arr_0
    np.savez(tmp_path / "same.npz", arr_0=imgs)
    r = ev.main(["fid", "--npz", str(tmp_path / "same.npz"), "--ref", str(tmp_path / "ref.npz"),
                 "--inception-ckpt", "random", "--cpu-threads", "1"])
    assert abs(r["fid"]) < 1e-3 and r["precision"] == 1.0 and r["recall"] == 1.0 and r["inception_score"] >= 1.0
    assert json.load(open(tmp_path / "same_fid.json"))["samples"] == 6
    np.savez(tmp_path / "big.npz", arr_0=np.zeros((2, 64, 64, 3), np.uint8))           # wrong resolution: told how to fix
    with pytest.raises(SystemExit, match="--image-size-eval 32"):
        ev.main(["fid", "--npz", str(tmp_path / "big.npz"), "--ref", str(tmp_path / "ref.npz"), "--inception-ckpt", "random"])


@pytest.mark.parametrize("protocol", ["argrpo", "llamagen"])
def test_c2i_protocols_by_name_and_stated_in_the_fid_report(tmp_path, protocol):
    """sample.py --protocol argrpo (AR-GRPO's test.py: native size, fp16, CFG 2.0, truncated uint8)
    or llamagen (LlamaGen's: resized to 256, bf16, CFG by model size); the .npz records it and the FID
    report states it. Native-size samples are scored against a reference of another size only under
    argrpo, as AR-GRPO's 384 px evaluation does."""
    import sample
    torch.set_num_threads(1)
    npz = tmp_path / f"{protocol}.npz"
    sample.main(["--preset", "tiny", "--protocol", protocol, "--classes", "1,2", "--per-class", "2", "--out", "", "--npz", str(npz),
                 "--device", "cpu"])
    meta = json.loads(str(np.load(npz)["meta"]))
    want = {"argrpo": ("fp16", 2.0, None, 16), "llamagen": ("bf16", 2.0, 256, 256)}[protocol]
    assert (meta["precision"], meta["cfg_scale"], meta["image_size_eval"], np.load(npz)["arr_0"].shape[1]) == want
    assert meta["protocol"] == protocol and meta["top_k"] == 0
    ref = tmp_path / "ref.npz"
    np.savez(ref, arr_0=np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8))
    fid = ["fid", "--npz", str(npz), "--ref", str(ref), "--inception-ckpt", "random", "--cpu-threads", "1"]
    if protocol == "llamagen":                                                # 256 px vs a 32 px reference
        with pytest.raises(SystemExit, match="--image-size-eval 32"):
            ev.main(fid)
    else:
        r = ev.main(fid)
        assert r["protocol"] == "argrpo" and r["size"] == 16 and r["sampler"]["cfg_scale"] == 2.0
    flags = sample.parse_sample_args(["--preset", "tiny", "--protocol", protocol, "--cfg-scale", "1.5",
                                      "--precision", "fp32"], "")
    assert (flags.cfg_scale, flags.precision) == (1.5, "fp32")               # a flag given still wins


def test_llamagen_protocol_cfg_by_model_and_argrpo_truncation():
    from model import gpt_config
    from plumbing.flags import parse_sample_args, protocol_cfg
    from plumbing.images import to_uint8
    for name, cfg in (("GPT-B", 2.0), ("GPT-L", 2.0), ("GPT-XL", 1.75), ("GPT-XXL", 1.75), ("GPT-3B", 1.65)):
        args = parse_sample_args(["--protocol", "llamagen", "--gpt-ckpt", "c2i_B_256"], "")
        protocol_cfg(args, gpt_config(name))
        assert args.cfg_scale == cfg, name
    x = torch.tensor([-1.0, -0.5, 0.0, 0.999, 1.0, 1.2]).view(1, 1, 1, 6).expand(1, 3, 1, 6)
    argrpo = ((x + 1) * 0.5).clamp(0, 1).permute(0, 2, 3, 1).mul(255).numpy().astype(np.uint8)   # test.py's batched_img
    assert np.array_equal(to_uint8(x, truncate=True).numpy(), argrpo)
    assert to_uint8(x)[0, 0, :, 0].tolist() == [0, 64, 128, 255, 255, 255]   # LlamaGen's: rounded


def test_fid_missing_inception_weights_is_one_line(tmp_path):
    np.savez(tmp_path / "s.npz", arr_0=np.zeros((2, 8, 8, 3), np.uint8))
    err = one_line_error(["tools/eval.py", "fid", "--npz", str(tmp_path / "s.npz"),
                          "--ref", str(tmp_path / "s.npz")], {**ENV, "TORCH_HOME": str(tmp_path)}, 120)
    assert ev.INCEPTION_FILE in err and "--inception-ckpt" in err


# ----------------------------------------------------------------------------- plot
def test_plot_writes_pngs_and_tensorboard(tmp_path):
    with open(tmp_path / "metrics.jsonl", "w") as f:
        for s in range(30):
            f.write(json.dumps({"step": s, "reward_mean": s / 30, "reward_std": 0.1, "reward_group_std": 0.05,
                                "reward_color": s / 30, "reward_jpeg": -1.0, "kl": s * 1e-3, "entropy": 4 - s / 10,
                                "clip_frac": 0.0, "zero_std_frac": 0.1}) + "\n")
    ev.main(["plot", str(tmp_path), "--tensorboard"])
    for name in ["curves", "reward", "reward_components", "kl", "entropy", "clip_frac", "zero_std_frac"]:
        png = tmp_path / "plots" / f"{name}.png"
        assert png.exists() and png.read_bytes()[:4] == b"\x89PNG", name
    assert any(n.startswith("events.out.tfevents") for n in os.listdir(tmp_path / "tb"))


def test_compare_with_the_compiled_sampler_gives_the_same_report(tmp_path, monkeypatch):
    # --compile (default on a GPU) changes the speed, never a number of the report
    from plumbing import compiled as path
    save_tiny_run(tmp_path / "ckpt.pt", steps=1)
    eager = compare(tmp_path, tmp_path / "ckpt.pt")
    assert ev.parse_args(["compare", "--tuned", "x", "--device", "cpu"]).compile is False
    compiled, real = [], path.decoding
    monkeypatch.setattr(path, "decoding", lambda *a: compiled.append(a) or real(*a))
    assert compare(tmp_path, tmp_path / "ckpt.pt", "--compile", "--out", str(tmp_path / "c")) == eager
    assert len(compiled) == 6                                # 3 classes x (base, tuned): all compiled
