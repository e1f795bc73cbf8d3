"""sample.py --geneval: GenEval's folder layout on the tiny preset, read back the way GenEval's
evaluation/evaluate_images.py (djghosh13/geneval) walks it, resumed after an interruption, and its input errors."""
import json
import os
import re

import numpy as np
import pytest
import torch
from PIL import Image

import sample

ROWS = [{"tag": "single_object", "include": [{"class": "bench", "count": 1}], "prompt": "a photo of a bench"},
        {"tag": "counting", "include": [{"class": "clock", "count": 2}], "exclude": [{"class": "clock", "count": 3}],
         "prompt": "a photo of two clocks"},
        {"tag": "color_attr", "include": [{"class": "car", "count": 1, "color": "red"}], "prompt": "a photo of a red car"}]


def read_like_geneval(imagedir):
    """evaluate_images.py's main(): digit-named subfolders, json.load(metadata.jsonl), files matching \\d+\\.png."""
    found = []
    for subfolder in os.listdir(imagedir):
        folderpath = os.path.join(imagedir, subfolder)
        if not os.path.isdir(folderpath) or not subfolder.isdigit():
            continue
        with open(os.path.join(folderpath, "metadata.jsonl")) as fp:
            metadata = json.load(fp)
        for imagename in os.listdir(os.path.join(folderpath, "samples")):
            imagepath = os.path.join(folderpath, "samples", imagename)
            if not os.path.isfile(imagepath) or not re.match(r"\d+\.png", imagename):
                continue
            found.append((subfolder, imagename, metadata, imagepath))
    return sorted(found, key=lambda r: (r[0], r[1]))


@pytest.fixture
def meta(tmp_path):
    path = tmp_path / "evaluation_metadata.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


def geneval(meta, out, *flags):
    torch.set_num_threads(1)
    sample.main(["--preset", "tiny", "--task", "t2i", "--geneval", str(meta), "--per-prompt", "2", "--out", str(out), *flags])


def test_geneval_layout_reads_back_as_geneval_does(meta, tmp_path):
    out = tmp_path / "gen"
    geneval(meta, out)
    found = read_like_geneval(out)
    assert [(f, n) for f, n, _, _ in found] == [(f"{i:05d}", f"{k:04d}.png") for i in range(3) for k in range(2)]
    for folder, _, metadata, path in found:
        assert metadata == ROWS[int(folder)]                      # that prompt's metadata object, unchanged
        im = Image.open(path)
        assert im.size == (16, 16) and im.mode == "RGB"
    assert len({json.dumps(m) for _, _, m, _ in found}) == 3      # summary_scores.py counts prompts by metadata
    assert not any(n.endswith(".tmp") for _, _, files in os.walk(out) for n in files)
    record = json.load(open(out / "sampler.json"))                 # what the images were sampled with
    assert (record["cfg_scale"], record["top_k"], record["preset"], record["gpt_ckpt"]) == (4.0, 0, "tiny", None)


def test_geneval_resumes_with_the_same_images(meta, tmp_path):
    out = tmp_path / "gen"
    geneval(meta, out)
    img = lambda i, k: np.array(Image.open(out / f"{i:05d}" / "samples" / f"{k:04d}.png"))
    before = {(i, k): img(i, k) for i in range(3) for k in range(2)}
    assert not np.array_equal(before[0, 0], before[0, 1])         # N different samples per prompt
    os.remove(out / "00001" / "samples" / "0001.png")                # interrupted inside prompt 1
    stamp = os.path.getmtime(out / "00000" / "samples" / "0000.png")
    geneval(meta, out)
    assert os.path.getmtime(out / "00000" / "samples" / "0000.png") == stamp   # complete prompts are not redone
    assert all(np.array_equal(img(i, k), before[i, k]) for i in range(3) for k in range(2))  # per-prompt seeds


@pytest.mark.parametrize("lines,flags,message", [
    (['{"prompt": "a cat"}', "not json"], [], "evaluation_metadata.jsonl:2 is not valid JSON"),
    (['{"tag": "x"}'], [], ":1 is not a GenEval metadata object"),
    (['{"prompt": "a cat"}'], ["--out", "x.png"], "pass --out DIR"),
    (['{"prompt": "a cat"}'], ["--task", "c2i"], "--geneval needs a text-to-image model"),
])
def test_geneval_input_errors(tmp_path, lines, flags, message):
    path = tmp_path / "evaluation_metadata.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(SystemExit, match=re.escape(message)):
        sample.main(["--preset", "tiny", "--geneval", str(path), "--out", str(tmp_path / "o"), *flags])
