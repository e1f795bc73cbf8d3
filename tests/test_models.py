"""model.py / vq.py / plumbing/formats.py against the official LlamaGen outputs in ../shared/golden."""
import argparse
import json
import os

import pytest
import torch

from plumbing.files import save_atomic
from plumbing.rundir import model_state
from plumbing.weights import BadCheckpoint, MissingCheckpoint
from model import (GPT, GPTConfig, Sampling, cfg_logits, generate, gpt_config, load_gpt,
                   sampling_logprobs)
from text import TextEncoder
from vq import VQ_PRESETS, VQConfig, VQModel, load_vq

GOLDEN = os.environ.get("GOLDEN_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "golden"))
needs_golden = pytest.mark.skipif(not os.path.isdir(GOLDEN), reason="../shared/golden not present")


def golden(name):
    return torch.load(os.path.join(GOLDEN, f"{name}.expected.pt"), weights_only=True)


def close(a, b, rel=1e-4):
    return (a - b).abs().max().item() <= rel * b.abs().max().item()


def load_golden_gpt(name):
    e = golden(name)
    config = GPTConfig(**e["config"], model_type=e["model_type"])
    return load_gpt(os.path.join(GOLDEN, f"{name}.ckpt.pt"), config=config), e


@needs_golden
def test_golden_c2i():
    model, e = load_golden_gpt("gpt_c2i")
    cond, tokens = e["cond"], e["tokens"]
    with torch.no_grad():  # eval mode: every row keeps its own class (no label dropout)
        assert close(model(cond, tokens), e["logits"])
        assert close(model(model.null_cond(cond), tokens), e["logits_null"])
    assert torch.equal(generate(model, cond, Sampling(top_k=1)), e["greedy"])
    assert torch.equal(generate(model, cond, Sampling(cfg_scale=e["cfg_scale"], top_k=1)), e["greedy_cfg"])


@needs_golden
def test_golden_t2i():
    model, e = load_golden_gpt("gpt_t2i")
    with torch.no_grad():
        assert close(model(e["cond"], e["tokens"], e["emb_masks"]), e["logits"])
    got = generate(model, e["cond"], Sampling(cfg_scale=e["cfg_scale"], top_k=1), cond_mask=e["emb_masks"])
    assert torch.equal(got, e["greedy_cfg"])


@needs_golden
def test_golden_vq():
    e = golden("vq")
    vq = load_vq(os.path.join(GOLDEN, "vq.ckpt.pt"), config=VQConfig(**e["config"]))
    assert torch.equal(vq.encode(e["image"]), e["codes"])
    assert close(vq.decode(e["codes"]), e["decoded"])
    assert close(vq.decode(vq.encode(e["image"])), e["recon"])
    with pytest.raises(ValueError, match="multiples of 4"):
        vq.encode(torch.zeros(1, 3, 18, 16))


@needs_golden
@pytest.mark.parametrize("preset", ["GPT-B", "GPT-L", "GPT-XL", "GPT-XXL", "GPT-3B", "GPT-XL t2i", "VQ-16", "VQ-8"])
def test_released_shapes(preset):
    shapes = json.load(open(os.path.join(GOLDEN, "released_shapes.json")))
    with torch.device("meta"):
        if preset.startswith("VQ"):
            m, key = VQModel(VQ_PRESETS[preset]), preset
        elif preset.endswith("t2i"):
            m, key = GPT(gpt_config(preset.split()[0], model_type="t2i")), preset
        else:
            m, key = GPT(gpt_config(preset)), f"{preset} c2i"
    assert {k: list(v.shape) for k, v in m.state_dict().items()} == shapes[key]


# ----------------------------------------------------------------------------- loader

@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return GPT(gpt_config("GPT-tiny")).eval()


LAYOUTS = {
    "model": lambda sd: {"model": sd, "optimizer": {}, "steps": 7, "args": argparse.Namespace(lr=1e-4)},
    "ema": lambda sd: {"ema": sd},
    "module": lambda sd: {"module": sd},
    "state_dict": lambda sd: {"state_dict": sd},
    "bare": lambda sd: dict(sd),
    "freqs_cis": lambda sd: {"model": {**sd, "freqs_cis": torch.zeros(3, 2)}},
    "module.": lambda sd: {"model": {f"module.{k}": v for k, v in sd.items()}},
    "_orig_mod.": lambda sd: {f"_orig_mod.{k}": v for k, v in sd.items()},
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_loader_layouts(tiny, tmp_path, layout):
    path = tmp_path / "ckpt.pt"
    torch.save(LAYOUTS[layout](tiny.state_dict()), path)
    loaded = load_gpt(path, config=tiny.config)
    cond, tokens = torch.tensor([1, 2]), torch.randint(0, 64, (2, 16))
    with torch.no_grad():
        assert torch.equal(loaded(cond, tokens), tiny(cond, tokens))


def test_own_checkpoint_needs_no_flags(tiny, tmp_path):
    save_atomic(model_state(tiny), tmp_path / "policy.pt")
    loaded = load_gpt(tmp_path / "policy.pt")
    assert loaded.config == tiny.config
    with pytest.raises(BadCheckpoint, match="trained at 64px .* --image-size is 256"):
        load_gpt(tmp_path / "policy.pt", image_size=256)


def test_resolution_from_release_name(tmp_path):
    with torch.device("meta"):
        sd = GPT(gpt_config("GPT-B")).state_dict()
    torch.save({"model": {k: torch.zeros(v.shape) for k, v in sd.items() if "layers.0." in k or "layers" not in k}},
               tmp_path / "c2i_B_384.pt")
    with pytest.raises(BadCheckpoint, match="c2i_B_384.pt was trained at 384px \\(24x24 tokens\\) but --image-size is 256"):
        load_gpt(tmp_path / "c2i_B_384.pt", image_size=256)
    # the resolution comes from the name, the architecture from the weights (here a 1-layer GPT-B)
    loaded = load_gpt(tmp_path / "c2i_B_384.pt", device="meta")
    c = loaded.config
    assert (c.block_size, c.n_layer, c.dim, c.n_head, c.num_classes) == (576, 1, 768, 12, 1000)


def test_loader_errors(tiny, tmp_path):
    sd = tiny.state_dict()
    del sd["norm.weight"]
    sd["extra.weight"] = torch.zeros(1)
    torch.save({"model": sd}, tmp_path / "bad.pt")
    with pytest.raises(BadCheckpoint, match="missing 1: norm.weight; unexpected 1: extra.weight"):
        load_gpt(tmp_path / "bad.pt", config=tiny.config)
    wrong = gpt_config("GPT-tiny", vocab_size=128)
    torch.save({"model": tiny.state_dict()}, tmp_path / "ok.pt")
    with pytest.raises(BadCheckpoint, match="shape mismatch 2: tok_embeddings.weight \\(64, 64\\) vs \\(128, 64\\)"):
        load_gpt(tmp_path / "ok.pt", config=wrong)
    (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(BadCheckpoint, match="cannot read checkpoint"):
        load_gpt(tmp_path / "corrupt.pt", config=tiny.config)
    with pytest.raises(MissingCheckpoint, match="--gpt-ckpt PATH"):
        load_gpt(tmp_path / "nope.pt")
    with pytest.raises(BadCheckpoint, match="cannot tell the resolution"):
        load_gpt(tmp_path / "ok.pt")


def test_release_name_offline_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent-hf-home")
    release = r"c2i_B_256.pt \(huggingface.co/FoundationVision/LlamaGen\) not found.*--gpt-ckpt"
    with pytest.raises(MissingCheckpoint, match=release):
        load_gpt("c2i_B_256")
    with pytest.raises(MissingCheckpoint, match="vq_ds16_c2i.pt.*--vq-ckpt"):
        load_vq("vq_ds16_c2i")


def test_saved_vq_roundtrip(tmp_path):
    torch.manual_seed(0)
    vq = VQModel(VQ_PRESETS["VQ-tiny"]).eval()
    save_atomic(model_state(vq), tmp_path / "vq.pt")
    assert load_vq(tmp_path / "vq.pt").config == vq.config
    assert not any(p.name.startswith("vq.pt.tmp") for p in tmp_path.iterdir())


# ----------------------------------------------------------------------------- sampler

def test_seeded_sampling_is_reproducible(tiny):
    cond = torch.tensor([0, 3, 3, 9])
    run = lambda seed: generate(tiny, cond, Sampling(cfg_scale=2.0), generator=torch.Generator().manual_seed(seed))
    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))


def test_unknown_class_id(tiny):
    with pytest.raises(ValueError, match="class id out of range \\[0, 10\\)"):
        generate(tiny, torch.tensor([3, 10]))


def test_cfg_scale_one_is_the_conditional_model(tiny):
    cond, tokens = torch.tensor([1, 5]), torch.randint(0, 64, (2, 16))
    with torch.no_grad():
        # the batched [cond; null] path at a scale infinitesimally above 1 equals the plain conditional model
        assert torch.allclose(cfg_logits(tiny, cond, tokens, Sampling(cfg_scale=1.0 + 1e-7)), tiny(cond, tokens), atol=1e-5)
    g = lambda s: generate(tiny, cond, Sampling(cfg_scale=s), generator=torch.Generator().manual_seed(0))
    assert torch.equal(g(1.0), g(1.0 + 1e-7))


@pytest.mark.parametrize("model_type,cfg,interval", [("c2i", 1.0, -1), ("c2i", 3.0, -1), ("c2i", 3.0, 5),
                                                     ("t2i", 4.0, -1), ("t2i", 4.0, 2)])
def test_kv_cache_matches_teacher_forcing(model_type, cfg, interval):
    torch.manual_seed(0)
    model = GPT(gpt_config("GPT-tiny", model_type=model_type)).eval()
    if model_type == "c2i":
        cond, mask = torch.tensor([0, 4, 7]), None
    else:
        cond, mask = TextEncoder.tiny(32)(["a red cat", "", "a very long prompt " * 3])
    s = Sampling(cfg_scale=cfg, cfg_interval=interval, top_k=1)
    tokens = generate(model, cond, s, cond_mask=mask)
    with torch.no_grad():
        logits = cfg_logits(model, cond, tokens, s, mask)
    assert torch.equal(logits.argmax(-1), tokens)  # greedy KV-cache decoding == teacher-forced argmax
    # sampled log-probs == teacher-forced ones: test_train.py, test_sampler_logprobs_equal_...


def test_sampling_logprobs_filters():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.allclose(sampling_logprobs(logits, Sampling(top_k=2)).exp(), torch.tensor([[0.625, 0.375, 0, 0]]))
    # top-p keeps the smallest prefix whose mass reaches p (the token that crosses it included)
    assert torch.allclose(sampling_logprobs(logits, Sampling(top_p=0.7)).exp(), torch.tensor([[0.625, 0.375, 0, 0]]))
    assert torch.allclose(sampling_logprobs(logits, Sampling(top_p=0.85)).exp(), torch.tensor([[0.5, 0.3, 0.15, 0]]) / 0.95)
    assert torch.allclose(sampling_logprobs(logits, Sampling(temperature=0.5)).exp(),
                          torch.tensor([[0.25, 0.09, 0.0225, 0.0025]]) / 0.365)


def test_text_encoder_left_pads():
    feats, mask = TextEncoder.tiny(32)(["ab", "hello there"])
    assert feats.shape == (2, 120, 32) and mask.shape == (2, 120)
    assert mask.sum(1).tolist() == [3.0, 12.0]  # bytes + </s>
    assert mask[:, -3:].all() and not mask[0, :-3].any()  # real tokens at the END
    assert (feats[0, :-3] == 0).all() and (feats[0, -3:] != 0).any()


def test_bf16_model_keeps_fp32_rope(tiny):
    import copy
    half = copy.deepcopy(tiny).to(torch.bfloat16)
    assert half.rope.dtype == torch.complex64  # a bf16 cast must not round the rotation angles
    cond, tokens = torch.tensor([1, 5]), torch.randint(0, 64, (2, 16))
    with torch.no_grad():
        assert close(half(cond, tokens), tiny(cond, tokens), rel=3e-2)
    assert generate(half, cond, Sampling(cfg_scale=2.0, top_k=1)).shape == (2, 16)


def test_tiny_text_encoder_same_in_every_process():
    """The offline T5 stand-in must tokenise identically in every process (and DDP rank): its
    vocabulary order once came from a set, whose iteration order follows the per-process hash seed."""
    import subprocess
    import sys
    code = ("from text import TextEncoder; t = TextEncoder.tiny(); "
            "print(t.tokenizer('a red fox, Zebra!').input_ids)")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout for seed in (1, 2, 3)}
    assert len(outs) == 1
