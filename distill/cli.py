"""`distill teach|train|label|monitor|run recipe=NAME [key=value ...]`."""

from __future__ import annotations

import errno
import os
import sqlite3
import sys
import warnings
from pathlib import Path

from distill.errors import ConfigError, DistillError

# deprecation notices from inside the libraries are not the user's to act on
warnings.filterwarnings("ignore", category=FutureWarning)

USAGE = """usage: distill STAGE recipe=NAME [key=value ...]

stages:
  teach     the teacher labels the seed pool (and the gold texts, for scoring)
  train     fine-tune the student on the teacher's labels, calibrate and export it
            (teaches first if needed; a rerun resumes from the last checkpoint)
  label     the student labels the corpus and the gold texts (sharded by accelerate launch,
            resumable); label.threshold=X sends unsure corpus rows to the teacher or to review
  merge     join the label shards into labels/{corpus,gold}.parquet (label does it at the end);
            never asks the teacher
  cascade   pick label.threshold on gold for label.target at the least teacher cost, plot it
  monitor   score student and teacher against human gold with CIs, test for drift against a
            baseline, record the run, write monitor/report.html; exits 1 on an alert
  run       teach, train, label and monitor, in order (exits 0 on alerts: gate on distill monitor)
  audit     model-collapse audit: students retrained on students' labels for N generations, with
            generations=5 strategies=[replace,accumulate,anchor] anchor_fraction=0.1; writes
            audit/audit.json and audit/audit.html with a verdict per strategy; resumable
  simulate  serve the recipe's simulated teacher over HTTP (teacher.sim.port=8000)

Any key=value overrides the recipe, e.g. train.epochs=3 teacher.model=gpt-4o-mini.
Multi-process training: accelerate launch [--config_file configs/accelerate/X.yaml] distill/train.py recipe=NAME
Multi-process labeling: accelerate launch --num_processes N distill/label.py recipe=NAME"""


def run_stage(fn, argv: list[str]):
    """Load the config, run one stage; bad input ends with one clear message and exit status 2, a
    monitor alert (at monitor.fail_on or worse) with exit status 1."""
    from distill.config import load_config
    from distill.data import remove_leftovers

    try:
        cfg = load_config(argv)
        if Path(cfg.run_dir).exists() and not Path(cfg.run_dir).is_dir():
            raise ConfigError(f"run_dir {cfg.run_dir} is a file, not a directory")
        if os.environ.get("RANK", "0") == "0":  # before any rank writes: the others wait on rank 0
            if leftovers := remove_leftovers(Path(cfg.run_dir)):
                print(f"distill: removed {len(leftovers)} half-written file(s) a stopped run left behind: "
                      + ", ".join(str(p) for p in leftovers[:3]), file=sys.stderr)
        result = fn(cfg)
    except DistillError as e:
        print(f"distill: error: {e}", file=sys.stderr)
        sys.exit(2)
    except (OSError, sqlite3.OperationalError) as e:
        if not _disk_error(e):
            raise
        where = getattr(e, "filename", None) or "the run directory"
        print(f"distill: error: cannot write {where}: {getattr(e, 'strerror', None) or e}. Everything written "
              f"before is kept; free space or make the directory writable, then rerun.", file=sys.stderr)
        sys.exit(2)
    if isinstance(result, dict) and result.get("exit_status"):
        sys.exit(result["exit_status"])  # the monitor raised an alert: fail cron and CI gates
    return result


def _disk_error(e: Exception) -> bool:
    """A full or read-only disk (from the OS, or from SQLite, which reports it in words)."""
    if isinstance(e, sqlite3.OperationalError):
        return any(w in str(e) for w in ("disk is full", "readonly database", "disk I/O error"))
    return e.errno in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT)


def run_all(cfg) -> dict:
    from distill.label import label
    from distill.monitor import monitor
    from distill.teach import teach
    from distill.train import train

    summary = teach(cfg)
    if summary.get("dry_run") or summary.get("stopped"):
        return summary  # an estimate only, or the budget ran out: nothing more to do
    train(cfg, teach_first=False)
    label(cfg)
    # the run itself succeeded: alerts are printed and recorded; gate cron and CI on `distill monitor`
    return {**monitor(cfg), "exit_status": 0}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    stage, rest = argv[0], argv[1:]
    from distill.audit import audit
    from distill.cascade import cascade
    from distill.label import label, merge
    from distill.monitor import monitor
    from distill.teach import teach
    from distill.teacher.simulator import serve
    from distill.train import train

    stages = {"teach": teach, "train": train, "label": label, "merge": merge, "cascade": cascade,
              "monitor": monitor, "run": run_all, "audit": audit, "simulate": serve}
    if stage not in stages:
        print(f"distill: error: unknown stage {stage!r}; choose one of: {', '.join(stages)}\n\n{USAGE}",
              file=sys.stderr)
        sys.exit(2)
    run_stage(stages[stage], rest)


if __name__ == "__main__":
    main()
