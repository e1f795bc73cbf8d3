"""text.py: the T2I text condition of LlamaGen / AR-GRPO: caption cleaning, FLAN-T5-XL features,
padding.

    caption --clean_caption x 2--> text --T5 tokenizer (120, right-padded)--> FLAN-T5-XL encoder
            --> feats (B, 120, 2048), mask (B, 120) in one of two layouts (`pad`):

    right  AR-GRPO's (language/t5.py + autoregressive/modeling.py): the tokenizer's layout as is,
           real tokens first; the padded feature rows are NOT zeroed (T5's outputs there).
    left   LlamaGen's sampler (autoregressive/sample/sample_t2i.py): real tokens moved to the end,
           padded rows zeroed.

Both pass the same mask to the GPT (padded columns off as attention keys). The condition positions
have zero RoPE (their queries and keys are 0), so where the real rows sit does not change what the
image tokens see, with two exceptions:
  - the first image token is predicted from the LAST condition row: the real '</s>' when
    left-padded, a padded row (T5's output at a pad position, kept) when right-padded; AR-GRPO's
    sampler lets that row attend to itself, its training forward does not (`pad_self_attend`);
  - the CFG null caption (`uncond_embedding`, 120 rows) is masked with the same mask, so the null
    branch sees its FIRST n rows under right padding and its LAST n rows under left padding.

Cleaning is DeepFloyd-IF's `clean_caption`, run twice before T5 as LlamaGen and AR-GRPO do (the
rules: plumbing/captions.py).

    python -c "from text import *; f, m = TextEncoder.tiny()(['a red fox']); print(f.shape)"
"""
import os

import torch

from plumbing.captions import clean_caption
from plumbing.flags import check_t5_width
from plumbing.weights import BadCheckpoint, hub_reachable


def preprocess(caption, clean=True):
    """What reaches the T5 tokenizer: cleaned twice (as LlamaGen / AR-GRPO), or the raw caption."""
    return clean_caption(clean_caption(caption)) if clean else caption


# ----------------------------------------------------------------------------- the encoder
class TextEncoder:
    """FLAN-T5-XL encoder features as LlamaGen's T2I models expect them: 120 tokens, with the mask
    (1 = real token), in the `pad` layout (module docstring); `clean` runs the caption cleaning.
    `__call__(prompts) -> (feats (B, 120, C) float32, mask (B, 120) float32)`."""

    def __init__(self, model, tokenizer, max_length=120, pad="left", clean=True):
        if pad not in ("left", "right"):
            raise ValueError(f"pad must be 'left' or 'right', got {pad!r}")
        self.model = model.eval().requires_grad_(False)
        self.tokenizer, self.max_length = tokenizer, max_length
        self.pad, self.clean = pad, clean

    @classmethod
    def from_pretrained(cls, name_or_path="google/flan-t5-xl", device="cpu", dtype=torch.float32,
                        **kw):
        from transformers import AutoTokenizer, T5EncoderModel
        # offline: the cache or nothing, at once
        local = os.path.isdir(name_or_path) or not hub_reachable()
        try:
            tok = AutoTokenizer.from_pretrained(name_or_path, local_files_only=local)
            model = T5EncoderModel.from_pretrained(name_or_path, dtype=dtype,
                                                   local_files_only=local)
        except OSError as e:
            raise BadCheckpoint(f"cannot load the T5 text encoder {name_or_path!r} "
                                f"({type(e).__name__}); "
                                f"download google/flan-t5-xl and pass --t5-path DIR") from None
        return cls(model.to(device), tok, **kw)

    @classmethod
    def build(cls, t5_path, caption_dim, device, dtype=torch.float32, seed=0, **kw):
        """FLAN-T5 from the folder t5_path (its width checked against the GPT's caption_dim before
        its weights are read), or without one the tiny random T5, on `device`."""
        if t5_path:
            check_t5_width(t5_path, caption_dim)
            text = cls.from_pretrained(t5_path, device=device, dtype=dtype, **kw)
        else:
            text = cls.tiny(caption_dim, seed=seed, **kw)
        text.model.to(device)
        return text

    @classmethod
    def tiny(cls, caption_dim=32, seed=0, **kw):
        """A random 2-layer T5 and a byte-level tokenizer: the offline stand-in."""
        from plumbing.standins import tiny_t5
        return cls(*tiny_t5(caption_dim, seed), **kw)

    @torch.no_grad()
    def __call__(self, prompts):
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise ValueError("TextEncoder expects a list of strings")
        dev = next(self.model.parameters()).device
        texts = [preprocess(p, self.clean) for p in prompts]
        t = self.tokenizer(texts, max_length=self.max_length, padding="max_length", truncation=True,
                           return_tensors="pt").to(dev)
        out = self.model(input_ids=t.input_ids, attention_mask=t.attention_mask)
        feats = out.last_hidden_state.float()
        mask = t.attention_mask.bool()  # (B, 120), right-padded by the tokenizer
        if self.pad == "right":  # AR-GRPO: as the tokenizer left it, padded rows kept
            return feats, mask.float()
        n = mask.sum(1, keepdim=True)  # real tokens per prompt
        # move padding to the front, as LlamaGen's sampler does: row j takes source
        # (j - pad) mod 120
        S = self.max_length
        src = (torch.arange(S, device=dev)[None] - (S - n)) % S
        feats = feats.gather(1, src[..., None].expand_as(feats))
        mask = mask.gather(1, src)
        return feats * mask[..., None], mask.float()
