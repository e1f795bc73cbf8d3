"""The T2I evaluation scorers of AR-GRPO's DrawBench table (PickScore, ImageReward, the LAION
aesthetic predictor), usable as rewards too (rewards.REWARDS names them), and their loaders:
PickScore through transformers' CLIPModel, ImageReward rebuilt on transformers' BLIP towers with
ImageReward.pt's keys renamed strictly (no `image-reward` package: it pins openai-clip from
GitHub, fairscale, diffusers, datasets), the aesthetic MLP on open_clip's ViT-L/14. Weights are
found as for the paper's rewards (plumbing/reward_models.py).
"""
import os
import re

import torch
import torch.nn.functional as F

from plumbing.images import clip_preprocess
from plumbing.reward_models import CLIP_FILES, RewardWeightsMissing, frozen, hub_file
from plumbing.standins import (TINY_BERT_VOCAB, TINY_IMAGEREWARD, seeded, tiny_clip,
                               tiny_pickscore)
from plumbing.weights import find_weights


# T2I evaluation scorers: the extra DrawBench scorers of AR-GRPO's T2I table (its
# test_t2i_rewards.py), usable as rewards too:
#   pickscore    PickScore_v1 (Kirstain et al. 2023): transformers CLIPModel (CLIP-H/14 fine-tuned
#                on Pick-a-Pic) with the processor of laion/CLIP-ViT-H-14-laion2B-s32B-b79K, as
#                PickScore's README loads them; score = exp(logit_scale) * cos(f_img, f_txt), the
#                checkpoint's own scale (CLIP training caps it at 100). AR-GRPO's scorer divides
#                this by 26 (tools/eval.py reports both).
#   imagereward  ImageReward-v1.0 (Xu et al. 2023): BLIP ViT-L/16 image tokens cross-attended by a
#                BERT-base text encoder; the [CLS] output goes through a 5-layer MLP with no
#                activations; score = (mlp - 0.16717) / 1.03334, the library's normalisation;
#                unbounded, higher = preferred. The BLIP towers are transformers' BlipVisionModel /
#                BlipTextModel (what the HF BLIP conversion maps Salesforce's BLIP onto);
#                ImageReward.pt keys are renamed, strictly.
#   aesthetic    LAION aesthetic predictor v2 (improved-aesthetic-predictor): OpenAI CLIP ViT-L/14
#                image embedding (open_clip "ViT-L-14-quickgelu", the openai weights),
#                L2-normalised, through the sac+logos+ava1-l14-linearMSE MLP (768-1024-128-64-16-1,
#                dropouts, no activations: an affine map), regressed on 1-10 ratings; unbounded,
#                higher = more aesthetic; prompts unused.
# DeQA (AR-GRPO's sixth scorer) runs behind its own server (reward-server); not implemented here.
PICKSCORE_REPO = "yuvalkirstain/PickScore_v1"


PICKSCORE_PROCESSOR_REPO = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"


IMAGEREWARD_REPO, IMAGEREWARD_FILE = "THUDM/ImageReward", "ImageReward.pt"


BERT_REPO = "google-bert/bert-base-uncased"      # the BLIP tokenizer's vocabulary (vocab.txt)


AESTHETIC_FILE = "sac+logos+ava1-l14-linearMSE.pth"


AESTHETIC_URL = ("https://github.com/christophschuhmann/improved-aesthetic-predictor/raw/main/"
                 "sac%2Blogos%2Bava1-l14-linearMSE.pth")


AESTHETIC_CLIP_REPO = "timm/vit_large_patch14_clip_224.openai"   # open_clip's "openai" ViT-L/14


def has_files(d, need):
    """Whether folder d holds every name of `need`; a tuple in `need` = any one of its names."""
    def present(names):
        names = names if isinstance(names, tuple) else (names,)
        return any(os.path.isfile(os.path.join(d, f)) for f in names)
    return bool(d) and all(present(n) for n in need)


def hub_dir(repo, what, flag, path, need, patterns=None):
    """A model folder: the flag's path, else the huggingface_hub snapshot (cache first, then the
    network). `need`: file names that must be inside (a tuple = any one of them). One-line
    RewardWeightsMissing."""
    complete = lambda d: has_files(d, need)
    if path:
        if not os.path.isdir(path):
            raise RewardWeightsMissing(f"{what}: model folder {path} (from {flag}) does not exist")
        if not complete(path):
            raise RewardWeightsMissing(f"{what}: model folder {path} (from {flag}) "
                                       f"lacks one of {need}")
        return path
    from huggingface_hub import snapshot_download

    def fetch(local):
        d = snapshot_download(repo, allow_patterns=patterns, local_files_only=local)
        if not complete(d):
            raise FileNotFoundError(d)
        return d
    names = ", ".join(n if isinstance(n, str) else n[0] for n in need)
    return find_weights(what, flag, fetch=fetch, file=f"{repo} ({names})", arg="FOLDER",
                        error=RewardWeightsMissing)


class LinearHead(torch.nn.Module):
    """The MLP head shared by ImageReward and the LAION aesthetic predictor: the same `layers`
    nn.Sequential in both libraries (their ReLUs are commented out, so it is an affine map);
    weights at layers.{0,2,4,6,7}."""

    def __init__(self, dim):
        super().__init__()
        nn = torch.nn
        self.layers = nn.Sequential(
            nn.Linear(dim, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
            nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1))

    def forward(self, x):  # (B, dim) -> (B, 1)
        return self.layers(x)


def load_pickscore(ctx):
    """(transformers CLIPModel, CLIPProcessor, exp(logit_scale))."""
    if "pickscore" in ctx.cache:
        return ctx.cache["pickscore"]
    from transformers import CLIPModel, CLIPProcessor
    if ctx.tiny:
        model, processor = tiny_pickscore(ctx.seed)
    else:
        path = hub_dir(PICKSCORE_REPO, "PickScore", "--pickscore-path", ctx.pickscore_path,
                        ["config.json", ("model.safetensors", "pytorch_model.bin")])
        # the processor of the README (laion's); the PickScore_v1 repo carries a copy, used when
        # laion's is absent
        need = [("preprocessor_config.json", "processor_config.json"), "tokenizer_config.json"]
        try:
            proc_dir = hub_dir(PICKSCORE_PROCESSOR_REPO, "PickScore processor", "--pickscore-path",
                                None, need, ["*.json", "*.txt"])
        except RewardWeightsMissing:
            if not has_files(path, need):
                raise RewardWeightsMissing(
                    f"PickScore: processor {PICKSCORE_PROCESSOR_REPO} (preprocessor_config.json, "
                    f"tokenizer files) not in the huggingface_hub cache and not in {path}; "
                    f"download it into the cache") from None
            proc_dir = path
        model = CLIPModel.from_pretrained(path)
        processor = CLIPProcessor.from_pretrained(proc_dir)
    scale = model.logit_scale.detach().float().exp().item()  # before a bf16 cast rounds it (~1 %)
    ctx.cache["pickscore"] = (frozen(model, ctx), processor, scale)
    return ctx.cache["pickscore"]


class ImageRewardNet(torch.nn.Module):
    """ImageReward-v1.0 on transformers' BLIP: vision_model (BLIP ViT), text_encoder (BERT with
    cross-attention to the image tokens), mlp (the head). forward -> the head's raw score (B,),
    fp32 (build_imagereward normalises it)."""

    def __init__(self, vision_cfg, text_cfg):
        super().__init__()
        from transformers import BlipTextModel, BlipVisionModel
        self.vision_model = BlipVisionModel(vision_cfg)
        self.text_encoder = BlipTextModel(text_cfg, add_pooling_layer=False)
        self.mlp = LinearHead(text_cfg.hidden_size)

    def forward(self, pixel_values, input_ids, attention_mask):
        img = self.vision_model(pixel_values=pixel_values).last_hidden_state     # (B, 1 + P, Dv)
        img_mask = torch.ones(img.shape[:2], dtype=torch.long, device=img.device)
        out = self.text_encoder(input_ids=input_ids, attention_mask=attention_mask,
                                encoder_hidden_states=img, encoder_attention_mask=img_mask)
        txt = out.last_hidden_state[:, 0]                                        # (B, Dt) [CLS]
        return self.mlp(txt.float()).squeeze(-1)       # (B,) the head in fp32, as the library


def imagereward_configs(tiny):
    """(BlipVisionConfig, BlipTextConfig): BLIP ViT-L/16 at 224 px (LayerNorm eps 1e-6 as BLIP's
    vit.py; transformers' default is 1e-5) and ImageReward's med_config.json (BERT-base, vocab
    30522 + [DEC], [ENC])."""
    from transformers import BlipTextConfig, BlipVisionConfig
    if tiny:
        v = BlipVisionConfig(**TINY_IMAGEREWARD["vision"], layer_norm_eps=1e-6)
        t = TINY_IMAGEREWARD["text"]
    else:
        v = BlipVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                             num_attention_heads=16, image_size=224, patch_size=16,
                             layer_norm_eps=1e-6)
        t = dict(vocab_size=30524, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                 num_attention_heads=12, max_position_embeddings=512)
    # is_decoder=True only makes transformers build the cross-attention layers; the forward is
    # bidirectional
    text = BlipTextConfig(**t, encoder_hidden_size=v.hidden_size, layer_norm_eps=1e-12,
                          is_decoder=True, hidden_act="gelu", pad_token_id=0)
    return v, text


_VIT_NAMES = {"cls_token": "embeddings.class_embedding",
              "pos_embed": "embeddings.position_embedding",
              "patch_embed.proj.weight": "embeddings.patch_embedding.weight",
              "patch_embed.proj.bias": "embeddings.patch_embedding.bias",
              "norm.weight": "post_layernorm.weight", "norm.bias": "post_layernorm.bias"}


_VIT_BLOCK_NAMES = {"norm1": "layer_norm1", "norm2": "layer_norm2", "attn.qkv": "self_attn.qkv",
                    "attn.proj": "self_attn.projection", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}


IMAGEREWARD_UNUSED = ("blip.vision_proj.", "blip.text_proj.",
                      "blip.text_encoder.embeddings.position_ids")


def imagereward_state_dict(sd):
    """ImageReward.pt (the ImageReward module's state dict: blip.visual_encoder.* in BLIP's
    timm-style ViT names, blip.text_encoder.* in med.py's BERT names, mlp.layers.*) ->
    ImageRewardNet's names. Keys the score does not use (the ITC projections, med.py's persistent
    position_ids) are dropped by name; any other is an error."""
    out, unknown = {}, []
    for k, v in sd.items():
        if k.startswith(IMAGEREWARD_UNUSED):
            continue
        m = re.fullmatch(r"blip\.visual_encoder\.(?:blocks\.(\d+)\."
                         r"(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\."
                         r"(weight|bias)|(.+))", k)
        if m and m.group(1):
            block, layer, kind = m.group(1), _VIT_BLOCK_NAMES[m.group(2)], m.group(3)
            out[f"vision_model.encoder.layers.{block}.{layer}.{kind}"] = v
        elif m and m.group(4) in _VIT_NAMES:
            out["vision_model." + _VIT_NAMES[m.group(4)]] = v
        elif k.startswith("blip.text_encoder."):
            # med.py and BlipTextModel share names
            out["text_encoder." + k[len("blip.text_encoder."):]] = v
        elif k.startswith("mlp.layers."):
            out[k] = v
        else:
            unknown.append(k)
    if unknown:
        raise ValueError(f"ImageReward checkpoint: unexpected keys {unknown[:5]}")
    return out


def imagereward_from_state(sd, vision_cfg, text_cfg):
    """ImageRewardNet from ImageReward.pt's state dict, built on the meta device (no random init
    of 450M parameters: every weight comes from the file; strict, so a missing or unexpected key
    is an error)."""
    with torch.device("meta"):
        net = ImageRewardNet(vision_cfg, text_cfg)
    net.load_state_dict(imagereward_state_dict(sd), strict=True, assign=True)
    emb = net.text_encoder.embeddings      # the one non-persistent buffer: positions 0..max-1
    emb.position_ids = torch.arange(text_cfg.max_position_embeddings).expand(1, -1)
    return net


def blip_tokenizer(vocab):
    """BLIP's tokenizer (blip.init_tokenizer): BERT WordPiece, uncased, plus [DEC] (bos) and
    [ENC]."""
    from transformers import BertTokenizer
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    tok.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    return tok


def load_imagereward(ctx):
    """(ImageRewardNet, tokenizer)."""
    if "imagereward" in ctx.cache:
        return ctx.cache["imagereward"]
    if ctx.tiny:
        with seeded(ctx.seed):
            net = ImageRewardNet(*imagereward_configs(tiny=True))
        tok = blip_tokenizer(TINY_BERT_VOCAB)
    else:
        path = hub_file(IMAGEREWARD_REPO, [IMAGEREWARD_FILE], "ImageReward", "--imagereward-ckpt",
                         ctx.imagereward_ckpt)
        side = os.path.join(os.path.dirname(path), "vocab.txt")   # bert-base-uncased's, next to it
        try:
            vocab = side if os.path.isfile(side) else hub_file(BERT_REPO, ["vocab.txt"], "", "")
        except RewardWeightsMissing:
            raise RewardWeightsMissing(
                f"ImageReward: BLIP's tokenizer vocabulary {BERT_REPO}/vocab.txt is neither "
                f"next to {path} nor in the huggingface_hub cache; put it next to the "
                f"--imagereward-ckpt file") from None
        net = imagereward_from_state(torch.load(path, map_location="cpu", weights_only=True),
                                     *imagereward_configs(tiny=False))
        tok = blip_tokenizer([w.rstrip("\n") for w in open(vocab, encoding="utf-8")])
    net = frozen(net, ctx)
    net.mlp.float()
    ctx.cache["imagereward"] = (net, tok)
    return ctx.cache["imagereward"]


def load_aesthetic(ctx):
    """(open_clip ViT-L/14, MLP, image size)."""
    if "aesthetic" in ctx.cache:
        return ctx.cache["aesthetic"]
    import open_clip
    if ctx.tiny:
        with seeded(ctx.seed):
            clip, mlp = tiny_clip(quick_gelu=True), LinearHead(32)
    else:
        places = (os.path.expanduser(f"~/.cache/ImageReward/{AESTHETIC_FILE}"),
                  os.path.join(torch.hub.get_dir(), "checkpoints", AESTHETIC_FILE))

        def fetch(local):   # ImageReward's and AR-GRPO's download folders, then torch hub's
            found = [p for p in places if os.path.isfile(p)]
            if found:
                return found[0]
            if local:
                raise FileNotFoundError(AESTHETIC_FILE)
            torch.hub.download_url_to_file(AESTHETIC_URL, places[1])
            return places[1]
        path = find_weights("LAION aesthetic", "--aesthetic-ckpt", ctx.aesthetic_ckpt, fetch,
                            file=f"MLP {AESTHETIC_FILE}", where="~/.cache/ImageReward or torch hub",
                            names=[AESTHETIC_FILE], error=RewardWeightsMissing,
                            fix=f"download {AESTHETIC_URL} and pass --aesthetic-ckpt PATH")
        clip_path = hub_file(AESTHETIC_CLIP_REPO, CLIP_FILES,
                              "LAION aesthetic: CLIP ViT-L/14 (openai)", "--aesthetic-clip-ckpt",
                              ctx.aesthetic_clip_ckpt)
        clip = open_clip.create_model("ViT-L-14-quickgelu", pretrained=None)
        open_clip.load_checkpoint(clip, clip_path)
        mlp = LinearHead(768)
        state = torch.load(path, map_location="cpu", weights_only=True)
        mlp.load_state_dict(state)                      # strict: layers.{0,2,4,6,7}
    size = clip.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    head = frozen(mlp, ctx).float()                    # the head in fp32, as the library
    ctx.cache["aesthetic"] = (frozen(clip, ctx), head, size)
    return ctx.cache["aesthetic"]


# ----------------------------------------------------------------------------- the scorers
# The DrawBench scorers of AR-GRPO's T2I table (test_t2i_rewards.py), usable as rewards too.
IMAGEREWARD_MEAN, IMAGEREWARD_STD = 0.16717362830052426, 1.0333394966054072   # ImageReward.py


def to_uint8_hwc(x):
    """(B, 3, H, W) in [0, 1] -> a list of (H, W, 3) uint8 arrays, as AR-GRPO hands PIL images
    over."""
    u8 = (x * 255).round().clamp(0, 255).to(torch.uint8)
    return list(u8.permute(0, 2, 3, 1).cpu().numpy())


def build_pickscore(ctx):
    model, processor, scale = load_pickscore(ctx)

    def reward(x, prompts):
        pix = processor(images=to_uint8_hwc(x), return_tensors="pt")["pixel_values"]
        pix = pix.to(ctx.device, ctx.dtype)
        pooled = model.vision_model(pixel_values=pix).pooler_output
        img = model.visual_projection(pooled).float()                                 # (B, D)
        uniq = sorted(set(prompts))
        t = processor(text=uniq, padding=True, truncation=True, max_length=77, return_tensors="pt")
        t = t.to(ctx.device)
        pooled = model.text_model(input_ids=t["input_ids"],
                                  attention_mask=t["attention_mask"]).pooler_output
        txt = model.text_projection(pooled).float()                                   # (U, D)
        txt = txt[torch.tensor([uniq.index(p) for p in prompts], device=txt.device)]  # (B, D)
        cos = F.cosine_similarity(img, txt, dim=-1)
        return scale * cos
    return reward


def build_imagereward(ctx):
    net, tok = load_imagereward(ctx)
    size = net.vision_model.config.image_size

    def reward(x, prompts):
        # ImageReward.score: prompt padded to 35 tokens ([CLS] first, not [ENC]); CLIP's 224 px
        # transform
        t = tok(list(prompts), padding="max_length", truncation=True, max_length=35,
                return_tensors="pt")
        t = t.to(ctx.device)
        pixels = clip_preprocess(x, size).to(ctx.dtype)
        head = net(pixels, t["input_ids"], t["attention_mask"]).float()
        return (head - IMAGEREWARD_MEAN) / IMAGEREWARD_STD   # ImageReward.py's normalisation
    return reward


def build_aesthetic(ctx):
    clip, mlp, size = load_aesthetic(ctx)

    def reward(x, prompts):   # prompts unused: an image-only score
        f = clip.encode_image(clip_preprocess(x, size).to(ctx.dtype)).float()     # (B, 768)
        f = f / f.norm(dim=-1, keepdim=True)
        return mlp(f).squeeze(-1)
    return reward
