"""Reading every released checkpoint layout, with strict key checks.

- `read(name_or_path, config_cls, flag)`: resolve (weights.py), then
  `torch.load(..., weights_only=True)` and the state dict (plus our stored config, if any) out of
  every layout the released files use: `{"model": sd}` (DDP runs, plus optimizer/steps/args),
  `{"ema": sd}`, `{"module": sd}`, `{"state_dict": sd}`, a bare state dict (FSDP runs), stray
  `freqs_cis`, `module.`/`_orig_mod.` prefixes. The released DDP files keep an argparse
  `Namespace` under `args`, which `weights_only=True` refuses; we allow-list exactly that class.
- `check_keys(module, sd)`: strict loading with an error that names what is missing/unexpected.
- `describe(raw)` says what a loaded file is (a train.py checkpoint, a GPT's or a VQ's weights,
  another model's); `read(..., kind=)` and `check_run_checkpoint` refuse the wrong kind of file in
  one line naming what it is and what was expected.
- `gpt_config_fields(sd, ...)`: a LlamaGen GPT's architecture read off its weights, and its
  resolution checked against the one asked for.
- `read_torchscript_tensors(path)`: the tensors of a TorchScript archive (OpenAI's CLIP release),
  read as data, never run.
"""
import argparse
import math
import os
import re
from dataclasses import fields

import torch

from plumbing.weights import BadCheckpoint, MissingCheckpoint, resolve

# what each kind of weights file holds, told apart by its key names
KINDS = {"gpt": "a LlamaGen GPT's weights (tok_embeddings, layers.*, output)",
         "vq": "a VQ tokenizer's weights (encoder, quantize, decoder)"}
# what train.py's ckpt.pt holds (plumbing/rundir.py writes it), with the type of each entry
RUN_CHECKPOINT = {"model": dict, "optimizer": dict, "step": int, "rng": list, "args": dict}


def weights_kind(sd):
    """'gpt', 'vq' or None: the kind of model a state dict's key names belong to."""
    if "tok_embeddings.weight" in sd:
        return "gpt"
    if any(k.startswith(("encoder.", "quantize.")) for k in sd):
        return "vq"
    return None


def describe(raw):
    """What a loaded checkpoint file is, as a phrase for an error message."""
    if not isinstance(raw, dict):
        return f"a {type(raw).__name__}, not a dict of tensors"
    if "lora" in raw and "step" in raw:
        return (f"a LoRA run's checkpoint (adapters only, step {raw['step']}): export a plain GPT "
                f"with `python tools/lora.py merge CKPT --out FILE` and pass FILE")
    if all(k in raw for k in ("model", "optimizer", "step", "args")):
        task = raw["args"].get("task", "?") if isinstance(raw["args"], dict) else "?"
        return f"a train.py checkpoint ({task} GPT, step {raw['step']})"
    try:
        sd = extract_state_dict(raw)
    except BadCheckpoint:
        return f"a dict without tensors (keys: {', '.join(map(str, list(raw)[:4]))})"
    kind = weights_kind(sd)
    if kind:
        return KINDS[kind]
    n = f"{len(sd)} tensor" + ("s" if len(sd) > 1 else "")
    return f"another model's weights ({n}, e.g. {next(iter(sd))})"


def check_run_checkpoint(ck, path):
    """A run's ckpt.pt must be what train.py writes (RUN_CHECKPOINT); else one line saying what
    the file is."""
    bad = [k for k, t in RUN_CHECKPOINT.items()
           if not isinstance(ck, dict) or not isinstance(ck.get(k), t)]
    if bad:
        raise BadCheckpoint(f"{path} is not a train.py checkpoint: it is {describe(ck)} (no "
                            f"{', '.join(bad)}); move it away or pass another --out")


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


def state_dict_of(raw, path, flag, kind):
    """The state dict of a loaded file, which must hold weights of `kind` ('gpt' or 'vq'):
    else one line saying what the file holds instead."""
    try:
        sd = extract_state_dict(raw)
    except BadCheckpoint as e:
        raise BadCheckpoint(f"{flag} {path}: {e}") from None
    if weights_kind(sd) != kind:
        raise BadCheckpoint(f"{flag} {path} holds {describe(raw)}, not {KINDS[kind]}")
    return sd


def read(name_or_path, config_cls, flag, meta=None, kind=None):
    """resolve + load: (path, state dict, the stored config as `config_cls` or None).
    Our checkpoints store the config as a plain dict under `config`; released files have none.
    `meta`, a dict, receives the stored `image_size` (train.py's checkpoints keep it) when there
    is one. `kind` ('gpt', 'vq'): the file must hold that kind of weights (state_dict_of)."""
    path = resolve(name_or_path, flag)
    raw = load_checkpoint(path)
    sd = state_dict_of(raw, path, flag, kind) if kind else extract_state_dict(raw)
    if meta is not None and isinstance(raw, dict):
        run_args = raw.get("args") if isinstance(raw.get("args"), dict) else {}
        size = raw.get("image_size", run_args.get("image_size"))
        if isinstance(size, int):
            meta["image_size"] = size
    config = None
    if isinstance(raw, dict) and isinstance(raw.get("config"), dict):
        names = {f.name for f in fields(config_cls)}
        config = config_cls(**{k: v for k, v in raw["config"].items() if k in names})
    return path, sd, config


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



# ----------------------------------------------------------------------------- LlamaGen GPT files
def read_gpt(ckpt, config_cls, heads_by_dim, image_size=None, config=None, flag="--gpt-ckpt"):
    """(path, state dict, config) of a GPT checkpoint of any layout. The config: `config`, else
    the stored one (ours), else read off the weights (`gpt_fields`). The resolution (not in the
    weights) comes from the config, the stored pixel size, or a `_256`/`_384`/`_512` file name;
    `image_size` is checked against it (a 384px model on a 256 grid is an error, not garbage)."""
    meta = {}
    path, sd, stored = read(ckpt, config_cls, flag, meta, kind="gpt")
    config = config or stored
    name = os.path.basename(str(ckpt))
    m = re.search(r"_(\d{3,4})(?:\.pt)?$", name)
    # the pixel size: stored by train.py (any VQ), else 16 px per token (LlamaGen's VQ-16), else
    # the file name
    from_config = math.isqrt(config.block_size) * 16 if config else None
    from_name = int(m.group(1)) if m else None
    trained = meta.get("image_size") or from_config or from_name
    if image_size is not None and trained is not None and image_size != trained:
        side = math.isqrt(config.block_size) if config else trained // 16
        how = "" if "image_size" in meta or not config else " at 16 px per token"
        raise BadCheckpoint(f"{name} was trained at {trained}px{how} "
                            f"({side}x{side} tokens) but --image-size is {image_size}")
    if config is None:
        if trained is None and image_size is None:
            raise BadCheckpoint(f"cannot tell the resolution of {path}; "
                                f"pass --image-size (256, 384 or 512)")
        try:
            config = config_cls(**gpt_fields(sd, trained or image_size, heads_by_dim))
        except KeyError as e:  # a GPT file cut short, or another layout
            raise BadCheckpoint(f"{flag} {path} has no {e.args[0]}: not a complete LlamaGen "
                                f"GPT") from None
    return path, sd, config


def gpt_fields(sd, image_size, heads_by_dim, downsample=16):
    """A released GPT's config fields, read off its weights (heads from the width: the LlamaGen
    presets in heads_by_dim); the resolution from image_size."""
    vocab_size, dim = sd["tok_embeddings.weight"].shape
    if dim not in heads_by_dim:
        raise BadCheckpoint(f"cannot infer n_head for dim {dim}: not a LlamaGen preset; "
                            f"save the config with the weights")
    n_layer = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("layers."))
    cfg = dict(dim=dim, n_head=heads_by_dim[dim], vocab_size=vocab_size, n_layer=n_layer,
               block_size=(image_size // downsample) ** 2)
    if "cls_embedding.cap_proj.fc1.weight" in sd:
        cfg.update(model_type="t2i", caption_dim=sd["cls_embedding.cap_proj.fc1.weight"].shape[1],
                   cls_token_num=sd["cls_embedding.uncond_embedding"].shape[0])
    else:
        cfg.update(num_classes=sd["cls_embedding.embedding_table.weight"].shape[0] - 1)
    return cfg

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
