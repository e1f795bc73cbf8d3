"""Faults made real, not injected (issue 18): a run directory locked by a second process, a real
SIGINT, a real full filesystem (a small tmpfs, where mounting is permitted) and a kernel-enforced
file-size limit (everywhere), torn and undecodable input files, the wrong kind of checkpoint, a
resume with another number of ranks, out-of-memory batch sizes; and what every command line owes a
user: help for every flag, a range for every number, no slow import before the flags are read."""
import glob
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import sample
import train
from plumbing.flags import SAMPLE_CHECKS, SAMPLER_CHECKS, TRAIN_CHECKS, sample_parser, train_parser
from plumbing.stops import run_cli
from tools import bench
from tools import eval as ev

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TINY = ["--task", "c2i", "--preset", "tiny"]


@pytest.fixture(autouse=True)
def keep_threads():
    n = torch.get_num_threads()  # the tiny preset sets one thread; the other tests keep theirs
    yield
    torch.set_num_threads(n)


def line_of(main, argv, capsys):
    """Run a command as its __main__ does (plumbing/stops.run_cli); it must fail: -> its exit code
    and its one line (a one-line error, or argparse's last line)."""
    with pytest.raises(SystemExit) as e:
        run_cli(main, argv)
    err = capsys.readouterr().err.strip().splitlines()
    code = e.value.code
    line = code if isinstance(code, str) else err[-1]
    assert "\n" not in line and "Traceback" not in "\n".join(err)
    return (1 if isinstance(code, str) else code), line


def start_training(out, *flags):
    """train.py --preset tiny in its own process, for a long time, with SIGINT as a terminal sends
    it (a test runner may ignore SIGINT, and a child inherits that); returns once ckpt.pt exists."""
    p = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), *TINY, "--steps",
                          "100000", "--save-every", "2", "--out", str(out), *flags], cwd=ROOT,
                         env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not os.path.exists(os.path.join(out, "ckpt.pt")):
        assert p.poll() is None and time.time() < deadline, p.stderr.read() if p.poll() else "slow"
        time.sleep(0.1)
    return p


def saved_step(out):
    return torch.load(os.path.join(out, "ckpt.pt"), weights_only=True)["step"]


def metrics(out):
    return [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]


# ----------------------------------------------------------------------------- processes
def test_a_run_directory_has_one_owner_and_a_killed_owner_leaves_no_lock(tmp_path, capsys):
    holder = start_training(tmp_path)
    try:   # the same command with --resume while the run goes on: refused, nothing touched
        code, msg = line_of(train.main, [*TINY, "--out", str(tmp_path), "--steps", "100000",
                                         "--resume"], capsys)
        assert code == 1 and f"{tmp_path} is in use by another process (pid {holder.pid}" in msg
        assert holder.poll() is None                               # the owner runs on
    finally:
        holder.kill()                                              # kill -9: no cleanup at all
        holder.wait()
    step = saved_step(tmp_path)
    train.main([*TINY, "--out", str(tmp_path), "--steps", str(step + 1), "--resume"])
    rows = metrics(tmp_path)                                       # the kernel released the lock
    assert [m["step"] for m in rows] == list(range(step + 1))      # one row per step, in order


def test_ctrl_c_says_in_one_line_which_step_is_on_disk_and_exits_130(tmp_path):
    p = start_training(tmp_path)
    time.sleep(0.5)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130 and "Traceback" not in err and "KeyboardInterrupt" not in err
    line = err.strip().splitlines()[-1]
    m = re.fullmatch(r"interrupted; (.+)/ckpt\.pt holds step (\d+) of 100000: continue with "
                     r"python (\S+) (.+)", line)
    assert m and m[1] == str(tmp_path) and int(m[2]) == saved_step(tmp_path), line
    argv = shlex.split(m[4])                                       # the command it gives continues
    assert argv[-1] == "--resume"
    argv[argv.index("--steps") + 1] = str(int(m[2]) + 1)
    train.main(argv)
    assert saved_step(tmp_path) == int(m[2]) + 1


def test_a_resume_with_another_number_of_ranks_is_refused(tmp_path, capsys, monkeypatch):
    train.main([*TINY, "--out", str(tmp_path), "--steps", "1"])     # one rank
    monkeypatch.setenv("WORLD_SIZE", "2")                           # as torchrun's two ranks see it
    code, msg = line_of(train.main, [*TINY, "--out", str(tmp_path), "--steps", "2", "--resume"],
                        capsys)
    assert "--resume cannot change the number of ranks (1 -> 2: a global batch of 1 x 4 x 8 = 32 " \
           "-> 64 images)" in msg
    # a real 2-rank checkpoint resumed by one process: tests/test_faults.py (torchrun)


# ----------------------------------------------------------------------------- a full disk
@pytest.fixture
def small_disk(tmp_path):
    """make(kib) -> a folder on a real filesystem of that size (a tmpfs, unmounted after the
    test). Skipped where mounting is not permitted (it needs root): the kernel-limit test below
    covers every writer everywhere."""
    mounts = []

    def make(kib):
        d = tmp_path / f"disk{len(mounts)}"
        d.mkdir()
        try:
            r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(d)],
                               capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError) as e:
            pytest.skip(f"cannot mount a small tmpfs here: {e}")
        if r.returncode:
            pytest.skip(f"cannot mount a small tmpfs here: {r.stderr.strip() or r.returncode}")
        mounts.append(d)
        return d
    yield make
    for d in mounts:
        subprocess.run(["umount", "-l", str(d)], capture_output=True, timeout=30)


def fill(disk):
    """Fill a filesystem to the last byte."""
    with open(disk / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    for n in (4096, 1):
        try:
            with open(disk / "filler", "ab") as f:
                while True:
                    f.write(b"\0" * n)
                    f.flush()
        except OSError:
            pass


def test_a_full_disk_is_one_line_and_leaves_every_output_whole(tmp_path, small_disk, capsys):
    train.main([*TINY, "--out", str(tmp_path / "probe"), "--steps", "1"])
    size = os.path.getsize(tmp_path / "probe" / "ckpt.pt")
    disk = small_disk(int(1.5 * size) // 1024 + 64)       # one checkpoint and the logs fit, not two
    out = disk / "run"
    code, msg = line_of(train.main, [*TINY, "--out", str(out), "--steps", "4", "--save-every", "2"],
                        capsys)
    assert msg.startswith(f"error: cannot write {out}/ckpt.pt: No space left on device; "
                          f"{out}/ckpt.pt holds step 2 of 4: continue with python "), msg
    assert msg.endswith("--resume") and code == 1
    assert saved_step(out) == 2 and not glob.glob(f"{out}/*.tmp.*")    # the old one, whole
    fill(disk)
    for main, argv, target in [
            (sample.main, ["--preset", "tiny", "--out", "", "--npz", str(disk / "s.npz")], "s.npz"),
            (sample.main, ["--preset", "tiny", "--out", str(disk / "g.png")], "g.png"),
            (ev.main, ["plot", str(out), "--out", str(disk / "plots")], "plots/curves.png")]:
        code, msg = line_of(main, argv, capsys)
        assert code == 1 and msg.startswith(f"error: cannot write {disk}/") and \
            msg.endswith(": No space left on device"), msg
        assert not os.path.exists(disk / target) and not glob.glob(f"{disk}/**/*.tmp.*")


def test_every_writer_fails_in_one_line_under_a_kernel_size_limit(tmp_path):
    """RLIMIT_FSIZE (SIGXFSZ ignored): the kernel refuses to grow a file past 64 kB (EFBIG), as a
    full disk refuses (ENOSPC). Each writer raises WriteFailed and the old file stays (torch.save
    reports it as a RuntimeError, an .npz, a PNG and JSON as OSErrors)."""
    code = """if True:
        import json, os, resource, signal, sys
        import numpy as np, torch
        from plumbing.files import WriteFailed, save_atomic, write_image, write_json, write_npz
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (65536, resource.RLIM_INFINITY))
        big = np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8)
        writers = {"ckpt.pt": lambda p: save_atomic({"w": torch.zeros(100_000)}, p),
                   "s.npz": lambda p: write_npz(p, arr_0=big),
                   "g.png": lambda p: write_image(p, big),
                   "r.json": lambda p: write_json(p, list(range(100_000)))}
        out = {}
        for name, write in writers.items():
            path = os.path.join(sys.argv[1], name)
            open(path, "w").write("old")
            try:
                write(path)
                out[name] = "written"
            except WriteFailed as e:
                out[name] = [str(e), open(path).read(), sorted(os.listdir(sys.argv[1]))]
        print(json.dumps(out))"""
    try:
        r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, env=ENV,
                           capture_output=True, text=True, timeout=120)
    except OSError as e:
        pytest.skip(f"no kernel file-size limit here: {e}")
    assert r.returncode == 0, r.stderr[-2000:]
    for name, got in json.loads(r.stdout).items():                  # no temporary file left
        assert got[:2] == [f"cannot write {tmp_path}/{name}: File too large", "old"], (name, got)
        assert not [f for f in got[2] if ".tmp." in f], (name, got)


def test_an_output_that_is_a_device_is_refused_before_the_work(tmp_path, capsys):
    """Outputs are replaced by a rename: a device such as /dev/full would itself be replaced."""
    np.savez(tmp_path / "a.npz", arr_0=np.zeros((2, 16, 16, 3), np.uint8))
    _, msg = line_of(ev.main, ["fid", "--npz", str(tmp_path / "a.npz"), "--ref",
                               str(tmp_path / "a.npz"), "--out", "/dev/full"], capsys)
    assert msg == "error: --out /dev/full is not a regular file; give a file name"


# ----------------------------------------------------------------------------- inputs
def test_a_torn_metrics_line_is_dropped_on_resume_and_by_plot(tmp_path, capsys):
    train.main([*TINY, "--out", str(tmp_path), "--steps", "2"])
    step_2 = (tmp_path / "ckpt.pt").read_bytes()
    train.main([*TINY, "--out", str(tmp_path), "--steps", "3", "--resume"])
    (tmp_path / "ckpt.pt").write_bytes(step_2)             # killed writing step 3's row, unsaved
    text = (tmp_path / "metrics.jsonl").read_text()
    (tmp_path / "metrics.jsonl").write_text(text[:-40])
    ev.main(["plot", str(tmp_path)])
    assert "dropped its torn last line" in capsys.readouterr().err
    train.main([*TINY, "--out", str(tmp_path), "--steps", "4", "--resume"])
    assert [m["step"] for m in metrics(tmp_path)] == [0, 1, 2, 3]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    (tmp_path / "metrics.jsonl").write_text("\n".join([lines[0], lines[1][:30], *lines[2:]]))
    _, msg = line_of(ev.main, ["plot", str(tmp_path)], capsys)    # damage inside: not guessed at
    assert "metrics.jsonl line 2 is not valid JSON" in msg and msg.endswith("the file is damaged")


def test_unreadable_inputs_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "latin1.txt").write_bytes("une tête\n".encode("latin-1"))
    (tmp_path / "text.npz").write_text("not an archive")
    np.savez(tmp_path / "other.npz", images=np.zeros((2, 16, 16, 3), np.uint8))
    (tmp_path / "garbage.pt").write_bytes(os.urandom(1000))
    run = tmp_path / "run"
    train.main([*TINY, "--out", str(run), "--steps", "1"])
    (run / "ckpt.pt").write_bytes(b"not a checkpoint")
    cases = [
        (sample.main, ["--preset", "tiny", "--prompts", str(tmp_path / "latin1.txt")],
         f"prompt file {tmp_path}/latin1.txt is not UTF-8 text (byte 0xea at offset 5)"),
        (train.main, ["--task", "t2i", "--preset", "tiny", "--prompts",
                      str(tmp_path / "latin1.txt"), "--out", str(tmp_path / "t2i")],
         "is not UTF-8 text"),
        (ev.main, ["fid", "--npz", str(tmp_path / "text.npz"), "--ref",
                   str(tmp_path / "text.npz")],
         f"--npz {tmp_path}/text.npz is not an .npz archive (not a zip file)"),
        (ev.main, ["fid", "--npz", str(tmp_path / "other.npz"), "--ref",
                   str(tmp_path / "other.npz")],
         f"--npz {tmp_path}/other.npz has no arr_0 (it holds: images)"),
        (sample.main, ["--gpt-ckpt", str(tmp_path / "garbage.pt"), "--out", ""],
         f"cannot read checkpoint {tmp_path}/garbage.pt"),
        (train.main, [*TINY, "--out", str(run), "--steps", "2", "--resume"],
         f"cannot read checkpoint {run}/ckpt.pt"),
    ]
    for main, argv, words in cases:
        code, msg = line_of(main, argv, capsys)
        assert code == 1 and words in msg, msg


def test_the_wrong_kind_of_checkpoint_says_what_it_is(tmp_path, capsys):
    from vq import VQ_PRESETS, VQModel
    torch.save({"model": VQModel(VQ_PRESETS["VQ-tiny"]).state_dict()}, tmp_path / "vq.pt")
    run = tmp_path / "run"
    train.main([*TINY, "--out", str(run), "--steps", "1"])
    vq_is = f"{tmp_path}/vq.pt holds a VQ tokenizer's weights (encoder, quantize, decoder), not " \
            f"a LlamaGen GPT's weights"
    cases = [
        (train.main, [*TINY, "--gpt-ckpt", str(tmp_path / "vq.pt"), "--out", str(tmp_path / "a")],
         f"--gpt-ckpt {vq_is}"),
        (sample.main, ["--gpt-ckpt", str(tmp_path / "vq.pt"), "--out", ""], f"--gpt-ckpt {vq_is}"),
        (ev.main, ["compare", "--tuned", str(tmp_path / "vq.pt"), "--out", str(tmp_path / "e")],
         f"--tuned {vq_is}"),
        (sample.main, ["--gpt-ckpt", str(run / "ckpt.pt"), "--vq-ckpt", str(run / "ckpt.pt"),
                       "--out", ""],
         f"--vq-ckpt {run}/ckpt.pt holds a train.py checkpoint (c2i GPT, step 1), not a VQ "
         f"tokenizer's weights"),
    ]
    for main, argv, words in cases:
        code, msg = line_of(main, argv, capsys)
        assert code == 1 and words in msg, msg
    torch.save({"step": 3, "weights": torch.zeros(3)}, run / "ckpt.pt")   # someone else's file
    _, msg = line_of(train.main, [*TINY, "--out", str(run), "--steps", "5", "--resume"], capsys)
    assert msg == f"error: {run}/ckpt.pt is not a train.py checkpoint: it is another model's " \
                  f"weights (1 tensor, e.g. weights) (no model, optimizer, rng, args); move it " \
                  f"away or pass another --out"


# ----------------------------------------------------------------------------- sizes and flags
def test_batches_beyond_the_memory_are_refused_in_one_line(tmp_path, capsys):
    train.main([*TINY, "--out", str(tmp_path), "--steps", "1"])
    for main, argv in [(train.main, [*TINY, "--group-size", "10000000", "--out",
                                     str(tmp_path / "big")]),
                       (sample.main, ["--preset", "tiny", "--classes", "all", "--per-class",
                                      "100000000000", "--out", ""]),
                       (ev.main, ["compare", "--tuned", str(tmp_path / "ckpt.pt"), "--diversity",
                                  "pixel", "--per-class", "1000000000", "--out",
                                  str(tmp_path / "eval")])]:
        code, msg = line_of(main, argv, capsys)
        assert code == 1 and re.search(r"needs at least [\d.]+ GiB on cpu, [\d.]+ GiB are free; "
                                       r"make it smaller$", msg), msg


def test_num_classes_beyond_the_model_is_an_error(tmp_path, capsys):
    _, msg = line_of(train.main, [*TINY, "--num-classes", "50", "--out", str(tmp_path)], capsys)
    assert msg == "error: --num-classes 50, but the model has 10 classes"


def test_overwrite_removes_only_what_a_run_wrote(tmp_path):
    train.main([*TINY, "--out", str(tmp_path), "--steps", "2", "--image-every", "1",
                "--tensorboard"])
    assert sorted(os.listdir(tmp_path / "samples")) == ["step_000001.png", "step_000002.png"]
    mine = [tmp_path / "notes.txt", tmp_path / "samples" / "picked.png", tmp_path / "tb" / "x.txt"]
    for f in mine:
        f.write_text("mine")
    train.main([*TINY, "--out", str(tmp_path), "--steps", "1", "--overwrite"])
    assert all(f.read_text() == "mine" for f in mine)
    assert sorted(os.listdir(tmp_path / "samples")) == ["picked.png", "step_000001.png"]
    assert os.listdir(tmp_path / "tb") == ["x.txt"]            # the old run's events are gone


def test_grid_rows_0_means_no_grid(tmp_path):
    train.main([*TINY, "--out", str(tmp_path), "--steps", "1"])
    ev.main(["compare", "--tuned", str(tmp_path / "ckpt.pt"), "--diversity", "pixel",
             "--per-class", "2", "--classes", "1,2", "--grid-rows", "0", "--out",
             str(tmp_path / "eval")])
    assert os.listdir(tmp_path / "eval") == ["report.json"]


def every_parser():
    """(command name, parser) of every command and subcommand."""
    out = [("train.py", train_parser(train.PRESETS, "", "")), ("sample.py", sample_parser("")),
           ("bench.py", bench.parser())]
    subs = next(a for a in ev.parser()._actions if a.dest == "cmd").choices
    return out + [(f"eval.py {k}", p) for k, p in subs.items()]


def test_every_flag_has_help_and_every_number_a_range():
    checked = {"train.py": SAMPLER_CHECKS + TRAIN_CHECKS, "sample.py": SAMPLE_CHECKS,
               "bench.py": bench.RANGE_CHECKS,
               **{f"eval.py {k}": v for k, v in ev.RANGE_CHECKS.items()}}
    special = {"--adam-betas", "--clip-eps-high"}              # train.py checks these by hand
    for name, p in every_parser():
        for a in p._actions:
            if not a.option_strings or a.dest == "help":
                continue
            assert a.help, f"{name} {a.option_strings[0]} has no help text"
            if a.type in (int, float) and a.option_strings[0] not in special:
                assert a.option_strings[0] in [c[0] for c in checked[name]], \
                    f"{name} {a.option_strings[0]} has no range check"


def test_no_command_imports_the_compiler_before_it_compiles():
    """torch._dynamo takes seconds to import: --help and a flag error must not wait for it."""
    r = subprocess.run([sys.executable, "-c", "import sys, train, sample\nfrom tools import eval, "
                        "bench\nprint('torch._dynamo' in sys.modules)"], cwd=ROOT, env=ENV,
                       capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "False", r.stderr[-2000:]


def test_bench_step_floors_are_computed_for_the_model_it_times(tmp_path):
    args = bench.parse_args(["--step", "--model", "GPT-tiny", "--image-size", "64"])[0]
    config = bench.step_config(args)
    targs = train.get_args(bench.step_command(args, str(tmp_path), [])[2:])
    policy = train.build_models(targs, torch.device("cpu"))[0]
    assert (config.block_size, config.vocab_size) == (16, 16384)      # 4x4 tokens of VQ-16
    assert policy.config == config
