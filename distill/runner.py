"""Running one stage: load the config, clear half-written files, turn bad input into one message.

Every stage's `main()` and the `distill` command call `run_stage`; stages never import the CLI.
"""

from __future__ import annotations

import errno
import gc
import os
import sqlite3
import sys
import warnings
from pathlib import Path

from distill.errors import ConfigError, DistillError

# deprecation notices from inside the libraries are not the user's to act on
warnings.filterwarnings("ignore", category=FutureWarning)


def run_stage(fn, argv: list[str]):
    """Load the config, run one stage; bad input ends with one clear message and exit status 2, a
    monitor alert (at monitor.fail_on or worse) with exit status 1."""
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
