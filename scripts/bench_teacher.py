"""Teacher engine throughput against the simulator: 200 ms latency, a 50 requests/s server limit.

    python scripts/bench_teacher.py [--out bench_teacher.json] [--rows 2000] [--repeats 3]

Each repeat labels `rows` demo texts with a fresh cache (concurrency 16, client limit 3000 rpm),
then labels them again into a new file from the cache alone, and labels a slice one request at a
time for the sequential baseline. Writes the median of each figure (and every repeat) as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill.config import load_config
from distill.data import load_split, prepare_data, read_jsonl
from distill.tasks import build_task
from distill.teacher import Simulator, Teacher

LATENCY, LIMIT, CONCURRENCY = 0.2, 50, 16


def once(rows: int, sequential_rows: int, tmp: Path) -> dict:
    cfg = load_config(["recipe=demo", f"run_dir={tmp}"])
    prepare_data(cfg)
    task = build_task(cfg.task)
    # the demo's texts, numbered to make `rows` distinct requests
    base = list(load_split(cfg, "seed", task))
    data = [{"id": f"row-{i}", "text": f"{r['text']} (item {i})", "label": r["label"]}
            for i, r in ((i, base[i % len(base)]) for i in range(rows))]
    sim_cfg = {**cfg.teacher.sim, "latency": LATENCY, "rate_limit": LIMIT}
    teacher_cfg = OmegaConf.merge(cfg.teacher, {"concurrency": CONCURRENCY, "rpm": LIMIT * 60})
    with Simulator(task, data, sim_cfg) as sim:
        teacher = Teacher(teacher_cfg, task, base_url=sim.base_url, simulated=True, cache_path=tmp / "cache.sqlite")
        start = time.perf_counter()
        teacher.label(data, tmp / "labels.jsonl", "teacher: concurrent")
        seconds = time.perf_counter() - start
        first = sim.stats()

        start = time.perf_counter()
        teacher.label(data, tmp / "labels_from_cache.jsonl", "teacher: from cache")
        cache_seconds = time.perf_counter() - start
        cache_billed = sim.stats()["billed"] - first["billed"]

        seq = Teacher(OmegaConf.merge(teacher_cfg, {"concurrency": 1}), task, base_url=sim.base_url,
                      simulated=True, cache_path=tmp / "cache_sequential.sqlite")
        start = time.perf_counter()
        seq.label(data[:sequential_rows], tmp / "labels_sequential.jsonl", "teacher: sequential")
        sequential_seconds = time.perf_counter() - start

    ids = Counter(r["id"] for r in read_jsonl(tmp / "labels.jsonl"))
    return {
        "rows": rows, "seconds": round(seconds, 3), "rows_per_s": round(rows / seconds, 2),
        "bound_rows_per_s": min(CONCURRENCY / LATENCY, LIMIT),
        "sequential_rows_per_s": round(sequential_rows / sequential_seconds, 2),
        "lost_rows": len({r["id"] for r in data} - set(ids)) + sum(c - 1 for c in ids.values()),
        "duplicate_billed_requests": sim.stats()["duplicate_billed"],
        "billed_requests": first["billed"], "rate_limited_429": first["faults"].get("rate_limit", 0),
        "cache_rerun_rows_per_s": round(rows / cache_seconds, 1), "cache_rerun_billed_requests": cache_billed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench_teacher.json")
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--sequential-rows", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    runs = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(once(args.rows, args.sequential_rows, Path(tmp)))
    result = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    result.update(latency_s=LATENCY, server_limit_rps=LIMIT, concurrency=CONCURRENCY, repeats=runs)
    Path(args.out).write_text(json.dumps(result, indent=2))

    print(f"\nteacher engine, {args.rows} rows, {LATENCY * 1000:.0f} ms latency, {LIMIT} req/s limit "
          f"(median of {args.repeats})")
    for key in ("seconds", "rows_per_s", "bound_rows_per_s", "sequential_rows_per_s", "lost_rows",
                "duplicate_billed_requests", "rate_limited_429", "cache_rerun_rows_per_s",
                "cache_rerun_billed_requests"):
        print(f"  {key:<28} {result[key]:>10}")
    print(f"  rows_per_s / bound            {result['rows_per_s'] / result['bound_rows_per_s']:>10.3f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
