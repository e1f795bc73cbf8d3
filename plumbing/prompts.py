"""Prompt files and output layouts: the prompt formats train.py, sample.py and tools/eval.py read
(a .txt, a .jsonl, AR-GRPO's .json list), ImageNet's class names, and GenEval's folder layout."""
import json
import os

from tqdm import tqdm

from plumbing.mnist import PROMPTS
from plumbing.standins import TINY_PROMPTS

HERE = os.path.dirname(os.path.abspath(__file__))


def class_prompts(num_classes=0, pretrain=""):
    """'a photo of {class name}' for every ImageNet class id (the first num_classes; 0 = all), with
    the full WordNet names (imagenet_classes.txt, e.g. 'tench, Tinca tinca'), as AR-GRPO's CLIP
    reward prompts them; for a --pretrain mnist run, 'a handwritten digit {d}'
    (plumbing/mnist.py)."""
    if pretrain.startswith("mnist"):
        return PROMPTS[: num_classes or None]
    names = open(os.path.join(HERE, "imagenet_classes.txt")).read().splitlines()
    return [f"a photo of {n}" for n in names[: num_classes or None]]


def load_prompts(args):
    """The prompt pool, read before any model is built (a bad prompt file fails at once): for c2i,
    'a photo of {class name}' for every ImageNet class id (cut to the model's classes later)."""
    if args.task == "c2i":
        return class_prompts(args.num_classes, getattr(args, "pretrain", ""))
    if not args.prompts:
        if args.preset == "tiny":
            return TINY_PROMPTS
        raise SystemExit("error: t2i needs --prompts FILE (.txt, one prompt per line, .jsonl with "
                         "a 'prompt' field, or AR-GRPO's .json list)")
    return read_prompts(args.prompts)


def read_prompts(path):
    """Prompts from a .txt (one per line), a .jsonl (a `prompt`, `caption` or `text` field per
    line) or a .json list: AR-GRPO's format
    (`[{"id", "conversations": [{"from": "human", "value": PROMPT}, ...]}]`, its COCO training
    captions and DrawBench), or plain strings / objects with a `prompt` field."""
    if os.path.isdir(path):
        raise SystemExit(f"error: prompt file {path} is a directory; "
                         f"pass a .txt, .jsonl or .json file")
    if not os.path.isfile(path):
        raise SystemExit(f"error: prompt file {path} does not exist")
    if path.endswith(".json"):
        return _read_json_prompts(path)
    prompts = []
    for n, line in enumerate(open(path, encoding="utf-8"), 1):
        line = line.strip()
        if not line:
            continue
        if path.endswith(".jsonl"):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise SystemExit(f"error: {path}:{n} is not valid JSON ({e.msg})") from None
            line = _prompt_of(row)
            if line is None:
                raise SystemExit(f"error: {path}:{n} has no string 'prompt', 'caption' "
                                 f"or 'text' field")
        prompts.append(line)
    if not prompts:
        raise SystemExit(f"error: prompt file {path} is empty")
    return prompts


def _prompt_of(row):
    """The prompt of one record: a string, a `prompt`/`caption`/`text` field, or AR-GRPO's first
    human turn."""
    if isinstance(row, str):
        return row
    if not isinstance(row, dict):
        return None
    if "conversations" in row:
        turns = [t for t in row["conversations"]
                 if isinstance(t, dict) and t.get("from") == "human"]
        value = turns[0].get("value") if turns else None
        return value if isinstance(value, str) else None
    value = next((row[k] for k in ("prompt", "caption", "text") if k in row), None)
    return value if isinstance(value, str) else None


def _read_json_prompts(path):
    try:
        rows = json.load(open(path, encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise SystemExit(f"error: {path} is not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(rows, list):
        raise SystemExit(f"error: {path} must hold a JSON list of prompts (AR-GRPO's format), "
                         f"got {type(rows).__name__}")
    prompts = []
    for n, row in enumerate(rows):
        prompt = _prompt_of(row)
        if prompt is None:
            raise SystemExit(f"error: {path} entry {n} has no prompt (a string, a 'prompt' "
                             f"field, or a 'conversations' list with a 'from': 'human' turn)")
        if prompt.strip():
            prompts.append(prompt.strip())
    if not prompts:
        raise SystemExit(f"error: prompt file {path} is empty")
    return prompts


def read_geneval(path):
    """GenEval's evaluation_metadata.jsonl: one JSON object per line with at least a string `prompt`
    (and `tag`, `include`, ... which its evaluate_images.py reads back from each folder)."""
    if not os.path.isfile(path):
        raise SystemExit(f"error: GenEval metadata file {path} does not exist")
    rows = []
    for n, line in enumerate(open(path, encoding="utf-8"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise SystemExit(f"error: {path}:{n} is not valid JSON ({e.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
            raise SystemExit(f"error: {path}:{n} is not a GenEval metadata object "
                             f"(a JSON object with a 'prompt')")
        rows.append(row)
    if not rows:
        raise SystemExit(f"error: GenEval metadata file {path} is empty")
    return rows


def write_geneval(rows, out, per_prompt, sample_fn):
    """GenEval's layout, what its evaluate_images.py reads: out/<index:05d>/metadata.jsonl (that
    prompt's metadata object, read with json.load) and out/<index:05d>/samples/<k:04d>.png.
    sample_fn(prompt, index) -> uint8 (N, H, W, 3). Prompt folders that already hold all N images
    are skipped (a re-run resumes); each PNG is written to a temporary name first, so an
    interrupted run never leaves a truncated image behind."""
    from PIL import Image

    def png(i, k):  # image k of prompt i
        return os.path.join(out, f"{i:05d}", "samples", f"{k:04d}.png")

    def done(i):  # all of prompt i's images are on disk
        return all(os.path.isfile(png(i, k)) for k in range(per_prompt))

    todo = [i for i in range(len(rows)) if not done(i)]
    n_done = len(rows) - len(todo)
    if n_done:
        print(f"resuming: {n_done} of {len(rows)} prompts already in {out}")
    for i in tqdm(todo, desc="geneval", unit="prompt", initial=n_done, total=len(rows)):
        folder = os.path.join(out, f"{i:05d}")
        os.makedirs(os.path.join(folder, "samples"), exist_ok=True)
        with open(os.path.join(folder, "metadata.jsonl"), "w", encoding="utf-8") as f:
            f.write(json.dumps(rows[i]) + "\n")
        for k, im in enumerate(sample_fn(rows[i]["prompt"], i).numpy()):
            Image.fromarray(im).save(png(i, k) + ".tmp", format="PNG")
            os.replace(png(i, k) + ".tmp", png(i, k))
    print(f"wrote {out}: {len(rows)} prompt folders x {per_prompt} images (GenEval layout)")
