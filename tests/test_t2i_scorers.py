"""The T2I evaluation scorers of rewards.py (PickScore, ImageReward, LAION aesthetic): each against a value
computed here by an independent formula on tiny random weights, each real checkpoint layout against the
library's own model classes built at real size on the meta device, and the one-line errors offline."""
import math
import os

import pytest
import torch
import torch.nn.functional as F

import plumbing.reward_models as RM
import plumbing.t2i_scorers as T2
import plumbing.images as IM
from conftest import assert_frozen, random_images
from plumbing.reward_models import RewardWeightsMissing
from rewards import build_rewards
from plumbing.standins import TINY_BERT_VOCAB, clip_tokenizer_offline

PROMPTS = ["a red cat", "a photo of dog", "a red cat"]


# ----------------------------------------------------------------------------- PickScore
def test_pickscore_tiny_is_exp_logit_scale_times_cosine():
    """PickScore's README: processor on PIL images, get_image/text_features, normalise, exp(logit_scale) * dot."""
    from PIL import Image
    s = build_rewards("pickscore:1", tiny=True)
    x = random_images(3, 48, 40)
    got = s(x, PROMPTS)[1]["pickscore"]
    model, proc, _ = s.ctx.cache["pickscore"]
    pil = [Image.fromarray((255 * im).round().byte().permute(1, 2, 0).numpy()) for im in x]
    with torch.no_grad():
        fi = model.get_image_features(**proc(images=pil, return_tensors="pt"))
        ft = model.get_text_features(**proc(text=PROMPTS, padding=True, truncation=True, max_length=77,
                                            return_tensors="pt"))
    fi, ft = getattr(fi, "pooler_output", fi), getattr(ft, "pooler_output", ft)   # transformers 5 returns outputs
    fi, ft = fi / fi.norm(dim=-1, keepdim=True), ft / ft.norm(dim=-1, keepdim=True)
    scale = model.logit_scale.exp()
    assert scale.item() == pytest.approx(100.0, rel=1e-5)              # CLIP's trained value, as PickScore_v1
    assert torch.allclose(got, scale * (fi * ft).sum(-1), atol=1e-4)
    assert (got.abs() <= 100 + 1e-3).all()
    same = s(x[[0, 0, 0]], [PROMPTS[0], PROMPTS[1], PROMPTS[0]])[1]["pickscore"]   # one image, two prompts
    assert same[0] == same[2] == got[0] and same[0] != same[1]


def test_offline_clip_tokenizer_is_open_clips():
    """The tiny PickScore's transformers tokenizer, built from open_clip's BPE file, tokenises as open_clip."""
    import open_clip
    prompts = ["A photo of tench, Tinca tinca!", "two  dogs & a cat's toy", "x " * 100]
    hf = clip_tokenizer_offline()(prompts, padding="max_length", truncation=True, max_length=77, return_tensors="pt")
    assert torch.equal(hf["input_ids"] * hf["attention_mask"], open_clip.get_tokenizer("ViT-H-14")(prompts))


def test_pickscore_real_config_on_meta():
    """PickScore_v1 is transformers' CLIPModel at CLIP-H/14 size: ~986M parameters, 1024-d projections."""
    from transformers import CLIPConfig, CLIPModel
    cfg = CLIPConfig(text_config=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                      num_attention_heads=16, hidden_act="gelu"),
                     vision_config=dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                                        num_attention_heads=16, image_size=224, patch_size=14, hidden_act="gelu"),
                     projection_dim=1024)
    with torch.device("meta"):
        model = CLIPModel(cfg)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(986.1e6, rel=1e-3)
    for name in ("vision_model", "visual_projection", "text_model", "text_projection", "logit_scale"):
        assert hasattr(model, name)      # what build_pickscore reads


# ----------------------------------------------------------------------------- ImageReward
def blip_library_layout(tiny):
    """ImageReward.pt's key layout from the classes BLIP's code is a fork of: blip.visual_encoder = timm's
    VisionTransformer (BLIP vit.py), blip.text_encoder = BERT with cross-attention (med.py: BertModel without
    token-type embeddings, cross-attention keys/values of width encoder_width, position_ids persistent),
    ITC projections to 256, and the MLP head. Built on the meta device: {key: shape}."""
    from timm.models.vision_transformer import VisionTransformer
    from transformers import BertConfig, BertModel
    vd, td, vl, tl, heads, vocab = (32, 32, 2, 2, 2, len(TINY_BERT_VOCAB) + 2) if tiny else \
        (1024, 768, 24, 12, None, 30524)
    with torch.device("meta"):
        vit = VisionTransformer(img_size=32 if tiny else 224, patch_size=8 if tiny else 16, embed_dim=vd, depth=vl,
                                num_heads=heads or 16, mlp_ratio=2 if tiny else 4, num_classes=0)
        bert = BertModel(BertConfig(vocab_size=vocab, hidden_size=td, num_hidden_layers=tl, num_attention_heads=heads or 12,
                                    intermediate_size=2 * td if tiny else 3072, max_position_embeddings=64 if tiny else 512,
                                    is_decoder=True, add_cross_attention=True), add_pooling_layer=False)
    out = {f"blip.visual_encoder.{k}": v.shape for k, v in vit.state_dict().items()}
    for k, v in bert.state_dict().items():
        if "token_type" in k:
            continue
        if ".crossattention.self.key.weight" in k or ".crossattention.self.value.weight" in k:
            v = torch.empty(td, vd, device="meta")      # med.py: nn.Linear(encoder_width, all_head_size)
        out[f"blip.text_encoder.{k}"] = v.shape
    out["blip.text_encoder.embeddings.position_ids"] = torch.Size([1, 64 if tiny else 512])
    out.update({"blip.vision_proj.weight": (256, vd), "blip.vision_proj.bias": (256,),
                "blip.text_proj.weight": (256, td), "blip.text_proj.bias": (256,)})
    head = T2.LinearHead(td)
    out.update({f"mlp.{k}": v.shape for k, v in head.state_dict().items()})
    return out


def test_imagereward_real_layout_is_accepted_exactly():
    layout = blip_library_layout(tiny=False)
    sd = {k: torch.empty(s, device="meta") for k, s in layout.items()}
    mapped = T2.imagereward_state_dict(sd)
    with torch.device("meta"):
        ours = T2.ImageRewardNet(*T2.imagereward_configs(tiny=False)).state_dict()
    assert {k: tuple(v.shape) for k, v in mapped.items()} == {k: tuple(v.shape) for k, v in ours.items()}
    assert len(layout) - len(mapped) == 5           # dropped by name: 4 ITC projection tensors + position_ids
    net = T2.imagereward_from_state(sd, *T2.imagereward_configs(tiny=False))   # the real loader, strict
    assert sum(p.numel() for p in net.parameters()) == pytest.approx(446.2e6, rel=1e-3)
    with pytest.raises(ValueError, match="unexpected keys.*blip.itm_head"):
        T2.imagereward_state_dict({**sd, "blip.itm_head.weight": torch.empty(2, 768, device="meta")})
    del sd["mlp.layers.7.bias"]
    with pytest.raises(RuntimeError, match=r"Missing.*mlp\.layers\.7\.bias"):
        T2.imagereward_from_state(sd, *T2.imagereward_configs(tiny=False))


def _random_state(layout, seed):
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shape in layout.items():
        if k.endswith("position_ids"):
            sd[k] = torch.arange(shape[1]).expand(1, -1)
        elif "norm" in k.lower() and k.endswith("weight"):
            sd[k] = 1 + 0.1 * torch.randn(shape, generator=g)
        else:
            sd[k] = 0.1 * torch.randn(shape, generator=g)
    return sd


def reference_imagereward(sd, pix, ids, mask, heads=2):
    """ImageReward.score written out from the original key names: BLIP ViT (pre-norm blocks, eps 1e-6), BERT with
    self- then cross-attention (post-norm, eps 1e-12), [CLS] -> linear MLP -> (r - mean) / std."""
    def attn(q, k, v, bias=None):  # (B, L, D) x3 -> (B, L, D)
        B, L, D = q.shape
        split = lambda t: t.view(B, -1, heads, D // heads).transpose(1, 2)
        w = split(q) @ split(k).transpose(-1, -2) / math.sqrt(D // heads)
        w = (w if bias is None else w + bias).softmax(-1)
        return (w @ split(v)).transpose(1, 2).reshape(B, L, D)

    v = lambda k: sd["blip.visual_encoder." + k]
    x = F.conv2d(pix, v("patch_embed.proj.weight"), v("patch_embed.proj.bias"), stride=8).flatten(2).transpose(1, 2)
    x = torch.cat([v("cls_token").expand(len(x), -1, -1), x], 1) + v("pos_embed")
    D = x.shape[-1]
    ln = lambda t, p, eps: F.layer_norm(t, (t.shape[-1],), p("weight"), p("bias"), eps)
    for i in range(2):
        b = lambda n: (lambda s: v(f"blocks.{i}.{n}.{s}"))
        h = ln(x, b("norm1"), 1e-6)
        q, k, val = F.linear(h, v(f"blocks.{i}.attn.qkv.weight"), v(f"blocks.{i}.attn.qkv.bias")).split(D, -1)
        x = x + F.linear(attn(q, k, val), v(f"blocks.{i}.attn.proj.weight"), v(f"blocks.{i}.attn.proj.bias"))
        h = ln(x, b("norm2"), 1e-6)
        x = x + F.linear(F.gelu(F.linear(h, v(f"blocks.{i}.mlp.fc1.weight"), v(f"blocks.{i}.mlp.fc1.bias"))),
                         v(f"blocks.{i}.mlp.fc2.weight"), v(f"blocks.{i}.mlp.fc2.bias"))
    img = ln(x, lambda s: v("norm." + s), 1e-6)

    t = lambda k: sd["blip.text_encoder." + k]
    lin = lambda h, name: F.linear(h, t(name + ".weight"), t(name + ".bias"))
    y = t("embeddings.word_embeddings.weight")[ids] + t("embeddings.position_embeddings.weight")[:ids.shape[1]]
    y = ln(y, lambda s: t("embeddings.LayerNorm." + s), 1e-12)
    pad = (1 - mask[:, None, None, :].float()) * -1e9          # padded prompt tokens are never attended to
    for i in range(2):
        for part, src, bias in (("attention", None, pad), ("crossattention", img, None)):
            a = f"encoder.layer.{i}.{part}"
            kv = y if src is None else src
            o = attn(lin(y, f"{a}.self.query"), lin(kv, f"{a}.self.key"), lin(kv, f"{a}.self.value"), bias)
            y = ln(y + lin(o, f"{a}.output.dense"), lambda s: t(f"{a}.output.LayerNorm.{s}"), 1e-12)
        ff = lin(F.gelu(lin(y, f"encoder.layer.{i}.intermediate.dense")), f"encoder.layer.{i}.output.dense")
        y = ln(y + ff, lambda s: t(f"encoder.layer.{i}.output.LayerNorm.{s}"), 1e-12)
    r = y[:, 0]
    for j in (0, 2, 4, 6, 7):
        r = F.linear(r, sd[f"mlp.layers.{j}.weight"], sd[f"mlp.layers.{j}.bias"])
    return (r.squeeze(-1) - 0.16717362830052426) / 1.0333394966054072


def test_imagereward_tiny_checkpoint_matches_the_reference_forward():
    sd = _random_state(blip_library_layout(tiny=True), seed=1)
    s = build_rewards("imagereward:1", tiny=True)
    ctx = s.ctx
    tok = ctx.cache["imagereward"][1]
    ctx.cache["imagereward"] = (RM.frozen(T2.imagereward_from_state(sd, *T2.imagereward_configs(tiny=True)), ctx), tok)
    score = T2.build_imagereward(ctx)                                    # the reward, with the loaded tiny checkpoint
    x = random_images(3, 64, 48)
    prompts = ["a red cat", "photo of a very red dog and a cat", "zebra"]   # unknown words -> [UNK]
    with torch.no_grad():
        got = score(x, prompts)
        t = tok(prompts, padding="max_length", truncation=True, max_length=35, return_tensors="pt")
        want = reference_imagereward(sd, IM.clip_preprocess(x, 32), t["input_ids"], t["attention_mask"])
    assert t["input_ids"].shape == (3, 35) and (t["input_ids"][:, 0] == tok.cls_token_id).all()
    assert tok.convert_tokens_to_ids(["[DEC]", "[ENC]"]) == [len(TINY_BERT_VOCAB), len(TINY_BERT_VOCAB) + 1]
    assert got.std() > 1e-3 and torch.allclose(got, want, rtol=1e-4, atol=1e-4), (got, want)


# ----------------------------------------------------------------------------- LAION aesthetic
def test_aesthetic_tiny_is_an_affine_map_of_the_normalised_embedding():
    s = build_rewards("aesthetic:1", tiny=True)
    x = random_images(3, 48, 40)
    got = s(x, PROMPTS)[1]["aesthetic"]
    clip, mlp, size = s.ctx.cache["aesthetic"]
    with torch.no_grad():
        f = clip.encode_image(IM.clip_preprocess(x, size))
        f = f / f.norm(dim=-1, keepdim=True)
        # no activations: the MLP collapses to w . f + c
        Ws = [mlp.layers[j].weight.double() for j in (0, 2, 4, 6, 7)]
        bs = [mlp.layers[j].bias.double() for j in (0, 2, 4, 6, 7)]
        w, c = Ws[0], bs[0]
        for Wj, bj in zip(Ws[1:], bs[1:]):
            w, c = Wj @ w, Wj @ c + bj
        want = (f.double() @ w.T + c).squeeze(-1)
    assert torch.allclose(got.double(), want, atol=1e-5) and got.std() > 0
    assert torch.equal(s(x, ["anything else"] * 3)[1]["aesthetic"], got)    # image-only: prompts ignored


def test_aesthetic_real_layout():
    """The predictor's own nn.Sequential (simple_inference.py: Linear, Dropout, ..., Linear(16, 1)) on CLIP ViT-L/14's
    768-d image embedding: our head takes exactly its state dict."""
    import open_clip

    class MLP(torch.nn.Module):      # improved-aesthetic-predictor's class (its Lightning base aside)
        def __init__(self, input_size):
            super().__init__()
            self.layers = torch.nn.Sequential(
                torch.nn.Linear(input_size, 1024), torch.nn.Dropout(0.2), torch.nn.Linear(1024, 128),
                torch.nn.Dropout(0.2), torch.nn.Linear(128, 64), torch.nn.Dropout(0.1), torch.nn.Linear(64, 16),
                torch.nn.Linear(16, 1))
    lib = MLP(768).state_dict()
    head = T2.LinearHead(768)
    head.load_state_dict(lib)                                           # strict
    assert sorted(head.state_dict()) == sorted(lib) == [f"layers.{j}.{p}" for j in (0, 2, 4, 6, 7) for p in ("bias", "weight")]
    clip = open_clip.create_model("ViT-L-14-quickgelu", pretrained=None, device="meta")
    assert clip.visual.output_dim == 768 and clip.visual.image_size in (224, (224, 224))


# ----------------------------------------------------------------------------- registration, errors
def test_scorers_are_rewards():
    s = build_rewards("pickscore:0.5,imagereward:1,aesthetic:2,color:1", tiny=True)
    total, parts = s(random_images(3, 48, 40), PROMPTS)
    assert s.names == ["pickscore", "imagereward", "aesthetic", "color"]
    assert torch.allclose(total, 0.5 * parts["pickscore"] + parts["imagereward"] + 2 * parts["aesthetic"] + parts["color"])
    assert all(v.shape == (3,) and v.dtype == torch.float32 for v in parts.values())
    assert_frozen(s)


@pytest.mark.parametrize("spec,file,flag", [
    ("pickscore:1", "yuvalkirstain/PickScore_v1", "--pickscore-path"),
    ("imagereward:1", "ImageReward.pt", "--imagereward-ckpt"),
    ("aesthetic:1", "sac+logos+ava1-l14-linearMSE.pth", "--aesthetic-ckpt"),
])
def test_missing_weights_fail_fast_with_one_line(no_weights, spec, file, flag):
    with pytest.raises(RewardWeightsMissing) as e:   # no_weights: a machine without network
        build_rewards(spec)
    msg = str(e.value)
    assert "\n" not in msg and file in msg and flag in msg, msg


def test_missing_explicit_paths_name_the_flag(no_weights, tmp_path):
    with pytest.raises(RewardWeightsMissing, match=r"/nope \(from --pickscore-path\) does not exist"):
        build_rewards("pickscore:1", pickscore_path="/nope")
    with pytest.raises(RewardWeightsMissing, match=r"/nope/IR\.pt \(from --imagereward-ckpt\) does not exist"):
        build_rewards("imagereward:1", imagereward_ckpt="/nope/IR.pt")
    torch.save({}, tmp_path / "ImageReward.pt")          # the file, but no BERT vocabulary anywhere
    with pytest.raises(RewardWeightsMissing, match="vocab.txt is neither next to"):
        build_rewards("imagereward:1", imagereward_ckpt=str(tmp_path / "ImageReward.pt"))
    mlp = tmp_path / "aes.pth"
    torch.save(T2.LinearHead(768).state_dict(), mlp)      # the MLP, but no CLIP ViT-L/14: named with its flag
    with pytest.raises(RewardWeightsMissing, match="--aesthetic-clip-ckpt"):
        build_rewards("aesthetic:1", aesthetic_ckpt=str(mlp))


def test_pickscore_real_path_loads_a_saved_model_folder(no_weights, tmp_path):
    """The real loader (from_pretrained on a folder given by --pickscore-path): laion's processor is not cached,
    so the copy inside the PickScore folder is used, as on the hub; the scores equal the model's in memory."""
    tiny = build_rewards("pickscore:1", tiny=True)
    model, proc, _ = tiny.ctx.cache["pickscore"]
    model.save_pretrained(tmp_path / "PickScore_v1")
    proc.save_pretrained(tmp_path / "PickScore_v1")
    real = build_rewards("pickscore:1", pickscore_path=str(tmp_path / "PickScore_v1"))
    x = random_images(3, 48, 40)
    assert torch.allclose(real(x, PROMPTS)[0], tiny(x, PROMPTS)[0], atol=1e-5)
    for f in ("preprocessor_config.json", "processor_config.json"):          # no processor anywhere: one line
        if os.path.isfile(tmp_path / "PickScore_v1" / f):
            os.remove(tmp_path / "PickScore_v1" / f)
    with pytest.raises(RewardWeightsMissing, match="PickScore: processor laion/CLIP-ViT-H-14") as e:
        build_rewards("pickscore:1", pickscore_path=str(tmp_path / "PickScore_v1"))
    assert "\n" not in str(e.value)


def test_imagereward_real_path_reads_the_file_and_vocab(no_weights, tmp_path, monkeypatch):
    """The real loader end to end (torch.load of ImageReward.pt, vocab.txt next to it, strict renaming) on a
    checkpoint in the original layout, at tiny size (the configs swapped for the tiny ones)."""
    sd = _random_state(blip_library_layout(tiny=True), seed=2)
    torch.save(sd, tmp_path / "ImageReward.pt")
    (tmp_path / "vocab.txt").write_text("\n".join(TINY_BERT_VOCAB) + "\n")
    tiny_configs = T2.imagereward_configs
    monkeypatch.setattr(T2, "imagereward_configs", lambda tiny: tiny_configs(tiny=True))
    s = build_rewards("imagereward:1", imagereward_ckpt=str(tmp_path / "ImageReward.pt"))
    net, tok = s.ctx.cache["imagereward"]
    assert len(tok) == len(TINY_BERT_VOCAB) + 2 and not net.training
    x = random_images(2, 40, 40)
    t = tok(PROMPTS[:2], padding="max_length", truncation=True, max_length=35, return_tensors="pt")
    with torch.no_grad():
        want = reference_imagereward(sd, IM.clip_preprocess(x, 32), t["input_ids"], t["attention_mask"])
    assert torch.allclose(s(x, PROMPTS[:2])[0], want, rtol=1e-4, atol=1e-4)
