"""Finding weights: a flag's path, else a library cache, else a download, else one line.

- `find_weights(what, flag, path, fetch, ...)`: the one home of weight finding for every loader
  (LlamaGen, the rewards, the evaluation's Inception and LPIPS): the flag's path, else the
  library cache, else a download when huggingface.co answers, else `MissingCheckpoint` (or the
  caller's error class), one line naming the file, where it was looked for and the flag to pass.
- `resolve(name_or_path, flag)`: a local file, or a released LlamaGen name (`c2i_B_256`,
  `vq_ds16_c2i`, `t2i_XL_stage1_256`, ...) fetched once through `huggingface_hub` into its cache.
"""
import os
import socket
from urllib.parse import urlparse

# released name -> Hugging Face repo holding `<name>.pt`
RELEASES = {
    **{f"c2i_{s}_{r}": "FoundationVision/LlamaGen" for s, r in
       [("B", 256), ("B", 384), ("L", 256), ("L", 384), ("XL", 384), ("XXL", 384), ("3B", 384)]},
    "vq_ds16_c2i": "FoundationVision/LlamaGen",
    "vq_ds8_c2i": "FoundationVision/LlamaGen",
    "vq_ds16_t2i": "peizesun/llamagen_t2i",
    "t2i_XL_stage1_256": "peizesun/llamagen_t2i",
    "t2i_XL_stage2_512": "peizesun/llamagen_t2i",
}


class MissingCheckpoint(FileNotFoundError):
    """A checkpoint that is neither on disk nor downloadable. Its message is one line."""


class BadCheckpoint(ValueError):
    """A checkpoint whose contents do not fit the model (keys, shapes, resolution)."""


def resolve(name_or_path, flag="--gpt-ckpt"):
    """Return a local path for a file path or a released model name (downloaded once, cached)."""
    name_or_path = str(name_or_path)
    if os.path.isfile(name_or_path):
        return name_or_path
    if os.path.isdir(name_or_path):
        raise MissingCheckpoint(f"{flag} {name_or_path} is a directory; "
                                f"pass the checkpoint file in it")
    name = os.path.basename(name_or_path)[:-3] if name_or_path.endswith(".pt") else name_or_path
    if name not in RELEASES:
        released = ", ".join(sorted(RELEASES))
        raise MissingCheckpoint(f"checkpoint {name_or_path!r} not found; pass an existing file "
                                f"with {flag} PATH or a released name ({released})")
    repo, fname = RELEASES[name], f"{name}.pt"
    from huggingface_hub import hf_hub_download
    return find_weights("LlamaGen", flag, file=f"{fname} (huggingface.co/{repo})",
                        fetch=lambda local: hf_hub_download(repo, fname, local_files_only=local))


# ----------------------------------------------------------------------------- finding weights
def find_weights(what, flag, path=None, fetch=None, file="", where=None, arg="PATH", names=(),
                 folder=False, fix=None, error=MissingCheckpoint):
    """THE way every loader finds its weights, and the one-line message when it cannot.
    1. `path` (from `flag`) if given: it must be a file (a folder with folder=True; `names` are
       the file names to suggest when a folder was passed for a file);
    2. fetch(True): the library's cache (fetch raises when the file is not there);
    3. fetch(False) if huggingface.co answers a socket probe: the download.
    Otherwise `error`: "{what}: {file} not found in {where} and {why}; {fix}", where `fix` is by
    default "download it and pass {flag} {arg}". `where` defaults to the huggingface_hub cache."""
    if path:
        return flag_path(path, flag, what, names, folder, error)
    found, why = hub_fetch(fetch)
    if found:
        return found
    if where is None:
        from huggingface_hub import constants
        where = f"the huggingface_hub cache ({constants.HF_HUB_CACHE})"
    fix = fix or f"download it and pass {flag} {arg} (or set HF_HOME to a cache that has it)"
    raise error(f"{what}: {file} not found in {where} and {why}; {fix}")


def flag_path(path, flag, what, names=(), folder=False, error=MissingCheckpoint):
    """A path given by a flag: returned if it is the kind of path the loader reads (a file, or a
    folder with folder=True); otherwise `error`, one line saying what is wrong with it."""
    if folder:
        if os.path.isdir(path):
            return path
        what_is = "is a file" if os.path.exists(path) else "does not exist"
        raise error(f"{what}: {path} (from {flag}) {what_is}; pass the model folder "
                    f"(the one holding config.json)")
    if os.path.isfile(path):
        return path
    if os.path.isdir(path):
        inside = [n for n in names if os.path.isfile(os.path.join(path, n))]
        hint = (f"pass {flag} {os.path.join(path, inside[0])}" if inside
                else f"pass the weights file ({' or '.join(names)})")
        raise error(f"{what}: {path} (from {flag}) is a directory; {hint}")
    raise error(f"{what}: weights file {path} (from {flag}) does not exist")


def hub_fetch(fetch):
    """Cache first, then the network: fetch(local_files_only=True), else fetch(False) if the hub
    answers a socket probe (its client retries for ~30 s when there is no network).
    Returns (path, None) or (None, why), why a phrase for find_weights' message."""
    try:
        return fetch(True), None
    except Exception:
        pass
    if not hub_reachable():
        return None, "huggingface.co is unreachable"
    try:
        return fetch(False), None
    except Exception as e:
        return None, f"the download failed ({type(e).__name__})"


def hub_reachable(timeout=3.0):
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False
