"""The house rules of the design card, checked on the source: the reading path stays within its
budgets and reads downward (plumbing/ never imports it, the scripts never import each other), and
no function outgrows a screen. Reads files only; runs nothing."""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
READING_PATH = ["model.py", "vq.py", "text.py", "rewards.py", "grpo.py", "train.py", "sample.py"]
BUDGETS = {"train.py": 500, "rewards.py": 500, "model.py": 500, "sample.py": 250}
FLAG_TABLES = {("plumbing/flags.py", "train_parser")}   # argparse tables may run long


def lines(path):
    return open(os.path.join(ROOT, path), encoding="utf-8").read().splitlines()


def sources():
    """Every product file (tests aside), as paths relative to the repository."""
    out = list(READING_PATH)
    for folder in ("plumbing", "tools"):
        out += [f"{folder}/{f}" for f in sorted(os.listdir(os.path.join(ROOT, folder)))
                if f.endswith(".py")]
    return out


def imported(path):
    """The top-level module names a file imports, wherever the import statement stands."""
    names = set()
    for node in ast.walk(ast.parse("\n".join(lines(path)))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_reading_path_budgets():
    sizes = {f: len(lines(f)) for f in READING_PATH}
    assert sum(sizes.values()) <= 2100, sizes
    for f, budget in BUDGETS.items():
        assert sizes[f] <= budget, (f, sizes[f])
    main = next(i for i, line in enumerate(lines("train.py"), 1) if line.startswith("def main("))
    assert main <= 150, "train.py's main() must open the file (after the presets)"
    assert len(lines("README.md")) <= 250


def test_every_file_opens_with_a_docstring():
    for f in sources():
        if f.endswith("__init__.py") or ast.get_docstring(ast.parse("\n".join(lines(f)))):
            continue
        pytest.fail(f"{f} has no module docstring")


@pytest.mark.parametrize("path", sources())
def test_the_house_reads_downward(path):
    names = imported(path)
    reading = {f[:-3] for f in READING_PATH}
    if path.startswith("plumbing/"):
        assert not names & (reading | {"tools"}), f"{path} imports {names & reading} from above"
    elif path in READING_PATH:
        assert "tools" not in names, path
    scripts = {"train.py": "sample", "sample.py": "train"}
    assert scripts.get(path) not in names, f"{path} imports the other script"


def test_no_function_outgrows_a_screen():
    long = []
    for f in sources():
        for node in ast.walk(ast.parse("\n".join(lines(f)))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 60 and (f, node.name) not in FLAG_TABLES:
                    long.append(f"{f}:{node.name} ({n} lines)")
    assert not long, long


def test_the_docs_name_code_that_exists():
    """A `file.py:name` in README.md or docs/ (our files; upstream ones are cited by line number)
    names a function, class or top-level value that is there: a rename updates the docs."""
    import glob
    import re
    stale = []
    for doc in ["README.md"] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md"))):
        text = open(os.path.join(ROOT, doc), encoding="utf-8").read()
        for path, name in re.findall(r"`((?:[\w/]+/)?\w+\.py):([A-Za-z_][\w.]*)`", text):
            if not os.path.exists(os.path.join(ROOT, path)):
                continue   # an upstream file (AR-GRPO's, LlamaGen's)
            last = name.split(".")[-1]
            if not re.search(rf"^\s*(def|class)\s+{last}\b|^\s*{last}\s*[:=]", "\n".join(lines(path)),
                             re.M):
                stale.append(f"{os.path.basename(doc)}: {path}:{name}")
    assert not stale, stale
