"""sample.py end to end on the tiny preset, and its one-line input errors."""
import re

import numpy as np
import pytest
from PIL import Image

import sample
from plumbing.prompts import read_prompts


def test_tiny_c2i_grid_and_npz(tmp_path):
    png, npz = tmp_path / "g.png", tmp_path / "s.npz"
    sample.main(["--preset", "tiny", "--classes", "1,2,3", "--per-class", "2", "--out", str(png), "--npz", str(npz)])
    arr, ids = np.load(npz)["arr_0"], np.load(npz)["arr_1"]
    assert arr.shape == (6, 16, 16, 3) and arr.dtype == np.uint8  # ADM layout: N, H, W, 3
    assert ids.tolist() == [1, 1, 2, 2, 3, 3]                     # ... and the class of each image
    assert Image.open(png).size == (3 * 128, 2 * 128)  # ceil(sqrt(6)) = 3 columns, scaled up to be seen


def test_tiny_t2i_from_jsonl(tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "a red cat"}\n\n{"caption": "a blue dog"}\n')
    npz = tmp_path / "s.npz"
    sample.main(["--preset", "tiny", "--prompts", str(prompts), "--out", "", "--npz", str(npz),
                 "--image-size-eval", "32"])
    assert np.load(npz)["arr_0"].shape == (2, 32, 32, 3) and "arr_1" not in np.load(npz)   # no ids


def test_tiny_t2i_caption_flags_change_the_samples(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("A RED cat\nthe BLUE dog on a long long road\n")

    def run(*flags):
        npz = tmp_path / f"{len(flags)}{'_'.join(flags)}.npz"
        sample.main(["--preset", "tiny", "--prompts", str(prompts), "--per-class", "4", "--out", "",
                     "--npz", str(npz), *flags])
        return np.load(npz)["arr_0"]
    left, right, raw = run(), run("--caption-pad", "right"), run("--no-clean-captions")
    assert (left != right).any() and (left != raw).any()   # another null-branch layout; other T5 tokens


def test_same_seed_same_images(tmp_path):
    run = lambda seed, name: sample.main(["--preset", "tiny", "--seed", str(seed), "--out", "",
                                          "--npz", str(tmp_path / name)]) or np.load(tmp_path / name)["arr_0"]
    assert np.array_equal(run(3, "a.npz"), run(3, "b.npz"))


@pytest.mark.parametrize("argv,message", [
    (["--classes", "3,12"], "unknown class id(s) [12]: the model has classes 0..9"),
    (["--prompts", "EMPTY"], "is empty"),
    (["--prompts", "/nonexistent.txt"], "prompt file /nonexistent.txt does not exist"),
])
def test_input_errors(tmp_path, argv, message):
    (tmp_path / "empty.txt").write_text("\n\n")
    argv = [str(tmp_path / "empty.txt") if a == "EMPTY" else a for a in argv]
    with pytest.raises(SystemExit, match=re.escape(message)):
        sample.main(["--preset", "tiny", "--out", ""] + argv)


def test_missing_checkpoint_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SystemExit) as e:
        sample.main(["--gpt-ckpt", str(tmp_path / "nope.pt")])
    assert str(e.value).startswith("error: checkpoint") and "--gpt-ckpt PATH" in str(e.value)


def test_read_prompts_argrpo_json(tmp_path):
    """AR-GRPO's COCO / DrawBench files: a JSON list of {"id", "conversations": [human turn, ...]}."""
    rows = [{"id": 0, "image_num": 1, "conversations": [{"from": "human", "value": "A red cat."},
                                                        {"from": "gpt", "value": "<image>"}]},
            {"id": 1, "conversations": [{"from": "human", "value": "  two dogs  "}]},
            "a plain string", {"prompt": "a prompt field"}]
    path = tmp_path / "drawbench.json"
    path.write_text(__import__("json").dumps(rows))
    assert read_prompts(str(path)) == ["A red cat.", "two dogs", "a plain string", "a prompt field"]
    (tmp_path / "bad.json").write_text('[{"id": 3, "conversations": [{"from": "gpt", "value": "x"}]}]')
    with pytest.raises(SystemExit, match="entry 0 has no prompt"):
        read_prompts(str(tmp_path / "bad.json"))
    (tmp_path / "obj.json").write_text('{"prompt": "x"}')
    with pytest.raises(SystemExit, match="must hold a JSON list"):
        read_prompts(str(tmp_path / "obj.json"))
    with pytest.raises(SystemExit, match="is a directory"):
        read_prompts(str(tmp_path))


def test_read_prompts_raw_as_ar_grpos_lazy_dataset(tmp_path):
    """--raw-prompts (the t2i paper preset): conversations[0]["value"] as lazy_dataset.py reads it: no
    strip, empty prompts kept, the first turn whatever its role; a first turn without a value is one line."""
    rows = [{"id": 0, "conversations": [{"from": "human", "value": "  two dogs \n"}]},
            {"id": 1, "conversations": [{"from": "human", "value": ""}]},
            {"id": 2, "conversations": [{"from": "gpt", "value": "the gpt turn"}, {"from": "human", "value": "x"}]},
            {"id": 3, "conversations": [{"from": "human", "value": "A red cat."}]}]
    path = tmp_path / "coco.json"
    path.write_text(__import__("json").dumps(rows))
    assert read_prompts(str(path), raw=True) == ["  two dogs \n", "", "the gpt turn", "A red cat."]
    assert read_prompts(str(path)) == ["two dogs", "x", "A red cat."]
    (tmp_path / "bad.json").write_text('[{"id": 3, "conversations": [{"from": "gpt"}]}]')
    with pytest.raises(SystemExit, match="entry 0 has no prompt .*a first turn with a 'value'"):
        read_prompts(str(tmp_path / "bad.json"), raw=True)


def test_t2i_text_settings_follow_the_run(tmp_path, capsys):
    """A train.py checkpoint is sampled with the caption padding and cleaning it was trained with,
    unless the flags say otherwise; other files get LlamaGen's (left, cleaned)."""
    import torch
    ck = tmp_path / "run.pt"
    torch.save({"model": {}, "args": {"caption_pad": "right", "clean_captions": False}}, ck)
    other = tmp_path / "other.pt"
    torch.save({"model": {}}, other)
    for argv, pad, clean in ((["--gpt-ckpt", str(ck)], "right", False),
                             (["--gpt-ckpt", str(ck), "--caption-pad", "left", "--clean-captions"], "left", True),
                             (["--gpt-ckpt", str(other)], "left", True)):
        with pytest.raises(ValueError, match="no tensors"):  # fails to load, after the settings are printed
            sample.main(argv + ["--out", ""])
        printed = capsys.readouterr().out
        assert f"'caption_pad': '{pad}'" in printed and f"'clean_captions': {clean}" in printed


@pytest.mark.parametrize("task", ["c2i", "t2i"])
def test_tiny_preset_is_train_py_s_starting_model(task):
    """sample.py --preset tiny samples the model train.py --preset tiny starts from (same seed): the
    same GPT weights, the same palette tokenizer, the same text features."""
    import torch
    from plumbing.flags import parse_sample_args
    from train import build_models, get_args
    policy, _, vq, text = build_models(get_args(["--task", task, "--preset", "tiny"]), torch.device("cpu"))
    flags = parse_sample_args(["--preset", "tiny", "--task", task, "--seed", "42", "--device", "cpu"], "")
    model, vq2, text2 = sample.load_models(flags, torch.device("cpu"))
    assert all(torch.equal(a, b) for a, b in zip(policy.state_dict().values(), model.state_dict().values()))
    assert torch.equal(vq.palette, vq2.palette)
    if task == "t2i":
        assert all(torch.equal(a, b) for a, b in zip(text(["a red fox"]), text2(["a red fox"])))
