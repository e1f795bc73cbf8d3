"""Shared test helpers: the repository on sys.path, `no_weights` (a machine without weights or
network) and `assert_frozen` (a scorer's reward models)."""
import errno
import os
import socket
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
