"""Running one stage: its --help, quiet libraries (unless --verbose), load the config, clear
half-written files, turn bad input into one message.

Every stage's `main()` and the `distill` command call `run_stage`; stages never import the CLI.
"""

from __future__ import annotations

import errno
import gc
import os
import sqlite3
import sys
import textwrap
import warnings
from pathlib import Path

from distill.errors import ConfigError, DistillError

OPTIONS = """options:
  --recipes DIR   search DIR for recipes (and config groups) before the ones distill ships
  --verbose       show the libraries' own output too: transformers' warnings and load reports,
                  the Trainer's losses every train.logging_steps, every progress bar redraw
  -h, --help      this help"""

# what each stage reads and writes (run-directory paths) and its main keys: printed by
# `distill STAGE --help` before torch or transformers is imported
STAGE_HELP = {
    "teach": ("the teacher labels the seed pool (training data) and the gold texts (for scoring)",
              "data.seed, data.gold (texts; a recipe's demo data is written first)",
              "teacher/seed.jsonl, teacher/gold.jsonl, teacher/summary.json, teacher/cache.sqlite",
              "teacher.model teacher.budget_usd teacher.dry_run=true (cost estimate only) "
              "teacher.concurrency monitor.score_teacher"),
    "train": ("fine-tune the student on the teacher's labels, calibrate and export it (teaches first if "
              "needed; a rerun resumes from the last checkpoint)",
              "teacher/seed.jsonl (or train.rows=FILE.jsonl), data.gold (kept out of training)",
              "student/ (adapter/ or merged/, checkpoints/, calibration.json, student.json, model card)",
              "student=NAME train.epochs train.lr train.batch_size train.max_steps train.class_balance "
              "train.clean.method train.logging_steps"),
    "label": ("the student labels the corpus and the gold texts, sharded across processes, resumable; "
              "never asks the teacher",
              "student/, data.corpus, data.gold (and labels/teacher/corpus.jsonl when routing is set)",
              "labels/{corpus,gold}/shard-*.parquet, then labels/corpus.parquet, labels/gold.parquet, "
              "labels/summary.json",
              "label.batch_size label.batch_tokens label.window label.splits"),
    "merge": ("join the label shards into one table per split (label does it at the end); never asks "
              "the teacher",
              "labels/{corpus,gold}/shard-*.parquet, labels/teacher/corpus.jsonl (routed answers)",
              "labels/corpus.parquet, labels/gold.parquet, labels/summary.json",
              "label.splits"),
    "cascade": ("replay routing on gold: pick the confidence threshold under which rows go to the "
                "teacher, reaching label.target at the least teacher cost; never asks the teacher",
                "labels/gold.parquet (label), teacher/gold.jsonl (teach), data.gold",
                "cascade/threshold.json (read by label.threshold=auto), cascade/curve.json, cascade/curve.png",
                "label.target=0.95 label.target_metric=main|macro_f1|worst_recall; "
                "then: distill route recipe=NAME label.threshold=auto"),
    "route": ("after label: send the corpus rows the student is unsure of to the teacher, or to review "
              "files, plus a random audit slice to the teacher",
              "labels/corpus/ (label), cascade/threshold.json (with label.threshold=auto)",
              "labels/teacher/corpus.jsonl, labels/teacher/audit.jsonl, labels/review/, labels/corpus.parquet",
              "label.threshold=X|auto label.route_fraction=F label.route_budget_usd=USD "
              "label.route=teacher|review label.audit_fraction teacher.budget_usd"),
    "monitor": ("score student and teacher against human gold with CIs, test for drift against a "
                "baseline, record the run; exits 1 on an alert at monitor.fail_on",
                "labels/gold.parquet, labels/corpus.parquet, teacher/gold.jsonl, data.gold, "
                "monitor/history.sqlite",
                "monitor/metrics.json, monitor/report.html, monitor/history.sqlite",
                "monitor.baseline=auto|previous|teacher|none|RUN_DIR monitor.fail_on=warning|critical|never "
                "monitor.power=true"),
    "run": ("teach, train, label, route (when routing or an audit slice is set) and monitor, in one go "
            "(exits 0 on alerts: gate on distill monitor)",
            "what teach, train, label, route and monitor read",
            "what they write: teacher/, student/, labels/, monitor/",
            "any stage's keys: teacher.model student=NAME train.epochs label.threshold monitor.baseline"),
    "audit": ("model-collapse audit: students retrained on students' labels for N generations, a "
              "verdict per retraining strategy; resumable",
              "teacher/seed.jsonl (teaches first if needed), data.corpus, data.gold",
              "audit/gen0/, audit/STRATEGY/genK/ (a run directory each), audit/audit.json, audit/audit.html",
              "audit.generations=5 audit.strategies=[replace,accumulate,anchor] audit.anchor_fraction=0.1"),
    "grow": ("training data from the taxonomy: the teacher writes texts per label, a student finds "
             "matching corpus rows, the teacher judges them yes/no, round by round; resumable",
             "task.labels and task.guidelines, data.corpus, data.gold",
             "grow/ (synthetic.jsonl, judgments.jsonl, ledger.json, grow.json, round{k}/), "
             "the last student to student/",
             "grow.rounds grow.top grow.explore grow.texts grow.min_gain teacher.budget_usd"),
    "refine": ("rounds that send the least sure corpus rows to the teacher and retrain the student on "
               "every answer so far",
               "teacher/seed.jsonl (teaches first if needed), data.corpus",
               "refine/corpus.parquet, refine/ledger.json, refine/round{k}/, the last student to student/",
               "refine.rounds=2 refine.fraction=0.2 refine.explore refine.min_gain label.audit_fraction"),
    "shortlist": ("pick task.shortlist=K, the labels offered per row, on gold",
                  "data.gold, student/ (when trained; else the student's base model)",
                  "shortlist/shortlist.json, shortlist/shortlist.png",
                  "task.shortlist_target=0.95"),
    "simulate": ("serve the recipe's simulated teacher over HTTP on loopback, answering from the "
                 "recipe's labeled data",
                 "data.seed, data.corpus, data.gold (their labels)",
                 "nothing (serves until stopped)",
                 "teacher.sim.port=8000 teacher.sim.accuracy teacher.sim.latency teacher.sim.error_rate"),
}
STAGE_OF = {"run_all": "run", "serve": "simulate"}  # a stage's function name, where it differs


def stage_help(stage: str) -> str:
    if stage not in STAGE_HELP:
        return f"usage: distill {stage} recipe=NAME [key=value ...]\n{OPTIONS}"
    what, reads, writes, keys = STAGE_HELP[stage]
    fields = [("", what), ("reads:   ", reads), ("writes:  ", writes), ("keys:    ", keys)]
    wrapped = [textwrap.fill(text, 100, initial_indent=head, subsequent_indent=" " * len(head)) for head, text in fields]
    return (f"usage: distill {stage} recipe=NAME [key=value ...] [--recipes DIR] [--verbose]\n\n{wrapped[0]}\n\n"
            + "\n".join(wrapped[1:])
            + "\n\nFiles are in the run directory (run_dir=..., default runs/RECIPE). Any key=value overrides the\n"
            f"recipe; distill recipes lists the recipes and config options.\n{OPTIONS}")


def before_imports(stage: str, argv: list[str]) -> None:
    """What an entry point does before torch, transformers and tqdm are imported (tqdm reads its
    TQDM_* variables then): `-h`/`--help` anywhere prints the stage's help and exits 0 (a
    key=value never looks like either); otherwise, unless --verbose, the libraries are quieted."""
    if "-h" in argv or "--help" in argv:
        print(stage_help(stage))
        sys.exit(0)
    if "--verbose" not in argv:
        quiet_libraries()


def quiet_libraries() -> None:
    """transformers logs errors only (no LOAD REPORT for a head meant to be new, no deprecation
    notices), and progress bars redraw at most every 30 s into a log file, transformers' own not at all
    (a terminal still gets live bars). A variable the user set wins."""
    warnings.filterwarnings("ignore", category=FutureWarning)  # notices from inside the libraries
    if "TRANSFORMERS_VERBOSITY" not in os.environ:
        os.environ["TRANSFORMERS_VERBOSITY"] = "error"  # read when transformers is first imported
        if "transformers" in sys.modules:  # imported already (python -m distill.monitor)
            sys.modules["transformers"].logging.set_verbosity_error()
    if not sys.stderr.isatty():
        os.environ.setdefault("TQDM_MININTERVAL", "30")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' loading and saving bars


def run_stage(fn, argv: list[str]):
    """Load the config, run one stage; bad input ends with one clear message and exit status 2, a
    monitor alert (at monitor.fail_on or worse) with exit status 1."""
    before_imports(STAGE_OF.get(fn.__name__, fn.__name__), argv)  # again: not every entry point calls it first
    argv = [a for a in argv if a != "--verbose"]
    from distill.config import load_config
    from distill.data import remove_leftovers

    try:
        cfg = load_config(take_recipes_option(argv))
        if Path(cfg.run_dir).exists() and not Path(cfg.run_dir).is_dir():
            raise ConfigError(f"run_dir {cfg.run_dir} is a file, not a directory")
        if os.environ.get("RANK", "0") == "0":  # before any rank writes: the others wait on rank 0
            if leftovers := remove_leftovers(Path(cfg.run_dir)):
                print(f"distill: removed {len(leftovers)} half-written file(s) a stopped run left behind: "
                      + ", ".join(str(p) for p in leftovers[:3]), file=sys.stderr)
        # what is loaded by now lives as long as the process: later collections (each round frees
        # its models) need not walk it again
        gc.freeze()
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


def take_recipes_option(argv: list[str]) -> list[str]:
    """Drop `--recipes DIR` (or `--recipes=DIR`) from argv, putting DIR first in DISTILL_RECIPES so
    that processes the stage starts search it too."""
    rest, dirs, args = [], [], iter(argv)
    for a in args:
        if a == "--recipes" or a.startswith("--recipes="):
            d = a.partition("=")[2] or next(args, None)
            if not d:
                raise ConfigError("--recipes needs a folder: --recipes DIR")
            if not Path(d).is_dir():
                raise ConfigError(f"--recipes {d}: no such folder")
            dirs.append(str(Path(d).resolve()))
        else:
            rest.append(a)
    if dirs:
        os.environ["DISTILL_RECIPES"] = os.pathsep.join([*dirs, *filter(None, [os.environ.get("DISTILL_RECIPES")])])
    return rest


def _disk_error(e: Exception) -> bool:
    """A full or read-only disk (from the OS, or from SQLite, which reports it in words)."""
    if isinstance(e, sqlite3.OperationalError):
        return any(w in str(e) for w in ("disk is full", "readonly database", "disk I/O error"))
    return e.errno in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT)
