"""The T2I text condition (text.py): caption cleaning as LlamaGen / AR-GRPO run it, and the two
padding layouts (AR-GRPO's right padding, LlamaGen's sampler's left padding)."""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from model import GPT, Sampling, cfg_logits, generate, gpt_config  # noqa: E402
from plumbing.captions import clean_caption, html_text  # noqa: E402
from text import TextEncoder, preprocess  # noqa: E402

CFG4 = Sampling(cfg_scale=4.0)

# (caption, what AR-GRPO's T5Embedder.text_preprocessing returns): the right-hand sides were produced
# by AR-GRPO's own language/t5.py (commit 65947ad) with its pinned beautifulsoup4 4.13.4 and ftfy 6.3.1.
# Our cleaning also equals it on all 1000 DrawBench prompts of benchmark/drawbench/drawbench_test_1000.json
# and on 117 tricky captions (these among them).
AR_GRPO_CLEANED = [
    ("A Photo of a CAT on a Mat", "a photo of a cat on a mat"),
    ("visit https://example.com/cat.jpg now", "visit now"),
    ("Tom &amp; Jerry &lt;b&gt;bold&lt;/b&gt;", "tom jerry bold< b>"),
    ("<b>Bold</b> dog <script>x=1</script> end <!-- c -->", "bold dog end"),
    ("一只猫 a cat 在这里", "a cat"),                                   # CJK ideographs removed
    ("パンダ ｶﾀｶﾅ 한국어", "パンダ カタカナ 한국어"),                    # kana / hangul kept, width fixed
    ("a cat 🐱 on a mat 😀", "a cat 🐱 on a mat 😀"),                    # emoji kept
    ("“Fancy” quotes — dash", '"fancy" quotes - dash'),
    ("rock+roll%20band", "rock roll band"),                            # percent-decoding, + is a space
    ("a-b-c-d-e", "a b c d e"),
    ("free shipping on jc6640 items", "on items"),
    ("image 1920x1080 wallpaper", "image wallpaper"),
    ("@user look at www.site.org/path now", "look at now"),
    ('"A cat."', "a cat."),
    ("Hello, world.Next", "hello, world. next"),
    ("ﬁne ligature ＦＵＬＬ width", "fine ligature full width"),
    ("caf\u00c3\u00a9 mojibake", "cafã mojibake"),                     # lowercased before ftfy: not repaired
    ("r&d lab", "r d lab"),
    ("&#150; &quot;hi&quot;", "hi"),
    ("New York Skyline with 'Google Research Pizza Cafe' written with fireworks on the sky.",
     "new york skyline with 'google research pizza cafe' written with fireworks on the sky."),
    ("<![CDATA[a cat]]> on a mat", "a cat on a mat"),                  # a CDATA section's text is kept
    ("before <![CDATA[x < y]]> after", "before x < y after"),
    ("a &#0; b", "a b"), ("&#x0; zero hex", "zero hex"),                # U+0000, removed by ftfy
    ("<!ELEMENT x>decl", "decl"), ("&#1114112; too big", "\ufffd too big"),
]


@pytest.mark.parametrize("caption,want", AR_GRPO_CLEANED)
def test_clean_caption_twice_equals_ar_grpo(caption, want):
    assert preprocess(caption) == clean_caption(clean_caption(caption)) == want
    assert preprocess(caption, clean=False) == caption


@pytest.mark.parametrize("html,want", [   # what BeautifulSoup(html, "html.parser").text gives (4.13.4)
    ("a&b", "ab"), ("a&b c", "a&b c"), ("x&amp", "x&amp"), ("x&ampy", "x&ampy"), ("a&b;", "a&b"),
    ("&lt;3 &foo; &#65; &#150; &#x263a; &#0;", "<3 &foo A \u2013 \u263a \x00"),
    ("a<![CDATA[b <i>c</i>]]>d", "ab <i>c</i>d"), ("x<!DOCTYPE y>z", "xz"),
    ("<i>it</i><style>p{}</style>al<!-- x -->ic", "italic"), ("&hellip;&nbsp;", "\u2026\xa0"),
])
def test_html_text_as_beautifulsoup(html, want):
    assert html_text(html) == want


def test_cleaning_reaches_the_encoder_and_can_be_turned_off():
    enc = TextEncoder.tiny(32)
    raw = TextEncoder.tiny(32, clean=False)
    a, _ = enc(["A RED Fox"])
    b, _ = enc(["a red fox"])
    c, _ = raw(["A RED Fox"])
    assert torch.equal(a, b)                   # lowercased before T5
    assert not torch.equal(a, c)               # --no-clean-captions: the raw caption's tokens


def test_padding_layouts():
    prompts = ["ab", "hello there"]
    left, ml = TextEncoder.tiny(32, pad="left")(prompts)
    right, mr = TextEncoder.tiny(32, pad="right")(prompts)
    assert left.shape == right.shape == (2, 120, 32)
    assert ml.sum(1).tolist() == mr.sum(1).tolist() == [3.0, 12.0]     # bytes + </s>
    assert mr[0, :3].all() and not mr[0, 3:].any()                      # right: real tokens first
    assert ml[0, -3:].all() and not ml[0, :-3].any()                    # left: real tokens last
    assert (left[0, :-3] == 0).all()                                    # left: padded rows zeroed
    assert (right[0, 3:] != 0).any()                                    # right: padded rows kept (AR-GRPO)
    assert torch.equal(right[0, :3], left[0, -3:])                      # the same real rows


@pytest.fixture(scope="module")
def t2i():
    torch.manual_seed(0)
    model = GPT(gpt_config("GPT-tiny", model_type="t2i")).eval()
    with torch.no_grad():
        model.output.weight.mul_(30)
        model.cls_embedding.uncond_embedding.normal_()   # a null caption whose rows differ clearly
    prompts = ["a red fox", "a very long prompt about a cat " * 2]
    return model, TextEncoder.tiny(32, pad="left")(prompts), TextEncoder.tiny(32, pad="right")(prompts)


def test_layouts_agree_on_the_conditional_branch_after_the_first_token(t2i):
    """Condition positions have zero RoPE, so where the real caption rows sit does not change what
    the image tokens see: the conditional logits agree from the second image token on. The first
    token is predicted from the LAST condition row: a real token when left-padded, a padded row
    (T5's output at a pad position, not zeroed) when right-padded. Under CFG the null branch also
    sees other rows of the null caption (its first n rows vs its last n), at every token."""
    model, (fl, ml), (fr, mr) = t2i
    tokens = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        cl, cr = model(fl, tokens, ml), model(fr, tokens, mr)
        assert torch.allclose(cl[:, 1:], cr[:, 1:], atol=1e-5) and (cl[:, 0] - cr[:, 0]).abs().max() > 1e-2
        gl, gr = cfg_logits(model, fl, tokens, CFG4, ml), cfg_logits(model, fr, tokens, CFG4, mr)
        assert (gl[:, 1:] - gr[:, 1:]).abs().amax((0, 2)).min() > 1e-3     # every later token differs
        # right padding: zeroing the padded rows changes the first token only
        z = cfg_logits(model, fr * mr[..., None], tokens, CFG4, mr)
        assert torch.allclose(z[:, 1:], gr[:, 1:], atol=1e-5) and (z[:, 0] - gr[:, 0]).abs().max() > 1e-2


def test_ar_grpo_training_mask_changes_only_the_first_token(t2i):
    """Right padding puts a padded row last, and the first image token is predicted from it. AR-GRPO's
    sampler lets that row attend to itself (generate.py adds the diagonal), its training forward does
    not (modeling.py: tril x mask): pad_self_attend=False reproduces the training pass."""
    model, (fl, ml), (fr, mr) = t2i
    tokens = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        sampler, training = model(fr, tokens, mr), model(fr, tokens, mr, pad_self_attend=False)
        assert (sampler[:, 0] - training[:, 0]).abs().max() > 1e-2
        assert torch.equal(sampler[:, 1:], training[:, 1:])
        # the padded rows' (unzeroed) values reach the first token: through the residual stream
        zeroed = model(fr * mr[..., None], tokens, mr, pad_self_attend=False)
        assert (zeroed[:, 0] - training[:, 0]).abs().max() > 1e-2


def test_right_padded_kv_cache_sampler_matches_teacher_forcing(t2i):
    model, _, (fr, mr) = t2i
    tokens, lp = generate(model, fr, CFG4, cond_mask=mr, generator=torch.Generator().manual_seed(0),
                          return_logprobs=True)
    with torch.no_grad():
        tf = cfg_logits(model, fr, tokens, CFG4, mr).log_softmax(-1).gather(-1, tokens[..., None])[..., 0]
    assert torch.allclose(tf, lp, atol=1e-4)


def test_bad_pad_is_an_error():
    with pytest.raises(ValueError, match="pad must be 'left' or 'right'"):
        TextEncoder.tiny(32, pad="center")
