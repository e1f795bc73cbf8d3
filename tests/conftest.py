"""Shared test helpers: the repository on sys.path, `no_weights` (a machine without weights or
network), `assert_frozen` (a scorer's reward models), `random_images`, `save_tiny_run` (a
train.py-style checkpoint) and `one_line_error` (a command that fails in one line)."""
import errno
import os
import socket
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    """A machine without weights or network: empty huggingface_hub, pyiqa, torch hub and ~/.cache
    folders, the hub declared offline, and every socket connect failing at once as it does with no
    network (libraries may still try: huggingface_hub 2.x fetches a user-agent registry even with
    local_files_only). A loader must then fail in one line rather than wait or download."""
    import huggingface_hub.constants
    import torch

    def refuse(*args, **kwargs):
        raise OSError(errno.ENETUNREACH, "Network is unreachable")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "torch"))
    yield
    torch.hub.set_dir(old)


def assert_frozen(scorer):
    """Every reward model a scorer built is in eval mode (no dropout) and needs no gradients."""
    import torch
    mods = [m for v in scorer.ctx.cache.values() for m in (v if isinstance(v, tuple) else (v,))
            if isinstance(m, torch.nn.Module)]
    assert mods
    for m in mods:
        assert not m.training and not any(p.requires_grad for p in m.parameters())


def random_images(b, h, w, seed=0):
    """b images (b, 3, h, w), uniform in [0, 1], from their own generator."""
    import torch
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def save_tiny_run(path, steps=0, task="c2i"):
    """A train.py-style checkpoint of the tiny preset of `task` after `steps` fake updates
    (0 = the initial weights); the updates draw from the global RNG."""
    import torch
    from train import build_models, get_args
    args = get_args(["--task", task, "--preset", "tiny"])
    policy = build_models(args, torch.device("cpu"))[0]
    with torch.no_grad():
        for _ in range(steps):
            policy.output.weight.add_(0.5 * torch.randn_like(policy.output.weight))
    torch.save({"model": policy.state_dict(), "step": steps, "args": vars(args)}, path)


def one_line_error(cmd, env, timeout):
    """Run `python cmd...` in the repository; it must fail with one line on stderr and no
    traceback. Returns that line."""
    r = subprocess.run([sys.executable, *cmd], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    return r.stderr
