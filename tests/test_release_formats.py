"""Every released weights layout, rebuilt with random weights at a tiny size, loaded through the
paths a user takes: the reward loaders, train.py and eval.py. The layouts are those of the real
files: CLIP as timm's open_clip safetensors / .bin and as OpenAI's TorchScript ViT-B-32.pt (fp16,
with its three int entries); HPSv2.1 as fp16 {'state_dict': ...}; MANIQA (pyiqa's ckpt_koniq10k.pt)
bare, 'module.'-prefixed and {'params': ...}; a Qwen2.5-VL folder with the old weight names and the
early-2025 preprocessor_config.json; a FLAN-T5 folder with a sentencepiece spiece.model. Only the
architectures are shrunk (RM.CLIP_ARCH / MANIQA_ARCH, the configs inside the folders)."""
import io
import json
import logging
import os
import shutil
import warnings
from typing import Dict, List

import pytest
import torch

from tools import eval as ev
import plumbing.reward_models as RM
import rewards as R
import train
from plumbing.weights import BadCheckpoint, MissingCheckpoint
from conftest import one_line_error, save_tiny_run
from plumbing.reward_models import RewardWeightsMissing
from rewards import build_rewards
from plumbing.standins import TINY_PROMPTS, tiny_qwen

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
       "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
TINY_CLIP = dict(embed_dim=32, quick_gelu=True,
                 vision_cfg=dict(layers=2, width=64, head_width=32, patch_size=8, image_size=32),
                 text_cfg=dict(context_length=77, vocab_size=49408, width=64, heads=2, layers=2))
TINY_HPS = {**TINY_CLIP, "quick_gelu": False}
TINY_MANIQA = dict(maniqa=dict(embed_dim=16, dim_mlp=16, patch_size=32, window_size=7, num_heads=[2, 2]),
                   vit=dict(patch_size=32, embed_dim=16, depth=10, num_heads=2, mlp_ratio=2))
OLD_QWEN_PREPROCESSOR = {   # the early-2025 file of Qwen/Qwen2.5-VL-3B-Instruct, pixel bounds shrunk
    "min_pixels": 56 * 56, "max_pixels": 112 * 112, "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
    "image_processor_type": "Qwen2_5_VLImageProcessor", "processor_class": "Qwen2_5_VLProcessor"}


@pytest.fixture
def tiny_archs(monkeypatch):
    monkeypatch.setitem(RM.CLIP_ARCH, "clip", TINY_CLIP)
    monkeypatch.setitem(RM.CLIP_ARCH, "hps", TINY_HPS)
    monkeypatch.setattr(RM, "MANIQA_ARCH", TINY_MANIQA)


def _seeded(fn, seed):
    torch.manual_seed(seed)
    return fn()


def _write_jit_clip(sd, path):
    """OpenAI's archive: a traced CLIP in fp16 whose state also holds three int entries."""
    model = RM.open_clip_model(TINY_CLIP)
    model.load_state_dict(sd)
    for k, v in (("input_resolution", 32), ("context_length", 77), ("vocab_size", 49408)):
        model.__dict__.pop(k, None)                 # open_clip keeps two of them as plain ints
        model.register_buffer(k, torch.tensor(v))
    x, t = torch.rand(1, 3, 32, 32), torch.zeros(1, 77, dtype=torch.long)
    with warnings.catch_warnings():                 # the tracer's notes about shape checks
        warnings.simplefilter("ignore")
        traced = torch.jit.trace_module(model.eval(), {"encode_image": (x,), "encode_text": (t,)}, check_trace=False)
    traced.half().save(path)


def _write_t5(folder, d_model=32):
    """A FLAN-T5-shaped folder: T5ForConditionalGeneration safetensors, config.json, and a
    sentencepiece spiece.model trained here on a few captions (tokenizer.json converted from it)."""
    import sentencepiece as spm
    from transformers import T5Config, T5ForConditionalGeneration, T5Tokenizer
    os.makedirs(folder)
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(TINY_PROMPTS * 20), model_writer=buf, vocab_size=60,
                                   model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                   hard_vocab_limit=False, minloglevel=2)
    open(os.path.join(folder, "spiece.model"), "wb").write(buf.getvalue())
    json.dump({"tokenizer_class": "T5Tokenizer", "extra_ids": 0, "eos_token": "</s>", "unk_token": "<unk>",
               "pad_token": "<pad>"}, open(os.path.join(folder, "tokenizer_config.json"), "w"))
    tok = T5Tokenizer.from_pretrained(folder)                   # converts spiece.model, as for google/flan-t5-xl
    tok.save_pretrained(folder)
    cfg = T5Config(vocab_size=len(tok), d_model=d_model, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                   decoder_start_token_id=0)
    _seeded(lambda: T5ForConditionalGeneration(cfg), 4).save_pretrained(folder, max_shard_size="100KB")  # 2+ shards
    for other in ("pytorch_model.bin", "flax_model.msgpack", "tf_model.h5"):   # '*.json' brings their indexes, not them
        json.dump({"metadata": {}, "weight_map": {"shared.weight": f"{other}-00001-of-00002"}},
                  open(os.path.join(folder, f"{other}.index.json"), "w"))


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """Every file once per module: {name: path}, plus the state dicts written."""
    from safetensors.torch import save_file
    d = tmp_path_factory.mktemp("release")
    f = {}
    clip = _seeded(lambda: RM.open_clip_model(TINY_CLIP), 1).state_dict()
    f["clip_st"], f["clip_bin"], f["clip_jit"] = d / "open_clip_model.safetensors", d / "open_clip_pytorch_model.bin", d / "ViT-B-32.pt"
    save_file(clip, f["clip_st"])
    torch.save(clip, f["clip_bin"])
    _write_jit_clip(clip, str(f["clip_jit"]))
    hps = _seeded(lambda: RM.open_clip_model(TINY_HPS), 2).state_dict()
    f["hps"] = d / "HPS_v2.1_compressed.pt"
    torch.save({"state_dict": {k: v.half() for k, v in hps.items()}}, f["hps"])
    maniqa = build_rewards("maniqa:1", tiny=True, seed=3).ctx.cache["maniqa"].state_dict()
    for layout, obj in (("plain", maniqa), ("module", {f"module.{k}": v for k, v in maniqa.items()}),
                        ("params", {"params": maniqa})):
        f[f"maniqa_{layout}"] = d / f"maniqa_{layout}" / "ckpt_koniq10k.pt"
        os.makedirs(f[f"maniqa_{layout}"].parent)
        torch.save(obj, f[f"maniqa_{layout}"])
    model, processor = tiny_qwen(5, R.judge_texts())
    f["qwen"] = d / "Qwen2.5-VL-3B-Instruct"
    model.save_pretrained(f["qwen"])                              # transformers writes the released (old) key names
    processor.save_pretrained(f["qwen"])
    os.remove(f["qwen"] / "processor_config.json")
    json.dump(OLD_QWEN_PREPROCESSOR, open(f["qwen"] / "preprocessor_config.json", "w"), indent=2)
    f["t5"] = d / "flan-t5-xl"
    _write_t5(str(f["t5"]))
    return f, dict(clip=clip, hps=hps, maniqa=maniqa)


# ----------------------------------------------------------------------------- each loader, each layout
@pytest.mark.parametrize("kind,file,fp16", [("clip", "clip_st", False), ("clip", "clip_bin", False),
                                            ("clip", "clip_jit", True), ("hps", "hps", True)])
def test_clip_and_hps_layouts_load_exactly_and_quietly(release, tiny_archs, monkeypatch, caplog, kind, file, fp16):
    files, sds = release
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: pytest.fail("the archive's code must never be loaded"))
    with caplog.at_level(logging.INFO):
        s = build_rewards(f"{kind}:1", **{f"{kind}_ckpt": str(files[file])})
    assert "No pretrained weights" not in caplog.text and "initialized randomly" not in caplog.text
    model = s.ctx.cache[kind][0]
    for k, v in sds[kind].items():
        want = v.half().float() if fp16 else v
        assert torch.equal(model.state_dict()[k], want), k
    assert s(torch.rand(2, 3, 16, 16), ["a", "b"])[0].shape == (2,)


@pytest.mark.parametrize("layout", ["plain", "module", "params"])
def test_maniqa_three_layouts(release, tiny_archs, layout):
    files, sds = release
    net = build_rewards("maniqa:1", maniqa_ckpt=str(files[f"maniqa_{layout}"])).ctx.cache["maniqa"]
    assert all(torch.equal(net.state_dict()[k], v) for k, v in sds["maniqa"].items())


def test_qwen_old_snapshot_loads_and_processor_is_read_first(release, tmp_path, monkeypatch):
    from safetensors.torch import load_file
    from transformers import Qwen2_5_VLForConditionalGeneration
    files, _ = release
    s = build_rewards("qwen_fake:1", qwen_path=str(files["qwen"]))
    model, processor = s.ctx.cache["qwen"]
    assert type(processor.image_processor).__name__ == "Qwen2VLImageProcessor"
    assert processor.image_processor.size["longest_edge"] == 112 * 112     # read from the old file
    saved = load_file(files["qwen"] / "model.safetensors")                 # old names: model.layers.*, visual.*
    assert any(k.startswith("visual.") for k in saved) and not any(".language_model." in k for k in saved)
    own = {k.replace("model.language_model.", "model.").replace("model.visual.", "visual."): v
           for k, v in model.state_dict().items()}
    assert own.keys() == saved.keys() and all(torch.equal(own[k], v) for k, v in saved.items())
    # a processor that cannot load: one line naming the refresh command, before any weight is read
    bad = tmp_path / "qwen"
    shutil.copytree(files["qwen"], bad)
    json.dump({**OLD_QWEN_PREPROCESSOR, "image_processor_type": "NopeImageProcessor"}, open(bad / "preprocessor_config.json", "w"))
    monkeypatch.setattr(Qwen2_5_VLForConditionalGeneration, "from_pretrained",
                        lambda *a, **k: pytest.fail("weights read before the processor was checked"))
    with pytest.raises(BadCheckpoint) as e:
        build_rewards("qwen_fake:1", qwen_path=str(bad))
    assert "\n" not in str(e.value) and "hf download Qwen/Qwen2.5-VL-3B-Instruct" in str(e.value)


def test_weights_that_need_unpickling_are_refused_in_one_line(tmp_path, tiny_archs):
    import numpy as np
    path = tmp_path / "ckpt_koniq10k.pt"
    torch.save({"params": {"w": torch.ones(1)}, "best_srcc": np.float64(0.9)}, path)   # a pickled numpy scalar
    for spec, kw in (("maniqa:1", "maniqa_ckpt"), ("hps:1", "hps_ckpt")):
        with pytest.raises(BadCheckpoint) as e:
            build_rewards(spec, **{kw: str(path)})
        msg = str(e.value)
        assert "\n" not in msg and "weights_only=True" in msg and "numpy" in msg


class _Scripted(torch.nn.Module):
    """TorchScript pickles typed lists / dicts through torch.jit._pickle helpers; tensors of any dtype."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)
        self.sizes: List[int] = [1, 2, 3]
        self.table: Dict[str, float] = {"a": 1.0}
        self.flags: List[bool] = [True]
        self.register_buffer("h16", torch.arange(4, dtype=torch.half).view(2, 2).t())   # a strided view

    def forward(self, x):
        return self.lin(x) * self.sizes[0] * self.table["a"]


def test_torchscript_reader_matches_the_state_dict_of_a_scripted_module(tmp_path):
    from plumbing.formats import read_torchscript_tensors
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = torch.jit.script(_Scripted())
    m.save(str(tmp_path / "m.pt"))
    sd = read_torchscript_tensors(str(tmp_path / "m.pt"))
    assert sd.keys() == m.state_dict().keys()
    assert all(torch.equal(sd[k], v) and sd[k].dtype == v.dtype for k, v in m.state_dict().items())


def test_torchscript_reader_builds_nothing_but_tensors(tmp_path, tiny_archs):
    import pickle
    import zipfile
    from plumbing.formats import is_torchscript, read_torchscript_tensors

    class Payload:                                          # what a hostile archive's data.pkl could hold
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'ran'}",))
    path = tmp_path / "ViT-B-32.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps(Payload(), protocol=2))
        z.writestr("archive/constants.pkl", pickle.dumps((), protocol=2))
    assert is_torchscript(str(path))
    with pytest.raises(BadCheckpoint, match="system is not allowed"):
        read_torchscript_tensors(str(path))
    with pytest.raises(BadCheckpoint) as e:
        build_rewards("clip:1", clip_ckpt=str(path))
    assert "\n" not in str(e.value) and not (tmp_path / "ran").exists()


# ----------------------------------------------------------------------------- through train.py and eval.py
def test_every_reward_file_through_train_and_eval(release, tiny_archs, tmp_path):
    files, _ = release
    run = tmp_path / "run"
    weights = ["--clip-ckpt", str(files["clip_jit"]), "--hps-ckpt", str(files["hps"]),
               "--maniqa-ckpt", str(files["maniqa_module"]), "--qwen-path", str(files["qwen"])]
    train.main(["--task", "c2i", "--preset", "tiny", "--rewards", "clip:1,hps_q:1,maniqa:1,qwen_fake:1", *weights,
                "--steps", "1", "--prompts-per-rank", "1", "--group-size", "2", "--cpu-threads", "0", "--out", str(run)])
    m = json.loads(open(run / "metrics.jsonl").readline())
    assert {"reward_clip", "reward_hps_q", "reward_maniqa", "reward_qwen_fake"} <= set(m)
    # tools/eval.py compare takes the same flags; they win over the run's stored paths
    compare = ["compare", "--tuned", str(run / "ckpt.pt"), "--diversity", "pixel", "--per-class", "2", "--classes", "1",
               "--out", str(tmp_path / "eval")]
    r = ev.main(compare + ["--rewards", "clip:1,hps:1", "--clip-ckpt", str(files["clip_st"])])
    assert {"reward_clip", "reward_hps"} <= set(r["tuned"])
    with pytest.raises(SystemExit, match="--clip-ckpt .*nope.safetensors does not exist"):  # before any model
        ev.main(compare + ["--rewards", "clip:1", "--clip-ckpt", str(tmp_path / "nope.safetensors")])
    with pytest.raises(RewardWeightsMissing, match="is a directory; pass --maniqa-ckpt .*ckpt_koniq10k.pt"):
        ev.main(compare + ["--rewards", "maniqa:1", "--maniqa-ckpt", str(files["maniqa_plain"].parent)])


def test_t5_folder_through_train_and_eval(release, tmp_path):
    files, _ = release
    run = tmp_path / "run"
    train.main(["--task", "t2i", "--preset", "tiny", "--t5-path", str(files["t5"]), "--steps", "1",
                "--prompts-per-rank", "1", "--group-size", "2", "--cpu-threads", "0", "--out", str(run)])
    r = ev.main(["compare", "--tuned", str(run / "ckpt.pt"), "--diversity", "pixel", "--per-class", "2",
                 "--out", str(tmp_path / "eval")])
    assert r["task"] == "t2i" and r["delta"]["reward"] != 0


@pytest.mark.parametrize("flag,kind", [("--gpt-ckpt", "dir"), ("--vq-ckpt", "dir"), ("--clip-ckpt", "dir"),
                                       ("--hps-ckpt", "dir"), ("--maniqa-ckpt", "dir"), ("--qwen-path", "file"),
                                       ("--t5-path", "file")])
def test_wrong_kind_of_weight_path_is_named(tmp_path, flag, kind):
    path = tmp_path / "weights"
    path.mkdir() if kind == "dir" else path.write_text("x")
    with pytest.raises((BadCheckpoint, MissingCheckpoint, RewardWeightsMissing)) as e:
        train.main(["--task", "t2i", "--preset", "tiny", flag, str(path), "--out", str(tmp_path / "run")])
    msg = str(e.value)
    assert "\n" not in msg and flag in msg and ("is a directory" if kind == "dir" else "is a file") in msg
    assert "does not exist" not in msg


# ----------------------------------------------------------------------------- one line, not a traceback
def _one_line_error(cmd, tmp_path):
    env = {**ENV, "HF_HOME": str(tmp_path / "hf"), "TORCH_HOME": str(tmp_path / "torch")}   # empty caches
    return one_line_error(cmd, env, 300)


def test_t5_width_mismatch_is_one_line_before_loading(release, tmp_path):
    files, _ = release
    wide = tmp_path / "flan-t5-xl"
    shutil.copytree(files["t5"], wide)
    cfg = json.load(open(wide / "config.json"))
    json.dump({**cfg, "d_model": 2048}, open(wide / "config.json", "w"))    # FLAN-T5-XL's width; weights unread
    err = _one_line_error(["train.py", "--task", "t2i", "--preset", "tiny", "--t5-path", str(wide),
                           "--out", str(tmp_path / "run")], tmp_path)
    assert "2048" in err and "32" in err and "caption_dim" in err


def test_eval_reward_flags_exist_and_missing_weights_name_them(tmp_path):
    for flag in ("--clip-ckpt", "--hps-ckpt", "--maniqa-ckpt", "--qwen-path"):   # the flags the loaders' errors name
        assert getattr(ev.parse_args(["compare", "--tuned", "x", flag, "p"]), flag[2:].replace("-", "_")) == "p"
        assert getattr(train.get_args(["--preset", "tiny", flag, "p"]), flag[2:].replace("-", "_")) == "p"
    save_tiny_run(tmp_path / "ckpt.pt")
    err = _one_line_error(["tools/eval.py", "compare", "--tuned", str(tmp_path / "ckpt.pt"), "--rewards", "hps:1",
                           "--diversity", "pixel", "--out", str(tmp_path / "eval")], tmp_path)
    assert "--hps-ckpt" in err
    # the default --diversity lpips on 16 px images: the minimum size and the way out, before any weights
    err = _one_line_error(["tools/eval.py", "compare", "--tuned", str(tmp_path / "ckpt.pt"), "--out", str(tmp_path / "eval")],
                          tmp_path)
    assert "16 px" in err and f"{ev.LPIPS_MIN_PX} px" in err and "--diversity pixel" in err
