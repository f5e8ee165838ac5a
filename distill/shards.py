"""Label files of a split: part files, shards, the manifest, and joining them into one file.

`distill label` writes parts and shards; `join` turns them into labels/{split}.parquet with each id
once. `distill route` then overlays the teacher's answers (distill/route.py), kept beside them.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from distill.errors import DataError
from distill.rundir import RunDir
from distill.tasks import Task, build_task

ABSORBED = b"distill.absorbed_parts"  # shard metadata: the part files it replaced


def schema(task: Task) -> pa.Schema:
    label = task.label_type()
    return pa.schema([
        ("id", pa.string()), ("text", pa.string()), *task.input_fields().items(),
        ("label", label), ("confidence", pa.float64()), ("entity_confidence", pa.list_(pa.float64())),
        ("error", pa.string()), ("raw", pa.string()), ("route", pa.string()), ("model", pa.string()),
        ("student", pa.string()), ("student_label", label), ("student_confidence", pa.float64()),
        ("cost_usd", pa.float64()), ("time", pa.timestamp("ms", tz="UTC")),
    ])


def write_table(records: list[dict] | pa.Table, path: Path, task: Task) -> None:
    """Write atomically: a file that exists is complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    table = records if isinstance(records, pa.Table) else pa.Table.from_pylist(records, schema=schema(task))
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def absorbed_by(shard: Path) -> set[str]:
    """Names of the part files a shard replaced (none when it does not exist yet)."""
    if not shard.exists():
        return set()
    return set(json.loads((pq.read_schema(shard).metadata or {}).get(ABSORBED, b"[]")))


def label_files(out_dir: Path) -> list[Path]:
    """The split's shards, and its parts not yet joined into one."""
    shards = sorted(out_dir.glob("shard-*.parquet"))
    absorbed = set().union(*map(absorbed_by, shards))
    parts = [p for p in sorted((out_dir / "parts").glob("*.parquet")) if p.name not in absorbed]
    return shards + parts


def written_ids(out_dir: Path) -> set[str]:
    ids: set[str] = set()
    for path in label_files(out_dir):
        ids.update(pq.read_table(path, columns=["id"]).column("id").to_pylist())
    return ids


def part_path(out_dir: Path, prefix: str, start: int) -> Path:
    """A new part file of a shard: the rows from `start` of a window, named uniquely."""
    return out_dir / "parts" / f"{prefix}-{start:012d}-{uuid.uuid4().hex[:8]}.parquet"


def join_parts(out_dir: Path, prefix: str, task: Task) -> None:
    """This process's parts (and any earlier shard of the same name) become one shard file.
    The shard names the parts it absorbed, so a kill before they are deleted repeats nothing."""
    shard = out_dir / f"{prefix}.parquet"
    absorbed = absorbed_by(shard)
    parts = [p for p in sorted((out_dir / "parts").glob(f"{prefix}-*.parquet")) if p.name not in absorbed]
    if not parts:
        return
    sources = ([shard] if shard.exists() else []) + parts
    names = sorted(absorbed | {p.name for p in parts})
    tmp = shard.with_suffix(".tmp")
    with pq.ParquetWriter(tmp, schema(task).with_metadata({ABSORBED: json.dumps(names).encode()})) as writer:
        for path in sources:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=8192):
                writer.write_batch(batch)
    os.replace(tmp, shard)
    for p in parts:
        p.unlink()


# -- joining ------------------------------------------------------------------------------

def join(cfg, per_rank: list[dict] | None = None) -> dict:
    """Shards of each split -> manifest.json and labels/{split}.parquet, rows in shard order, each
    id once: the student's labels as written. `distill route` overlays the teacher's answers after."""
    run = RunDir(cfg.run_dir)
    task = build_task(cfg.task)
    table_schema = schema(task)
    summary = {"model": None, "world_size": len(per_rank) if per_rank else None}
    for split in cfg.label.splits:
        out_dir = run.label_shards(split)
        files = label_files(out_dir)
        if not files:
            raise DataError(f"{out_dir} has no labels to merge: run distill label recipe={cfg.recipe} first")
        manifest = {"split": split, "files": [{"file": str(p.relative_to(out_dir)), "rows": pq.read_metadata(p).num_rows}
                                              for p in files]}
        manifest["rows"] = sum(f["rows"] for f in manifest["files"])
        (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))

        path = run.labels(split)
        seen, repeats = set(), 0
        with pq.ParquetWriter(path.with_suffix(".tmp"), table_schema) as writer:
            for f in files:
                for batch in pq.ParquetFile(f).iter_batches(batch_size=8192):
                    out = []
                    for row in batch.to_pylist():
                        if row["id"] in seen:
                            repeats += 1
                            continue
                        seen.add(row["id"])
                        out.append(row)
                    writer.write_table(pa.Table.from_pylist(out, schema=table_schema))
                    summary["model"] = summary["model"] or (out[0]["student"] if out else None)
        os.replace(path.with_suffix(".tmp"), path)
        summary[split] = {"rows": len(seen), **tally(path), "repeated_rows_dropped": repeats, "shards": len(files),
                          "cascade": None}
        if per_rank:
            ranks = [r[split] for r in per_rank]
            seconds = max(r["seconds"] for r in ranks)
            summary[split].update(labeled_this_run=sum(r["labeled"] for r in ranks),
                                  skipped_already_written=sum(r["skipped"] for r in ranks),
                                  rows_per_s=round(sum(r["labeled"] for r in ranks) / seconds, 1) if seconds else None)
    if per_rank:
        summary["peak_rss_mb"] = round(max(r["peak_rss_mb"] for r in per_rank), 1)
    return summary


def tally(path: Path) -> dict:
    """Routes, invalid labels and teacher cost of a label file."""
    t = pq.read_table(path, columns=["route", "label", "cost_usd"])
    routes = t.column("route").value_counts().to_pylist()
    return {"invalid": t.column("label").null_count, "routes": {r["values"]: r["counts"] for r in routes},
            "teacher_cost_usd": round(sum(c or 0.0 for c in t.column("cost_usd").to_pylist()), 6)}


def report(summary: dict, run: RunDir, splits) -> None:
    """Write labels/summary.json and print a line per split."""
    run.labels_summary.write_text(json.dumps(summary, indent=2))
    for split in splits:
        print(format_line(split, summary[split], run.labels(split)))


def format_line(split: str, s: dict, path: Path) -> str:
    routes = ", ".join(f"{n} {k}" for k, n in sorted(s["routes"].items()))
    line = f"labels: {s['rows']} {split} rows ({routes}; {s['invalid']} invalid) -> {path}"
    if "labeled_this_run" in s:
        speed = f" at {s['rows_per_s']:.0f} rows/s" if s["rows_per_s"] else ""
        line += f"\n  this run: {s['labeled_this_run']} labeled{speed}, {s['skipped_already_written']} already written"
    if s["repeated_rows_dropped"]:
        line += f"\n  warning: {s['repeated_rows_dropped']} rows repeat an id already labeled and were dropped; " \
                "ids must be unique (check the split's id_column)"
    if s["teacher_cost_usd"]:
        line += f"\n  teacher cost ${s['teacher_cost_usd']:.4f}"
    if (s["cascade"] or {}).get("not_asked"):
        line += (f"\n  {s['cascade']['not_asked']} rows under the threshold keep the student's label until "
                 "distill route sends them to the teacher")
    return line
