"""Benchmark the built-in demo loop: seconds per stage and quality against gold.

    python scripts/bench_demo.py [--out bench_demo.json] [--repeats 3] [key=value ...]

Each repeat runs teach → train → label → monitor in a fresh run directory and times each stage;
the JSON holds every repeat and the medians, and a table is printed. Extra key=value arguments
override the recipe (e.g. student=tiny_causal).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from distill.config import load_config
from distill.label import label
from distill.monitor import monitor
from distill.teach import teach
from distill.train import train

STAGES = {"teach": teach, "train": train, "label": label, "monitor": monitor}


def one_run(recipe: str, overrides: list[str], run_dir: Path) -> dict:
    cfg = load_config([f"recipe={recipe}", f"run_dir={run_dir}", *overrides])
    seconds, report = {}, None
    for name, stage in STAGES.items():
        start = time.perf_counter()
        report = stage(cfg)
        seconds[name] = time.perf_counter() - start
    seconds["total"] = sum(seconds.values())
    systems = report["systems"]
    key = "accuracy" if "accuracy" in systems["student"] else "f1"
    return {"seconds": seconds, "metric": key, "quality": {name: m[key] for name, m in systems.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench_demo.json")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--recipe", default="demo")
    args, overrides = parser.parse_known_args()

    runs = []
    for i in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(one_run(args.recipe, overrides, Path(tmp) / "run"))
    medians = {k: statistics.median(r["seconds"][k] for r in runs) for k in runs[0]["seconds"]}
    quality = {k: statistics.median(r["quality"][k] for r in runs) for k in runs[0]["quality"]}
    result = {"recipe": args.recipe, "overrides": overrides, "repeats": args.repeats,
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                          "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None},
              "median_seconds": medians, "median_quality": quality, "runs": runs}
    Path(args.out).write_text(json.dumps(result, indent=2))

    print(f"\ndemo loop, recipe {args.recipe}, median of {args.repeats} ({os.cpu_count()} CPUs)")
    print(f"{'stage':<10}{'seconds':>10}")
    for k, v in medians.items():
        print(f"{k:<10}{v:>10.1f}")
    print(f"\n{'system':<20}{runs[0]['metric']:>10}")
    for k, v in quality.items():
        print(f"{k:<20}{v:>10.3f}")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
