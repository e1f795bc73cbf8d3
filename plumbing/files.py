"""Files a run must never lose: atomic saves, stale temporary files, writable outputs."""
import glob
import os
import re

import torch


def save_atomic(obj, path):
    """torch.save to `path` so that `path` is always either the old or the complete new file.
    A failed write (full disk, ...) removes its temporary file and re-raises; a process killed
    mid-save leaves `path.tmp.<pid>`, which `remove_stale_tmp` clears when the next run starts."""
    path = str(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def remove_stale_tmp(path):
    """Delete the `path.tmp.<pid>` files of saves that never finished (their process was killed:
    each is a partial checkpoint, up to the full size). Returns the removed paths.
    Call it only when no other process can be saving to `path`."""
    removed = []
    for tmp in glob.glob(glob.escape(str(path)) + ".tmp.*"):
        if re.fullmatch(r"\d+", tmp.rsplit(".", 1)[1]):
            os.remove(tmp)
            removed.append(tmp)
    return removed


def check_writable(path, flag, is_dir=False, suffixes=None):
    """Stop now, in one line, when `path` cannot be written, rather than after hours of work: the
    directory (or the file's parent) is created and a probe file written and removed there."""
    if not path:
        return
    if suffixes and os.path.splitext(path)[1].lower() not in suffixes:
        raise SystemExit(f"error: {flag} {path}: the file name must end in {' or '.join(suffixes)}")
    if not is_dir and os.path.isdir(path):
        raise SystemExit(f"error: {flag} {path} is a directory; give a file name")
    folder = path if is_dir else os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        probe = os.path.join(folder, f".write_test.{os.getpid()}")
        open(probe, "w").close()
        os.remove(probe)
        if not is_dir and os.path.exists(path) and not os.access(path, os.W_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as e:
        elsewhere = e.filename and os.path.abspath(e.filename) != os.path.abspath(path)
        where = f" ({e.filename})" if elsewhere else ""
        raise SystemExit(f"error: cannot write {flag} {path}: {e.strerror or e}{where}") from None
