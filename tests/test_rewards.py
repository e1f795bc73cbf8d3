"""Tests of rewards.py: the maps, the spec grammar, the weight-free rewards, and every paper
reward end to end with tiny random networks (offline)."""
import math

import pytest
import torch

import plumbing.reward_models as RM
import plumbing.images as IM
import rewards as R
from conftest import assert_frozen, random_images
from plumbing.reward_models import RewardWeightsMissing
from plumbing.judge import judge_answers
from rewards import OFFLINE_REWARDS, build_rewards
from plumbing.standins import tiny_clip


# ----------------------------------------------------------------------------- pure maps
def test_quantise_matches_hand_values_including_s_ge_1():
    s = torch.tensor([-0.5, -1e-6, 0.0, 0.29, 0.3, 0.59, 0.6, 0.99, 1.0, 1.7])
    want = torch.tensor([-1, -1, 0.5, 0.5, 1, 1, 1.5, 1.5, 1.5, 1.5])
    assert torch.equal(R.quantise(s), want)
    # NaN stays NaN (AR-GRPO's discrete_reward_map raises on it): the run's non-finite stop sees it
    q = R.quantise(torch.tensor([float("nan"), 0.5, float("inf"), -float("inf")]))
    assert q[0].isnan() and q[1:].tolist() == [1.0, 1.5, -1.0]


@pytest.mark.parametrize("text,want", [
    ('```json\n{"description": "a dog", "score": 3.5, "explanation": "x"}\n```', 3.5),
    ('{"score": 4}', 4.0),
    ('```json\n{\n    "score": 1,\n}\n```', 1.0),           # trailing comma of the paper's own example
    ('```json\n{"description": "a fish", "score": 2.5, "explanation": "The ima', 2.5),  # cut at 256 tokens
    ('Sure! Here it is: {"score": 0} Hope it helps.', 0.0),   # text around the JSON
    ("{'score': 1}", 1.0),                                     # single quotes
    ('```json\n{"score": "2"}\n```', 2.0),                   # score as a string
    ('```json\n{"score": 7}\n```', 7.0),                     # no range check (AR-GRPO: 7 / 4)
    ('{"score": -1}', -1.0),
    ('{"score": "high"}', None),
    ('{"rating": 3}', None),                                   # no "score" key
    ('{"a": 1}{"score": 2}', None),                            # two objects: repaired into a list
    ('the image is nice', None),
    ('', None),
    (None, None),
    ('```json\n{"score": __import__("os").getcwd()}\n```', None),   # never eval'd
    ('{"score": [1, 2]}', None),
])
def test_judge_score_parses_as_ar_grpo(text, want):
    assert R.judge_score(text) == want


def test_judge_score_nan_passes_the_parse():
    assert math.isnan(R.judge_score('{"score": NaN}'))       # json allows it; Judge.generate makes it 0


def test_prompt_color_is_deterministic_and_distinct():
    a = R.prompt_color("a photo of tench, Tinca tinca")
    assert torch.equal(a, R.prompt_color("a photo of tench, Tinca tinca"))
    assert not torch.equal(a, R.prompt_color("a photo of goldfish, Carassius auratus"))
    assert a.shape == (3,) and 0 <= a.min() and a.max() <= 1


# ----------------------------------------------------------------------------- spec grammar
def test_reward_table_names_every_reward():
    """REWARDS, the table that opens rewards.py, lists every weight-free reward, every judge
    question, the paper / T2I rewards and the mnist preset's, in that order; reward_builders()
    returns a copy."""
    want = [*R.OFFLINE_REWARDS, "clip", "clip_q", "hps", "hps_q", "maniqa", *R.JUDGE,
            "pickscore", "imagereward", "aesthetic", "digit", "realism"]
    assert list(R.REWARDS) == want
    assert R.reward_builders() == R.REWARDS and R.reward_builders() is not R.REWARDS


def test_spec_parsing_and_errors():
    assert R.parse_spec("color:1, jpeg:0.5", R.reward_builders()) == [("color", 1.0), ("jpeg", 0.5)]
    with pytest.raises(ValueError, match="unknown reward 'nope'; valid: .*color"):
        build_rewards("nope:1")
    with pytest.raises(ValueError, match="must be a number"):
        build_rewards("color:abc")
    with pytest.raises(ValueError, match="twice"):
        build_rewards("color:1,color:2")
    with pytest.raises(ValueError) as e:
        build_rewards("nope:1")
    assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------- weight-free
def test_offline_rewards_hand_values():
    x = torch.zeros(2, 3, 16, 16)
    x[0] = 1.0                       # white
    x[1, 0] = 1.0                    # pure red
    p = ["a", "b"]
    s = build_rewards(",".join(f"{n}:1" for n in OFFLINE_REWARDS))
    total, parts = s(x, p)
    assert s.names == OFFLINE_REWARDS
    assert torch.allclose(parts["brightness"], torch.tensor([1.0, 0.299]))
    # white: rg = yb = 0 -> 0; red: rg = 1, yb = .5 everywhere, no spread -> 0.3 * sqrt(1.25)
    assert torch.allclose(parts["colorfulness"], torch.tensor([0.0, 0.3 * math.sqrt(1.25)]))
    for i, prompt in enumerate(p):
        c = R.prompt_color(prompt)
        want = 1 - (x[i].mean((1, 2)) - c).norm() / math.sqrt(3)
        assert torch.allclose(parts["color"][i], want)
    assert (parts["jpeg"] < 0).all()
    assert torch.allclose(total, sum(parts.values()))
    assert total.dtype == torch.float32 and total.shape == (2,)


def test_color_reward_is_maximal_at_target_and_jpeg_prefers_flat():
    prompt = "a photo of goldfish, Carassius auratus"
    c = R.prompt_color(prompt)
    exact = c.view(1, 3, 1, 1).expand(1, 3, 8, 8)
    s = build_rewards("color:1")
    assert torch.allclose(s(exact, [prompt])[0], torch.ones(1))
    assert s(1 - exact, [prompt])[0] < 0.99
    flat, noise = torch.full((1, 3, 64, 64), 0.5), torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    j = build_rewards("jpeg:1")
    assert j(flat, ["x"])[0] > j(noise, ["x"])[0]


def test_weighting_and_input_handling():
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    p = ["a", "b", "c"]
    total, parts = build_rewards("brightness:2,colorfulness:-0.5")(x, p)
    assert torch.allclose(total, 2 * parts["brightness"] - 0.5 * parts["colorfulness"])
    # out-of-range pixels are clamped to [0, 1]; float64 input is accepted
    t2, _ = build_rewards("brightness:1")(x.double() + 1, p)
    assert torch.allclose(t2, torch.ones(3)) and t2.dtype == torch.float32
    with pytest.raises(AssertionError, match="one prompt per image"):
        build_rewards("color:1")(x, p[:2])


# ----------------------------------------------------------------------------- paper rewards, tiny
PROMPTS = ["a photo of tench, Tinca tinca", "a photo of tench, Tinca tinca",
           "a photo of goldfish, Carassius auratus", "a photo of great white shark"]


def test_clip_preprocess_matches_torchvision():
    from torchvision.transforms import v2
    x = random_images(2, 48, 64)
    tv = v2.Compose([v2.Resize(32, interpolation=v2.InterpolationMode.BICUBIC, antialias=True), v2.CenterCrop(32),
                     v2.Normalize(IM.CLIP_MEAN, IM.CLIP_STD)])
    assert torch.allclose(IM.clip_preprocess(x, 32), tv(x), atol=2e-2)   # clamp after resize differs a hair


@pytest.mark.parametrize("h,w,size", [(256, 256, 224), (384, 384, 224), (48, 64, 32), (70, 50, 32)])
def test_pil_inputs_are_what_ar_grpos_libraries_compute(h, w, size):
    """--reward-input pil: to_pil_image's uint8 truncation, then transformers' CLIP processor (PIL
    backend, as AR-GRPO's transformers 4.53) for CLIP and hpsv2's tensor transform (ToTensor, Resize
    bicubic, CenterCrop, Normalize) for HPS: equal to the libraries' own outputs."""
    import numpy as np
    from torchvision import transforms as T
    from torchvision.transforms.functional import to_pil_image
    processor = pytest.importorskip("transformers.models.clip.image_processing_pil_clip").CLIPImageProcessorPil
    x = random_images(3, h, w)
    pils = [to_pil_image(im) for im in x]                     # AR-GRPO's to_pil_image(x.float())
    levels = IM.to_pil_levels(x)
    assert torch.equal(levels, torch.stack([T.ToTensor()(p) for p in pils]))
    clip = processor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    want = torch.from_numpy(np.stack(clip(images=pils, return_tensors="np")["pixel_values"]))
    assert torch.allclose(IM.clip_pixels(levels, size, "clip", "pil"), want, atol=1e-6)
    hps = T.Compose([T.ToTensor(), T.Resize(size, interpolation=T.InterpolationMode.BICUBIC),
                     T.CenterCrop(size), T.Normalize(IM.CLIP_MEAN, IM.CLIP_STD)])
    assert torch.allclose(IM.clip_pixels(levels, size, "hps", "pil"), torch.stack([hps(p) for p in pils]),
                          atol=1e-6)


def test_pil_inputs_differ_from_float_inputs_by_the_truncation_bias():
    """What --reward-input pil changes in the 224 px inputs of CLIP and HPS (CLIP-normalised units),
    on 256 px images: truncation moves every pixel down by 0.5 / 255 on average (-0.0071 after
    normalisation); resize and clamp differences are largest on noise (printed; docs/fidelity.md)."""
    import torch.nn.functional as F
    g = torch.Generator().manual_seed(0)
    images = {"uniform": torch.rand(16, 3, 256, 256, generator=g),
              "smooth": F.interpolate(torch.rand(16, 3, 16, 16, generator=g), size=256, mode="bicubic").clamp(0, 1)}
    for name, x in images.items():
        for kind in ("clip", "hps"):
            d = IM.clip_pixels(IM.to_pil_levels(x), 224, kind, "pil") - IM.clip_pixels(x, 224, kind, "float")
            print(f"{name:7s} {kind}: mean(pil - float) {d.mean():+.4f}, max |pil - float| {d.abs().max():.3f}")
            assert -0.0080 < d.mean() < -0.0065 and d.abs().max() > 0.01


def test_paper_precision_puts_each_reward_model_in_ar_grpos_dtype():
    """--reward-dtype paper: CLIP, HPS, MANIQA fp32 and the judge bf16 whatever the run's dtype;
    HPS's fp16 autocast is AR-GRPO's torch.cuda.amp.autocast, a no-op on a CPU. auto: the run's."""
    x = random_images(2, 64, 64)
    spec = "clip:1,hps:1,maniqa:1,qwen_fake:1"
    paper = build_rewards(spec, tiny=True, dtype=torch.bfloat16, precision="paper", judge_mode="fast")
    auto = build_rewards(spec, tiny=True, dtype=torch.bfloat16, judge_mode="fast")
    dtype = lambda s, k: next(p for p in s.ctx.cache[k][0].parameters()).dtype
    assert [dtype(paper, k) for k in ("clip", "hps", "qwen")] == [torch.float32] * 2 + [torch.bfloat16]
    assert paper.ctx.cache["maniqa"].conv1.weight.dtype == torch.float32
    assert [dtype(auto, k) for k in ("clip", "hps", "qwen")] == [torch.bfloat16] * 3
    import contextlib
    import warnings
    assert isinstance(RM.reward_autocast(paper.ctx, "hps"), contextlib.nullcontext)        # CPU: none
    assert isinstance(RM.reward_autocast(auto.ctx, "hps"), contextlib.nullcontext)
    gpu = type(paper.ctx)(**{**vars(paper.ctx), "device": torch.device("cuda")})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                         # "CUDA is not available" on this machine
        assert RM.reward_autocast(gpu, "hps").fast_dtype == torch.float16
        assert isinstance(RM.reward_autocast(gpu, "clip"), contextlib.nullcontext)
    total, parts = paper(x, PROMPTS[:2])
    assert all(torch.isfinite(v).all() and v.dtype == torch.float32 for v in parts.values())


def test_clip_and_hps_tiny_end_to_end():
    x = random_images(4, 64, 64)
    s = build_rewards("clip:1,clip_q:1,hps:0.5,hps_q:2", tiny=True)
    total, parts = s(x, PROMPTS)
    assert s.names == ["clip", "clip_q", "hps", "hps_q"]
    assert all(v.shape == (4,) and v.dtype == torch.float32 for v in parts.values())
    # clip = 5 cos, recomputed here independently from a same-seed tiny model
    import open_clip
    torch.manual_seed(0)
    model = tiny_clip(quick_gelu=True).eval()
    with torch.no_grad():
        img = model.encode_image(IM.clip_preprocess(x, 32), normalize=True)
        txt = model.encode_text(open_clip.get_tokenizer("ViT-B-32")(PROMPTS), normalize=True)
    assert torch.allclose(parts["clip"], 5 * (img * txt).sum(-1), atol=1e-5)
    # quantised = Q(raw cosine), not Q(5 cos)
    assert torch.equal(parts["clip_q"], R.quantise(parts["clip"] / 5))
    assert torch.equal(parts["hps_q"], R.quantise(parts["hps"] / 5))
    assert torch.allclose(total, parts["clip"] + parts["clip_q"] + 0.5 * parts["hps"] + 2 * parts["hps_q"])
    # deterministic, prompt-dependent, image-dependent
    assert torch.equal(s(x, PROMPTS)[0], total)
    assert parts["clip"][0] != s(x, PROMPTS[::-1])[1]["clip"][0]
    # each image is scored with its own prompt: the same numbers one image at a time
    one_by_one = torch.cat([s(x[i:i + 1], PROMPTS[i:i + 1])[1]["clip"] for i in range(4)])
    assert torch.allclose(one_by_one, parts["clip"], atol=1e-5)
    assert not torch.equal(s(random_images(4, 64, 64, seed=1), PROMPTS)[1]["hps"], parts["hps"])
    assert_frozen(s)


def test_maniqa_tiny_forward_matches_pyiqa_and_crops():
    s = build_rewards("maniqa:1", tiny=True, seed=3)
    net = s.ctx.cache["maniqa"]
    x = random_images(2, 225, 225)
    # our crop-level forward == pyiqa's forward with one crop (pyiqa crops at (0, 0))
    net.test_sample = 1
    with torch.no_grad():
        want = net(x).flatten()
        got = RM.maniqa_forward(net, x[..., :224, :224])
    assert torch.allclose(got, want, atol=1e-5) and got.std() > 0
    # crops: positions inside the image, content is the slice
    img = torch.arange(256.0).view(1, 1, 1, 256).expand(1, 3, 256, 256)
    torch.manual_seed(0)
    crops = R.maniqa_crops(img, 20, 224)
    assert crops.shape == (20, 3, 224, 224)
    left = crops[:, 0, 0, 0]
    assert ((0 <= left) & (left <= 32)).all() and torch.equal(crops[:, 0, 5, :], left[:, None] + torch.arange(224.0))
    assert len(set(left.tolist())) > 5
    assert R.maniqa_crops(random_images(1, 64, 64), 3, 224).shape == (3, 3, 224, 224)


def test_maniqa_offsets_full_range_or_ar_grpos():
    """Offsets 0..h-224 (every position), or AR-GRPO's np.random.randint(0, h - 224): 0..h-225."""
    img = torch.arange(256.0).view(1, 1, 1, 256).expand(1, 3, 256, 256)
    torch.manual_seed(0)
    full = R.maniqa_crops(img, 500, 224)[:, 0, 0, 0]
    argrpo = R.maniqa_crops(img, 500, 224, full_range=False)[:, 0, 0, 0]
    assert set(full.tolist()) == set(range(33)) and set(argrpo.tolist()) == set(range(32))


def test_maniqa_tiny_reward_is_2x_mean_of_20_crops_from_the_global_rng():
    """The crops come from torch's global RNG, which train.py seeds from (seed, step, rank) every step:
    two scorers (a run and its resumed copy, a new process) draw the same crops after the same seed,
    different crops after another (another step or rank), and fresh crops at every call."""
    x = random_images(2, 256, 256)
    a, b = build_rewards("maniqa:1", tiny=True, seed=5), build_rewards("maniqa:1", tiny=True, seed=5)
    torch.manual_seed(7)
    ra = a(x, PROMPTS[:2])[0]
    torch.manual_seed(7)
    assert ra.shape == (2,) and torch.equal(ra, b(x, PROMPTS[:2])[0])     # same seed, same crops
    torch.manual_seed(7)
    crops = R.maniqa_crops(x, 20, 224)
    with torch.no_grad():
        want = 2 * RM.maniqa_forward(a.ctx.cache["maniqa"], crops).view(2, 20).mean(1)
    assert torch.allclose(ra, want, atol=1e-5)
    assert not torch.equal(a(x, PROMPTS[:2])[0], ra)                       # fresh crops next call
    torch.manual_seed(8)
    assert not torch.equal(a(x, PROMPTS[:2])[0], ra)                       # another (step, rank)
    assert_frozen(a)


@pytest.fixture(scope="module")
def judge():
    return build_rewards("qwen:1", tiny=True, judge_mode="fast")


def test_qwen_fast_judge_batched_equals_single_and_reads_digits(judge):
    x = random_images(3, 96, 80)
    prompts = ["a photo of cat", "a photo of tench, Tinca tinca, a long one", "dog"]
    total, parts = judge(x, prompts)
    assert judge.names == ["qwen_score", "qwen_fake", "qwen_weird"]
    assert torch.allclose(total, parts["qwen_score"] + parts["qwen_fake"] + parts["qwen_weird"])
    assert (0 <= parts["qwen_score"]).all() and (parts["qwen_score"] <= 5 / 4).all()
    assert (0 <= parts["qwen_fake"]).all() and (parts["qwen_fake"] <= 1 / 4).all()
    assert torch.equal(judge(x, prompts)[0], total)
    # by hand, one image at a time (no padding), full logits: E[d] = sum d p(d) / sum p(d)
    model, proc = judge.ctx.cache["qwen"]
    tok = proc.tokenizer
    digits = [tok.convert_tokens_to_ids(str(d)) for d in range(6)]
    for i in range(3):
        text = R.judge_text(R.QWEN_SCORE_PROMPT.format(prompts[i]), R.ANSWER_PREFIX)
        inp = proc(text=[text], images=R.jpeg_round_trip(x[i:i + 1]), return_tensors="pt")
        with torch.no_grad():
            p = model(**inp).logits[0, -1].softmax(-1)[digits]
        want = (p * torch.arange(6.0)).sum() / p.sum() / 4
        assert torch.allclose(parts["qwen_score"][i], want, atol=1e-4)
    assert_frozen(judge)


def test_jpeg_round_trip_is_what_ar_grpos_judge_sees():
    """AR-GRPO: torchvision's to_pil_image on the float image, JPEG at PIL's default quality, reloaded."""
    import io
    import numpy as np
    from PIL import Image
    from torchvision.transforms.functional import to_pil_image
    x = random_images(2, 40, 48)
    got = R.jpeg_round_trip(x)
    for i, img in enumerate(got):
        buf = io.BytesIO()
        to_pil_image(x[i].float()).save(buf, format="JPEG")
        assert img.mode == "RGB" and np.array_equal(np.asarray(img), np.asarray(Image.open(buf).convert("RGB")))
    raw = (x[0] * 255).to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.abs(np.asarray(got[0]).astype(int) - raw).max() > 2       # lossy: not the raw pixels


def canned_generate(proc, script, calls):
    """A stand-in for model.generate: call k answers script[k] (one text per image in the batch)."""
    def generate(input_ids, **kw):
        calls.append((len(input_ids), kw))
        new = [proc.tokenizer.encode(a, add_special_tokens=False) for a in script[len(calls) - 1]]
        n, pad = max(map(len, new)), proc.tokenizer.pad_token_id
        return torch.cat([input_ids, torch.tensor([t + [pad] * (n - len(t)) for t in new])], 1)
    return generate


def test_qwen_generate_mode_retries_parses_and_counts(monkeypatch):
    gen = build_rewards("qwen_score:1", tiny=True, judge_mode="generate", judge_tokens=4)
    judge, (model, proc) = gen.fns[0], gen.ctx.cache["qwen"]
    seen = []   # the images that reach the processor: the JPEG round trip of the input
    real_processor = judge.processor
    monkeypatch.setattr(judge, "processor", lambda **kw: seen.append(kw["images"]) or real_processor(**kw))
    monkeypatch.setattr(judge.processor, "tokenizer", proc.tokenizer, raising=False)
    x = random_images(3, 56, 56)
    calls = []
    script = [["no idea", '```json\n{"score": 7}\n```', "garbage"],     # attempt 1: images 0, 1, 2
              ['```json\n{\n    "score": 3.5,\n}\n```', "still nothing"],  # attempt 2: images 0, 2
              ["nope"]]                                                    # attempt 3: image 2
    monkeypatch.setattr(model, "generate", canned_generate(proc, script, calls))
    total, parts = gen(x, PROMPTS[:3])
    assert torch.allclose(parts["qwen_score"], torch.tensor([3.5 / 4, 7 / 4, 0.0]))  # no range check
    assert [n for n, _ in calls] == [3, 2, 1]                                        # only failures asked again
    sampling = {"do_sample", "temperature", "top_k", "top_p", "num_beams", "generation_config"}
    assert all(kw["max_new_tokens"] == 4 and not sampling & set(kw)
               for _, kw in calls)                                   # else the model's own generation config
    assert gen.stats() == {"qwen_score/answers": 3, "qwen_score/attempts": 6, "qwen_score/failures": 1,
                           "qwen_score/nonfinite": 0}
    import numpy as np
    want = R.jpeg_round_trip(x)
    assert [len(b) for b in seen] == [3, 2, 1]
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(seen[1], [want[0], want[2]]))
    # a NaN score parses (json allows it), is not retried, and counts 0 (AR-GRPO sums with nansum)
    calls.clear()
    script[:] = [['{"score": NaN}', '{"score": 1}', '{"score": 0}']]
    _, parts = gen(x, PROMPTS[:3])
    assert torch.equal(parts["qwen_score"], torch.tensor([0.0, 0.25, 0.0])) and len(calls) == 1
    assert gen.stats()["qwen_score/nonfinite"] == 1


def test_qwen_generate_mode_real_tiny_model_samples_by_its_generation_config():
    gen = build_rewards("qwen_fake:1", tiny=True, judge_mode="generate", judge_tokens=6)
    judge, (model, _) = gen.fns[0], gen.ctx.cache["qwen"]
    x = random_images(2, 56, 56)
    total, parts = gen(x, PROMPTS[:2])           # random tiny model: gibberish, 3 attempts, then 0
    assert torch.equal(total, torch.zeros(2))
    assert gen.stats() == {"qwen_fake/answers": 2, "qwen_fake/attempts": 6, "qwen_fake/failures": 2,
                           "qwen_fake/nonfinite": 0}
    images = R.jpeg_round_trip(x)

    def answers(seed):
        torch.manual_seed(seed)   # train.py seeds the global RNG per step; the judge draws its seed from it
        return judge_answers(model, judge.processor, judge._inputs(images, PROMPTS[:2], ""), 6)
    assert answers(0) == answers(1)              # the tiny model's generation_config: greedy
    model.generation_config.do_sample, model.generation_config.top_k = True, 0
    a = answers(0)
    assert a == answers(0) and a != answers(1)   # sampling, as the config says, reproducible from the seed


# ----------------------------------------------------------------------------- missing weights
@pytest.mark.parametrize("spec,file,flag", [
    ("clip:1", "open_clip_model.safetensors", "--clip-ckpt"),
    ("hps_q:1", "HPS_v2.1_compressed.pt", "--hps-ckpt"),
    ("maniqa:1", "ckpt_koniq10k.pt", "--maniqa-ckpt"),
    ("qwen:1", "Qwen2.5-VL-3B-Instruct", "--qwen-path"),
])
def test_missing_weights_fail_fast_with_one_line(no_weights, tmp_path, spec, file, flag):
    """Offline (no_weights): one line naming the file, the cache looked in and the flag."""
    with pytest.raises(RewardWeightsMissing) as e:
        build_rewards(spec)
    msg = str(e.value)
    assert "\n" not in msg and file in msg and flag in msg and str(tmp_path) in msg


def test_missing_explicit_path_names_the_flag():
    with pytest.raises(RewardWeightsMissing, match=r"/nope/HPS\.pt \(from --hps-ckpt\) does not exist"):
        build_rewards("hps:1", hps_ckpt="/nope/HPS.pt")
