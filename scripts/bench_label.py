"""Benchmark bulk labeling: the engine against a naive per-row `generate` loop, same model.

    python scripts/bench_label.py [--out bench_label.json] [--rows 1000] [--naive-rows 100] [--repeats 3]

Trains one demo student (a 6-layer, 256-wide T5 with LoRA, merged for serving) once, then labels
the same corpus two ways:
- engine: `distill label` itself (lazy Arrow reading, length-sorted batches, inference_mode,
  merged weights, one encoder pass per batch and every candidate label scored), including its
  reading and Parquet writing; median of --repeats fresh runs.
- naive: for each row, `model.generate` on its prompt, decode, parse; the first --naive-rows rows,
  median of --repeats passes.
Also: invalid labels from each, peak RSS after the engine runs, FLOPs the engine spends per row
(torch's FlopCounterMode) and the share of this machine's measured fp32 matmul FLOP/s it reaches.
On a CUDA machine the model runs in bf16 and tokens/s are reported beside rows/s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from distill.config import load_config
from distill.data import load_split
from distill.errors import OutputError
from distill.label import label, peak_rss_mb
from distill.students import student_class
from distill.tasks import build_task

MODEL = ["student.tiny.hidden=256", "student.tiny.layers=6", "student.tiny.heads=4"]


def matmul_flops(n: int = 2048, repeats: int = 7) -> float:
    """This machine's fp32 (bf16 on GPU) matmul FLOP/s: the roofline the engine is compared with."""
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if dev == "cuda" else torch.float32
    a, b = torch.randn(n, n, device=dev, dtype=dtype), torch.randn(n, n, device=dev, dtype=dtype)
    times = []
    for _ in range(repeats):
        if dev == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(4):
            a @ b
        if dev == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) / 4)
    return 2 * n**3 / statistics.median(times)


def naive(student, rows: list[dict]) -> tuple[float, int]:
    """Per-row generation: rows/s and how many outputs did not parse into a label."""
    model, tok, task = student.model, student.tokenizer, student.task
    invalid = 0
    start = time.perf_counter()
    with torch.no_grad():
        for row in rows:
            enc = tok(task.student_prompt(row), return_tensors="pt").to(model.device)
            out = model.generate(**enc, max_new_tokens=student.cfg.max_target_length, do_sample=False)
            try:
                task.parse_student(tok.decode(out[0], skip_special_tokens=True), row)
            except OutputError:
                invalid += 1
    return len(rows) / (time.perf_counter() - start), invalid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench_label.json")
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--naive-rows", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--run-dir", default="runs/bench_label")
    args = parser.parse_args()

    # one student, trained once in its own process (rerunning the script reuses it), so the
    # peak RSS below is labeling's alone
    run_dir = Path(args.run_dir)
    base = ["recipe=demo", f"run_dir={run_dir}", *MODEL, "train.epochs=8",
            f"data.demo.sizes.corpus={args.rows}", "label.splits=[corpus]"]
    cfg = load_config(base)
    if not (run_dir / "student" / "student.json").exists():
        subprocess.run([sys.executable, "-m", "distill.cli", "train", *base], check=True)
    task = build_task(cfg.task)

    # engine: the label stage itself, from a fresh labels directory each time
    runs = []
    for _ in range(args.repeats):
        shutil.rmtree(run_dir / "labels", ignore_errors=True)
        start = time.perf_counter()
        summary = label(cfg)
        runs.append({"seconds": time.perf_counter() - start, "rows": summary["corpus"]["rows"],
                     "invalid": summary["corpus"]["invalid"]})
    rss_mb = peak_rss_mb()
    engine_rows_per_s = statistics.median(r["rows"] / r["seconds"] for r in runs)

    # the same merged model, loaded as the engine loads it
    student = student_class(cfg.student).load(cfg.student, task, run_dir / "student")
    rows = list(load_split(cfg, "corpus", task, labels=False))
    prompt_tokens = sum(len(student.tokenizer(task.student_prompt(r))["input_ids"]) for r in rows) / len(rows)
    sample = rows[:256]
    with FlopCounterMode(display=False) as counter:
        student.predict(sample, int(cfg.label.batch_size), progress=False)
    flops_per_row = counter.get_total_flops() / len(sample)
    peak_flops = matmul_flops()
    naive_runs = [naive(student, rows[: args.naive_rows]) for _ in range(args.repeats)]
    naive_rows_per_s, naive_invalid = statistics.median(r for r, _ in naive_runs), max(i for _, i in naive_runs)

    result = {
        "engine_rows_per_s": round(engine_rows_per_s, 1),
        "naive_rows_per_s": round(naive_rows_per_s, 1),
        "speedup": round(engine_rows_per_s / naive_rows_per_s, 2),
        "invalid_labels": max(r["invalid"] for r in runs),
        "naive_invalid_labels": naive_invalid,
        "peak_rss_mb": round(rss_mb, 1),
        "flops_fraction": round(engine_rows_per_s * flops_per_row / peak_flops, 4),
        "engine_tokens_per_s": round(engine_rows_per_s * prompt_tokens, 1),
        "engine_gflops_per_s": round(engine_rows_per_s * flops_per_row / 1e9, 2),
        "machine_matmul_gflops_per_s": round(peak_flops / 1e9, 1),
        "gflops_per_row": round(flops_per_row / 1e9, 4),
        "rows": len(rows), "naive_rows": min(args.naive_rows, len(rows)), "repeats": args.repeats, "naive_runs": naive_runs,
        "batch_size": int(cfg.label.batch_size), "model": {"kind": "seq2seq (T5)", "overrides": MODEL,
                                                          "parameters": sum(p.numel() for p in student.model.parameters())},
        "labels": task.labels, "mean_prompt_tokens": round(prompt_tokens, 1),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                    "dtype": str(next(student.model.parameters()).dtype)},
        "engine_runs": runs,
    }
    Path(args.out).write_text(json.dumps(result, indent=2))

    print(f"\nbulk labeling, {result['rows']} rows, {result['model']['parameters'] / 1e6:.1f}M-parameter T5 "
          f"({result['machine']['cuda'] or f'{os.cpu_count()} CPUs'})")
    print(f"{'':<22}{'rows/s':>10}{'invalid':>9}")
    print(f"{'engine (median)':<22}{engine_rows_per_s:>10.1f}{result['invalid_labels']:>9}")
    print(f"{'naive generate loop':<22}{naive_rows_per_s:>10.1f}{naive_invalid:>9}")
    for k in ("speedup", "engine_tokens_per_s", "peak_rss_mb", "gflops_per_row", "engine_gflops_per_s",
              "machine_matmul_gflops_per_s", "flops_fraction"):
        print(f"{k:<30}{result[k]:>12}")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
