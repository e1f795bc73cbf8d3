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

Cleaning is DeepFloyd-IF's `clean_caption` (via PixArt), which LlamaGen and AR-GRPO both run twice
before T5 (`T5Embedder.text_preprocessing`). Written here from its rule list; it uses ftfy (already
installed with open_clip) and, instead of BeautifulSoup's 'html.parser' builder, the standard
library's html.parser directly (what that builder wraps) to drop tags.
"""
import html
import html.entities
import os
import re
import urllib.parse
from html.parser import HTMLParser

import torch

from checkpoint import BadCheckpoint, hub_reachable

# ----------------------------------------------------------------------------- caption cleaning
_URL_HTTP = re.compile(r"\b((?:https?:(?:\/{1,3}|[a-zA-Z0-9%])|"
                       r"[a-zA-Z0-9.\-]+[.](?:com|co|ru|net|org|edu|gov|it)"
                       r"[\w/-]*\b\/?(?!@)))")
_URL_WWW = re.compile(r"\b((?:www:(?:\/{1,3}|[a-zA-Z0-9%])|"
                      r"[a-zA-Z0-9.\-]+[.](?:com|co|ru|net|org|edu|gov|it)"
                      r"[\w/-]*\b\/?(?!@)))")
# CJK strokes, katakana extensions, enclosed CJK, CJK compatibility, ext. A, Yijing, unified
# ideographs
_CJK = [r"[\u31c0-\u31ef]+", r"[\u31f0-\u31ff]+", r"[\u3200-\u32ff]+", r"[\u3300-\u33ff]+",
        r"[\u3400-\u4dbf]+", r"[\u4dc0-\u4dff]+", r"[\u4e00-\u9fff]+"]
_DASHES = re.compile(r"[\u002D\u058A\u05BE\u1400\u1806\u2010-\u2015\u2E17\u2E1A\u2E3A\u2E3B"
                     r"\u2E40\u301C\u3030"
                     r"\u30A0\uFE31\uFE32\uFE58\uFE63\uFF0D]+")
_BAD_PUNCT = re.compile(r"[#®•©™&@·º½¾¿¡§~\)\(\]\[\}\{\|\\\/\*]{1,}")
_EXTS = "png|jpg|jpeg|bmp|webp|eps|pdf|apk|mp4"
# (pattern, replacement) applied in order after the quote / dash rules, before basic_clean
_RULES_1 = [(r"&quot;?", ""), (r"&amp", ""),
            (r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}", " "),      # ip addresses
            (r"\d:\d\d\s+$", ""),                                # article ids
            (r"\\n", " "),                                        # a literal backslash-n
            (r"#\d{1,3}\b", ""), (r"#\d{5,}\b", ""), (r"\b\d{6,}\b", ""),
            (rf"[\S]+\.(?:{_EXTS})", ""),                         # file names
            (r"[\"\']{2,}", r'"'), (r"[\.]{2,}", r" "),
            (_BAD_PUNCT, r" "), (r"\s+\.\s+", r" ")]
# after basic_clean
_RULES_2 = [(r"\b[a-zA-Z]{1,3}\d{3,15}\b", ""), (r"\b[a-zA-Z]+\d+[a-zA-Z]+\b", ""),
            (r"\b\d+[a-zA-Z]+\d+\b", ""),
            (r"(worldwide\s+)?(free\s+)?shipping", ""), (r"(free\s)?download(\sfree)?", ""),
            (r"\bclick\b\s(?:for|on)\s\w+", ""), (rf"\b(?:{_EXTS})(\simage[s]?)?", ""),
            (r"\bpage\s+\d+\b", ""),
            (r"\b\d*[a-zA-Z]+\d+[a-zA-Z]+\d+[a-zA-Z\d]*\b", r" "),
            (r"\b\d+\.?\d*[xх×]\d+\.?\d*\b", ""),
            (r"\b\s+\:\s+", r": "), (r"(\D[,\./])\b", r"\1 "), (r"\s+", " ")]
# after the (no-op) strip of the original: surrounding quotes, leading / trailing punctuation
_RULES_3 = [(r"^[\"\']([\w\W]+)[\"\']$", r"\1"), (r"^[\'\_,\-\:;]", r""),
            (r"[\'\_,\-\:\-\+]$", r""),
            (r"^\.\S+$", "")]


class _TextOnly(HTMLParser):
    """The text of an HTML fragment as BeautifulSoup(s, 'html.parser').text gives it: tags dropped,
    comments and <script>/<style>/<template> contents left out, and character references resolved
    as BeautifulSoup resolves them (an unknown '&name;' stays '&name', '&#150;' is windows-1252)."""
    SKIP = {"script", "style", "template"}

    def __init__(self):
        super().__init__(convert_charrefs=False)
        self.parts, self.skip = [], 0

    def handle_starttag(self, tag, attrs):
        self.skip += tag in self.SKIP

    def handle_endtag(self, tag):
        self.skip -= tag in self.SKIP and self.skip > 0

    def handle_data(self, data):
        if not self.skip:
            self.parts.append(data)

    def handle_entityref(self, name):
        ch = html.entities.html5.get(name + ";")
        self.handle_data(ch if ch is not None else "&" + name)

    def handle_charref(self, name):
        try:
            n = int(name[1:], 16) if name[:1] in "xX" else int(name)
            ch = bytes([n]).decode("windows-1252") if 0 < n < 256 else chr(n) if n else "\ufffd"
        except UnicodeDecodeError:   # the five bytes windows-1252 leaves undefined
            ch = chr(n)
        except (ValueError, OverflowError):
            ch = "\ufffd"
        self.handle_data(ch)


def html_text(s):
    p = _TextOnly()
    p.feed(s)
    p.close()
    return "".join(p.parts)


def _sub_all(rules, s):
    for pattern, repl in rules:
        s = re.sub(pattern, repl, s)
    return s


def clean_caption(caption):
    """One pass of DeepFloyd-IF's caption cleaning (LlamaGen / AR-GRPO language/t5.py), rule for
    rule: percent-decoding (+ -> space), lowercasing, URLs, HTML tags, @nicknames, CJK ranges, dash
    and quote unification, HTML-entity debris, ids / file names / long numbers, punctuation runs,
    ftfy, double HTML unescape, shop spam ('free shipping', 'click for ...'), sizes
    ('1920x1080')."""
    import ftfy
    c = urllib.parse.unquote_plus(str(caption)).strip().lower()
    c = re.sub("<person>", "person", c)
    c = _URL_WWW.sub("", _URL_HTTP.sub("", c))
    c = html_text(c)
    c = re.sub(r"@[\w\d]+\b", "", c)
    for r in _CJK:
        c = re.sub(r, "", c)
    c = _DASHES.sub("-", c)
    c = re.sub(r"[`´«»“”¨]", '"', c)
    c = re.sub(r"[‘’]", "'", c)
    c = _sub_all(_RULES_1, c)
    if len(re.findall(r"(?:\-|\_)", c)) > 3:                  # this-is-my-cute-cat -> words
        c = re.sub(r"(?:\-|\_)", " ", c)
    c = html.unescape(html.unescape(ftfy.fix_text(c))).strip()  # IF's basic_clean
    c = _sub_all(_RULES_2, c)
    # (the original calls c.strip() here and drops the result: the quote rule below sees the spaces)
    c = _sub_all(_RULES_3, c)
    return c.strip()


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
    def tiny(cls, caption_dim=32, seed=0, **kw):
        """A random 2-layer T5 and a byte-level tokenizer (tiny.tiny_t5): the offline stand-in."""
        from tiny import tiny_t5
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
