"""sweep.py: the GRPO variants compared on the mnist preset (docs/variants.md, "Compared on MNIST").

Every variant trains from the same pretrained base for the same steps with each seed, then
`tools/eval.py compare` measures it against the base on held-out digits. One table row per
variant: the mean and the spread over the seeds of the held-out judge's accuracy, the Frechet
distance to real digits (judge features), the within-class diversity (pixels), the token entropy,
the policy's KL to the reference (k3 per token, the last 10 steps) and the seconds per step.

  python tools/sweep.py                                  # all variants, seeds 0,1,2, 100 steps
  python tools/sweep.py --only paper,beta-0 --seeds 0    # a part of it
  python tools/sweep.py --report-only                    # the table and the plot from what ran

A run that finished (its report.json is there) is not run again: a stopped sweep goes on where it
stopped. Runs go in OUT/<variant>/s<seed>; the table in OUT/sweep.json, OUT/sweep.md, the plot in
OUT/sweep.png.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> train.py flags on top of `--preset mnist`. The first block is on-policy (one update per
# rollout, as the paper): there the clip-type variants cannot act (rho == 1), so they are compared
# on top of two updates per rollout (`2-updates`), their own baseline.
VARIANTS = {
    "paper": [],
    "beta-0": ["--beta", "0"],
    "beta-1.0": ["--beta", "1.0"],
    "adv-batch": ["--adv-std", "batch"],
    "adv-none (Dr. GRPO)": ["--adv-std", "none"],
    "kl-k1": ["--kl", "k1"],
    "kl-k2": ["--kl", "k2"],
    "kl-in-reward": ["--kl-in", "reward"],
    "kl-in-reward k1 (PPO-RLHF)": ["--kl-in", "reward", "--kl", "k1"],
    "entropy-0.01": ["--entropy-coef", "0.01"],
    "2-updates": ["--minibatches", "2"],
    "2-updates + GSPO": ["--minibatches", "2", "--ratio-level", "sequence", "--clip-eps", "4e-4"],
    "2-updates + dual-clip 3": ["--minibatches", "2", "--dual-clip", "3"],
    "2-updates + clip-higher 0.28": ["--minibatches", "2", "--clip-eps-high", "0.28"],
}
COLUMNS = [  # (key, header, format)
    ("judge_accuracy", "held-out accuracy %", "{:.1f}"), ("judge_fd", "Frechet distance", "{:.1f}"),
    ("diversity", "diversity", "{:.3f}"), ("entropy", "entropy", "{:.3f}"),
    ("kl", "KL to ref", "{:.3f}"), ("reward", "reward", "{:.3f}"), ("s_per_step", "s / step", "{:.2f}"),
]


def slug(name):
    return "".join(c if c.isalnum() or c in ".-" else "_" for c in name).strip("_")


def run(cmd, log):
    with open(log, "a") as f:
        f.write(" ".join(cmd) + "\n")
        f.flush()
        if subprocess.call(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT) != 0:
            raise SystemExit(f"error: {' '.join(cmd)} failed; see {log}")


def one(args, name, seed):
    d = os.path.join(args.out, slug(name), f"s{seed}")
    if os.path.exists(os.path.join(d, "report.json")):
        return
    os.makedirs(d, exist_ok=True)
    log, py = os.path.join(d, "sweep.log"), sys.executable
    resume = ["--resume"] if os.path.exists(os.path.join(d, "ckpt.pt")) else ["--overwrite"]
    run([py, "train.py", "--task", "c2i", "--preset", "mnist", "--steps", str(args.steps),
         "--seed", str(seed), "--out", d, "--image-every", "0", *resume, *VARIANTS[name]], log)
    run([py, "tools/eval.py", "compare", "--tuned", os.path.join(d, "ckpt.pt"), "--diversity",
         "pixel", "--per-class", str(args.per_class), "--grid-rows", "0", "--cpu-threads", "1",
         "--out", d], log)
    print(f"done: {name} seed {seed}", flush=True)


def measures(d):
    """One run's row: the tuned model's held-out measures and its training's KL and speed."""
    tuned = json.load(open(os.path.join(d, "report.json")))["tuned"]
    rows = [json.loads(line) for line in open(os.path.join(d, "metrics.jsonl")) if line.strip()]
    return dict(judge_accuracy=100 * tuned["judge_accuracy"], judge_fd=tuned["judge_fd"],
                diversity=tuned["diversity"], entropy=tuned["entropy"], reward=tuned["reward"],
                kl=statistics.mean(r["kl"] for r in rows[-10:]),
                s_per_step=statistics.mean(r["t_step"] for r in rows))


def report(args, names):
    table = {"base": None}
    for name in names:
        runs = [os.path.join(args.out, slug(name), f"s{s}") for s in args.seeds]
        runs = [measures(d) for d in runs if os.path.exists(os.path.join(d, "report.json"))]
        if runs:
            table[name] = {k: (statistics.mean(r[k] for r in runs),
                               statistics.stdev(r[k] for r in runs) if len(runs) > 1 else 0.0)
                           for k, _, _ in COLUMNS} | {"seeds": len(runs)}
        if runs and table["base"] is None:  # the base: the same in every report (same seeds)
            d = next(os.path.join(args.out, slug(name), f"s{s}") for s in args.seeds if
                     os.path.exists(os.path.join(args.out, slug(name), f"s{s}", "report.json")))
            b = json.load(open(os.path.join(d, "report.json")))["base"]
            table["base"] = {"judge_accuracy": (100 * b["judge_accuracy"], 0), "judge_fd": (
                b["judge_fd"], 0), "diversity": (b["diversity"], 0), "entropy": (b["entropy"], 0),
                "reward": (b["reward"], 0), "kl": (0.0, 0), "s_per_step": (float("nan"), 0)}
    lines = ["| variant | " + " | ".join(h for _, h, _ in COLUMNS) + " |",
             "|---" * (len(COLUMNS) + 1) + "|"]
    for name, row in table.items():
        if row:
            cells = [(f.format(row[k][0]) + (f" +- {f.format(row[k][1])}" if row[k][1] else ""))
                     for k, _, f in COLUMNS]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    md = "\n".join(lines)
    print(md)
    with open(os.path.join(args.out, "sweep.md"), "w") as f:
        f.write(md + "\n")
    with open(os.path.join(args.out, "sweep.json"), "w") as f:
        json.dump(table, f, indent=1)
    plot(table, os.path.join(args.out, "sweep.png"))


def plot(table, path):
    """Held-out accuracy against the Frechet distance and the diversity: up is better digits, left
    is closer to real ones, right is more varied; the error bars are the spread over the seeds.
    A collapsed variant (held-out accuracy under 50 %) is named in the title, not drawn: it would
    squeeze the others into a corner."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 2, figsize=(13, 6))
    rows = {n: r for n, r in table.items() if r}
    collapsed = [n for n, r in rows.items() if r["judge_accuracy"][0] < 50]
    for i, (name, row) in enumerate(n_r for n_r in rows.items() if n_r[0] not in collapsed):
        for a, xk in zip(ax, ["judge_fd", "diversity"]):
            (x, xs), (y, ys) = row[xk], row["judge_accuracy"]
            a.errorbar(x, y, xerr=xs, yerr=ys, fmt="s" if name == "base" else "o", capsize=3,
                       color=plt.cm.tab20(i % 20), label=name if xk == "judge_fd" else None)
    ax[0].set_xlabel("Frechet distance to real digits (judge features; lower is closer)")
    ax[1].set_xlabel("within-class diversity (pixels, 1 - cos; higher is more varied)")
    for a in ax:
        a.set_ylabel("held-out judge accuracy (%)")
        a.grid(alpha=0.3)
    fig.legend(loc="lower center", ncol=4, fontsize=8, frameon=False)
    if collapsed:
        fig.suptitle("collapsed, not drawn: " + ", ".join(collapsed), fontsize=9)
    fig.tight_layout(rect=(0, 0.12, 1, 0.97))
    fig.savefig(path, dpi=110)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="out/sweep", help="where the runs and the table go")
    p.add_argument("--only", default="", help="comma-separated variant names ('' = all): "
                   + ", ".join(VARIANTS))
    p.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    p.add_argument("--steps", type=int, default=100, help="GRPO steps per run (the preset's 100)")
    p.add_argument("--per-class", type=int, default=50, help="compare's images per class")
    p.add_argument("--jobs", type=int, default=2, help="runs at once (each uses one CPU thread)")
    p.add_argument("--report-only", action="store_true", help="only the table and the plot")
    args = p.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(VARIANTS)
    bad = [n for n in names if n not in VARIANTS]
    if bad:
        p.error(f"unknown variant {bad[0]!r}; one of: {', '.join(VARIANTS)}")
    try:
        args.seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        p.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    if args.steps < 1 or args.per_class < 2 or args.jobs < 1:
        p.error("--steps >= 1, --per-class >= 2 and --jobs >= 1")
    os.makedirs(args.out, exist_ok=True)
    if not args.report_only:
        run([sys.executable, "tools/pretrain.py"], os.path.join(args.out, "pretrain.log"))
        with ThreadPoolExecutor(args.jobs) as pool:
            for f in [pool.submit(one, args, n, s) for s in args.seeds for n in names]:
                f.result()
    report(args, names)


if __name__ == "__main__":
    main()
