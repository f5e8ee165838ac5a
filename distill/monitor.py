"""Monitor stage: score the student and the teacher against held-out human gold, side by side.

    distill monitor recipe=NAME

Writes monitor/metrics.json and prints a table. A gold row a system left unlabeled or labeled
invalidly counts as wrong for that system.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from distill.card import write_card
from distill.data import load_split, read_json, read_jsonl, read_parquet
from distill.tasks import build_task
from distill.teach import prepare_data


def _aligned(records: list[dict], ids: list[str]) -> tuple[list, int]:
    by_id = {r["id"]: r["label"] for r in records}
    return [by_id.get(i) for i in ids], sum(i not in by_id for i in ids)


def monitor(cfg) -> dict:
    run_dir = Path(cfg.run_dir)
    task = build_task(cfg.task)
    prepare_data(cfg)
    gold = load_split(cfg, "gold", task, labels=True)
    ids, truth = gold["id"], gold["label"]

    # systems scored on the same gold rows
    systems = {"majority baseline": task.metrics(truth, task.majority(truth))}
    teacher_summary = read_json(run_dir / "teacher" / "summary.json")
    if (run_dir / "teacher" / "gold.jsonl").exists():
        preds, missing = _aligned(read_jsonl(run_dir / "teacher" / "gold.jsonl"), ids)
        systems["teacher"] = {**task.metrics(truth, preds), "missing": missing}
    student_labels = read_parquet(run_dir / "labels" / "gold.parquet")
    preds, missing = _aligned(student_labels, ids)
    systems["student"] = {**task.metrics(truth, preds), "missing": missing}

    # label mix of the bulk labels next to gold's
    corpus = read_parquet(run_dir / "labels" / "corpus.parquet", columns=["label", "route"])
    corpus_labels = [r["label"] for r in corpus]
    report = {
        "recipe": cfg.recipe, "task": task.kind, "gold_rows": len(truth), "headline": list(task.headline),
        "teacher": {"model": teacher_summary.get("model", cfg.teacher.model),
                    "simulated": teacher_summary.get("simulated", bool(cfg.teacher.simulated)),
                    "sim_accuracy": teacher_summary.get("sim", {}).get("accuracy")},
        "student": student_labels[0]["model"] if student_labels else None,
        "systems": systems,
        "label_mix": {"gold": task.summarize(truth), "student_corpus": task.summarize(corpus_labels)},
        "corpus_rows": len(corpus), "corpus_invalid": sum(lab is None for lab in corpus_labels),
        "corpus_routes": dict(Counter(r["route"] for r in corpus)),
        "teacher_usage": teacher_summary.get("seed"),
    }
    out = run_dir / "monitor" / "metrics.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    if (run_dir / "student" / "student.json").exists():
        write_card(cfg, run_dir)
    print(format_report(report))
    return report


def format_report(report: dict) -> str:
    t = report["teacher"]
    teacher = f"{t['model']} (SIMULATED, target accuracy {t['sim_accuracy']})" if t["simulated"] else t["model"]
    cols = [*report["headline"], "invalid"]
    lines = [f"distill monitor · recipe {report['recipe']} · {report['gold_rows']} human gold rows",
             f"teacher: {teacher}", f"student: {report['student']}", "",
             f"{'system':<20}" + "".join(f"{c:>11}" for c in cols)]
    for name, m in report["systems"].items():
        lines.append(f"{name:<20}" + "".join(f"{m[c]:>11.3f}" if isinstance(m[c], float) else f"{m[c]:>11}"
                                             for c in cols))
    names = [n for n in report["systems"] if n != "majority baseline"]
    lines += ["", f"{'per-class F1':<20}" + "".join(f"{n:>11}" for n in names) + f"{'support':>11}"
              + f"{'gold mix':>11}{'corpus mix':>11}"]
    mix = report["label_mix"]
    for label, m in report["systems"]["student"]["per_class"].items():
        lines.append(f"{label:<20}" + "".join(f"{report['systems'][n]['per_class'][label]['f1']:>11.3f}" for n in names)
                     + f"{m['support']:>11}{mix['gold'][label]:>11.2f}{mix['student_corpus'][label]:>11.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from distill.cli import run_stage

    run_stage(monitor, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
