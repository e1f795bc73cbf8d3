"""Tests of rewards.py: the maps, the spec grammar, the weight-free rewards, and every paper
reward end to end with tiny random networks (offline)."""
import math
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import rewards as R  # noqa: E402
from rewards import OFFLINE_REWARDS, RewardWeightsMissing, build_rewards  # noqa: E402


# ----------------------------------------------------------------------------- pure maps
def test_quantise_matches_hand_values_including_s_ge_1():
    s = torch.tensor([-0.5, -1e-6, 0.0, 0.29, 0.3, 0.59, 0.6, 0.99, 1.0, 1.7])
    want = torch.tensor([-1, -1, 0.5, 0.5, 1, 1, 1.5, 1.5, 1.5, 1.5])
    assert torch.equal(R.quantise(s), want)


@pytest.mark.parametrize("text,max_score,want", [
    ('```json\n{"description": "a dog", "score": 3.5, "explanation": "x"}\n```', 5, 3.5),
    ('{"score": 4}', 5, 4.0),
    ('```json\n{\n    "score": 1,\n}\n```', 1, 1.0),          # trailing comma of the paper's example
    ('blah "score": 0.5 blah', 1, 0.5),                     # no JSON at all, regex fallback
    ('```json\n{"score": "2"}\n```', 5, 2.0),               # score as a string
    ('```json\n{"score": 7}\n```', 5, None),                # out of range
    ('```json\n{"score": -1}\n```', 5, None),
    ('{"score": NaN}', 5, None),
    ('{"score": "high"}', 5, None),
    ('the image is nice', 5, None),
    ('', 5, None),
    (None, 5, None),
    ('```json\n{"score": __import__("os").getcwd()}\n```', 5, None),   # never eval'd
    ('{"score": [1, 2]}', 5, None),
])
def test_parse_judge_answer(text, max_score, want):
    assert R.parse_judge_answer(text, max_score) == want


def test_prompt_color_is_deterministic_and_distinct():
    a = R.prompt_color("a photo of tench, Tinca tinca")
    assert torch.equal(a, R.prompt_color("a photo of tench, Tinca tinca"))
    assert not torch.equal(a, R.prompt_color("a photo of goldfish, Carassius auratus"))
    assert a.shape == (3,) and 0 <= a.min() and a.max() <= 1


# ----------------------------------------------------------------------------- spec grammar
def test_spec_parsing_and_errors():
    assert R.parse_spec("color:1, jpeg:0.5", R._builders()) == [("color", 1.0), ("jpeg", 0.5)]
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
