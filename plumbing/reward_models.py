"""Loading the paper's reward networks (CLIP, HPSv2.1, MANIQA, the Qwen2.5-VL judge) the way their
libraries load them, and finding their weights (plumbing/weights.find_weights): a flag's path,
else the library cache (huggingface_hub for CLIP, HPS and Qwen; pyiqa's for MANIQA), else a
download when huggingface.co answers; a missing file raises RewardWeightsMissing, one line naming
the file, where it was looked for and the flag to pass. Each loader takes the scorer's context
(rewards.build_rewards: device, dtype, precision, paths, tiny, seed, cache) and caches what it
builds there; tiny=True builds the stand-in of plumbing/standins.py (random weights, offline).
rewards.py holds the formulas that turn these networks into rewards.
"""
import contextlib
import json
import os
import re

import torch

from plumbing.formats import is_torchscript, read_torchscript_tensors
from plumbing.standins import TINY_MANIQA, seeded, tiny_clip, tiny_maniqa_vit, tiny_qwen
from plumbing.weights import BadCheckpoint, find_weights


class RewardWeightsMissing(RuntimeError):
    """A reward's weights are not on this machine; str() is one line saying what and how."""


# build_rewards' weight paths, one per reward model: train.py and tools/eval.py take each as a flag
# (--clip-ckpt, ...), so a run's weights can be given on the command line and stored with it
WEIGHT_ARGS = ("clip_ckpt", "hps_ckpt", "maniqa_ckpt", "qwen_path", "pickscore_path",
               "imagereward_ckpt", "aesthetic_ckpt", "aesthetic_clip_ckpt", "digit_ckpt")


# ----------------------------------------------------------------------------- finding and loading
def hub_file(repo, filenames, what, flag, path=None):
    """A local path (the flag) if given, else the huggingface_hub cache, else a download if
    huggingface.co answers (the first of `filenames` that exists); otherwise
    RewardWeightsMissing (one line, checkpoint.find_weights)."""
    from huggingface_hub import hf_hub_download

    def fetch(local):  # the first of the candidate file names that exists
        for fn in filenames[:-1]:
            try:
                return hf_hub_download(repo, fn, local_files_only=local)
            except Exception:
                pass
        return hf_hub_download(repo, filenames[-1], local_files_only=local)
    return find_weights(what, flag, path, fetch, file=f"weights {repo}/{filenames[0]}",
                        names=filenames, error=RewardWeightsMissing)


def torch_load(path, what, flag):
    """torch.load(weights_only=True). A file that needs more (pickled Python objects besides
    tensors) is refused in one line: we never fall back to weights_only=False, which can run code
    from the file."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        held = re.search(r"GLOBAL (\S+)", str(e))
        why = (f"it holds a pickled {held.group(1)}" if held
               else f"{type(e).__name__}: {str(e).splitlines()[0][:120]}")
        raise BadCheckpoint(f"{what}: {path} (from {flag}) cannot be read with "
                            f"torch.load(weights_only=True) ({why}); this project never unpickles "
                            f"arbitrary objects: if you trust the file, re-save just its tensors "
                            f"(a dict of name -> tensor) and pass that") from None


def reward_options(args):
    """build_rewards' keywords from a run's flags (train.py; tools/eval.py from a run's args): the
    weight paths and the fidelity switches (docs/fidelity.md; a run older than a switch: its
    default)."""
    return dict(precision=getattr(args, "reward_dtype", "auto"),
                inputs=getattr(args, "reward_input", "float"),
                maniqa_full_range=getattr(args, "maniqa_full_range", True),
                **{k: getattr(args, k, None) for k in WEIGHT_ARGS})


# precision "paper": the dtypes AR-GRPO's reward models run in (weights, autocast): CLIP fp32
# (transformers' default), HPS fp32 weights scored under torch.cuda.amp.autocast (fp16; a no-op on a
# CPU), MANIQA fp32, the judge bf16 (its pipeline's torch_dtype="auto"); any other model: ctx.dtype
PAPER_PRECISION = {"clip": (torch.float32, None), "hps": (torch.float32, torch.float16),
                   "maniqa": (torch.float32, None), "qwen": (torch.bfloat16, None)}


def weights_dtype(ctx, kind=None):
    """The dtype reward model `kind` runs in: ctx.dtype, or AR-GRPO's under precision 'paper'."""
    if ctx.precision == "paper" and kind in PAPER_PRECISION:
        return PAPER_PRECISION[kind][0]
    return ctx.dtype


def reward_autocast(ctx, kind):
    """The autocast `kind` is scored under: AR-GRPO's HPS under precision 'paper' on a GPU (fp16),
    else none."""
    amp = PAPER_PRECISION.get(kind, (None, None))[1] if ctx.precision == "paper" else None
    if amp is None or ctx.device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", amp)


def frozen(model, ctx, kind=None):
    """Every reward model: eval mode (no dropout), no grads, on the device in its dtype
    (weights_dtype)."""
    model.eval().requires_grad_(False)
    return model.to(ctx.device, weights_dtype(ctx, kind))


# ----------------------------------------------------------------------------- CLIP and HPS
# open_clip architecture of each released file: a config name or a config dict (the tests put tiny
# configs here to load tiny files in the released layouts through the real path)
CLIP_ARCH = {"clip": "ViT-B-32-quickgelu", "hps": "ViT-H-14"}   # OpenAI CLIP uses QuickGELU


CLIP_FILES = ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]


OPENAI_JIT_EXTRAS = ("input_resolution", "context_length", "vocab_size")   # ints, not weights


def open_clip_model(arch):
    """open_clip's CLIP class built from its config with random weights (built directly: open_clip's
    create_model(pretrained=None) would log 'No pretrained weights loaded ... initialized randomly'
    right before we load the weights)."""
    import copy
    from open_clip import get_model_config
    from open_clip.model import CLIP
    return CLIP(**(get_model_config(arch) if isinstance(arch, str) else copy.deepcopy(arch)))


def load_clip_weights(model, path, what, flag):
    """Load a CLIP / HPS file into `model`, any released layout: safetensors (timm's open_clip
    export); a torch.save file under weights_only=True, bare or {'state_dict': ...} (HPSv2.1, fp16),
    'module.' prefixes; OpenAI's TorchScript ViT-B-32.pt, read as data (formats.py). Keys are
    checked strictly; a mismatch is one line."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        sd = load_file(path)
    elif is_torchscript(path):
        sd = {k: v for k, v in read_torchscript_tensors(path).items() if k not in OPENAI_JIT_EXTRAS}
    else:
        sd = torch_load(path, what, flag)
        sd = sd.get("state_dict", sd) if isinstance(sd, dict) else sd
    if not isinstance(sd, dict):
        raise BadCheckpoint(f"{what}: {path} (from {flag}) holds a {type(sd).__name__}, "
                            f"not a state dict")
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    own, buffers = model.state_dict(), dict(model.named_buffers())
    # open_clip 3.x owns buffers (attn_mask, logit_bias) that older files predate or carry as
    # non-persistent
    sd = {k: v for k, v in sd.items() if k in own or k not in buffers}
    missing = [k for k in own if k not in sd and k not in ("logit_bias", "attn_mask")]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}"
              for k in own if k in sd and sd[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise BadCheckpoint(f"{what}: {path} (from {flag}) does not fit open_clip's architecture: "
                            f"missing {missing[:3]}, unexpected {unexpected[:3]}, "
                            f"shape mismatch {shapes[:3]}")
    model.load_state_dict(sd, strict=False)
    return model


def load_clip(ctx, kind):
    """kind 'clip' -> OpenAI ViT-B/32; 'hps' -> open_clip ViT-H-14 with the HPSv2.1 weights.
    Shared by the plain and the quantised reward through ctx.cache."""
    if kind in ctx.cache:
        return ctx.cache[kind]
    import open_clip
    if ctx.tiny:
        with seeded(ctx.seed):
            model = tiny_clip(quick_gelu=kind == "clip")
    elif kind == "clip":
        path = hub_file("timm/vit_base_patch32_clip_224.openai", CLIP_FILES,
                         "CLIP ViT-B/32 (openai)", "--clip-ckpt", ctx.clip_ckpt)
        model = load_clip_weights(open_clip_model(CLIP_ARCH["clip"]), path,
                                   "CLIP ViT-B/32 (openai)", "--clip-ckpt")
    else:
        path = hub_file("xswu/HPSv2", ["HPS_v2.1_compressed.pt"], "HPSv2.1", "--hps-ckpt",
                         ctx.hps_ckpt)
        model = load_clip_weights(open_clip_model(CLIP_ARCH["hps"]), path,
                                   "HPSv2.1", "--hps-ckpt")
    image_size = model.visual.image_size
    image_size = image_size[0] if isinstance(image_size, (tuple, list)) else image_size
    ctx.cache[kind] = (frozen(model, ctx, kind), open_clip.get_tokenizer("ViT-B-32"), image_size)
    return ctx.cache[kind]


# ----------------------------------------------------------------------------- MANIQA
# the architecture of pyiqa's 'maniqa' (KonIQ-10k weights): MANIQA's own arguments and timm
# overrides of its 'vit_base_patch8_224' backbone (none for the real file; the tests shrink both to
# load tiny files in the released layouts through the real path)
MANIQA_ARCH = dict(maniqa=dict(embed_dim=768, dim_mlp=768, patch_size=8, window_size=4,
                               num_heads=[4, 4]), vit={})


MANIQA_FILE = "ckpt_koniq10k.pt"


def maniqa_net(vit, embed_dim, dim_mlp, patch_size, window_size, num_heads):
    """pyiqa's MANIQA (KonIQ-10k configuration: depths [2, 2], 224 px, 2 TA blocks, scale 0.8)
    around the ViT `vit` we pass in. pyiqa's constructor builds its own timm ViT with
    pretrained=True (an ImageNet download the MANIQA checkpoint overwrites anyway), so we build
    the same modules under the same names here; pyiqa's forward and checkpoint keys then apply."""
    from pyiqa.archs.maniqa_arch import MANIQA, SaveOutput, TABlock
    from pyiqa.archs.maniqa_swin import SwinTransformer
    from timm.models.vision_transformer import Block
    nn = torch.nn
    net = MANIQA.__new__(MANIQA)
    nn.Module.__init__(net)
    net.img_size, net.patch_size, net.input_size = 224, patch_size, 224 // patch_size
    net.test_sample = 20
    net.patches_resolution = (net.input_size, net.input_size)
    net.vit, net.save_output = vit, SaveOutput()
    for block in vit.modules():           # extract_feature reads the outputs of blocks 6..9
        if isinstance(block, Block):
            block.register_forward_hook(net.save_output)
    swin = dict(patches_resolution=net.patches_resolution, depths=[2, 2], num_heads=num_heads,
                window_size=window_size, dim_mlp=dim_mlp, scale=0.8)
    net.tablock1 = nn.ModuleList([TABlock(net.input_size ** 2) for _ in range(2)])
    net.conv1 = nn.Conv2d(embed_dim * 4, embed_dim, 1, 1, 0)
    net.swintransformer1 = SwinTransformer(embed_dim=embed_dim, **swin)
    net.tablock2 = nn.ModuleList([TABlock(net.input_size ** 2) for _ in range(2)])
    net.conv2 = nn.Conv2d(embed_dim, embed_dim // 2, 1, 1, 0)
    net.swintransformer2 = SwinTransformer(embed_dim=embed_dim // 2, **swin)
    half = embed_dim // 2
    net.fc_score = nn.Sequential(nn.Linear(half, half), nn.ReLU(), nn.Dropout(0.1),
                                 nn.Linear(half, 1), nn.ReLU())
    net.fc_weight = nn.Sequential(nn.Linear(half, half), nn.ReLU(), nn.Dropout(0.1),
                                  nn.Linear(half, 1), nn.Sigmoid())
    net.default_mean = torch.full((1, 3, 1, 1), 0.5)    # pyiqa's IMAGENET_INCEPTION_MEAN / STD
    net.default_std = torch.full((1, 3, 1, 1), 0.5)
    return net


def load_maniqa(ctx):
    """pyiqa's MANIQA network (KonIQ-10k weights) on timm's 'vit_base_patch8_224', or, tiny, on a
    10-block 16-wide ViT with 32 px patches (random weights). The file may be a bare state dict,
    'module.'-prefixed or {'params': ...}, read with weights_only=True."""
    import timm
    if not ctx.tiny:   # find the file before building anything
        cached = os.path.join(torch.hub.get_dir(), "pyiqa", MANIQA_FILE)

        def fetch(local):   # pyiqa's cache, else pyiqa's download
            if os.path.isfile(cached):
                return cached
            if local:
                raise FileNotFoundError(cached)
            from pyiqa.archs.arch_util import get_url_from_name
            from pyiqa.utils.download_util import load_file_from_url
            return load_file_from_url(get_url_from_name(MANIQA_FILE))
        path = find_weights("MANIQA", "--maniqa-ckpt", ctx.maniqa_ckpt, fetch,
                            file=f"weights file {MANIQA_FILE}", where=f"{cached} (pyiqa cache)",
                            names=[MANIQA_FILE], fix="download it and pass --maniqa-ckpt PATH",
                            error=RewardWeightsMissing)
    with seeded(ctx.seed):
        if ctx.tiny:
            net = maniqa_net(tiny_maniqa_vit(), **TINY_MANIQA)
        else:          # the paper's (and pyiqa's 'maniqa' = KonIQ) configuration
            vit = timm.create_model("vit_base_patch8_224", pretrained=False, **MANIQA_ARCH["vit"])
            net = maniqa_net(vit, **MANIQA_ARCH["maniqa"])
    if ctx.tiny:   # random init leaves the ReLU score head dead (all 0); lift it so scores vary
        with torch.no_grad():
            net.fc_score[3].bias.fill_(1.0)
    else:
        state = torch_load(path, "MANIQA", "--maniqa-ckpt")
        state = state.get("params", state) if isinstance(state, dict) else state
        if not isinstance(state, dict):
            raise BadCheckpoint(f"MANIQA: {path} holds a {type(state).__name__}, not a state dict")
        state = {k.removeprefix("module."): v for k, v in state.items()}
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as e:   # torch lists every key on many lines; the first ones are enough
            raise BadCheckpoint(f"MANIQA: {path} does not fit pyiqa's MANIQA (KonIQ): "
                                f"{' '.join(str(e).split())[:300]}") from None
    return frozen(net, ctx, "maniqa")


def maniqa_forward(net, crops):
    """MANIQA on ready-made 224 crops in [0, 1] (pyiqa's forward would re-crop them, after a 225/224
    upsample), in the network's dtype. ViT blocks 6-9 -> token attention -> Swin -> per-patch score
    * weight. (N,)"""
    from einops import rearrange
    x = (crops.to(net.conv1.weight.dtype) - 0.5) / 0.5   # MANIQA's normalisation: [0,1] -> [-1,1]
    net.vit(x)
    feats = net.extract_feature(net.save_output)            # (N, P, 4 D) from 4 ViT blocks
    net.save_output.outputs.clear()
    s = net.input_size                                       # P = s * s patches
    x = rearrange(feats, "n (h w) c -> n c (h w)", h=s)
    for tab in net.tablock1:
        x = tab(x)
    x = net.swintransformer1(net.conv1(rearrange(x, "n c (h w) -> n c h w", h=s)))
    x = rearrange(x, "n c h w -> n c (h w)")
    for tab in net.tablock2:
        x = tab(x)
    x = net.swintransformer2(net.conv2(rearrange(x, "n c (h w) -> n c h w", h=s)))
    x = rearrange(x, "n c h w -> n (h w) c")
    score, weight = net.fc_score(x).flatten(1), net.fc_weight(x).flatten(1)  # (N, P) each
    return (weight * score).sum(1) / (weight.sum(1) + 1e-8)


# ----------------------------------------------------------------------------- the Qwen judge
QWEN_REPO = "Qwen/Qwen2.5-VL-3B-Instruct"


def qwen_processor(path):
    """The judge's processor, read before the weights (a bad snapshot fails in a second, not
    after 7 GB). A snapshot whose preprocessor_config.json predates transformers' rename
    (image_processor_type 'Qwen2_5_VLImageProcessor', the files of early 2025) is assembled from
    its parts: Qwen2.5-VL uses Qwen2-VL's image processor, which reads the same file (min_pixels,
    max_pixels, patch sizes)."""
    from transformers import (AutoProcessor, AutoTokenizer, Qwen2_5_VLProcessor,
                              Qwen2VLImageProcessor, Qwen2VLVideoProcessor)
    refresh = (f"refresh the snapshot: hf download {QWEN_REPO} (unchanged files are not fetched "
               f"again; add --local-dir FOLDER for a --qwen-path folder)")
    try:
        return AutoProcessor.from_pretrained(path)
    except (ValueError, OSError, KeyError) as e:
        first = f"{type(e).__name__}: {str(e).splitlines()[0][:150] if str(e) else ''}"
        cfg = os.path.join(path, "preprocessor_config.json")
        kind = json.load(open(cfg)).get("image_processor_type") if os.path.isfile(cfg) else None
        old = kind == "Qwen2_5_VLImageProcessor"
        if not old:
            raise BadCheckpoint(f"Qwen judge: cannot load the processor in {path} ({first}); "
                                f"{refresh}") from None
    try:
        return Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor.from_pretrained(path),
                                   tokenizer=AutoTokenizer.from_pretrained(path),
                                   video_processor=Qwen2VLVideoProcessor())
    except Exception as e:
        raise BadCheckpoint(f"Qwen judge: the old-format processor files in {path} do not load "
                            f"({type(e).__name__}); {refresh}") from None


def load_qwen(ctx, texts):
    """(model, processor), shared by the three judge rewards; `texts` (the questions) train the tiny
    judge's tokenizer."""
    if "qwen" in ctx.cache:
        return ctx.cache["qwen"]
    from transformers import Qwen2_5_VLForConditionalGeneration
    if ctx.tiny:
        model, processor = tiny_qwen(ctx.seed, texts)
    else:
        from huggingface_hub import snapshot_download
        path = find_weights("Qwen judge", "--qwen-path", ctx.qwen_path,
                            lambda local: snapshot_download(QWEN_REPO, local_files_only=local),
                            file=f"model {QWEN_REPO}", arg="FOLDER", folder=True,
                            error=RewardWeightsMissing)
        processor = qwen_processor(path)
        model, info = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            path, dtype=weights_dtype(ctx, "qwen"), output_loading_info=True)
        if info["missing_keys"]:   # transformers would leave them random and only log it
            missing = info["missing_keys"]
            raise BadCheckpoint(f"Qwen judge: {path} lacks {len(missing)} weights of Qwen2.5-VL, "
                                f"e.g. {sorted(missing)[:3]}")
    processor.tokenizer.padding_side = "left"   # batched generation: prompts end at one column
    ctx.cache["qwen"] = (frozen(model, ctx, "qwen"), processor)
    return ctx.cache["qwen"]
