"""Teach stage: the teacher labels the seed pool (training data) and the gold texts (for scoring).

    distill teach recipe=NAME
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from distill.config import save_config
from distill.data import check_held_out, load_split, read_jsonl
from distill.demo import write_demo
from distill.tasks import build_task
from distill.teacher import open_teacher
from distill.teacher.client import label_summary


def prepare_data(cfg) -> None:
    """Write the built-in demo data when the recipe asks for it and it is not there yet."""
    if cfg.data.get("demo"):
        write_demo(cfg.data.demo.name, Path(cfg.data.demo.dir), dict(cfg.data.demo.sizes), cfg.seed)


def teach(cfg) -> dict:
    run_dir = Path(cfg.run_dir)
    save_config(cfg, run_dir)
    task = build_task(cfg.task)
    prepare_data(cfg)

    # data: the seed pool is what the student learns from; gold must be held out from it
    seed = load_split(cfg, "seed", task)
    gold = load_split(cfg, "gold", task, labels=True)
    check_held_out(gold["text"], seed["text"], "seed pool")

    # label: the seed pool, and the gold texts so the monitor can score the teacher too;
    # the teacher is only contacted when some row is still unlabeled
    jobs = {"seed": (seed, "teacher: seed pool")}
    if cfg.monitor.score_teacher:
        jobs["gold"] = (gold, "teacher: gold texts")
    paths = {name: run_dir / "teacher" / f"{name}.jsonl" for name in jobs}
    records = {name: read_jsonl(path) for name, path in paths.items()}
    pending = [name for name, (rows, _) in jobs.items()
               if set(rows["id"]) - {r["id"] for r in records[name]}]
    new = dict.fromkeys(jobs, 0)
    if pending:
        sim_rows = [*gold, *seed] if cfg.teacher.simulated else []
        with open_teacher(cfg.teacher, task, sim_rows) as teacher:
            for name in pending:
                new[name] = teacher.label(jobs[name][0], paths[name], jobs[name][1])
                records[name] = read_jsonl(paths[name])
    # provenance comes from the rows: labels made earlier by a simulated teacher stay marked so
    simulated = any(r["simulated"] for rows in records.values() for r in rows)
    summary = {"model": cfg.teacher.model, "simulated": simulated,
               **{name: {**label_summary(rows), "new_requests": new[name]} for name, rows in records.items()}}
    if simulated:
        summary["sim"] = {"accuracy": cfg.teacher.sim.accuracy}
    (run_dir / "teacher" / "summary.json").write_text(json.dumps(summary, indent=2))
    seed_summary = summary["seed"]
    print(f"teacher {cfg.teacher.model}{' (simulated)' if simulated else ''}: "
          f"{seed_summary['labeled']}/{seed_summary['rows']} seed rows labeled, errors {seed_summary['errors'] or 'none'}")
    return summary


def main(argv: list[str] | None = None) -> None:
    from distill.cli import run_stage

    run_stage(teach, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
