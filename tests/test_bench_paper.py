"""Tests of tools/bench_paper.py (the paper preset's GRPO step phase by phase): the tiny size through
the command line (every phase and reward reported, shares and estimates consistent), the real-size
code path on a CPU with the architectures shrunk, the refusal of --size real on a CPU, and the
parameter counts of the real builds (on the meta device) against the published sizes."""
import json

import pytest
import torch

import train
from model import GPT
from tools import bench, bench_paper as bp

FAST = ["--size", "tiny", "--steps", "1", "--judge-tokens", "4", "--cpu-threads", "1",
        "--device", "cpu"]
PAPER_PHASES = ["reward clip", "reward clip_q", "reward hps", "reward hps_q", "reward maniqa",
                "reward qwen_score", "reward qwen_fake", "reward qwen_weird"]


def check_report(r, B, first_phase):
    phases = r["phases"]
    assert set(phases) == {first_phase, "rollout", "reference log-probs", "score", "vq decode",
                           *PAPER_PHASES, "score: inputs, advantages", "update", "step"}
    assert all(p["s"] >= 0 and p["peak_gb"] > 0 for p in phases.values())
    inner = sum(phases[k]["s"] for k in phases if k.startswith(("reward ", "vq ", "score: ")))
    assert inner == pytest.approx(phases["score"]["s"])          # the score phase, split
    top = [first_phase, "rollout", "reference log-probs", "score", "update"]
    assert sum(phases[k]["s"] for k in top) == pytest.approx(r["t_step"], rel=0.05, abs=0.01)
    judge = sum(phases[f"reward {n}"]["s"] for n in ("qwen_score", "qwen_fake", "qwen_weird"))
    assert r["judge_share"] == pytest.approx(judge / r["t_step"]) and 0 < r["judge_share"] < 1
    assert r["images_per_rank"] == B and r["images_per_s"] == pytest.approx(B / r["t_step"])
    assert r["hours_400_steps_4_gpus"] == pytest.approx(400 * r["t_step"] / 3600)
    assert r["paper_steps"] * r["t_step"] / 3600 == pytest.approx(r["hours_paper_run_4_gpus"])


def test_tiny_c2i_step_reports_every_phase_and_reward(tmp_path, capsys):
    out = tmp_path / "c2i.json"
    bench.main(["--step", "--paper-size", *FAST, "--json", str(out)])   # bench.py hands it over
    printed = capsys.readouterr().out
    assert printed.startswith("paper-c2i-xl384 at tiny size on CPU, 1 threads: 8 images of 16 tokens")
    assert "of the step; judge prompt tokens" in printed and "400 steps x" in printed
    r = json.load(open(out))
    check_report(r, 8, "prompts")
    assert r["variant"] == {"rollout_dtype": "fp32", "compile": False, "judge_mode": "generate",
                            "micro_batch": 0, "judge_tokens": 4, "judge_attempts": 1, "judge_batch": 16}
    # the judge's prompt in its tokenizer's tokens: the long scoring prompt, two short questions
    t = r["judge_prompt_tokens"]
    assert t["qwen_score"] > 3 * t["qwen_fake"] > 0 and t["qwen_weird"] > 0
    assert torch.is_grad_enabled()


def test_tiny_t2i_step_with_the_variants(tmp_path):
    """T2I (the text encoder's phase, 2 prompts x 8), bf16 rollout, fast judge, micro-batches of 4,
    the judge one image per call (the paper's)."""
    r = bp.main(["--preset", "paper-t2i-xl", *FAST, "--rollout-dtype", "bf16", "--judge-mode", "fast",
                 "--micro-batch", "4", "--judge-batch", "1"])
    check_report(r, 16, "text encoder")
    assert r["variant"]["rollout_dtype"] == "bf16" and r["variant"]["judge_batch"] == 1
    assert r["paper_steps"] == 600


def test_real_size_path_runs_on_a_cpu_with_the_architectures_shrunk(monkeypatch):
    """--size real --force: the real-size builders (open_clip configs, timm's ViT-B/8 for MANIQA,
    Qwen2.5-VL from a config with the stand-in's tokenizer and Qwen's image processor, T5 from a
    config, the preset's GPT over the real VQ) with every size shrunk, end to end."""
    monkeypatch.setitem(bp.CLIP_ARCH, "clip", dict(
        embed_dim=32, quick_gelu=True,
        vision_cfg=dict(layers=2, width=64, head_width=32, patch_size=8, image_size=32),
        text_cfg=dict(context_length=77, vocab_size=49408, width=64, heads=2, layers=2)))
    monkeypatch.setitem(bp.CLIP_ARCH, "hps", {**bp.CLIP_ARCH["clip"], "quick_gelu": False})
    monkeypatch.setattr(bp, "MANIQA_ARCH", dict(
        maniqa=dict(embed_dim=16, dim_mlp=16, patch_size=32, window_size=7, num_heads=[2, 2]),
        vit=dict(patch_size=32, embed_dim=16, depth=10, num_heads=2, mlp_ratio=2)))
    monkeypatch.setattr(bp, "QWEN_3B_TEXT", {**bp.QWEN_3B_TEXT, "hidden_size": 32,
                                             "intermediate_size": 64, "num_hidden_layers": 2,
                                             "num_attention_heads": 2, "num_key_value_heads": 1,
                                             "rope_parameters": dict(rope_type="default", rope_theta=1e6,
                                                                     mrope_section=[2, 3, 3])})
    monkeypatch.setattr(bp, "QWEN_3B_VISION", {**bp.QWEN_3B_VISION, "depth": 2, "hidden_size": 32,
                                               "intermediate_size": 64, "num_heads": 2,
                                               "out_hidden_size": 32, "fullatt_block_indexes": [1]})
    monkeypatch.setattr(bp, "QWEN_PIXELS", dict(min_pixels=56 * 56, max_pixels=112 * 112))
    monkeypatch.setattr(bp, "FLAN_T5_XL", {**bp.FLAN_T5_XL, "d_model": 32, "d_kv": 8, "d_ff": 64,
                                           "num_layers": 1, "num_heads": 4})
    monkeypatch.setitem(bp.PAPER_GPT, "paper-t2i-xl", "GPT-tiny")
    monkeypatch.setattr(bp, "REAL_VQ", "VQ-tiny")                       # 4 px per token, 64 codes
    monkeypatch.setitem(train.PRESETS["paper-t2i-xl"], "image_size", 16)  # 16 tokens
    real = ["--size" if a == "--size" else ("real" if a == "tiny" else a) for a in FAST]
    r = bp.main(["--preset", "paper-t2i-xl", *real, "--force", "--judge-batch", "4"])
    assert r["size"] == "real" and r["tokens_per_image"] == 16
    check_report(r, 16, "text encoder")


def test_real_size_is_refused_on_a_cpu_and_bad_flags_are_one_line(capsys):
    for argv, message in [(["--size", "real", "--device", "cpu"], "needs a CUDA GPU"),
                          (["--steps", "0"], "--steps must be >= 1"),
                          (["--micro-batch", "9"], "--micro-batch must be in [0, 8]"),
                          (["--json", "x.txt"], "--json")]:
        with pytest.raises(SystemExit) as e:
            bp.parse_args(argv)
        assert message in capsys.readouterr().err + str(e.value.code)


def test_weight_budget_counts_the_paper_dtypes():
    """paper-c2i-xl384: fp32 policy, gradient, 2 AdamW moments and reference (5 x 4 bytes x 775M);
    paper-t2i-xl: all bf16 (--pure-bf16), and the T5 encoder; the judge bf16 in both."""
    c2i, t2i = bp.weight_budget("paper-c2i-xl384"), bp.weight_budget("paper-t2i-xl")
    gpt = c2i["policy weights"][0]
    assert c2i["AdamW moments (2)"] == (2 * gpt, pytest.approx(8 * gpt / 2 ** 30))
    assert c2i["reference"][1] == pytest.approx(4 * gpt / 2 ** 30)
    assert t2i["policy weights"][1] == pytest.approx(2 * t2i["policy weights"][0] / 2 ** 30)
    assert "FLAN-T5-XL encoder" in t2i and "FLAN-T5-XL encoder" not in c2i
    assert c2i["Qwen2.5-VL-3B"][1] == pytest.approx(2 * 3.7546e9 / 2 ** 30, rel=1e-3)


def test_real_builds_have_the_published_sizes():
    """On the meta device (no memory): GPT-XL 775M, CLIP ViT-B/32 151.28M, ViT-H-14 986.11M,
    Qwen2.5-VL-3B 3.75B, FLAN-T5-XL's encoder 1.22B (within 1 %); MANIQA (built on the CPU: pyiqa's
    Swin calls .item() while building) on timm's ViT-B/8 of 86.6M."""
    built = {}
    with torch.device("meta"):
        built["GPT-XL (c2i)"] = bp.count(GPT(bp.gpt_for("paper-c2i-xl384", "c2i", "real")))
        for name, build in bp.real_reward_models().items():
            if not name.startswith("MANIQA"):
                built[name] = bp.count(build())
    for name, n in bp.PUBLISHED_PARAMS.items():
        assert n == pytest.approx(built[name], rel=0.01), name
    assert bp.gpt_for("paper-c2i-xl384", "c2i", "real").block_size == 576     # 384 px / 16, squared
    assert bp.gpt_for("paper-t2i-xl", "t2i", "real").block_size == 256
    maniqa = bp.real_maniqa()
    assert bp.count(maniqa.vit) == pytest.approx(86.6e6, rel=0.01)


def test_gpu_script_records_the_device_and_each_variant(tmp_path):
    """tools/gpu_paper_step.sh on a machine without a GPU: the device lines and both weight tables
    in device.txt, the variant's one-line refusal and exit status in log.txt; an unknown variant
    stops it."""
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "OUT": str(tmp_path), "VARIANTS": "c2i", "PYTHON": sys.executable,
           "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    subprocess.run(["bash", os.path.join(root, "tools", "gpu_paper_step.sh")], env=env, check=True,
                   capture_output=True, text=True)
    device = (tmp_path / "device.txt").read_text()
    assert "NO GPU" in device and device.count("weights and optimizer state at real size") == 2
    log = (tmp_path / "log.txt").read_text()
    assert "=== c2i: --preset paper-c2i-xl384" in log and "needs a CUDA GPU" in log
    assert "exit 2 (c2i)" in log
    r = subprocess.run(["bash", os.path.join(root, "tools", "gpu_paper_step.sh")],
                       env={**env, "VARIANTS": "nope"}, capture_output=True, text=True)
    assert r.returncode == 2 and "unknown variant nope" in r.stdout
