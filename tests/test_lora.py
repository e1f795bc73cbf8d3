"""LoRA (train.py --lora-rank, plumbing/lora.py, tools/lora.py): at initialisation the policy is the
base (log-probs equal bit for bit, KL 0), the reference is the base with the adapters off, only the
adapters train, a killed run resumes exactly, and the merge exports a plain GPT that computes what
the adapted policy computes. Tiny random models on CPU."""
import os
import subprocess
import sys

import pytest
import torch

from grpo import kl_estimate, policy_logprobs
from model import GPT, Sampling, load_gpt
from plumbing import lora
from plumbing.weights import BadCheckpoint
from tests.test_train import ENV, ROOT, tiny_model_and_cond, train, train_here


def logprobs(model, cond, tokens, policy):
    with torch.no_grad():
        return policy_logprobs(model, cond, tokens, policy, Sampling(cfg_scale=2.0))[0]


@pytest.mark.parametrize("task", ["c2i", "t2i"])
def test_at_initialisation_the_policy_is_the_base_and_the_reference_too(task):
    base, cond, mask = tiny_model_and_cond(task)
    tokens = torch.randint(0, base.config.vocab_size, (cond.shape[0], base.config.block_size))
    want = {p: logprobs(base, cond, tokens, p) for p in ("cond", "cfg")}
    policy = base  # in place, as train.py does: no copy of the weights
    reference = lora.reference_for(policy, type("A", (), dict(lora_rank=4, lora_alpha=8,
                                                              lora_targets="wqkv,wo,w1,w2,w3")))
    assert len(lora.adapters(policy)) == 5 * policy.config.n_layer
    assert list(reference.parameters()) == []            # the reference holds no weights of its own
    for p, lp in want.items():
        assert torch.equal(logprobs(policy, cond, tokens, p), lp)          # B = 0: exactly the base
        assert torch.equal(logprobs(reference, cond, tokens, p), lp)
        assert kl_estimate(logprobs(policy, cond, tokens, p), lp).abs().max() == 0
    trained = [n for n, p in policy.named_parameters() if p.requires_grad]
    assert trained and all(n.endswith((".lora_a", ".lora_b")) for n in trained)


def test_adapters_off_is_the_base_after_training_and_merge_folds_them_in():
    model, cond, _ = tiny_model_and_cond("c2i")
    tokens = torch.randint(0, model.config.vocab_size, (4, model.config.block_size))
    base = logprobs(model, cond, tokens, "cond")
    names = set(model.state_dict())
    lora.add_adapters(model, 2, 4.0, ("wqkv", "w2"))
    with torch.no_grad():
        for m in lora.adapters(model):
            m.lora_b.normal_(0, 0.05)                     # as if trained
    tuned = logprobs(model, cond, tokens, "cond")
    assert not torch.allclose(tuned, base)
    assert torch.equal(logprobs(lora.Reference(model), cond, tokens, "cond"), base)
    assert torch.equal(logprobs(model, cond, tokens, "cond"), tuned)  # switched back on
    lora.merge(model)
    assert set(model.state_dict()) == names and not lora.adapters(model)  # LlamaGen's names
    torch.testing.assert_close(logprobs(model, cond, tokens, "cond"), tuned, atol=1e-5, rtol=0)


def test_only_the_adapters_train_resume_is_exact_and_the_merge_loads_anywhere(tmp_path):
    flags = ["--lora-rank", "4", "--lora-alpha", "8", "--steps", "4"]
    whole = train(tmp_path / "whole", *flags)
    assert whole[0]["kl"] == 0                            # the first step: the policy is the base
    train(tmp_path / "cut", *flags[:-1], "2")
    cut = train(tmp_path / "cut", *flags, "--resume")
    assert [r["reward_mean"] for r in cut] == [r["reward_mean"] for r in whole]
    ck = torch.load(tmp_path / "whole" / "ckpt.pt", weights_only=True)
    resumed = torch.load(tmp_path / "cut" / "ckpt.pt", weights_only=True)
    assert ck["lora"] == {"rank": 4, "alpha": 8.0, "targets": ["w1", "w2", "w3", "wo", "wqkv"]}
    assert set(ck["model"]) == set(resumed["model"])
    assert all(k.endswith((".lora_a", ".lora_b")) for k in ck["model"])       # adapters only
    assert all(torch.equal(ck["model"][k], resumed["model"][k]) for k in ck["model"])
    assert any(v.abs().sum() > 0 for k, v in ck["model"].items() if k.endswith("lora_b"))
    # a LoRA checkpoint where a plain GPT is expected: one line that says to merge
    with pytest.raises(BadCheckpoint, match="LoRA run's checkpoint.*tools/lora.py merge"):
        load_gpt(str(tmp_path / "whole" / "ckpt.pt"))
    r = subprocess.run([sys.executable, "tools/eval.py", "compare", "--tuned", str(tmp_path / "whole" / "ckpt.pt"),
                        "--per-class", "2", "--classes", "0,1", "--diversity", "pixel", "--grid-rows", "0", "--out",
                        str(tmp_path / "cmp")], cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert r.returncode == 0 and (tmp_path / "cmp" / "report.json").exists(), r.stderr[-2000:]  # adapters folded in
    out = tmp_path / "merged.pt"
    r = subprocess.run([sys.executable, "tools/lora.py", "merge", str(tmp_path / "whole" / "ckpt.pt"),
                        "--out", str(out)], cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    merged = load_gpt(str(out))
    # the merge == the run's policy: its base rebuilt from the seed, the saved adapters on it
    torch.manual_seed(ck["args"]["seed"])
    policy = GPT(merged.config).eval()
    base = {k: v.clone() for k, v in policy.state_dict().items()}
    lora.add_adapters(policy, 4, 8.0)
    lora.load_adapter_state(policy, ck["model"])
    model, cond, _ = tiny_model_and_cond("c2i")
    tokens = torch.randint(0, merged.config.vocab_size, (4, merged.config.block_size))
    torch.testing.assert_close(logprobs(merged, cond, tokens, "cfg"), logprobs(policy, cond, tokens, "cfg"),
                               atol=1e-5, rtol=0)
    changed = [k for k, v in merged.state_dict().items() if not torch.equal(v, base[k])]
    assert changed and all(k.split(".")[-2] in lora.TARGETS for k in changed)   # only adapted weights moved


def test_mnist_trains_with_lora(tmp_path):
    """The pretrained MNIST base (the tests' small recipe) tunes through adapters end to end."""
    rows = train_here(tmp_path / "m", "--preset", "mnist", "--pretrain", "mnist-tiny", "--lora-rank", "4",
                      "--lr", "3e-3", "--steps", "3", "--prompts-per-rank", "2",
                      "--cache-dir", str(tmp_path / "cache"))
    assert len(rows) == 3 and rows[0]["kl"] == 0 and rows[-1]["kl"] > 0


@pytest.mark.parametrize("flags, message", [
    (["--lora-rank", "-1"], "--lora-rank must be in [0, 4096]"),
    (["--lora-rank", "4", "--lora-alpha", "nan"], "--lora-alpha must be a finite number"),
    (["--lora-rank", "4", "--lora-targets", "wqkv,attn"], "--lora-targets: attn: choose among"),
])
def test_bad_lora_flags_are_one_line_errors(tmp_path, flags, message):
    r = subprocess.run([sys.executable, "train.py", "--task", "c2i", "--preset", "tiny", "--out",
                        str(tmp_path / "x"), *flags], cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert r.returncode == 2 and message in r.stderr.strip().splitlines()[-1], r.stderr
    assert not os.path.exists(tmp_path / "x" / "args.json")


def test_merge_refuses_what_is_not_a_lora_checkpoint(tmp_path):
    train(tmp_path / "plain", "--steps", "1")
    r = subprocess.run([sys.executable, "tools/lora.py", "merge", str(tmp_path / "plain" / "ckpt.pt"), "--out",
                        str(tmp_path / "m.pt")], cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert r.returncode == 1 and "is not a LoRA run's checkpoint" in r.stderr and not os.path.exists(tmp_path / "m.pt")
