"""Teacher quality for a share of its cost: the whole job as users run it, scored on human labels.

For each dataset under --data, the simulated teacher (realistic noise, right on about 88% of
rows) labels N seed rows; an all-MiniLM-L6-v2 student learns from them with the default training
settings and labels the corpus, which is the dataset's test split, scored against its human
labels. A separate human-labeled split plays the recipe's gold: it measures the teacher and what
the audit-slice estimate needs, and is never trained on. Then, on the same corpus:

- student alone, and teacher alone (the teacher labels every corpus row);
- confidence routing: the least sure F of the corpus rows take the teacher's answer (as
  `distill route label.route_fraction=F` does), at every F of --fractions;
- random routing: a random F of the rows instead;
- margin and entropy routing (one label per text: the student's class probabilities);
- refine (`distill refine`): rounds that send the least sure rows plus a random slice to the
  teacher and retrain on every answer so far, with F of the corpus in all (--refine-fractions).

Each cell: the main metric and macro-F1 with 95% bootstrap CIs, the worst class's recall, teacher
calls (seed and corpus apart) and USD at gpt-4o list prices. Per seed size: the student's accuracy
on the corpus as the audit slice (a random 2% the teacher answers) estimates it, and as the
label-free estimate (mean confidence) does, beside the truth; and the cheapest confidence-routing
share whose labels reach the teacher (main metric and macro-F1 at least the teacher's minus 0.5
points).

The seed axis (--seeds): the whole job at each seed size the pool allows (seed, corpus and gold
never overlap), each with two anchors on the same backbone and the same teacher labels: `probe`
(frozen features in the checkpoint's pooling, a logistic regression; per word for NER) and
`setfit` (the setfit library: a contrastive stage, then a logistic head; single-label sets), and
refine at 10% of the corpus. Per dataset, `cheapest`: the seed size and routed share that reach the
teacher on both metrics for the smallest cost share on a 1M-row corpus, (seed rows + routed share
x 1,000,000) / 1,000,000 teacher calls. The cells from before the seed axis (1,000 seed rows, the
student classifying from BERT's [CLS] pooler) stay at the top level of each dataset. Every cell
records the commit and machine it ran on; cells already in --out are kept, so a rerun does only
what is missing.

    python scripts/bench_cascade.py --out docs/bench_cascade.json --plot docs/bench_cascade.png
        [--data ../shared/data] [--datasets ...] [--seeds 1000 2000 4000 8000]
        [--fractions 0.05 0.1 0.2 0.3 0.5] [--refine-fractions 0.1] [--anchors probe setfit] [--work DIR]
    python scripts/bench_cascade.py --out docs/bench_cascade.json --report --markdown FILE --plot PNG
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_audit import machine  # scripts/ is on the path when run as a script
from bench_quality import METRIC_NAMES, default_student

ROOT = Path(__file__).resolve().parents[1]
NOTE = ("teacher SIMULATED (realistic noise, target accuracy 0.88; NER 0.86 of entities); "
        "student all-MiniLM-L6-v2; corpus = the test split, scored on its human labels")
# dataset -> recipe, folder under --data, overrides ({data}: --data, {work}: the work folder), (epochs, lr).
# Seed rows are drawn by a hash slice of about N rows (train files sorted by label would make `limit` take a
# few classes); gold is a human-labeled split apart from seed pool and corpus.
DATASETS = {
    "ag_news": ("topic", "ag_news", [
        "data.dir={data}/ag_news", "data.seed.slice=[0.0,{share}]",
        "data.corpus.path={data}/ag_news/ag_news_csv/test.csv", "data.corpus.format=csv",
        "data.corpus.column_names=[label,title,text]", "data.corpus.label_column=label", "data.corpus.slice=null",
        "data.gold.path={data}/ag_news/alps_agnews/dev.tsv", "data.gold.format=tsv",
        "data.gold.column_names=[text,label]", "data.gold.slice=[0.8,0.9]"], (3, 1e-4)),
    # three of four topics cut to 3% each, in the seed pool, gold and the corpus alike (files written to --work)
    "ag_news_imbalanced": ("topic", "ag_news", [
        "data.seed.path={work}/ag_imbalanced/dev.tsv", "data.seed.slice=[0.0,{share}]",
        "data.corpus.path={work}/ag_imbalanced/test.tsv", "data.corpus.format=tsv",
        "data.corpus.column_names=[text,label]", "data.corpus.label_column=label", "data.corpus.slice=null",
        "data.gold.path={work}/ag_imbalanced/dev.tsv", "data.gold.format=tsv",
        "data.gold.column_names=[text,label]", "data.gold.slice=[0.6,1.0]"], (3, 1e-4)),
    "sms_spam": ("spam", "sms_spam", [
        "data.file={data}/sms_spam/SMSSpamCollection", "data.seed.slice=[0.0,{share}]",
        "data.corpus.slice=[0.8,1.0]", "data.corpus.label_column=label", "data.gold.slice=[0.5,0.8]"], (3, 1e-4)),
    "conll2003": ("ner", "conll2003", [
        "data.dir={data}/conll2003", "data.seed.limit={n}", "teacher.sim.accuracy=0.86",
        "data.corpus.path={data}/conll2003/test.txt", "data.corpus.label_column=tags",
        "data.gold.path={data}/conll2003/valid.txt", "data.gold.limit=1000"], (6, 1.5e-4)),
    # multi-label: the seed pool is folds 0-9 (1,037 rows); the recipe's gold folds (15-19) are the corpus here
    "nlupp_banking": ("intents", "nlupp", [
        "data.dir={data}/nlupp", "data.corpus.path='{data}/nlupp/banking/fold1[5-9].json'",
        "data.corpus.label_column=intents", "data.gold.path='{data}/nlupp/banking/fold1[0-4].json'"], (15, 2e-4)),
    "banking77": ("banking", "banking77", [
        "data.dir={data}/banking77", "data.seed.slice=[0.0,{share}]",
        "data.corpus.path={data}/banking77/test.csv", "data.corpus.slice=null",
        "data.gold.path={data}/banking77/train.csv", "data.gold.slice=[0.8,0.9]"], (4, 1e-4)),
}
ROWS = {"ag_news": 10001, "ag_news_imbalanced": None, "sms_spam": 5574, "banking77": 10003}  # rows the seed slice cuts
# the largest seed share before the gold (or corpus) slice begins; CoNLL and NLU++ take N rows of their own pools
POOL = {"ag_news": 0.8, "ag_news_imbalanced": 0.6, "sms_spam": 0.5, "banking77": 0.8}
POOL_ROWS = {"conll2003": 14041, "nlupp_banking": 1037}
CORPUS_1M = 1_000_000  # the corpus size the cost share is priced on
COMMON = ["teacher=simulated", "teacher.sim.noise=realistic", "teacher.model=gpt-4o", "student=minilm",
          "student.model={model}", "train.epochs={epochs}", "train.lr={lr}", "train.batch_size=16",
          "train.early_stopping_patience=2", "train.save_steps=100000", "label.audit_fraction=0"]
AUDIT = 0.02  # the audit slice's share of the corpus


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench_cascade.json")
    ap.add_argument("--plot", default=None)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[1000, 2000, 4000, 8000],
                    help="seed sizes; one the pool cannot hold apart from corpus and gold is skipped")
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.3, 0.5])
    ap.add_argument("--refine-fractions", type=float, nargs="*", default=[0.1])
    ap.add_argument("--anchors", nargs="*", default=["probe", "setfit"], choices=["probe", "setfit"])
    ap.add_argument("--student-model", default=None)
    ap.add_argument("--work", default=None, help="run directories here (default: a temporary folder)")
    ap.add_argument("--extra", nargs="*", default=[], help="more overrides, e.g. train.class_balance=none; the "
                                                          "cells are keyed DATASET + --suffix")
    ap.add_argument("--markdown", default=None, help="also write every cell as markdown tables to this file")
    ap.add_argument("--suffix", default="", help="with --extra: added to each dataset's key")
    ap.add_argument("--report", action="store_true", help="only print, --markdown and --plot what --out holds")
    ap.add_argument("--refresh-estimates", action="store_true",
                    help="recompute the accuracy estimates of every seed cell whose run is under --work, then report")
    args = ap.parse_args()

    model = args.student_model or default_student()
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_cascade_"))
    results = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}

    def save() -> None:
        Path(args.out).write_text(json.dumps(results, indent=1))

    if args.refresh_estimates:
        refresh_estimates(results, work)
        save()
    for name in [] if args.report or args.refresh_estimates else args.datasets:
        recipe, folder, extra, (epochs, lr) = DATASETS[name]
        if not (Path(args.data) / folder).is_dir():
            print(f"skipping {name}: {args.data}/{folder} is absent")
            continue
        if name == "ag_news_imbalanced":
            imbalanced_ag_news(Path(args.data) / "ag_news", work / "ag_imbalanced")
        rows = ROWS.get(name) or count_lines(work / "ag_imbalanced" / "dev.tsv") if name in POOL else None
        key = name + args.suffix
        entry = results.setdefault(key, {})
        for n in args.seeds:
            if n > (POOL_ROWS.get(name) or POOL[name] * rows):
                print(f"{name}: {n:,} seed rows do not fit apart from corpus and gold; skipped")
                continue
            overrides = [f"recipe={recipe}", *extra, *COMMON, *args.extra]
            overrides = [o.format(data=args.data, work=work, model=model, epochs=epochs, lr=lr, n=n,
                                  share=round(n / rows, 4) if rows else 1.0) for o in overrides]
            base = work / key / f"seed{n}"
            cell = entry.setdefault("seeds", {}).get(str(n))
            if cell is None:
                began = time.perf_counter()
                cell = base_cell(overrides, base, args.fractions)
                cell.update(note=NOTE, machine=machine(), commit=commit(), overrides=overrides,
                            seconds=round(time.perf_counter() - began), student=cell["systems"]["student"])
                entry["seeds"][str(n)] = cell
                save()
            for anchor in args.anchors:
                if anchor not in cell and (anchor != "setfit" or cell["task"] == "classification"):
                    began = time.perf_counter()
                    cell[anchor] = {**ANCHORS[anchor](overrides, base), "seconds": round(time.perf_counter() - began)}
                    save()
            for f in args.refine_fractions:
                system = f"refine_{round(100 * f)}"
                if system not in cell:
                    began = time.perf_counter()
                    cell[system] = {**refine_cell(overrides, base, f, 1), "seconds": round(time.perf_counter() - began)}
                    save()
            cell["reach_teacher"] = reach_teacher(cell)["share"]
            save()
        if entry.get("seeds"):
            entry["cheapest"] = cheapest(entry)
            save()
    print_seeds(results)
    print(markdown_seeds(results))
    print(markdown_old_new(results))
    print(markdown_estimates(results))
    if args.markdown:
        Path(args.markdown).write_text("\n\n".join([markdown_seeds(results), markdown_old_new(results),
                                                    markdown_estimates(results),
                                                    markdown_full(results)]) + "\n")
    if args.plot:
        plot_seeds(results, Path(args.plot))
    print(f"-> {args.out}" + (f", {args.plot}" if args.plot else ""))


def commit() -> str:
    """The checkout's commit, marked when files differ from it."""
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    return git("rev-parse", "--short", "HEAD") + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def count_lines(path: Path) -> int:
    return sum(1 for _ in open(path, encoding="utf-8"))


def imbalanced_ag_news(src: Path, out: Path, share: float = 0.03) -> None:
    """AG News with Sports, Business and Sci/Tech cut to `share` each (World keeps the rest), in the
    train sample (seed pool and gold) and the test split (corpus)."""
    if (out / "test.tsv").exists():
        return
    out.mkdir(parents=True, exist_ok=True)
    names = {"1": "World", "2": "Sports", "3": "Business", "4": "Sci/Tech"}
    with open(src / "alps_agnews" / "dev.tsv", encoding="utf-8") as f:
        dev = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    with open(src / "ag_news_csv" / "test.csv", encoding="utf-8", newline="") as f:
        test = [[text, names.get(label, label)] for label, title, text in csv.reader(f)]  # descriptions, as the recipe
    for rows, path in ((dev, out / "dev.tsv"), (test, out / "test.tsv")):
        rng = np.random.default_rng(0)
        major = [r for r in rows if r[1] == "World"]
        keep = round(len(major) * share / (1 - 3 * share))  # each minor topic: `share` of the rows kept
        kept = list(major)
        for topic in ("Sports", "Business", "Sci/Tech"):
            minor = [r for r in rows if r[1] == topic]
            kept += [minor[i] for i in sorted(rng.choice(len(minor), size=min(keep, len(minor)), replace=False))]
        order = rng.permutation(len(kept))
        path.write_text("".join(" ".join(kept[i][0].split()) + f"\t{kept[i][1]}\n" for i in order), encoding="utf-8")


# -- one dataset: teacher, student, the corpus labels every system scores ------------------------

def base_cell(overrides: list[str], base: Path, fractions: list[float]) -> dict:
    from distill.cascade import cost_per_row
    from distill.config import load_config
    from distill.data import load_split, read_jsonl
    from distill.label import label
    from distill.tasks import build_task
    from distill.teach import teach
    from distill.teacher import open_teacher
    from distill.teacher.simulator import sim_rows
    from distill.train import train

    run_dir = base / "run"
    cfg = load_config([*overrides, f"run_dir={run_dir}"])
    task = build_task(cfg.task)
    teach(cfg)
    meta = train(cfg, teach_first=False)
    label(cfg)
    corpus = load_split(cfg, "corpus", task, labels=True)
    with open_teacher(cfg.teacher, task, sim_rows(cfg, task)) as teacher:  # the teacher on every corpus row
        teacher.label(list(load_rows(corpus)), base / "teacher_corpus.jsonl", "teacher: the whole corpus")
    ids, truth, answers, student, conf = corpus_view(cfg, task, base)
    teacher_labels = [answers[i]["label"] if i in answers else None for i in ids]
    seed = read_jsonl(run_dir / "teacher" / "seed.jsonl")
    price = cost_per_row(cfg, list(answers.values())) or 0.0
    seed_usd = usd_of(cfg, seed)

    def cell(pred: list, sent: int) -> dict:
        return {**scored(task, truth, pred), "teacher_calls": {"seed": len(seed), "corpus": sent},
                "usd": round(seed_usd + price * sent, 4), "share": sent / len(ids)}

    systems = {"student": cell(student, 0), "teacher": cell(teacher_labels, len(ids))}
    orders = {"confidence": np.lexsort((np.arange(len(ids)), conf))}
    rng = np.random.default_rng(0)
    orders["random"] = rng.permutation(len(ids))
    probs = class_probabilities(cfg, task, run_dir, corpus) if task.kind == "classification" else None
    if probs is not None:
        top2 = -np.sort(-probs, axis=1)[:, :2]
        orders["margin"] = np.argsort(top2[:, 0] - top2[:, 1], kind="stable")
        entropy = -(probs * np.log(np.clip(probs, 1e-12, 1))).sum(1)
        orders["entropy"] = np.argsort(-entropy, kind="stable")  # the most uncertain first
    for name, order in orders.items():
        systems[name] = {}
        for f in fractions:
            k = round(f * len(ids))
            systems[name][f"{f:g}"] = cell(routed(student, teacher_labels, order[:k]), k)
    # the confidence curve at every 1%, for the plot and the cheapest share that reaches the teacher
    fine = []
    for pct in range(0, 101):
        k = round(pct / 100 * len(ids))
        s = scored(task, truth, routed(student, teacher_labels, orders["confidence"][:k]), ci=False)
        fine.append({"share": pct / 100, "metric": s["metric"], "macro_f1": s["macro_f1"],
                     "worst_recall": s["worst_recall"]["recall"]})
    return {"task": task.kind, "metric_name": METRIC_NAMES.get(task.kind, task.main_metric), "corpus_rows": len(ids),
            "gold_rows": len(load_split(cfg, "gold", task, labels=True)), "seed_rows": len(seed),
            "teacher_usd_per_row": round(price, 6), "class_balance": meta.get("class_balance"),
            "systems": systems, "confidence_curve": fine,
            "estimates": estimates(cfg, task, run_dir, ids, truth, student, conf, answers)}


def corpus_view(cfg, task, base: Path) -> tuple[list, list, dict, list, np.ndarray]:
    """The corpus of a cell's run: ids, human labels, the teacher's answers, the student's labels and
    confidences (-1 where invalid)."""
    from distill.data import load_split, read_jsonl, read_parquet

    corpus = load_split(cfg, "corpus", task, labels=True)
    ids, truth = list(corpus["id"]), list(corpus["label"])
    answers = {r["id"]: r for r in read_jsonl(base / "teacher_corpus.jsonl")}
    labels = {r["id"]: r for r in read_parquet(base / "run" / "labels" / "corpus.parquet")}
    student = [labels[i]["label"] for i in ids]
    conf = np.array([labels[i]["confidence"] if labels[i]["label"] is not None else -1.0 for i in ids])
    return ids, truth, answers, student, conf


def refresh_estimates(results: dict, work: Path) -> None:
    """Recompute every seed cell's `estimates` from its run directory under --work (files only: no
    training, no teacher calls), so estimators added later are measured on the same runs."""
    from distill.config import load_config
    from distill.tasks import build_task

    for key, entry in results.items():
        for n, cell in (entry.get("seeds") or {}).items():
            base = work / key / f"seed{n}"
            if not (base / "run" / "labels" / "corpus.parquet").exists():
                print(f"{key} {n}: no run under {base}; estimates kept")
                continue
            cfg = load_config([*cell["overrides"], f"run_dir={base / 'run'}"])
            task = build_task(cfg.task)
            ids, truth, answers, student, conf = corpus_view(cfg, task, base)
            cell["estimates"] = estimates(cfg, task, base / "run", ids, truth, student, conf, answers)
            e = cell["estimates"]
            print(f"{key} {n}: truth {e['gold_accuracy']:.3f}; audit {e['audit_error']:+.3f}, mean confidence "
                  f"{e['label_free_error']:+.3f}, ATC {e['atc_error']:+.3f}")


def class_probabilities(cfg, task, run_dir: Path, corpus) -> np.ndarray:
    from distill.students import student_class

    student = student_class(cfg.student).load(cfg.student, task, run_dir / "student")
    rows = list(load_rows(corpus))
    return np.exp(student.class_scores(rows, int(cfg.label.batch_size)))


def load_rows(split):
    return ({k: v for k, v in r.items() if k != "label"} for r in split)


def routed(student: list, teacher: list, sent) -> list:
    out = list(student)
    for i in sent:
        out[int(i)] = teacher[int(i)]
    return out


def scored(task, truth: list, pred: list, ci: bool = True) -> dict:
    from distill import stats

    counts, correct = task.counts(truth, pred), task.correct(truth, pred)
    s = stats.scores(counts, correct, task.labels)
    recall = {c: v["recall"] for c, v in s["per_class"].items() if v["support"]}
    worst = min(recall, key=recall.get)
    out = {"metric": round(s[task.main_metric], 4), "macro_f1": round(s["macro_f1"], 4),
           "accuracy": round(s["accuracy"], 4), "worst_recall": {"class": worst, "recall": round(recall[worst], 4)}}
    if ci:
        b = stats.bootstrap_ci(counts, correct, task.f1_key, n_boot=1000, seed=0)
        key = task.main_metric if task.main_metric in b else "accuracy"
        out.update(ci=[round(v, 4) for v in b[key]], macro_f1_ci=[round(v, 4) for v in b["macro_f1"]])
    return out


def usd_of(cfg, records: list[dict]) -> float:
    """What the billed records cost at the teacher's price."""
    from distill.cascade import cost_per_row

    return (cost_per_row(cfg, records) or 0.0) * sum(bool(r.get("prompt_tokens")) for r in records)


def estimates(cfg, task, run_dir: Path, ids, truth, student, conf, answers) -> dict:
    """The student's accuracy on the corpus: the truth, the audit slice's estimate, the label-free one."""
    from distill import stats
    from distill.data import load_split, read_jsonl, read_parquet
    from distill.route import audit_ids

    gold_rows = {r["id"]: r for r in read_parquet(run_dir / "labels" / "gold.parquet")}
    gold_student = {i: r["label"] for i, r in gold_rows.items()}
    gold_teacher = {r["id"]: r["label"] for r in read_jsonl(run_dir / "teacher" / "gold.jsonl")}
    gold = load_split(cfg, "gold", task, labels=True)
    g_ids = [i for i in gold["id"] if gold_teacher.get(i) is not None]
    g_truth = dict(zip(gold["id"], gold["label"]))
    estimate = stats.accuracy_from_agreement(
        task.correct([gold_teacher[i] for i in g_ids], [gold_student.get(i) for i in g_ids]),
        task.correct([g_truth[i] for i in g_ids], [gold_student.get(i) for i in g_ids]))
    position = {i: k for k, i in enumerate(ids)}
    slice_ = [position[i] for i in audit_ids(ids, AUDIT, len(ids), 0) if answers.get(i, {}).get("label") is not None]
    a = float(task.correct([answers[ids[k]]["label"] for k in slice_], [student[k] for k in slice_]).mean())
    truth_acc = float(task.correct(truth, student).mean())
    lf = stats.label_free_accuracy(np.clip(conf, 0, 1))
    # ATC fitted on human gold, as `distill monitor` does; its error measured on gold halves beside the real one
    g_all = list(gold["id"])
    lfe = stats.label_free_estimates(
        np.array([gold_rows[i]["confidence"] if i in gold_rows and gold_rows[i]["label"] is not None else 0.0 for i in g_all]),
        task.correct([g_truth[i] for i in g_all], [gold_student.get(i) for i in g_all]), np.clip(conf, 0, 1))
    atc = lfe["atc"]
    return {"atc_estimate": round(atc["estimate"], 4), "atc_error": round(atc["estimate"] - truth_acc, 4),
            "atc_gold_error": round(atc["gold_error"], 4),
            "label_free_gold_error": round(lfe["mean_confidence"]["gold_error"], 4),
            "gold_accuracy": round(truth_acc, 4), "audit_rows": len(slice_), "audit_agreement": round(a, 4),
            "audit_estimate": round(estimate.at(a), 4), "label_free_estimate": round(lf["estimate"], 4),
            "audit_error": round(estimate.at(a) - truth_acc, 4), "label_free_error": round(lf["estimate"] - truth_acc, 4),
            "right_when_agreeing": round(estimate.right_when_agreeing, 4),
            "right_when_disagreeing": round(estimate.right_when_disagreeing, 4)}


# -- anchors: what else could learn from the same teacher labels, on the same backbone ----------

def corpus_and_seed(overrides: list[str], base: Path):
    from distill.config import load_config
    from distill.data import load_split
    from distill.rundir import RunDir
    from distill.tasks import build_task
    from distill.train import teacher_labels

    cfg = load_config([*overrides, f"run_dir={base / 'run'}"])
    task = build_task(cfg.task)
    return cfg, task, load_split(cfg, "corpus", task, labels=True), teacher_labels(RunDir(cfg.run_dir), task)


def probe_cell(overrides: list[str], base: Path) -> dict:
    """Frozen features in the checkpoint's own pooling and a logistic regression (C=10) on every
    valid teacher label: one-vs-rest per label for multi-label, per word (its first sub-token) for
    NER. It is the student's head as LP-FT starts it, labeling the corpus untrained."""
    from distill.students import student_class
    from distill.students.base import device

    cfg, task, corpus, rows = corpus_and_seed(overrides, base)
    student = student_class(cfg.student).create(cfg.student, task, cfg.seed, texts=[r["text"] for r in rows])
    student.model.to(device())
    student.probe_head(student.dataset(rows, None), int(cfg.label.batch_size))
    preds = student.predict(list(load_rows(corpus)), int(cfg.label.batch_size))
    return {**scored(task, list(corpus["label"]), [p["label"] for p in preds]), "train_rows": len(rows)}


def setfit_cell(overrides: list[str], base: Path) -> dict:
    """The setfit library on the same teacher labels and backbone."""
    cfg, task, corpus, rows = corpus_and_seed(overrides, base)
    pred = setfit_labels(cfg.student.model, rows, list(corpus["text"]), base / "setfit", cfg.seed)
    return {**scored(task, list(corpus["label"]), pred), "train_rows": len(rows), "setfit": __import__("setfit").__version__}


def setfit_labels(model_path: str, rows: list[dict], texts: list[str], out: Path, seed: int) -> list[str]:
    """SetFit trained on `rows` (text, label) labels `texts`: a contrastive stage on pairs of rows
    (at most 500 steps of 16 pairs: about 6 minutes on 2 CPUs), then a logistic head."""
    import datasets
    from setfit import SetFitModel, Trainer, TrainingArguments

    model = SetFitModel.from_pretrained(model_path)
    Trainer(model=model, train_dataset=datasets.Dataset.from_dict(
        {"text": [r["text"] for r in rows], "label": [r["label"] for r in rows]}),
        args=TrainingArguments(output_dir=str(out), save_strategy="no", batch_size=16, num_epochs=1,
                               num_iterations=5, max_steps=500, seed=seed)).train()
    return [str(p) for p in model.predict(texts, batch_size=64, show_progress_bar=False)]


ANCHORS = {"probe": probe_cell, "setfit": setfit_cell}


# -- refine: rounds of routing and retraining, at a total share of the corpus --------------------

def refine_cell(overrides: list[str], base: Path, fraction: float, rounds: int) -> dict:
    from distill.cascade import cost_per_row
    from distill.config import load_config
    from distill.data import load_split, read_jsonl, read_parquet
    from distill.refine import refine
    from distill.tasks import build_task

    run_dir = base / f"refine-{fraction:g}-{rounds}"
    run_dir.mkdir(parents=True, exist_ok=True)
    for part in ("teacher", "student", "data"):  # the base run's teacher labels and first student
        if (base / "run" / part).exists() and not (run_dir / part).exists():
            shutil.copytree(base / "run" / part, run_dir / part, ignore=shutil.ignore_patterns("checkpoints"))
    cfg = load_config([*overrides, f"run_dir={run_dir}", f"refine.rounds={rounds}", f"refine.fraction={fraction}"])
    task = build_task(cfg.task)
    summary = refine(cfg)
    corpus = load_split(cfg, "corpus", task, labels=True)
    labels = {r["id"]: r["label"] for r in read_parquet(run_dir / "refine" / "corpus.parquet")}
    pred = [labels.get(i) for i in corpus["id"]]
    seed = read_jsonl(run_dir / "teacher" / "seed.jsonl")
    sent = summary["teacher_rows"]
    return {**scored(task, list(corpus["label"]), pred), "teacher_calls": {"seed": len(seed), "corpus": sent},
            # at list price, as the other cells: the base run's cache answers refine's rows for nothing here
            "usd": round(usd_of(cfg, seed) + (cost_per_row(cfg, read_jsonl(base / "teacher_corpus.jsonl")) or 0.0) * sent, 4),
            "share": sent / len(corpus), "rounds": summary["rounds"], "stopped": summary["stopped"]}


# -- reading the results --------------------------------------------------------------------------

def reach_teacher(cell: dict) -> dict:
    """The cheapest confidence-routing share whose labels reach the teacher on both metrics (at
    least the teacher's minus 0.5 points), on the 1% grid."""
    t = cell["systems"]["teacher"]
    for p in cell["confidence_curve"]:
        if p["metric"] >= t["metric"] - 0.005 and p["macro_f1"] >= t["macro_f1"] - 0.005:
            return {"share": p["share"], "metric": p["metric"], "macro_f1": p["macro_f1"]}
    return {"share": None}


def cheapest(entry: dict) -> dict | None:
    """The plan that reaches the teacher (main metric and macro-F1 at least the teacher's minus 0.5
    points) for the fewest teacher calls on a 1M-row corpus: a seed size with the confidence-routing
    share that reaches the teacher, or with refine when refine reaches it."""
    plans = []
    for n, cell in entry.get("seeds", {}).items():
        t, per_row = cell["systems"]["teacher"], cell["teacher_usd_per_row"]
        share = cell.get("reach_teacher")
        if share is not None:
            point = next(p for p in cell["confidence_curve"] if p["share"] == share)
            plans.append({"seed_rows": int(n), "route_share": share, "plan": "confidence routing",
                          "main": point["metric"], "macro_f1": point["macro_f1"]})
        for system in (k for k in cell if k.startswith("refine_")):
            r = cell[system]
            if r["metric"] >= t["metric"] - 0.005 and r["macro_f1"] >= t["macro_f1"] - 0.005:
                plans.append({"seed_rows": int(n), "route_share": round(r["share"], 4), "plan": system,
                              "main": r["metric"], "macro_f1": r["macro_f1"]})
        for plan in plans:
            if plan["seed_rows"] == int(n):
                calls = plan["seed_rows"] + plan["route_share"] * CORPUS_1M
                plan.update(cost_share_1m=round(calls / CORPUS_1M, 4), teacher_calls_1m=round(calls),
                            usd_1m=round(calls * per_row, 2), teacher_main=t["metric"], teacher_macro_f1=t["macro_f1"])
    return min(plans, key=lambda p: (p["cost_share_1m"], -p["macro_f1"]), default=None)


def print_seeds(results: dict) -> None:
    print(f"\n{NOTE}")
    print(f"{'dataset':<20}{'seed':>6}  {'student':>15}{'probe':>15}{'setfit':>15}{'refine 10%':>15}{'teacher':>15}"
          f"{'reaches at':>11}")
    for name, entry in results.items():
        for n, cell in sorted(entry.get("seeds", {}).items(), key=lambda kv: int(kv[0])):
            def mm(v):
                return "-" if not v else f"{v['metric']:.3f}/{v['macro_f1']:.3f}"
            reach = cell.get("reach_teacher")
            print(f"{name:<20}{int(n):>6}  {mm(cell['student']):>15}{mm(cell.get('probe')):>15}"
                  f"{mm(cell.get('setfit')):>15}{mm(cell.get('refine_10')):>15}{mm(cell['systems']['teacher']):>15}"
                  f"{'-' if reach is None else format(reach, '.0%'):>11}")
        c = entry.get("cheapest")
        if c:
            print(f"{name:<20}cheapest: {c['seed_rows']:,} seed rows + {c['plan']} at {c['route_share']:.0%}: "
                  f"{c['cost_share_1m']:.1%} of the teacher's calls on 1M rows (${c['usd_1m']:,.0f}), "
                  f"{c['main']:.3f}/{c['macro_f1']:.3f} vs the teacher's {c['teacher_main']:.3f}/{c['teacher_macro_f1']:.3f}")
        elif entry.get("seeds"):
            print(f"{name:<20}cheapest: no seed size measured reaches the teacher")


def markdown_seeds(results: dict) -> str:
    """The README's table: per dataset the cheapest plan, and the student and probe at 1,000 seed rows."""
    def mm(v: dict | None) -> str:
        return "–" if not v else f"{v['metric']:.3f} / {v['macro_f1']:.3f}"

    lines = ["| dataset | cheapest plan that reaches the teacher | teacher calls on a 1M-row corpus | its labels | "
             "teacher alone | student alone, 1,000 seed rows | probe, 1,000 seed rows |",
             "|---|---|---|---|---|---|---|"]
    for name, entry in results.items():
        if not entry.get("seeds"):
            continue
        c, at = entry.get("cheapest"), entry["seeds"].get("1000") or {}
        teacher = next(iter(entry["seeds"].values()))["systems"]["teacher"]
        plan = "none measured" if not c else f"{c['seed_rows']:,} seed rows + {c['plan']} at {c['route_share']:.0%}"
        cost = "–" if not c else f"{c['cost_share_1m']:.1%} (${c['usd_1m']:,.0f})"
        labels = "–" if not c else f"{c['main']:.3f} / {c['macro_f1']:.3f}"
        lines.append(f"| {name} | {plan} | {cost} | {labels} | {mm(teacher)} | {mm(at.get('student'))} | "
                     f"{mm(at.get('probe'))} |")
    return "\n".join(lines)


def markdown_estimates(results: dict) -> str:
    """The student's accuracy on the corpus and three estimates of it per seed cell: the audit slice
    (2% answered by the teacher), the mean confidence and ATC fitted on gold (both label-free)."""
    out = ["| dataset | seed rows | accuracy on the corpus | audit slice (error) | mean confidence (error) | "
           "ATC (error; gold error) |", "|---|---|---|---|---|---|"]
    for name, entry in results.items():
        for n, cell in sorted((entry.get("seeds") or {}).items(), key=lambda kv: int(kv[0])):
            e = cell.get("estimates") or {}
            if "atc_estimate" not in e:
                continue
            out.append(f"| {name} | {int(n):,} | {e['gold_accuracy']:.3f} | {e['audit_estimate']:.3f} "
                       f"({e['audit_error']:+.3f}) | {e['label_free_estimate']:.3f} ({e['label_free_error']:+.3f}) | "
                       f"{e['atc_estimate']:.3f} ({e['atc_error']:+.3f}; {e['atc_gold_error']:.3f}) |")
    return "\n".join(out)


def markdown_old_new(results: dict) -> str:
    """At 1,000 seed rows: the student before the seed axis (top-level cells) beside the current one."""
    def mm(v: dict | None) -> str:
        return "–" if not v else f"{v['metric']:.3f} / {v['macro_f1']:.3f}"

    def share(v) -> str:
        return "not within 100%" if v is None else f"{v:.0%}"

    lines = ["| dataset | teacher alone | old student | student | probe | setfit | refine 10%, student | "
             "routing reaches the teacher at: old / now |", "|---|---|---|---|---|---|---|---|"]
    for name, entry in results.items():
        new = entry.get("seeds", {}).get("1000")
        if not new or "systems" not in entry:
            continue
        old = entry["systems"]
        lines.append(f"| {name} | {mm(new['systems']['teacher'])} | {mm(old['student'])} | {mm(new['student'])} | "
                     f"{mm(new.get('probe'))} | {mm(new.get('setfit'))} | {mm(new.get('refine_10'))} | "
                     f"{share((entry.get('reach_teacher') or {}).get('share'))} / {share(new.get('reach_teacher'))} |")
    return "\n".join(lines)


def plot_seeds(results: dict, path: Path) -> None:
    """Macro-F1 against the cost share on a 1M-row corpus, one curve per seed size (confidence
    routing from 0 to 100% of the corpus), the teacher as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n, e in results.items() if e.get("seeds")]
    cols = min(3, len(names))
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False)
    sizes = sorted({int(n) for name in names for n in results[name]["seeds"]})  # one colour per seed size
    for ax, name in zip(axes.flat, names):
        seeds = sorted(results[name]["seeds"].items(), key=lambda kv: int(kv[0]))
        for n, cell in seeds:
            x = [100 * (int(n) / CORPUS_1M + p["share"]) for p in cell["confidence_curve"]]
            ax.plot(x, [p["macro_f1"] for p in cell["confidence_curve"]], color=f"C{sizes.index(int(n))}",
                    label=f"{int(n):,} seed rows")
        teacher = seeds[0][1]["systems"]["teacher"]["macro_f1"]
        ax.axhline(teacher, color="grey", linestyle="--", label="teacher alone")
        c = results[name].get("cheapest")
        if c:
            ax.plot([100 * c["cost_share_1m"]], [c["macro_f1"]], marker="*", color="black", markersize=10,
                    linestyle="none", label="cheapest plan")
        ax.set(title=name, xscale="log", xlabel="teacher calls, % of a 1M-row corpus", ylabel="macro-F1")
        ax.set_xlim(0.1, 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle("Labels against what the teacher is paid for, per seed size (teacher SIMULATED, MiniLM student)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown_full(results: dict) -> str:
    """docs/benchmarks.md's tables: every system at every share, with CIs, worst recall and USD."""
    out = []
    for name, cell in results.items():
        if "systems" not in cell:  # a dataset measured on the seed axis only
            continue
        s = cell["systems"]
        out += [f"**{name}** ({cell['corpus_rows']:,} corpus rows, {cell['seed_rows']:,} seed rows, "
                f"class_balance {((cell.get('class_balance') or {}).get('method')) or 'none'})", "",
                f"| system | share | {cell['metric_name']} [95% CI] | macro-F1 [95% CI] | worst recall | "
                "teacher calls (seed + corpus) | USD |", "|---|---|---|---|---|---|---|"]
        rows = [("student", s["student"]), ("teacher", s["teacher"])]
        for system in ("confidence", "random", "margin", "entropy", *sorted(k for k in s if k.startswith("refine"))):
            rows += [(system, v) for _, v in sorted(s.get(system, {}).items(), key=lambda kv: float(kv[0]))]
        for system, v in rows:
            w = v["worst_recall"]
            out.append(f"| {system} | {v['share']:.0%} | {v['metric']:.3f} [{v['ci'][0]:.3f}, {v['ci'][1]:.3f}] | "
                       f"{v['macro_f1']:.3f} [{v['macro_f1_ci'][0]:.3f}, {v['macro_f1_ci'][1]:.3f}] | "
                       f"{w['recall']:.3f} ({w['class']}) | {v['teacher_calls']['seed']:,} + "
                       f"{v['teacher_calls']['corpus']:,} | {v['usd']:.2f} |")
        e = cell["estimates"]
        out += ["", f"Student accuracy on the corpus {e['gold_accuracy']:.3f}; the {e['audit_rows']}-row audit slice "
                    f"estimates {e['audit_estimate']:.3f} (agreement {e['audit_agreement']:.3f}), the label-free "
                    f"estimate {e['label_free_estimate']:.3f}.", ""]
    return "\n".join(out)


if __name__ == "__main__":
    main()
