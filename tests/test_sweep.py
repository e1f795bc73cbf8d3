"""tools/sweep.py: the variants' table from the runs' files (mean and spread over seeds), its
resumability (a finished run is not run again) and its one-line errors."""
import json
import os
import subprocess
import sys

import pytest

from tools import sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fake_run(d, acc, fd, kl, base_acc=0.8):
    os.makedirs(d)
    m = lambda a, f: {"judge_accuracy": a, "judge_fd": f, "diversity": 0.2, "entropy": 1.0,  # noqa
                      "reward": 1.1}
    json.dump({"base": m(base_acc, 70.0), "tuned": m(acc, fd)}, open(os.path.join(d, "report.json"), "w"))
    with open(os.path.join(d, "metrics.jsonl"), "w") as f:
        for step in range(20):   # the KL column: the mean of the last 10 steps
            f.write(json.dumps({"step": step, "kl": kl if step >= 10 else 99.0, "t_step": 1.5}) + "\n")


def test_report_means_and_spreads_over_seeds(tmp_path):
    fake_run(tmp_path / "paper" / "s0", 0.90, 80.0, 0.1)
    fake_run(tmp_path / "paper" / "s1", 0.94, 90.0, 0.3)
    fake_run(tmp_path / "beta-0" / "s0", 0.95, 150.0, 0.5)       # one seed only: no spread
    args = type("A", (), {"out": str(tmp_path), "seeds": [0, 1]})
    sweep.report(args, ["paper", "beta-0", "kl-k1"])              # kl-k1 never ran: no row
    table = json.load(open(tmp_path / "sweep.json"))
    assert table["paper"]["judge_accuracy"] == pytest.approx([92.0, 2.828427], rel=1e-5)
    assert table["paper"]["kl"] == pytest.approx([0.2, 0.141421], rel=1e-5)
    assert table["paper"]["seeds"] == 2 and table["beta-0"]["seeds"] == 1
    assert table["base"]["judge_accuracy"][0] == pytest.approx(80.0) and "kl-k1" not in table
    md = open(tmp_path / "sweep.md").read().splitlines()
    assert md[2].startswith("| base | 80.0 |") and md[3].startswith("| paper | 92.0 +- 2.8 | 85.0 +- 7.1 |")
    assert md[4].startswith("| beta-0 | 95.0 | 150.0 |")
    assert os.path.getsize(tmp_path / "sweep.png") > 0


def test_a_finished_run_is_not_run_again(tmp_path, monkeypatch):
    fake_run(tmp_path / "paper" / "s0", 0.9, 80.0, 0.1)
    monkeypatch.setattr(sweep, "run", lambda *a: pytest.fail("ran again"))
    sweep.one(type("A", (), {"out": str(tmp_path)}), "paper", 0)


@pytest.mark.parametrize("flags,msg", [
    (["--only", "paper,bogus"], "unknown variant 'bogus'"),
    (["--seeds", "0,x"], "--seeds must be comma-separated integers"),
    (["--jobs", "0"], "--jobs >= 1"),
])
def test_bad_flags_are_one_line_errors(flags, msg, tmp_path):
    r = subprocess.run([sys.executable, "tools/sweep.py", "--out", str(tmp_path), *flags],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and msg in r.stderr.strip().splitlines()[-1]
    assert not os.listdir(tmp_path)                                # before any work
