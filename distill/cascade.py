"""The cascade: corpus rows the student is unsure of go to the teacher, or to people for review.

    distill cascade recipe=NAME [label.target=0.95]     # pick the threshold on gold, plot the curve
    distill route recipe=NAME label.threshold=auto      # send the unsure corpus rows (distill/route.py)

`distill cascade` replays the choice on gold: for each threshold, rows under it take the teacher's
gold-text label and the rest keep the student's. It picks the threshold that reaches
`label.target` (the task's main metric: accuracy, entity F1 for NER, micro F1 for multi-label) with the fewest teacher
calls, writes cascade/threshold.json (read by `label.threshold=auto`) and cascade/curve.json, and
plots coverage, quality and teacher cost in cascade/curve.png.
"""

from __future__ import annotations

import json
import math
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from distill.data import load_split, read_json, read_jsonl, read_parquet
from distill.errors import ConfigError, DataError
from distill.stats import scores
from distill.students.base import student_identity
from distill.tasks import Task, build_task
from distill.teacher.client import prices, usd

ROUTES = ("teacher", "review")


def resolve_threshold(cfg) -> float | None:
    """`label.threshold`: null (no cascade), a confidence in [0, 1], or auto (cascade/threshold.json)."""
    value = cfg.label.threshold
    if value is None:
        return None
    if cfg.label.route not in ROUTES:
        raise ConfigError(f"label.route must be one of {list(ROUTES)}, not {cfg.label.route!r}")
    if value == "auto":
        path = Path(cfg.run_dir) / "cascade" / "threshold.json"
        if not path.exists():
            raise ConfigError(f"label.threshold=auto reads {path}, which `distill cascade recipe={cfg.recipe}` "
                              "writes: run that first, or give a number")
        picked = json.loads(path.read_text())
        meta = read_json(Path(cfg.run_dir) / "student" / "student.json")
        if meta and picked.get("student") and picked["student"] != student_identity(meta):
            print(f"label: warning: {path} was picked for student {picked['student']}, not the current one; "
                  f"rerun distill cascade recipe={cfg.recipe} to pick it for this student", file=sys.stderr)
        return float(picked["threshold"])
    try:
        value = float(value)
    except ValueError:
        raise ConfigError(f"label.threshold must be a number in [0, 1], auto or null, not {value!r}") from None
    if not 0 <= value <= 1:
        raise ConfigError(f"label.threshold must be in [0, 1], not {value}")
    return value


# -- routing corpus rows (the merge overlays what `distill route` fetched) -------------------------

def unsure_rows(task: Task, files: list[Path], threshold: float) -> list[dict]:
    """Corpus rows labeled under the threshold (or invalid), each id once, from the label files."""
    columns = ["id", "text", *task.input_fields(), "label", "confidence", "entity_confidence", "student"]
    low, seen = [], set()
    for f in files:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=8192, columns=columns):
            unsure = pc.or_kleene(pc.is_null(batch["label"]), pc.less(batch["confidence"], threshold))
            for row in batch.filter(unsure).to_pylist():  # only the few unsure rows become Python dicts
                if row["id"] not in seen:
                    seen.add(row["id"])
                    low.append(row)
    return low


def teacher_answers_path(run_dir: Path) -> Path:
    return Path(run_dir) / "labels" / "teacher" / "corpus.jsonl"


def overlay(cfg, task: Task, files: list[Path], threshold: float, run_dir: Path,
            asked: list[dict] | None = None) -> tuple[dict, dict]:
    """Rows under the threshold: {id: fields to overwrite}, and counts. The teacher's answers are
    those `distill route` already wrote; nothing here asks (or pays) the teacher. `asked`: the
    unsure rows `distill route` just sent, so one without an answer (the budget ran out) goes to
    review (and the label files need no second scan)."""
    low = asked if asked is not None else unsure_rows(task, files, threshold)
    asked = {r["id"] for r in asked or []}
    out, review, stats = {}, [], {"rows_under_threshold": len(low)}
    if cfg.label.route == "teacher" and low:
        answers = {r["id"]: r for r in read_jsonl(teacher_answers_path(run_dir))}
        stats["not_asked"] = sum(r["id"] not in answers and r["id"] not in asked for r in low)
        for row in low:
            answer = answers.get(row["id"])
            if answer is None and row["id"] not in asked:  # keeps the student's label until `distill route` asks
                continue
            if answer is None or answer["label"] is None:  # failed, invalid or over budget: a person decides
                out[row["id"]] = {"route": "review"}
                review.append(row)
                continue
            out[row["id"]] = {
                "label": answer["label"], "confidence": answer["confidence"], "error": None,
                "entity_confidence": answer["entity_confidence"], "raw": answer["raw"], "route": "teacher",
                "model": answer["model"] + (" (simulated)" if answer.get("simulated") else ""),
                "cost_usd": answer["cost_usd"], "time": _time(answer["time"])}
    else:
        out = {row["id"]: {"route": "review"} for row in low}
        review = low
    if review:
        stats["review_files"] = write_review(run_dir / "labels" / "review", "corpus", review, task)
    stats["review_rows"] = len(review)
    return out, stats


def _time(epoch: float | None):
    return datetime.fromtimestamp(epoch, timezone.utc) if epoch else None


# -- review files -----------------------------------------------------------------------------

def write_review(out_dir: Path, split: str, rows: list[dict], task: Task) -> list[str]:
    """Rows for people to check, with the student's answer as a pre-annotation: a Label Studio
    task file with its labeling config, and an Argilla record file with its dataset settings."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tasks, records = [], []
    for row in rows:
        result, suggestion = task.review_prediction(row)
        tasks.append({"data": {"text": row["text"], "distill_id": row["id"]},
                      "predictions": [{"model_version": row["student"], "score": row["confidence"], "result": result}]})
        records.append({"id": row["id"], "text": row["text"], "label": suggestion, "score": row["confidence"]})
    files = {"ls": out_dir / f"{split}.label_studio.json", "ar": out_dir / f"{split}.argilla.jsonl",
             "xml": out_dir / "label_config.xml", "settings": out_dir / "argilla_settings.json"}
    files["ls"].write_text(json.dumps(tasks, indent=1))
    files["ar"].write_text("".join(json.dumps(r) + "\n" for r in records))
    files["xml"].write_text(task.label_studio_config())
    files["settings"].write_text(json.dumps({"fields": [{"name": "text", "type": "text"}],
                                             "questions": [task.argilla_question()]}, indent=1))
    return [str(f) for f in files.values()]


# -- picking the threshold on gold ------------------------------------------------------------

def curve(task: Task, truth: list, student: list, confidence: list, teacher: list,
          cost_per_row: float | None, points: int = 201) -> list[dict]:
    """Quality, coverage and teacher cost of the cascade at each threshold, replayed on gold."""
    n = len(truth)
    conf = np.array([c if lab is not None else -1.0 for lab, c in zip(student, confidence)])  # invalid: always sent
    values = sorted({float(c) for c in conf if c >= 0})
    if len(values) > points:  # quantiles keep the table small on a large gold set
        values = sorted({values[round(i * (len(values) - 1) / (points - 1))] for i in range(points)})
    # per-row counts once; each threshold picks, row by row, the teacher's or the student's
    counts_s, counts_t = task.counts(truth, student), task.counts(truth, teacher)
    right_s, right_t = task.correct(truth, student), task.correct(truth, teacher)
    out = []
    for t in [0.0, *values, math.nextafter(1.0, 2.0)]:
        sent = conf < t
        share = int(sent.sum()) / n
        quality = scores(np.where(sent[:, None, None], counts_t, counts_s), np.where(sent, right_t, right_s),
                         task.labels)[task.main_metric]
        out.append({"threshold": t, "coverage": 1 - share, "teacher_share": share, "quality": quality,
                    "teacher_cost_per_1k_rows": cost_per_row * 1000 * share if cost_per_row is not None else None})
    return out


def pick(points: list[dict], target: float) -> tuple[dict, bool]:
    """The cheapest point reaching the target; the best one when none does."""
    good = [p for p in points if p["quality"] >= target]
    if good:
        return min(good, key=lambda p: (p["teacher_share"], p["threshold"])), True
    return max(points, key=lambda p: (p["quality"], -p["teacher_share"])), False


def cascade(cfg) -> dict:
    run_dir = Path(cfg.run_dir)
    task = build_task(cfg.task)
    gold = load_split(cfg, "gold", task, labels=True)
    student = {r["id"]: r for r in read_parquet(run_dir / "labels" / "gold.parquet")}
    teacher_path = run_dir / "teacher" / "gold.jsonl"
    if not teacher_path.exists():
        raise DataError(f"{teacher_path} does not exist: the cascade replays the teacher's answers on the gold "
                        f"texts; run distill teach recipe={cfg.recipe} monitor.score_teacher=true first")
    teacher = {r["id"]: r for r in read_jsonl(teacher_path)}
    ids, truth = gold["id"], gold["label"]
    missing = [i for i in ids if i not in student]
    if missing:
        raise DataError(f"{len(missing)} gold rows have no student label: run distill label recipe={cfg.recipe}")

    price = prices(cfg.teacher.model, cfg.teacher.get("price"))
    billed = [r for r in teacher.values() if r["prompt_tokens"]]
    cost_per_row = (sum(usd(price, r["prompt_tokens"], r["completion_tokens"]) for r in billed) / len(billed)
                    if price and billed else None)
    points = curve(task, truth, [student[i]["label"] for i in ids], [student[i]["confidence"] for i in ids],
                   [teacher.get(i, {}).get("label") for i in ids], cost_per_row)
    target = float(cfg.label.target)
    chosen, reached = pick(points, target)
    result = {"threshold": chosen["threshold"], "target": target, "student": next(iter(student.values()))["student"], "metric": task.main_metric, "reached": reached,
              "gold_rows": len(ids), "expected": chosen, "student_only": points[0], "teacher_only": points[-1],
              "teacher_cost_per_row_usd": cost_per_row, "teacher_model": cfg.teacher.model}
    out = run_dir / "cascade"
    out.mkdir(parents=True, exist_ok=True)
    (out / "curve.json").write_text(json.dumps(points, indent=1))
    (out / "threshold.json").write_text(json.dumps(result, indent=2))
    plot(points, chosen, target, task.main_metric, out / "curve.png")
    print(format_result(result, points, out))
    return result


def format_result(result: dict, points: list[dict], out: Path) -> str:
    metric = result["metric"]
    priced = result["teacher_cost_per_row_usd"] is not None
    lines = [f"cascade on {result['gold_rows']} gold rows: rows under the threshold take the teacher's label",
             f"{'threshold':>10} {'coverage':>9} {'teacher':>8} {metric:>9}" + (f" {'$ / 1k rows':>12}" if priced else "")]
    shown = {0, len(points) - 1, points.index(result["expected"])}
    shown |= {min(range(len(points)), key=lambda i: abs(points[i]["teacher_share"] - s)) for s in (0.1, 0.2, 0.3, 0.5)}
    for i in sorted(shown):
        p = points[i]
        mark = "  <- chosen" if p is result["expected"] else ""
        lines.append(f"{min(p['threshold'], 1.0):>10.4f} {p['coverage']:>9.1%} {p['teacher_share']:>8.1%} "
                     f"{p['quality']:>9.3f}" + (f" {p['teacher_cost_per_1k_rows']:>12.4f}" if priced else "") + mark)
    if result["reached"]:
        lines.append(f"label.threshold={result['threshold']:.4f} reaches {metric} >= {result['target']} with the "
                     f"teacher on {result['expected']['teacher_share']:.1%} of rows")
    else:
        lines.append(f"no threshold reaches {metric} {result['target']} on gold (best {result['expected']['quality']:.3f}, "
                     f"teacher alone {result['teacher_only']['quality']:.3f}); saved the best threshold instead")
    lines.append(f"label with it: distill label recipe=... label.threshold=auto   (curve: {out / 'curve.png'})")
    return "\n".join(lines)


def plot(points: list[dict], chosen: dict, target: float, metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    ts = [min(p["threshold"], 1.0) for p in points]
    left.plot(ts, [p["quality"] for p in points], label=metric)
    left.plot(ts, [p["coverage"] for p in points], label="coverage (student keeps)")
    left.axhline(target, color="grey", linestyle=":", label=f"target {target}")
    left.axvline(min(chosen["threshold"], 1.0), color="red", linestyle="--", label="chosen threshold")
    left.set(xlabel="confidence threshold", ylim=(0, 1.02), title="coverage and quality on gold")
    left.legend(loc="lower left", fontsize=8)
    priced = points[0]["teacher_cost_per_1k_rows"] is not None
    xs = [p["teacher_cost_per_1k_rows"] if priced else 100 * p["teacher_share"] for p in points]
    right.plot(xs, [p["quality"] for p in points], marker=".", markersize=3)
    right.axhline(target, color="grey", linestyle=":")
    right.scatter([chosen["teacher_cost_per_1k_rows"] if priced else 100 * chosen["teacher_share"]],
                  [chosen["quality"]], color="red", zorder=3)
    right.set(xlabel="teacher cost, USD per 1,000 rows" if priced else "rows sent to the teacher (%)",
              ylabel=metric, title="quality against teacher cost")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    from distill.runner import run_stage

    run_stage(cascade, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
