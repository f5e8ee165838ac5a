"""Label stage: the trained student labels the corpus and the gold texts, sharded across processes.

    distill label recipe=NAME
    accelerate launch [--num_processes N] distill/label.py recipe=NAME
    distill merge recipe=NAME        # shards -> labels/{corpus,gold}.parquet (label ends with it)

Each process takes a contiguous share of the rows, read lazily from Arrow, one window at a time:
the window is length-sorted into batches, labeled, and written as one part file. At the end each
process joins its parts into one shard, labels/{split}/shard-R-of-W.parquet, and rank 0 writes a
manifest and merges the shards. Killed and rerun, labeling skips every row already written.

Labeling never calls the teacher. With routing set (`label.threshold`, `label.route_fraction` or
`label.route_budget_usd`), the teacher's answers that `distill route` fetched for the corpus rows
it sent are written over the student's (distill/route.py owns that step and the review files). Gold is always labeled by the student alone: it is what the monitor scores.
"""

if __name__ == "__main__":
    import pathlib
    import sys

    if not __package__:  # run as a file: import the installed package, not its modules as top-level names
        sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])
    from distill.runner import before_imports

    before_imports("label", sys.argv[1:])  # help, or quiet libraries, before torch and tqdm are imported

import json
import os
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import torch
from accelerate import PartialState
from accelerate.utils import gather_object
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from distill.cascade import check_routing
from distill.data import file_stamp, load_split, prepare_data, read_jsonl, write_atomic
from distill.errors import DataError
from distill.route import apply_routes
from distill.rundir import RunDir, StudentDir, resume
from distill.shards import join, join_parts, part_path, report, schema, write_table, written_ids
from distill.students import student_class
from distill.students.base import PROCESS_GROUP_TIMEOUT, student_identity
from distill.tasks import Task, build_task
from distill.tasks.base import Metrics


def label(cfg) -> dict:
    # a generous collective timeout: the other ranks wait while rank 0 converts a large corpus
    state = PartialState(cpu=not torch.cuda.is_available(), timeout=timedelta(seconds=PROCESS_GROUP_TIMEOUT))
    if state.device.type == "cpu" and state.num_processes > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // state.num_processes))  # no oversubscription
    run = RunDir(cfg.run_dir)
    task = build_task(cfg.task)
    check_routing(cfg)  # a bad threshold stops us before any work

    # student: the merged model when exported, calibrated, on this process's device
    student = student_class(cfg.student).load(cfg.student, task, run.student, on=state.device)
    identity = student_identity(student.meta)

    # data: rank 0 prepares the Arrow caches, the others then read them
    with state.main_process_first():
        prepare_data(cfg)
        data = {split: load_split(cfg, split, task, labels=False) for split in cfg.label.splits}

    stats = {}
    for split, rows in data.items():
        out_dir = run.label_shards(split)
        if state.is_main_process:
            resume(out_dir, fingerprint(cfg, split, identity, student.temperature),
                   f"label: the student, task or data changed since {out_dir} was written; labeling it afresh",
                   also=(run.labels(split),))
        state.wait_for_everyone()
        shard = rows.shard(state.num_processes, state.process_index, contiguous=True)
        prefix = f"shard-{state.process_index:05d}-of-{state.num_processes:05d}"
        stats[split] = label_shard(student, task, shard, out_dir, prefix, identity, cfg.label,
                                   desc=f"student: {split}" + (f" [rank {state.process_index}]"
                                                               if state.num_processes > 1 else ""),
                                   show=state.is_local_main_process)
        state.wait_for_everyone()  # every rank has read the written ids before parts are joined away
        join_parts(out_dir, prefix, task)
    stats["peak_rss_mb"] = peak_rss_mb()

    # merge: rank 0 once every shard is complete; the others are done
    per_rank = gather_object([stats])
    result = merge(cfg, per_rank) if state.is_main_process else {}
    if state.num_processes > 1:
        state.destroy_process_group()  # left to interpreter exit, gloo can abort a finished rank
    return result


def peak_rss_mb() -> float:
    """This process's peak resident memory. Linux's VmHWM starts afresh at exec; ru_maxrss keeps
    the peak of the process that forked it (a large parent would count as this one's)."""
    try:
        status = Path("/proc/self/status").read_text()
        return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- one process's share ------------------------------------------------------------------------

def label_shard(student, task: Task, shard, out_dir: Path, prefix: str, identity: str, cfg, desc: str,
                show: bool) -> dict:
    """Label this process's rows a window at a time; each window becomes a part file. Two
    threads keep the device busy: one reads and tokenizes the next window, one writes the last."""
    done = written_ids(out_dir)
    ids = shard["id"]
    skipped = sum(i in done for i in ids) if done else 0
    window = int(cfg.window)
    batch_tokens = int(cfg.batch_tokens) if cfg.batch_tokens is not None else None
    starts = [s for s in range(0, len(shard), window) if not (done and all(i in done for i in ids[s : s + window]))]
    tokenizing = student.tokenizing_copy()  # the reader thread's own tokenizer

    def read(start: int) -> tuple[int, list[dict], list | None]:
        block = shard[start : start + window]
        rows = [r for r in (dict(zip(block, vals)) for vals in zip(*block.values())) if r["id"] not in done]
        return start, rows, tokenizing.input_ids(rows)

    labeled, began = 0, time.perf_counter()
    with ThreadPoolExecutor(max_workers=1) as reader, ThreadPoolExecutor(max_workers=1) as writer, \
            tqdm(total=len(shard), initial=skipped, desc=desc, unit="row", disable=not show, smoothing=0.1) as bar:
        writes, ahead = [], reader.submit(read, starts[0]) if starts else None
        for k in range(len(starts)):
            start, rows, row_ids = ahead.result()
            ahead = reader.submit(read, starts[k + 1]) if k + 1 < len(starts) else None
            preds = student.predict(rows, int(cfg.batch_size), progress=False, batch_tokens=batch_tokens, ids=row_ids)
            table = student_table(rows, preds, identity, datetime.now(timezone.utc), task)
            path = part_path(out_dir, prefix, start)
            writes.append(writer.submit(write_table, table, path, task))
            while writes and (writes[0].done() or len(writes) > 2):  # at most two windows wait to be written
                writes.pop(0).result()  # a failed write stops labeling here, with the rows before it kept
            labeled += len(rows)
            bar.update(len(rows))
        for w in writes:
            w.result()
    seconds = time.perf_counter() - began if labeled else 0.0
    return {"rows": len(shard), "skipped": skipped, "labeled": labeled, "seconds": seconds}


def student_table(rows: list[dict], preds: list[dict], identity: str, now: datetime, task: Task) -> pa.Table:
    """The output rows, column by column: each label with its provenance (who, which route, how
    sure, when)."""
    n = len(rows)
    labels, confidence = [p["label"] for p in preds], [p["confidence"] for p in preds]
    columns = {name: [r[name] for r in rows] for name in ("id", "text", *task.input_fields())}
    columns.update(label=labels, confidence=confidence, entity_confidence=[p["entity_confidence"] for p in preds],
                   error=[p["error"] for p in preds], raw=[p["raw"] for p in preds], route=["student"] * n,
                   model=[identity] * n, student=[identity] * n, student_label=labels,
                   student_confidence=confidence, cost_usd=[0.0] * n, time=[now] * n)
    return pa.Table.from_pydict(columns, schema=schema(task))


def fingerprint(cfg, split: str, identity: str, temperature: float) -> dict:
    """What the labels of a split depend on; a change means they are stale."""
    spec = cfg.data[split]
    # the file's contents, not where it lives: a moved or copied corpus is not labeled again
    out = {"student": identity, "temperature": temperature, "task": OmegaConf.to_container(cfg.task),
           "data": {k: v for k, v in OmegaConf.to_container(spec).items() if k != "path"},
           "file": file_stamp(spec.path)}
    if split != "gold" and cfg.data.get("drop_gold_overlap"):  # which rows are left out depends on gold
        out["gold_file"] = file_stamp(cfg.data.gold.path)
    return out


# -- the library: a student's labels for a list of rows, and how often they agree with a reference ----

def predict(cfg, task: Task, student_dir: Path, rows: list[dict], path: Path | None = None) -> dict:
    """{id: {id, label, confidence}} of the student in `student_dir` on `rows` (in memory: grow,
    refine and scripts call this for a few thousand rows; `distill label` shards a corpus to disk).
    With `path`, kept there headed by the student's weights hash, so that a rerun with the same
    student and rows reads it back."""
    meta = student_record(student_dir)
    if path is not None:
        stored = read_jsonl(path)
        if stored and stored[0].get("student") == meta.get("adapter_hash") and len(stored) == len(rows) + 1:
            return {p["id"]: p for p in stored[1:]}
    student = student_class(cfg.student).load(cfg.student, task, student_dir)
    preds = student.predict(rows, int(cfg.label.batch_size), progress=True)
    out = {row["id"]: {"id": row["id"], "label": p["label"], "confidence": p["confidence"]}
           for row, p in zip(rows, preds)}
    if path is not None:
        write_atomic(path, "".join(json.dumps(x) + "\n" for x in [{"student": meta.get("adapter_hash")}, *out.values()]))
    return out


def student_record(student_dir: Path) -> dict:
    record = StudentDir(student_dir).record
    if not record.exists():
        raise DataError(f"{student_dir} holds no trained student ({record.name} is missing): train it first")
    return json.loads(record.read_text())


def agreement(task: Metrics, reference: dict, preds: dict) -> float | None:
    """The share of the rows in both `reference` ({id: label}) and `preds` ({id: {label}}) whose
    labels agree, as the task counts a row right (None when they share no row)."""
    ids = [i for i in reference if i in preds]
    if not ids:
        return None
    return float(task.correct([reference[i] for i in ids], [preds[i]["label"] for i in ids]).mean())


def score(task: Metrics, gold, preds: dict) -> dict:
    """The labels of `preds` ({id: {label}}) against human `gold` (a list of rows or a Dataset,
    with id and label): the task's metrics; a gold row without a label counts as wrong."""
    rows = gold if isinstance(gold, list) else gold.select_columns(["id", "label"]).to_list()
    return task.metrics([g["label"] for g in rows], [preds.get(g["id"], {}).get("label") for g in rows])


# -- merging ----------------------------------------------------------------------------------

def merge(cfg, per_rank: list[dict] | None = None) -> dict:
    """Shards of each split -> labels/{split}.parquet (`distill merge`; label ends with it), then the
    corpus rows `distill route` already sent take the teacher's answers; never asks (or pays) the teacher."""
    summary = apply_routes(cfg, join(cfg, per_rank))
    report(summary, RunDir(cfg.run_dir), cfg.label.splits)
    return summary


def main(argv: list[str] | None = None) -> None:
    from distill.runner import run_stage

    run_stage(label, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
