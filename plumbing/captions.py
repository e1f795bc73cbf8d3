"""DeepFloyd-IF's caption cleaning (via PixArt), which LlamaGen and AR-GRPO both run twice before
T5 (`T5Embedder.text_preprocessing`): `clean_caption(caption)` is one pass. Written here from its
rule list; it uses ftfy (installed with open_clip) and, instead of BeautifulSoup's 'html.parser'
builder, the standard library's html.parser directly (what that builder wraps) to drop tags.
Checked against AR-GRPO's own function, with its pinned beautifulsoup4 4.13.4 and ftfy 6.3.1, on
DrawBench's prompts and tricky captions (tests/test_text.py)."""
import html
import html.entities
import re
import urllib.parse
from html.parser import HTMLParser

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
    """The text of an HTML fragment as BeautifulSoup(s, 'html.parser').text gives it with AR-GRPO's
    pinned beautifulsoup4 4.13.4: tags dropped, comments, declarations and the contents of
    <script>/<style>/<template> left out, a <![CDATA[...]]> section's text kept, and character
    references resolved as BeautifulSoup resolves them (an unknown '&name;' stays '&name', '&#150;'
    is windows-1252, '&#0;' is U+0000, which ftfy then removes)."""
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

    def unknown_decl(self, data):   # html.parser's marked sections: only CDATA holds text
        if data.upper().startswith("CDATA["):
            self.handle_data(data[len("CDATA["):])

    def handle_charref(self, name):
        try:
            n = int(name[1:], 16) if name[:1] in "xX" else int(name)
            ch = bytes([n]).decode("windows-1252") if 0 <= n < 256 else chr(n)
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
