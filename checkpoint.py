"""Checkpoint I/O shared by the models and the trainer.

- `resolve(name_or_path, flag)`: a local file, or a released LlamaGen name (`c2i_B_256`,
  `vq_ds16_c2i`, `t2i_XL_stage1_256`, ...) fetched once through `huggingface_hub` into its cache.
  Offline with nothing cached it raises `MissingCheckpoint`: one line naming the file, where to
  get it and the flag to pass instead.
- `find_weights(what, flag, path, fetch, ...)`: the one home of weight finding for every loader
  (LlamaGen, the rewards, eval's Inception and LPIPS): the flag's path, else the library cache,
  else a download when huggingface.co answers, else that one-line message.
- `read(name_or_path, config_cls, flag)`: resolve, then `torch.load(..., weights_only=True)` and
  the state dict (plus our stored config, if any) out of every layout the released files use:
  `{"model": sd}` (DDP runs, plus optimizer/steps/args), `{"ema": sd}`, `{"module": sd}`,
  `{"state_dict": sd}`, a bare state dict (FSDP runs), stray `freqs_cis`, `module.`/`_orig_mod.`
  prefixes. The released DDP files keep an argparse `Namespace` under `args`, which
  `weights_only=True` refuses; we allow-list exactly that class.
- `check_keys(module, sd)`: strict loading with an error that names what is missing/unexpected.
- `save_atomic(obj, path)`: write to a temporary file, fsync, then `os.replace`, so a run killed
  mid-save never leaves a truncated checkpoint behind; `remove_stale_tmp(path)` deletes the
  temporary files such a kill leaves.
"""
import argparse
import glob
import os
import re
import socket
from dataclasses import fields
from urllib.parse import urlparse

import torch

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


def load_checkpoint(path):
    """torch.load with weights_only=True, allowing the argparse Namespace the released files
    keep."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise MissingCheckpoint(f"checkpoint file {path} does not exist") from None
    except Exception as e:
        raise BadCheckpoint(f"cannot read checkpoint {path}: {type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''}") from None


def run_args(path):
    """train.py's args stored in a checkpoint (a Namespace), or None for any other file;
    memory-mapped, so the weights are not read here (the loaders read them and report a missing or
    bad file)."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            ck = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return None
    a = ck.get("args") if isinstance(ck, dict) else None
    return argparse.Namespace(**a) if isinstance(a, dict) else None


def extract_state_dict(ckpt):
    """Pull the weights out of any released layout and normalise the key names."""
    if not isinstance(ckpt, dict):
        raise BadCheckpoint(f"checkpoint holds a {type(ckpt).__name__}, expected a dict of tensors")
    # `model` first: it is what LlamaGen samples
    for key in ("model", "ema", "module", "state_dict"):
        if key in ckpt and isinstance(ckpt[key], dict):
            ckpt = ckpt[key]
            break
    sd = {}
    for k, v in ckpt.items():
        if not torch.is_tensor(v):
            continue
        k = re.sub(r"^(module\.|_orig_mod\.)+", "", k)
        if k == "freqs_cis" or k.endswith(".kv_cache.k_cache") or k.endswith(".kv_cache.v_cache"):
            continue  # buffers recomputed at build time; some released files carry them
        sd[k] = v
    if not sd:
        raise BadCheckpoint("checkpoint contains no tensors")
    return sd


def read(name_or_path, config_cls, flag, meta=None):
    """resolve + load: (path, state dict, the stored config as `config_cls` or None).
    Our checkpoints store the config as a plain dict under `config`; released files have none.
    `meta`, a dict, receives the stored `image_size` (train.py's checkpoints keep it) when there
    is one."""
    path = resolve(name_or_path, flag)
    raw = load_checkpoint(path)
    if meta is not None and isinstance(raw, dict):
        run_args = raw.get("args") if isinstance(raw.get("args"), dict) else {}
        size = raw.get("image_size", run_args.get("image_size"))
        if isinstance(size, int):
            meta["image_size"] = size
    config = None
    if isinstance(raw, dict) and isinstance(raw.get("config"), dict):
        names = {f.name for f in fields(config_cls)}
        config = config_cls(**{k: v for k, v in raw["config"].items() if k in names})
    return path, extract_state_dict(raw), config


def check_keys(module, sd, what="checkpoint"):
    """Raise BadCheckpoint naming missing / unexpected keys and shape mismatches (first few)."""
    own = module.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}"
              for k in own if k in sd and sd[k].shape != own[k].shape]
    problems = []
    found = (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes))
    for label, items in found:
        if items:
            more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
            problems.append(f"{label} {len(items)}: {', '.join(items[:3])}{more}")
    if problems:
        raise BadCheckpoint(f"{what} does not fit the model: " + "; ".join(problems))


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


# ----------------------------------------------------------------------------- TorchScript archives
# read as data. OpenAI's CLIP release (`ViT-B-32.pt`, what `clip.load` and open_clip's OpenAI URL
# leave in ~/.cache/clip) is a TorchScript archive. torch.load(weights_only=True) refuses those, and
# torch.jit.load compiles and can run the code inside the archive (the reason torch >= 2.6 refuses
# it under weights_only). Its tensors are ordinary zip records, so we read them with an unpickler
# that can build nothing but tensors, dicts and inert stand-ins for the archive's module classes:
# no code from the file is ever run.
_STORAGE_DTYPES = {"FloatStorage": torch.float32, "HalfStorage": torch.float16,
                   "BFloat16Storage": torch.bfloat16, "DoubleStorage": torch.float64,
                   "LongStorage": torch.int64, "IntStorage": torch.int32,
                   "ShortStorage": torch.int16, "CharStorage": torch.int8,
                   "ByteStorage": torch.uint8, "BoolStorage": torch.bool}


def is_torchscript(path):
    """True for a torch.jit.save archive (a zip whose records include constants.pkl)."""
    import zipfile
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.split("/", 1)[-1] == "constants.pkl" for n in z.namelist())


class _ScriptObject:
    """Stands in for every class of the archive (`__torch__.*`): keeps its pickled state, nothing
    else."""

    def __setstate__(self, state):
        self.state = state


def read_torchscript_tensors(path):
    """{dotted name: tensor} for every tensor attribute of a TorchScript archive's module tree (its
    parameters and buffers, named as in the state_dict), without compiling or running its code."""
    import collections
    import pickle
    import zipfile

    def rebuild(storage, offset, size, stride, *_):  # torch._utils._rebuild_tensor_v2, 1-D storage
        return storage.as_strided(size, stride, offset)

    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        root = names[0].split("/", 1)[0]
        if f"{root}/data.pkl" not in names:
            raise BadCheckpoint(f"{path}: a TorchScript archive without data.pkl "
                                f"(an older layout); use a safetensors or state-dict file of the "
                                f"same weights")

        class Unpickler(pickle.Unpickler):
            def find_class(self, module, name):
                if module.startswith("__torch__"):
                    return _ScriptObject
                if module == "torch" and name in _STORAGE_DTYPES:
                    return _STORAGE_DTYPES[name]
                if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
                    return rebuild
                if (module, name) == ("collections", "OrderedDict"):
                    return collections.OrderedDict
                typed = name.startswith("build_") or name == "restore_type_tag"
                if module == "torch.jit._pickle" and typed:
                    return lambda value, *_: value  # typed lists / dicts: the value itself
                raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a weights archive")

            def persistent_load(self, pid):   # ('storage', dtype, key, device, numel) -> 1-D tensor
                _, dtype, key, _, _ = pid
                return torch.frombuffer(bytearray(z.read(f"{root}/data/{key}")), dtype=dtype)

        try:
            obj = Unpickler(z.open(f"{root}/data.pkl")).load()
        except (pickle.UnpicklingError, ValueError, TypeError, KeyError, RuntimeError) as e:
            first_line = str(e).splitlines()[0] if str(e) else ""
            raise BadCheckpoint(f"cannot read the TorchScript archive {path} as weights: "
                                f"{type(e).__name__}: {first_line}") from None
    sd = {}

    def walk(o, prefix):
        state = getattr(o, "state", None)
        for k, v in (state.items() if isinstance(state, dict) else ()):
            if torch.is_tensor(v):
                sd[prefix + k] = v.clone()  # own storage: tensors of one archive may share one
            elif isinstance(v, _ScriptObject):
                walk(v, f"{prefix}{k}.")
    walk(obj, "")
    if not sd:
        raise BadCheckpoint(f"the TorchScript archive {path} holds no tensors")
    return sd
