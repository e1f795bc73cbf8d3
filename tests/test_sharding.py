"""--fsdp (plumbing/sharding.py: torch's FSDP2) against DDP, 2 gloo ranks on CPU: the same rewards
and, up to float summation order, the same weights; one full checkpoint that --resume continues bit
for bit and that load_gpt reads like any other; the flag combinations it refuses."""
import json
import os
import subprocess
import sys

import torch

from model import load_gpt
from tests.test_train import ENV, ROOT, train, train_cmd


def test_fsdp_trains_as_ddp_does(tmp_path):
    ddp = train(tmp_path / "ddp", "--steps", "3", nproc=2)
    fsdp = train(tmp_path / "fsdp", "--steps", "3", "--fsdp", nproc=2)
    assert fsdp[0]["reward_mean"] == ddp[0]["reward_mean"]          # the same start, the same samples
    for a, b in zip(fsdp, ddp):
        assert abs(a["reward_mean"] - b["reward_mean"]) < 1e-6 and abs(a["grad_norm"] - b["grad_norm"]) < 1e-5
    wa = torch.load(tmp_path / "fsdp" / "ckpt.pt", weights_only=True)
    wb = torch.load(tmp_path / "ddp" / "ckpt.pt", weights_only=True)
    assert set(wa["model"]) == set(wb["model"])                     # one full state dict, LlamaGen's names
    for k in wb["model"]:
        torch.testing.assert_close(wa["model"][k], wb["model"][k], atol=1e-6, rtol=1e-5)
    model = load_gpt(str(tmp_path / "fsdp" / "ckpt.pt"))            # sample.py / eval.py read it
    assert torch.equal(model.state_dict()["output.weight"], wa["model"]["output.weight"])


def test_a_sharded_run_resumes_bit_for_bit(tmp_path):
    whole = train(tmp_path / "whole", "--steps", "4", "--fsdp", nproc=2)
    train(tmp_path / "cut", "--steps", "2", "--fsdp", nproc=2)
    cut = train(tmp_path / "cut", "--steps", "4", "--resume", nproc=2)   # a bare --resume keeps --fsdp
    assert [(r["reward_mean"], r["loss"], r["kl"]) for r in cut] == [(r["reward_mean"], r["loss"], r["kl"]) for r in whole]
    a = torch.load(tmp_path / "whole" / "ckpt.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "ckpt.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert json.load(open(tmp_path / "cut" / "args.json"))["fsdp"] is True


def test_mnist_trains_sharded(tmp_path):
    cache = str(tmp_path / "cache")
    subprocess.run([sys.executable, "tools/pretrain.py", "--recipe", "mnist-tiny", "--cache-dir", cache],
                   cwd=ROOT, env=ENV, check=True, capture_output=True)
    rows = train(tmp_path / "m", "--preset", "mnist", "--pretrain", "mnist-tiny", "--cache-dir", cache,
                 "--fsdp", "--steps", "2", "--prompts-per-rank", "2", nproc=2)
    assert len(rows) == 2 and rows[0]["kl"] == 0 and "reward_digit" in rows[0]


def test_what_fsdp_refuses(tmp_path):
    r = subprocess.run(train_cmd(tmp_path / "x", "--fsdp"), cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert r.returncode == 2 and "run it with `torchrun" in r.stderr.strip().splitlines()[-1], r.stderr
    for flags, word in ((["--lora-rank", "4"], "--lora-rank"), (["--compile"], "--compile")):
        r = subprocess.run(train_cmd(tmp_path / "x", "--fsdp", *flags), cwd=ROOT, capture_output=True, text=True,
                           env={**ENV, "WORLD_SIZE": "2"})  # the flags' check, before any process group
        last = r.stderr.strip().splitlines()[-1]
        assert r.returncode == 2 and f"--fsdp with {word} is not supported" in last, r.stderr
        assert not os.path.exists(tmp_path / "x" / "args.json")
