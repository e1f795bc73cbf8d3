"""tools/eval.py drawbench on the tiny T2I preset, offline: the report against the per-image scores by hand, the
same seeds for base and tuned, resuming after an interruption, and the one-line errors."""
import json
import math

import numpy as np
import pytest
import torch

from tools import eval as ev
from conftest import save_tiny_run

PROMPTS = ["A red fox in the snow.", "a bowl of blueberries", "two lemons on a table"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    save_tiny_run(d / "ckpt.pt", steps=1, task="t2i")
    save_tiny_run(d / "init.pt", steps=0, task="t2i")
    rows = [{"id": i, "image_num": 1, "conversations": [{"from": "human", "value": p}, {"from": "gpt", "value": ""}]}
            for i, p in enumerate(PROMPTS)]                       # AR-GRPO's drawbench_test_1000.json format
    (d / "drawbench.json").write_text(json.dumps(rows))
    return d


def drawbench(run, out, *flags, ckpt="ckpt.pt", scorers="color,brightness"):
    return ev.main(["drawbench", "--tuned", str(run / ckpt), "--prompts", str(run / "drawbench.json"),
                    "--scorers", scorers, "--per-prompt", "3", "--batch-size", "2", "--cpu-threads", "1", "--out", str(out), *flags])


def test_drawbench_report_by_hand_and_grid(run, tmp_path):
    r = drawbench(run, tmp_path / "db", "--tiny-scorers", "--grid-rows", "2", "--grid-cols", "2",
                  scorers="color,pickscore,imagereward,aesthetic")
    on_disk = json.load(open(tmp_path / "db" / "report.json"))
    assert on_disk == json.loads(json.dumps(r))
    assert on_disk["prompts"] == 3 and on_disk["images_per_model"] == 9 and on_disk["scorers"] == \
        ["color", "pickscore", "imagereward", "aesthetic"]
    assert on_disk["sampler"]["cfg_scale"] == 2.0                   # the run's sampler
    assert on_disk["cfg_scale"] == {"base": 2.0, "tuned": 2.0}      # stated for both models
    rows = [json.loads(line) for line in open(tmp_path / "db" / "scores.jsonl")]
    assert [row["prompt"] for row in rows] == [p.strip() for p in PROMPTS]
    for n in on_disk["scorers"]:
        per = {m: np.array([row[m][n] for row in rows], dtype=np.float64) for m in ("base", "tuned")}   # (P, N)
        assert per["base"].shape == (3, 3)
        for m in ("base", "tuned"):
            assert r[m][n]["mean"] == pytest.approx(per[m].mean(), abs=1e-9)
            assert r[m][n]["sem"] == pytest.approx(per[m].mean(1).std(ddof=1) / math.sqrt(3), abs=1e-9)
        d = per["tuned"].mean(1) - per["base"].mean(1)
        assert r["delta"][n]["mean"] == pytest.approx(d.mean(), abs=1e-9)
        assert r["delta"][n]["sem"] == pytest.approx(d.std(ddof=1) / math.sqrt(3), abs=1e-9)
    assert r["argrpo_scale"]["tuned"]["pickscore"] == pytest.approx(r["tuned"]["pickscore"]["mean"] / 26)
    assert set(r["argrpo_scale"]["base"]) == {"pickscore", "imagereward", "aesthetic"}   # AR-GRPO's columns only
    assert r["delta"]["color"]["mean"] != 0                          # the tuned weights differ
    from PIL import Image
    w, h = Image.open(tmp_path / "db" / "grid.png").size           # 2 rows x (2 + gap + 2), 16 px x4 + 1 px frame
    assert (w, h) == (5 * 66, 2 * 66)


def test_drawbench_initial_weights_give_zero_delta(run, tmp_path):
    r = drawbench(run, tmp_path / "db", ckpt="init.pt")             # base rebuilt from the run's seed, same seeds
    assert all(d["mean"] == 0 for d in r["delta"].values()), r["delta"]
    # the base at its own CFG (AR-GRPO's LlamaGen baseline: 7.5): same weights, other images, both stated
    r = drawbench(run, tmp_path / "db75", "--base-cfg-scale", "7.5", ckpt="init.pt")
    assert r["cfg_scale"] == {"base": 7.5, "tuned": 2.0} and any(d["mean"] != 0 for d in r["delta"].values())


class Interrupted(Exception):
    """Stands for Ctrl-C / a kill in the middle of a run."""


def test_drawbench_resumes_after_an_interruption(run, tmp_path, monkeypatch):
    want = drawbench(run, tmp_path / "whole")
    real, calls, stop = ev.drawbench_prompt, [], [4]

    def interrupted(model, vq, text, prompt, j, *a):
        calls.append(j)
        if len(calls) == stop[0]:                                    # prompt 1: base done, tuned not yet
            raise Interrupted
        return real(model, vq, text, prompt, j, *a)
    monkeypatch.setattr(ev, "drawbench_prompt", interrupted)
    with pytest.raises(Interrupted):
        drawbench(run, tmp_path / "db")
    log = tmp_path / "db" / "scores.jsonl"
    assert [json.loads(line)["index"] for line in open(log)] == [0]
    with open(log, "a") as f:                                        # a record torn by a kill mid-write
        f.write('{"index": 2, "prompt": "two lem')
    calls.clear()
    stop[0] = 0                                                      # no interruption this time
    got = drawbench(run, tmp_path / "db")
    assert calls == [1, 1, 2, 2]                                     # prompt 0 not sampled again
    assert {k: got[k] for k in ("base", "tuned", "delta")} == {k: want[k] for k in ("base", "tuned", "delta")}
    with pytest.raises(SystemExit, match="holds another evaluation"):
        drawbench(run, tmp_path / "db", "--seed", "1")               # other settings, same folder: refused


def test_drawbench_errors(run, tmp_path, capsys):
    with pytest.raises(SystemExit):                                  # a flag error, before anything loads
        drawbench(run, tmp_path / "a", scorers="color,nope")
    assert "--scorers: unknown reward 'nope'" in capsys.readouterr().err.strip().splitlines()[-1]
    save_tiny_run(tmp_path / "c2i.pt")                               # a class-conditional run
    with pytest.raises(SystemExit, match="text-to-image"):
        ev.main(["drawbench", "--tuned", str(tmp_path / "c2i.pt"), "--prompts", str(run / "drawbench.json"),
                 "--scorers", "color", "--out", str(tmp_path / "b")])


def test_drawbench_with_the_compiled_sampler_gives_the_same_report(run, tmp_path):
    # --compile (default on a GPU) changes the speed, never a score; chunks of 2 and 1: two shapes
    assert drawbench(run, tmp_path / "c", "--compile") == drawbench(run, tmp_path / "e", "--no-compile")
