"""Tests of bench.py's modes: the sampler against its floors, `--rewards` (images/s of each reward)
and `--agreement` (the judge's fast vs generate modes), run through the command line on tiny random
models, and its flag errors."""
import json
import math

import pytest
import torch
from PIL import Image

from tools import bench

TINY = ["--batch", "2", "--image-size", "32", "--repeat", "1", "--judge-tokens", "8",
        "--device", "cpu"]


def test_precision_compares_fp32_and_bf16_rollouts_of_the_same_uniforms(tmp_path):
    """--precision: the same seeds sampled in fp32 and under bf16 autocast; bf16 moves the log-probs
    a little (GPT-tiny: too little to flip a token of its 64 codes)."""
    out = tmp_path / "precision.json"
    bench.main(["--precision", "--model", "GPT-tiny", "--images", "4", "--image-size", "64", "--repeat", "2",
                "--json", str(out)])
    r = json.load(open(out))
    assert (r["images"], r["tokens"], r["identical_images"], r["median_first_difference"]) == (8, 16, 1.0, None)
    assert 0 < r["logp_gap_mean"] <= r["logp_gap_max"] < 0.05


def test_sampling_prints_and_returns_every_column_per_batch(tmp_path, capsys):
    out = tmp_path / "sampling.json"
    bench.main(["--model", "GPT-tiny", "--images", "1,2", "--image-size", "64", "--repeat", "1",
                "--no-compile", "--json", str(out)])
    printed = capsys.readouterr().out
    assert "images   1 (decode batch   2): floor" in printed and "reading its k, v once" in printed
    rows = json.load(open(out))
    assert [(r["images"], r["batch"]) for r in rows] == [(1, 2), (2, 4)]   # CFG doubles the batch
    for r in rows:
        assert set(r) == {"images", "batch", "floor", "attention", "kv_read", "eager", "compiled",
                          "llamagen_style", "official", "warmup"} and r["official"] is None
        assert all(r[k] > 0 for k in ("floor", "attention", "kv_read", "eager", "compiled",
                                      "llamagen_style", "warmup"))


def test_rewards_prints_and_returns_one_row_per_reward_and_judge_mode(tmp_path, capsys):
    out = tmp_path / "rewards.json"
    bench.main(["--rewards", "--reward-list", "color,jpeg,qwen_fake", *TINY,
                "--json", str(out)])
    lines = capsys.readouterr().out.strip().splitlines()
    labels = ["color", "jpeg", "qwen_fake (fast)", "qwen_fake (generate)"]
    assert lines[0].startswith("device cpu, tiny random models, batch 2, 32 px")
    assert [line[:24].strip() for line in lines[1:]] == labels
    for line in lines[1:]:
        assert float(line[24:].split()[0]) > 0 and "images/s   mean reward" in line
    rows = json.load(open(out))
    assert [r[0] for r in rows] == labels
    assert all(ips > 0 and math.isfinite(mean) for _, ips, mean in rows)
    assert torch.is_grad_enabled()               # the benchmark leaves autograd as it found it


def test_agreement_on_four_images_gives_spearman_or_undefined_and_a_failure_fraction(tmp_path,
                                                                                      capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    for i, c in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255), (200, 200, 50)]):
        Image.new("RGB", (40, 40), c).save(folder / f"a_colour_{i}.png")
    out = tmp_path / "agreement.json"
    bench.main(["--agreement", "--agreement-images", str(folder), *TINY, "--json", str(out)])
    assert capsys.readouterr().out.startswith("judge agreement: 4 images, tiny random judge, cpu")
    res = json.load(open(out))
    assert sorted(res) == ["qwen_fake", "qwen_score", "qwen_weird"]
    for r in res.values():
        s = r["spearman"]
        assert math.isnan(s) or -1 <= s <= 1    # NaN: undefined, one of the two scores constant
        assert 0 <= r["generate_fail_frac"] <= 1


def test_spearman_ranks_ties_and_constant_input():
    assert bench.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1)
    assert bench.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1)
    assert bench.spearman([1, 1, 2], [1, 1, 2]) == pytest.approx(1)
    assert math.isnan(bench.spearman([1, 2, 3], [5, 5, 5]))


@pytest.mark.parametrize("argv,msg", [
    (["--rewards", "--batch", "0"], "--batch must be >= 1, got 0"),
    (["--rewards", "--judge-tokens", "0"], "--judge-tokens must be >= 1, got 0"),
    (["--rewards", "--reward-list", "nope"], "--reward-list: unknown reward 'nope'"),
    (["--rewards", "--agreement"], "not allowed with argument"),
])
def test_invalid_flag_is_one_argparse_error_line(argv, msg, capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("usage: ") and ": error: " in err[-1]   # argparse: usage + one line
    assert msg in err[-1] and sum(": error: " in line for line in err) == 1
