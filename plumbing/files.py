"""Files a user must never lose, and files a command must be able to read.

Writing: every output a command promises (checkpoints, reports, .npz, grids, JSON) goes through
`atomic_write`: a temporary file beside the target, flushed, fsynced, renamed over it, so the
target is always the complete old file or the complete new one. A failed write (full disk, quota,
file-size limit) removes the temporary file and raises `WriteFailed`, one line naming the file and
the reason, whatever library did the writing (torch.save reports a full disk as a RuntimeError).
`check_writable` probes an output before the work that produces it.

Reading: `read_text`, `read_json`, `read_jsonl` and `read_npz` turn a missing, unreadable,
undecodable or malformed input into one line naming the file and what is wrong; `read_jsonl` drops
a torn last line (what a kill or a full disk leaves) and says so.
"""
import glob
import json
import os
import re
import sys
import zipfile
import zlib
from contextlib import contextmanager


class WriteFailed(OSError):
    """An output that could not be written (full disk, quota, file-size limit, ...). Its message
    is one line; the target is as it was before (the old file, or none)."""

    def __init__(self, path, cause):
        super().__init__(cause.errno, cause.strerror or str(cause), str(path))
        self.reason = cause.strerror or str(cause)

    def __str__(self):
        return f"cannot write {self.filename}: {self.reason}"


def _os_error(e):
    """The OSError behind an exception (itself, its cause or its context), or None: libraries
    wrap the OSError of a failed write (torch.save: RuntimeError 'unexpected pos ...')."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


@contextmanager
def atomic_write(path, mode="wb"):
    """`with atomic_write(path) as f:` a file object that becomes `path` only once complete:
    written to `path.tmp.<pid>`, flushed, fsynced and renamed over `path`. Any failure removes the
    temporary file; a failed write raises WriteFailed (one line). A process killed mid-write
    leaves `path.tmp.<pid>` (see remove_stale_tmp) and `path` untouched."""
    path = str(path)
    if os.path.lexists(path) and not os.path.isfile(path):
        raise WriteFailed(path, OSError(21, "not a regular file: refusing to replace it"))
    folder = os.path.dirname(os.path.abspath(path))
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        os.makedirs(folder, exist_ok=True)
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        cause = None if isinstance(e, (KeyboardInterrupt, WriteFailed)) else _os_error(e)
        if cause is not None:
            raise WriteFailed(path, cause) from None
        raise


def save_atomic(obj, path):
    """torch.save(obj) to `path` through atomic_write: the old or the complete new file."""
    import torch
    with atomic_write(path) as f:
        torch.save(obj, f)


def write_json(path, obj, indent=1):
    """obj as JSON at `path`, atomically."""
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=indent)


def write_npz(path, **arrays):
    """numpy arrays as an (uncompressed) .npz at `path`, atomically; a dict becomes a JSON string
    array (e.g. `meta`: what produced the arrays)."""
    import numpy as np
    arrays = {k: np.array(json.dumps(v)) if isinstance(v, dict) else v for k, v in arrays.items()}
    with atomic_write(path) as f:
        np.savez(f, **arrays)


def write_image(path, image):
    """A uint8 (H, W, 3) array (or a PIL image) at `path`, atomically, in the format its name
    says (.png, .jpg, .webp; PNG otherwise)."""
    from PIL import Image
    image = image if isinstance(image, Image.Image) else Image.fromarray(image)
    fmt = Image.registered_extensions().get(os.path.splitext(str(path))[1].lower(), "PNG")
    with atomic_write(path) as f:
        image.save(f, format=fmt)


def remove_stale_tmp(path):
    """Delete the `path.tmp.<pid>` files of saves that never finished (their process was killed:
    each is a partial checkpoint, up to the full size). Returns the removed paths.
    Call it only when no other process can be saving to `path` (the run directory's lock)."""
    removed = []
    for tmp in glob.glob(glob.escape(str(path)) + ".tmp.*"):
        if re.fullmatch(r"\d+", tmp.rsplit(".", 1)[1]):
            os.remove(tmp)
            removed.append(tmp)
    return removed


def check_writable(path, flag, is_dir=False, suffixes=None):
    """Stop now, in one line, when `path` cannot be written, rather than after hours of work: the
    directory (or the file's parent) is created and a probe file written and removed there. An
    existing path that is not a regular file (a device such as /dev/full, a pipe) is refused:
    outputs are replaced by a rename, which would replace the device itself."""
    if not path:
        return
    if suffixes and os.path.splitext(path)[1].lower() not in suffixes:
        raise SystemExit(f"error: {flag} {path}: the file name must end in {' or '.join(suffixes)}")
    if not is_dir and os.path.isdir(path):
        raise SystemExit(f"error: {flag} {path} is a directory; give a file name")
    if not is_dir and os.path.lexists(path) and not os.path.isfile(path):
        raise SystemExit(f"error: {flag} {path} is not a regular file; give a file name")
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


# ----------------------------------------------------------------------------- reading inputs
def check_readable(path, what, folder=False):
    """One line when `path` is not an existing file (a folder with folder=True)."""
    if not path or not os.path.exists(path):
        raise SystemExit(f"error: {what} {path} does not exist")
    if folder and not os.path.isdir(path):
        raise SystemExit(f"error: {what} {path} is a file; pass a folder")
    if not folder and os.path.isdir(path):
        raise SystemExit(f"error: {what} {path} is a directory; pass a file")


def read_text(path, what):
    """The text of a UTF-8 file; one line when it is missing, a folder, unreadable or not UTF-8."""
    check_readable(path, what)
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError as e:
        raise SystemExit(f"error: {what} {path} is not UTF-8 text (byte 0x{e.object[e.start]:02x} "
                         f"at offset {e.start}); convert it to UTF-8") from None
    except OSError as e:
        raise SystemExit(f"error: cannot read {what} {path}: {e.strerror or e}") from None


def read_json(path, what):
    """A JSON file's value; one line when it cannot be read or parsed."""
    try:
        return json.loads(read_text(path, what))
    except json.JSONDecodeError as e:
        raise SystemExit(f"error: {what} {path} is not valid JSON ({e.msg} at line "
                         f"{e.lineno})") from None


def read_jsonl(path, what, key=None):
    """The JSON objects of a .jsonl file, one per line (blank lines skipped). A last line that does
    not parse is a torn write (a kill or a full disk mid-line): it is dropped, with a note on
    stderr. Any other bad line, a value that is not an object, or an object without `key`, is a
    one-line error: the file is damaged."""
    lines = read_text(path, what).split("\n")
    rows, last = [], max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if i == last:
                print(f"note: {what} {path}: dropped its torn last line ({len(line)} characters, "
                      f"cut mid-write)", file=sys.stderr)
                break
            raise SystemExit(f"error: {what} {path} line {i + 1} is not valid JSON ({e.msg}): "
                             f"the file is damaged") from None
        if not isinstance(row, dict) or (key is not None and key not in row):
            must = f"a JSON object with '{key}'" if key else "a JSON object"
            raise SystemExit(f"error: {what} {path} line {i + 1} is not {must}")
        rows.append(row)
    return rows


def read_npz(path, flag, need=(), one_of=()):
    """{name: array} of a .npz file, every array read now; one line when the file is missing, not
    an .npz archive, damaged, or lacks an array of `need` (or every array of `one_of`)."""
    import numpy as np
    check_readable(path, flag)
    if not zipfile.is_zipfile(path):
        raise SystemExit(f"error: {flag} {path} is not an .npz archive (not a zip file)")
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ValueError("a single .npy array")
        with z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError, KeyError) as e:
        first = str(e).split(".")[0] if str(e) else type(e).__name__
        raise SystemExit(f"error: {flag} {path} is not a readable .npz archive ({first})") from None
    missing = [k for k in need if k not in arrays]
    if one_of and not any(k in arrays for k in one_of):
        missing.append(" or ".join(one_of))
    if missing:
        held = ", ".join(arrays) or "nothing"
        raise SystemExit(f"error: {flag} {path} has no {', '.join(missing)} (it holds: {held})")
    return arrays
