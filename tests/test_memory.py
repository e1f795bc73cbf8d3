"""tools/memory.py: the per-rank estimate counts exactly what train.py keeps (parameters built on
the meta device; LoRA's adapters by hand), its parts move the right way with each flag, and the
table says 'fits' exactly where the total is under 90 % of the GPU."""
import os
import subprocess
import sys


from model import GPT, gpt_config
from tests.test_train import ENV, ROOT

sys.path.insert(0, os.path.join(ROOT, "tools"))
import memory  # noqa: E402


def test_the_parts_are_the_parameter_counts_times_their_bytes():
    import torch
    with torch.device("meta"):
        n = sum(p.numel() for p in GPT(gpt_config("GPT-B", model_type="c2i", block_size=256)).parameters())
    full = memory.estimate("GPT-B", "c2i", 256, ref_dtype="bf16")
    assert full["policy weights"] == 4 * n and full["gradient + AdamW"] == 12 * n
    assert full["reference"] == 2 * n
    assert memory.estimate("GPT-B", "c2i", 256, ref_dtype="fp32")["reference"] == 4 * n
    assert memory.estimate("GPT-B", "c2i", 256, pure_bf16=True)["gradient + AdamW"] == 6 * n
    # LoRA rank 16 on GPT-B: per layer r x (in + out) of wqkv (768 -> 2304), wo (768 -> 768),
    # w1, w3 (768 -> 2048) and w2 (2048 -> 768); 12 layers; no reference of its own
    adapters = 16 * (3072 + 1536 + 3 * 2816) * 12
    lo = memory.estimate("GPT-B", "c2i", 256, lora_rank=16)
    assert lo["gradient + AdamW"] == 12 * adapters and lo["reference"] == 0
    assert lo["policy weights"] == 4 * n
    sh = memory.estimate("GPT-B", "c2i", 256, fsdp=8)           # the policy's states split 8 ways
    assert sh["policy weights"] == 4 * n // 8 and sh["gradient + AdamW"] == 12 * n // 8
    act = "activations (max of rollout, update)"
    assert sh[act] >= full[act] and sh["reference"] == full["reference"]


def test_each_flag_moves_its_part_the_right_way():
    def total(**kw):
        return sum(memory.estimate("GPT-XL", "c2i", 384, **kw).values())
    assert total(grad_checkpoint=True) < total() and total(lora_rank=16) < total()
    assert total(images=16, micro=16) > total() > total(micro=2)
    assert total(policy="cfg") > total()                      # the update's CFG pass doubles rows
    paper = memory.estimate("GPT-B", "c2i", 256, rewards={"CLIP": 10, "Qwen2.5-VL-3B": 10, "FLAN-T5-XL": 10},
                            reward_dtype="paper")
    assert paper["CLIP"] == 40 and paper["Qwen2.5-VL-3B"] == 20 and "FLAN-T5-XL" not in paper


def test_the_table_says_fits_where_the_total_is_under_90_percent():
    lines = memory.table({}).splitlines()[2:]
    assert len(lines) == len(memory.MODELS) * len(memory.FLAG_SETS)
    for line in lines:
        cells = [c.strip() for c in line.strip("|").split("|")]
        gb = float(cells[2])
        assert cells[3:] == ["fits" if gb < 0.9 * g else "-" for g in memory.GPUS], line


def test_one_configuration_from_the_command_line():
    r = subprocess.run([sys.executable, "tools/memory.py", "one", "--model", "GPT-B", "--image-size", "256",
                        "--lora-rank", "8"], cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "total per rank" in r.stdout and "Qwen2.5-VL-3B" in r.stdout
    bad = subprocess.run([sys.executable, "tools/memory.py", "one", "--images", "0"], cwd=ROOT, env=ENV,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "--images >= 1" in bad.stderr.strip().splitlines()[-1]
