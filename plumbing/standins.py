"""The offline stand-ins, in one place. "Tiny" means one thing everywhere: random weights from a
fixed seed, built in milliseconds on a CPU with no download, used by `--preset tiny` in train.py,
sample.py and tools/eval.py, by `build_rewards(tiny=True)` and by the tests. Each stand-in has
the real model's layout (so the real loading code runs on it) at a width of 16-64.

    TINY_PROMPTS        the tiny t2i run's captions
    PaletteVQ           the tiny tokenizer: token k paints its patch one fixed colour
    tiny_t5             a 2-layer T5 encoder and a byte-level tokenizer (text.TextEncoder.tiny)
    tiny_clip           open_clip CLIP, 32 px, 2 layers (the clip / hps / aesthetic rewards)
    tiny_maniqa_vit, TINY_MANIQA   the MANIQA backbone and head sizes
    tiny_qwen           a 0.1M-parameter Qwen2.5-VL judge with a BPE trained on its questions
    tiny_pickscore, TINY_BERT_VOCAB, TINY_IMAGEREWARD   the T2I evaluation scorers
"""
import contextlib
import math
from types import SimpleNamespace

import torch


@contextlib.contextmanager
def seeded(seed):
    """Random weights from `seed` without disturbing the caller's RNG stream: torch's global RNG is
    seeded inside the block and restored after it."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        yield


TINY_PROMPTS = ["a red fox in the snow", "a bowl of blueberries", "a lemon on a table",
                "a green forest", "a purple flower", "an orange sunset", "a white cat",
                "a night sky"]


class PaletteVQ(torch.nn.Module):
    """The tiny preset's tokenizer: token k paints its (ds x ds) patch with a fixed random colour.
    A random VQ-tiny cannot stand in: its decoder ends in GroupNorm with one channel per group (an
    instance norm, which removes each image's channel means), so every token grid decodes to nearly
    the same mean colour (grey noise) and a colour reward spans ~0.005: nothing to learn or see.
    `--vq-model VQ-tiny` runs too."""
    def __init__(self, codebook_size, downsample, seed):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        palette = torch.rand(codebook_size, 3, generator=g) * 2 - 1      # (K, 3) in [-1, 1]
        self.register_buffer("palette", palette)
        self.ds = downsample
        self.config = SimpleNamespace(downsample=downsample, codebook_size=codebook_size)  # as VQ's

    def decode(self, codes):  # (B, N) -> (B, 3, H, W) in [-1, 1]
        side = math.isqrt(codes.shape[1])
        x = self.palette[codes].view(len(codes), side, side, 3).permute(0, 3, 1, 2)  # (B, 3, h, w)
        return x.repeat_interleave(self.ds, 2).repeat_interleave(self.ds, 3)


def tiny_t5(caption_dim=32, seed=0):
    """(T5EncoderModel, tokenizer): a random 2-layer T5 and a byte-level tokenizer. Seeds the global
    RNG (as the runs built with it always did)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    # sorted: alphabet() comes from a set, whose order changes with every process (hash seed)
    vocab.update({ch: i + 3 for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))})
    tk = Tokenizer(models.BPE(vocab, [], unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.post_processor = processors.TemplateProcessing(single="$A </s>",
                                                      special_tokens=[("</s>", 1)])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="</s>",
                                  unk_token="<unk>")
    torch.manual_seed(seed)
    cfg = T5Config(vocab_size=len(vocab), d_model=caption_dim, d_kv=8, d_ff=64, num_layers=2,
                   num_heads=4)
    return T5EncoderModel(cfg), tok


def tiny_clip(quick_gelu):
    """A tiny open_clip CLIP, random weights from the global RNG: 32 px images, 2 layers each."""
    from open_clip.model import CLIP
    return CLIP(embed_dim=32, quick_gelu=quick_gelu,
                vision_cfg=dict(layers=2, width=64, head_width=32, patch_size=8, image_size=32),
                text_cfg=dict(context_length=77, vocab_size=49408, width=64, heads=2, layers=2))


# MANIQA's head at width 16 over a 10-block ViT (MANIQA reads blocks 6..9) with 32 px patches:
# 224 / 32 = 7 tokens a side, one Swin window
TINY_MANIQA = dict(embed_dim=16, dim_mlp=16, patch_size=32, window_size=7, num_heads=[2, 2])


def tiny_maniqa_vit():
    from timm.models.vision_transformer import VisionTransformer
    return VisionTransformer(img_size=224, patch_size=32, embed_dim=16, depth=10, num_heads=2,
                             mlp_ratio=2)


def tiny_qwen(seed, texts):
    """(model, processor): a 0.1M-parameter Qwen2.5-VL with random weights and a byte-level BPE
    tokenizer trained in a few ms on `texts` (the judge's questions; no download). Digits are
    single tokens, as in Qwen's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (PreTrainedTokenizerFast, Qwen2_5_VLConfig,
                              Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor,
                              Qwen2VLImageProcessor, Qwen2VLVideoProcessor)
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
               "<|image_pad|>", "<|video_pad|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=512, special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>",
                                  pad_token="<|endoftext|>")
    ids = {t: tok.convert_tokens_to_ids(t) for t in special}
    special_ids = dict(bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                       pad_token_id=ids["<|endoftext|>"])
    rope = dict(rope_type="default", rope_theta=1e4, mrope_section=[2, 3, 3])
    cfg = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=4096, rope_parameters=rope, **special_ids),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                           out_hidden_size=32, fullatt_block_indexes=[1]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        **special_ids)
    with seeded(seed):
        model = Qwen2_5_VLForConditionalGeneration(cfg)
    # images are resized to <= 112 x 112 px: 8 x 8 patches of 14 px -> 16 image tokens
    image_proc = Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=112 * 112)
    processor = Qwen2_5_VLProcessor(image_processor=image_proc, tokenizer=tok,
                                    video_processor=Qwen2VLVideoProcessor())
    return model, processor


def clip_tokenizer_offline():
    """transformers' CLIPTokenizer built from open_clip's bundled BPE file (the same vocabulary as
    OpenAI's and LAION's CLIP tokenizers): the tiny PickScore's processor, no download."""
    from open_clip.tokenizer import SimpleTokenizer
    from transformers import CLIPTokenizer
    t = SimpleTokenizer()
    special = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    vocab = {special.get(k, k): v for k, v in t.encoder.items()}
    merges = [m for m, _ in sorted(t.bpe_ranks.items(), key=lambda kv: kv[1])]   # in rank order
    return CLIPTokenizer(vocab=vocab, merges=merges)


def tiny_pickscore(seed):
    """(CLIPModel, CLIPProcessor): CLIP-H's layout at width 32, 2 layers, 32 px, the real BPE
    vocabulary."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor
    layers = dict(intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  hidden_act="gelu")
    cfg = CLIPConfig(text_config=dict(hidden_size=32, **layers),
                     vision_config=dict(hidden_size=32, image_size=32, patch_size=8, **layers),
                     projection_dim=16, logit_scale_init_value=math.log(100.0))
    with seeded(seed):
        model = CLIPModel(cfg)
    image_proc = CLIPImageProcessor(size={"shortest_edge": 32},
                                    crop_size={"height": 32, "width": 32})
    return model, CLIPProcessor(image_processor=image_proc, tokenizer=clip_tokenizer_offline())


# the tiny ImageReward: a BERT WordPiece vocabulary of 74 entries and BLIP's configs at width 32
TINY_BERT_VOCAB = (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
                   + list("abcdefghijklmnopqrstuvwxyz0123456789,.")
                   + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"]
                   + ["photo", "of", "red", "cat", "dog"])
TINY_IMAGEREWARD = dict(
    vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                image_size=32, patch_size=8),
    text=dict(vocab_size=len(TINY_BERT_VOCAB) + 2, hidden_size=32, intermediate_size=64,
              num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=64,
              bos_token_id=len(TINY_BERT_VOCAB), sep_token_id=3, eos_token_id=3))
