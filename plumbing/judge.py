"""The Qwen2.5-VL judge's words and mechanics (rewards.py holds its protocols, `Judge`): AR-GRPO's
questions verbatim, Qwen's chat format, the JPEG round trip its judge sees, the tokenised inputs
and the generated answers (reward_utils/qwen_vl_reward.py)."""
import io

import torch
from PIL import Image

# The three questions, verbatim from the paper's code (typos kept: the reward is defined by
# these words). Like the paper, the text comes first and the image after it. A backslash at the
# end of a line continues it: the paper's long lines are wrapped here, not changed.
QWEN_SCORE_PROMPT = """
You are given a text prompt used to generate image: "{}"
Below is one generated image: <image>
1. Describe the image thoroughly (objects, colors, layout,
etc.), do not be affected by the prompt.
2. Score the generation quality from following aspects:
- Is the object in the generated image satisfying the category according to the prompt? (0-1 score)
- Is the generated image completed without missing parts? (0-1 score)
- Does the content of generated image look real and reasonable? (0-1 score)
- Is the generated image clear, bright and in high quality? (0-1 score)
- Is the generated image free of any noises, defects and artifacts? (0-1 score)

Your response should in a **JSON** format following rules below:
1. The final response should have three keys: "description", "score", "explanation".
2. The total score of the image should be store in "score" key, you may use float numbers for \
the scores. The value of total score should be between 0 and 5.
3. The reasoning and scoring process could be write in "explanation" for you to explain your score.
Following is a exmaple of response:
```json
{{
"description": "The image shows a brown dog with one eye and two ears. its mouth is open and \
the its tongue is sticking out.",
"score": 3.5,
"explanation": "The image shows a brown dog matches the prompt 'a photo of a dog' (1 score). \
The image is complete and all part can be seen (1 score). The dog in the photo looks unreal \
becaues it has only one eye and the eye position is not reasonable (0 score). The dog's face is \
clear but its body and backgroud is blurred (0.5 score). The image do not have any noises, \
defects and artifacts (1 score). So the total score of this image is 1+1+0+0.5+1=3.5 .'"
}}
```
"""
YES_NO_PROMPT = """<image>
You need to inspect the image carefully and give a score according to the question below:
- {} If yes, give 0 score, otherwise give 1 score.
The answer should be in a JSON format like below:
```json
{{
    "score": 0,
}}
```
"""


def judge_text(question, answer_prefix=""):
    """Qwen2.5-VL's chat format (what its chat template renders for one user turn holding
    the text and then one image), ending where the assistant starts (+ a forced prefix)."""
    return ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
            f"{question}<|vision_start|><|image_pad|><|vision_end|><|im_end|>\n"
            f"<|im_start|>assistant\n{answer_prefix}")


def jpeg_round_trip(x):
    """What AR-GRPO's judge sees: images (B, 3, H, W) in [0, 1] -> PIL images after
    torchvision's to_pil_image (x * 255, truncated to uint8) and a JPEG save / load at PIL's
    default quality (75)."""
    u8 = (x.float() * 255).to(torch.uint8)                  # truncated, as to_pil_image
    u8 = u8.permute(0, 2, 3, 1).cpu().numpy()               # (B, H, W, 3)
    out = []
    for img in u8:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG")
        buf.seek(0)
        out.append(Image.open(buf).convert("RGB"))
    return out


def judge_inputs(model, processor, questions, images, prefix):
    """The batch the judge reads: one chat per (question, PIL image), text before image, ending in
    the forced answer `prefix`; left-padded (the processor's tokenizer), on the model's device."""
    texts = [judge_text(q, prefix) for q in questions]
    # uint8 PIL images: the processor divides by 255
    inputs = processor(text=texts, images=images, padding=True, return_tensors="pt")
    inputs = inputs.to(model.device)
    inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    return inputs


def judge_answers(model, processor, inputs, max_new_tokens):
    """One generated answer per chat: <= max_new_tokens (256 in AR-GRPO) with the model's own
    generation config (do_sample, temperature, top-k/p as its generation_config.json says). The
    sampling seed is drawn from the global RNG, which train.py seeds per step: a run (and its
    resume) repeats exactly."""
    seed = int(torch.randint(2 ** 62, (1,)).item())
    devices = [model.device] if model.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        out = model.generate(**inputs, max_new_tokens=max_new_tokens)
    answers = out[:, inputs["input_ids"].shape[1]:]          # (b, <= max_new_tokens) new tokens
    return processor.tokenizer.batch_decode(answers, skip_special_tokens=True)
