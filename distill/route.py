"""Route stage: the corpus rows the student is unsure of go to the teacher, or to people for review.

    distill route recipe=NAME label.threshold=0.8 [label.route=teacher|review]
    distill route recipe=NAME label.threshold=auto    # the threshold `distill cascade` picked on gold
    distill route recipe=NAME label.route_fraction=0.1   # the batch's least sure 10%, no gold needed

Runs after `distill label`. Corpus rows labeled under the threshold, and invalid ones, are sent to
the teacher (cached, within `teacher.budget_usd`, resumable: a rerun asks only what is still
unanswered); its answers go to labels/teacher/corpus.jsonl and the merge writes them into
labels/corpus.parquet. Rows the teacher fails on, and every unsure row under `label.route=review`,
go to review files for Label Studio and Argilla. A random slice of the corpus
(`label.audit_fraction`, at most `label.audit_max_rows`), drawn whatever the student's confidence,
goes to the teacher too: its answers (labels/teacher/audit.jsonl) let the monitor measure the
student against the teacher on this batch. With `teach` and `grow`, this is the only stage that
calls (and pays) the teacher.
"""

if __name__ == "__main__":
    import pathlib
    import sys

    if not __package__:  # run as a file: import the installed package, not its modules as top-level names
        sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])
    from distill.runner import before_imports

    before_imports("route", sys.argv[1:])  # help, or quiet libraries, before torch and tqdm are imported

import hashlib
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from distill.cascade import check_routing, resolve_threshold, routes_any
from distill.data import read_jsonl
from distill.errors import DataError
from distill.schema import check_labels, needs_routing
from distill.rundir import Review, RunDir
from distill.shards import join, label_files, report, schema, tally
from distill.tasks import build_task
from distill.teacher import Teacher, open_teacher
from distill.teacher.client import answers_line
from distill.teacher.simulator import sim_rows


def unsure_rows(task, files: list[Path], threshold: float) -> list[dict]:
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


def overlay(cfg, task, files: list[Path], threshold: float, run: RunDir,
            asked: list[dict] | None = None) -> tuple[dict, dict]:
    """Rows under the threshold: {id: fields to overwrite}, and counts. The teacher's answers are
    those `distill route` already wrote; nothing here asks (or pays) the teacher. `asked`: the
    unsure rows `distill route` just sent, so one without an answer (the budget ran out) goes to
    review (and the label files need no second scan)."""
    low = asked if asked is not None else unsure_rows(task, files, threshold)
    asked = {r["id"] for r in asked or []}
    out, review, stats = {}, [], {"rows_under_threshold": len(low)}
    if cfg.label.route == "teacher" and low:
        answers = {r["id"]: r for r in read_jsonl(run.routed_answers)}
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
        stats["review_files"] = write_review(run.review, "corpus", review, task)
    stats["review_rows"] = len(review)
    return out, stats


def _time(epoch: float | None):
    return datetime.fromtimestamp(epoch, timezone.utc) if epoch else None


# -- review files -----------------------------------------------------------------------------

def write_review(out: Review, split: str, rows: list[dict], task) -> list[str]:
    """Rows for people to check, with the student's answer as a pre-annotation: a Label Studio
    task file with its labeling config, and an Argilla record file with its dataset settings."""
    out.dir.mkdir(parents=True, exist_ok=True)
    tasks, records = [], []
    for row in rows:
        result, suggestion = task.review_prediction(row)
        tasks.append({"data": {"text": row["text"], "distill_id": row["id"]},
                      "predictions": [{"model_version": row["student"], "score": row["confidence"], "result": result}]})
        records.append({"id": row["id"], "text": row["text"], "label": suggestion, "score": row["confidence"]})
    files = {"ls": out.label_studio(split), "ar": out.argilla(split), "xml": out.label_config,
             "settings": out.argilla_settings}
    files["ls"].write_text(json.dumps(tasks, indent=1))
    files["ar"].write_text("".join(json.dumps(r) + "\n" for r in records))
    files["xml"].write_text(task.label_studio_config())
    files["settings"].write_text(json.dumps({"fields": [{"name": "text", "type": "text"}],
                                             "questions": [task.argilla_question()]}, indent=1))
    return [str(f) for f in files.values()]


def apply_routes(cfg, summary: dict, threshold: float | None = None, asked: list[dict] | None = None) -> dict:
    """Corpus rows under the threshold take the teacher's answer `distill route` fetched (`asked`:
    the rows it just sent), or go to review: labels/corpus.parquet is rewritten with them and the
    summary's counts follow. Nothing here asks (or pays) the teacher."""
    run = RunDir(cfg.run_dir)
    files = label_files(run.label_shards("corpus"))
    if threshold is None:
        threshold = resolve_threshold(cfg, files)
    summary.update(threshold=threshold, route=cfg.label.route if threshold is not None else None)
    if threshold is None or "corpus" not in summary:
        return summary
    task = build_task(cfg.task)
    routed, stats = overlay(cfg, task, files, threshold, run, asked)
    path = run.labels("corpus")
    if routed:
        table_schema = schema(task)
        with pq.ParquetWriter(path.with_suffix(".tmp"), table_schema) as writer:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=8192):
                rows = [{**row, **routed.get(row["id"], {})} for row in batch.to_pylist()]
                writer.write_table(pa.Table.from_pylist(rows, schema=table_schema))
        os.replace(path.with_suffix(".tmp"), path)
        summary["corpus"].update(tally(path))  # the join counted the student's rows only
    summary["corpus"]["cascade"] = stats
    return summary


def route_needed(cfg) -> bool:
    """Whether `distill route` has work: rows to route, or an audit slice to send."""
    return routes_any(cfg) or float(cfg.label.audit_fraction) > 0


def check_route(cfg, task) -> None:
    """What picks the routed rows, for a real teacher its API key, and for a simulated one the
    corpus labels it answers from, before anything is read or sent."""
    needs_routing(cfg, route_needed(cfg))
    check_routing(cfg)
    if (cfg.label.route == "teacher" or float(cfg.label.audit_fraction)) and not cfg.teacher.simulated:
        Teacher(cfg.teacher, task, cache_path=":memory:")  # raises with the variable to export
    routed = cfg.label.route == "teacher" and routes_any(cfg)
    if routed or float(cfg.label.audit_fraction) > 0:
        check_labels(cfg, "corpus", "" if routed else "set label.audit_fraction=0 (no audit slice), or ")


def audit_draw(row_id: str, seed: int) -> float:
    """A uniform number from the row's id alone: the slice ignores confidence and order."""
    return int(hashlib.sha256(f"audit:{seed}:{row_id}".encode()).hexdigest()[:15], 16) / 16**15


def audit_ids(ids, fraction: float, max_rows: int, seed: int) -> list[str]:
    """The audit slice of `ids`: those whose draw falls under `fraction`, at most `max_rows` of them,
    in draw order, whatever the student's confidence: the same ids for the same seed."""
    drawn = sorted((u, i) for i in dict.fromkeys(ids) if (u := audit_draw(i, seed)) < fraction)
    return [i for _, i in drawn[:max_rows]]


def audit_rows(task, files: list[Path], fraction: float, max_rows: int, seed: int) -> list[dict]:
    """The corpus rows of the audit slice, each id once, read from the label files."""
    columns = ["id", "text", *task.input_fields(), "student_label", "student_confidence"]
    drawn = {}
    for f in files:
        for row in pq.read_table(f, columns=columns).to_pylist():
            if row["id"] not in drawn and audit_draw(row["id"], seed) < fraction:
                drawn[row["id"]] = row
    return [drawn[i] for i in audit_ids(drawn, fraction, max_rows, seed)]


def threshold_line(cfg, threshold: float | None) -> str | None:
    """What a share or a budget of rows resolved to, on this batch's confidences."""
    key = next((k for k in ("route_fraction", "route_budget_usd") if cfg.label.get(k) is not None), None)
    if key is None or threshold is None:
        return None
    return (f"route: label.{key}={cfg.label[key]} resolves to the confidence threshold {threshold:.4f} on this "
            f"batch (corpus rows labeled under it leave the student)")


def teacher_lines(run: RunDir, asked: list[dict], audit: list[dict]) -> str:
    """The teacher's answers to the routed rows and the audit slice, and a warning when the audit
    slice has no usable answer (the monitor then has nothing to compare the student with)."""
    lines = []
    for rows, path, what in ((asked, run.routed_answers, "low-confidence rows"), (audit, run.audit_slice, "audit slice")):
        ids = {r["id"] for r in rows}
        records = [r for r in read_jsonl(path) if r["id"] in ids] if rows else []
        if records:
            lines.append(answers_line(what, records))
        if what == "audit slice" and rows and not any(r["label"] is not None for r in records):
            lines.append(f"warning: none of the {len(rows)} audit-slice rows has a usable teacher answer: the "
                         f"monitor cannot compare the student with the teacher on this batch ({path})")
    return "\n".join(lines)


def route(cfg) -> dict:
    run = RunDir(cfg.run_dir)
    task = build_task(cfg.task)
    check_route(cfg, task)

    files = label_files(run.label_shards("corpus"))
    if not files:
        raise DataError(f"{run.label_shards('corpus')} has no labels to route: run distill label "
                        f"recipe={cfg.recipe} first")
    threshold = resolve_threshold(cfg, files)
    if line := threshold_line(cfg, threshold):
        print(line)

    # the teacher answers the unsure rows of the label files `distill label` wrote (review needs no
    # answers), and the audit slice, drawn whatever the student's confidence
    stats, asked, audit_stats = None, None, None
    if threshold is not None and cfg.label.route == "teacher":
        asked = unsure_rows(task, files, threshold)
    audit = audit_rows(task, files, float(cfg.label.audit_fraction), int(cfg.label.audit_max_rows),
                       int(cfg.label.audit_seed))
    if asked or audit:
        with open_teacher(cfg.teacher, task, sim_rows(cfg, task) if cfg.teacher.simulated else ()) as teacher:
            if asked:
                stats = teacher.label(asked, run.routed_answers, "teacher: low-confidence rows")
            if audit:  # a row both unsure and audited is one cached request
                audit_stats = teacher.label(audit, run.audit_slice, "teacher: audit slice")
        print(teacher_lines(run, asked or [], audit))

    # the answers go into labels/corpus.parquet; rows without one go to review files
    summary = apply_routes(cfg, join(cfg), threshold, asked)
    if summary["corpus"]["cascade"] is not None:
        summary["corpus"]["cascade"]["teacher"] = stats
    summary["corpus"]["audit"] = {"rows": len(audit), "fraction": float(cfg.label.audit_fraction),
                                  "file": str(run.audit_slice), "teacher": audit_stats}
    report(summary, run, ["corpus"])  # gold is never routed: its line stands as `distill label` printed it
    return summary


def main(argv: list[str] | None = None) -> None:
    from distill.runner import run_stage

    run_stage(route, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
