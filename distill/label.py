"""Label stage: the trained student labels the corpus, and the gold texts for the monitor.

    distill label recipe=NAME

Writes labels/corpus.parquet and labels/gold.parquet: one row per input row with the label,
its confidence, an error type when the output was invalid, and the student's identity.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from distill.data import load_split, write_parquet
from distill.students import student_class
from distill.tasks import build_task
from distill.teach import prepare_data


def label(cfg) -> dict:
    run_dir = Path(cfg.run_dir)
    task = build_task(cfg.task)
    prepare_data(cfg)
    student = student_class(cfg.student).load(cfg.student, task, run_dir / "student")
    meta = student.meta
    identity = f"{meta['name']}+{'full' if meta['method'] == 'full' else 'lora'}:{meta['adapter_hash']}"

    summary = {}
    for split in ("corpus", "gold"):
        rows = list(load_split(cfg, split, task, labels=False))
        start = time.perf_counter()
        preds = student.predict(rows, cfg.label.batch_size)
        seconds = time.perf_counter() - start
        out = []
        for row, pred in zip(rows, preds):
            record = {"id": row["id"], "text": row["text"], **pred, "source": "student", "model": identity}
            if "tokens" in row:
                record["tokens"] = row["tokens"]
            out.append(record)
        write_parquet(out, run_dir / "labels" / f"{split}.parquet")
        summary[split] = {"rows": len(out), "invalid": sum(p["label"] is None for p in preds),
                          "rows_per_s": len(out) / seconds if seconds else None}
        print(f"student (temperature {student.temperature}) labeled {len(out)} {split} rows ({summary[split]['rows_per_s']:.0f} rows/s) "
              f"-> {run_dir / 'labels' / f'{split}.parquet'}")
    (run_dir / "labels" / "summary.json").write_text(json.dumps({"model": identity, **summary}, indent=2))
    return summary


def main(argv: list[str] | None = None) -> None:
    from distill.cli import run_stage

    run_stage(label, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
