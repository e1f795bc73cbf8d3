"""Prompt files and output layouts: the prompt formats train.py, sample.py and tools/eval.py read
(a .txt, a .jsonl, AR-GRPO's .json list), ImageNet's class names, and GenEval's folder layout."""
import json
import os

from tqdm import tqdm

from plumbing.files import atomic_write, read_json, read_text, write_image
from plumbing.mnist import PROMPTS
from plumbing.standins import TINY_PROMPTS
from plumbing.stops import on_stop

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


def class_pool(pool, num_classes, flag):
    """c2i: the prompts of a model's first num_classes classes; a --num-classes (`flag`) beyond
    them is an error, not silently cut."""
    if flag > num_classes:
        raise SystemExit(f"error: --num-classes {flag}, but the model has {num_classes} classes")
    return pool[:num_classes]


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
    return read_prompts(args.prompts, raw=getattr(args, "raw_prompts", False))


def read_prompts(path, raw=False):
    """Prompts from a .txt (one per line), a .jsonl (a `prompt`, `caption` or `text` field per
    line) or a .json list: AR-GRPO's format
    (`[{"id", "conversations": [{"from": "human", "value": PROMPT}, ...]}]`, its COCO training
    captions and DrawBench), or plain strings / objects with a `prompt` field. Lines and .json
    prompts are stripped, empty ones dropped, a conversation's first human turn taken; raw=True
    reads a .json list as AR-GRPO's lazy_dataset.py does: conversations[0]["value"] (whatever the
    first turn's role), every prompt as is, empty ones kept. Every problem (missing, a folder, not
    UTF-8, bad JSON, no prompt) is one line naming the file."""
    if path.endswith(".json"):
        return _read_json_prompts(path, raw)
    prompts = []
    for n, line in enumerate(read_text(path, "prompt file").split("\n"), 1):
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


def _prompt_of(row, raw=False):
    """The prompt of one record: a string, a `prompt`/`caption`/`text` field, or AR-GRPO's first
    human turn (raw: its first turn)."""
    if isinstance(row, str):
        return row
    if not isinstance(row, dict):
        return None
    if "conversations" in row:
        turns = [t for t in row["conversations"]
                 if isinstance(t, dict) and (raw or t.get("from") == "human")]
        value = turns[0].get("value") if turns else None
        return value if isinstance(value, str) else None
    value = next((row[k] for k in ("prompt", "caption", "text") if k in row), None)
    return value if isinstance(value, str) else None


def _read_json_prompts(path, raw=False):
    rows = read_json(path, "prompt file")
    if not isinstance(rows, list):
        raise SystemExit(f"error: {path} must hold a JSON list of prompts (AR-GRPO's format), "
                         f"got {type(rows).__name__}")
    prompts = []
    for n, row in enumerate(rows):
        prompt = _prompt_of(row, raw)
        if prompt is None:
            turn = "a first turn with a 'value'" if raw else "a 'from': 'human' turn"
            raise SystemExit(f"error: {path} entry {n} has no prompt (a string, a 'prompt' "
                             f"field, or a 'conversations' list with {turn})")
        if raw or prompt.strip():
            prompts.append(prompt if raw else prompt.strip())
    if not prompts:
        raise SystemExit(f"error: prompt file {path} is empty")
    return prompts


def read_geneval(path):
    """GenEval's evaluation_metadata.jsonl: one JSON object per line with at least a string `prompt`
    (and `tag`, `include`, ... which its evaluate_images.py reads back from each folder)."""
    rows = []
    for n, line in enumerate(read_text(path, "GenEval metadata file").split("\n"), 1):
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


def write_geneval(rows, out, per_prompt, sample_fn, record=None):
    """GenEval's layout, what its evaluate_images.py reads: out/<index:05d>/metadata.jsonl (that
    prompt's metadata object, read with json.load) and out/<index:05d>/samples/<k:04d>.png.
    sample_fn(prompt, index) -> uint8 (N, H, W, 3). Prompt folders that already hold all N images
    are skipped (a re-run resumes); every file is written atomically (plumbing/files.py), so an
    interrupted run never leaves a truncated image behind. `record` (the checkpoint and the
    sampler's settings, CFG included) goes to out/sampler.json, which GenEval's walk skips."""
    def png(i, k):  # image k of prompt i
        return os.path.join(out, f"{i:05d}", "samples", f"{k:04d}.png")

    def done(i):  # all of prompt i's images are on disk
        return all(os.path.isfile(png(i, k)) for k in range(per_prompt))

    with atomic_write(os.path.join(out, "sampler.json"), "w") as f:
        json.dump(record or {}, f, indent=1)
    todo = [i for i in range(len(rows)) if not done(i)]
    n_done = len(rows) - len(todo)
    on_stop(lambda: f"{sum(map(done, range(len(rows))))} of {len(rows)} prompts are complete in "
                    f"{out}: the same command continues")  # Ctrl-C or a full disk
    if n_done:
        print(f"resuming: {n_done} of {len(rows)} prompts already in {out}")
    for i in tqdm(todo, desc="geneval", unit="prompt", initial=n_done, total=len(rows)):
        folder = os.path.join(out, f"{i:05d}")
        with atomic_write(os.path.join(folder, "metadata.jsonl"), "w") as f:
            f.write(json.dumps(rows[i]) + "\n")
        for k, im in enumerate(sample_fn(rows[i]["prompt"], i).numpy()):
            write_image(png(i, k), im)
    print(f"wrote {out}: {len(rows)} prompt folders x {per_prompt} images (GenEval layout)")
