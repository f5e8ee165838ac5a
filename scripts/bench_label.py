"""Benchmark bulk labeling at three real students' shapes: `distill label` against what a user
would write instead, on the same model, in the same run.

    python scripts/bench_label.py --out bench_label.json --rows 200000          # a GPU
    python scripts/bench_label.py --out bench_label.json --rows 3000 --baseline-rows 384   # 2 CPUs

Shapes (scripts/shapes.py): encoder at all-MiniLM-L6-v2's, seq2seq at t5-base's, causal at
SmolLM2-135M's, with random weights (speed depends on the shape, not the weights) and a word-level
tokenizer. The corpus is the bulk demo (`data.demo.name=topic_bulk`): --rows unique news-like rows
of 1 to 6 sentences, 4 topics. For each shape:
- engine: `distill label` itself, timed over its labeling loop (reading, tokenizing, labeling and
  Parquet writing; not the model load); median of --repeats fresh runs.
- baseline: what a user writes with transformers: for the encoder a `pipeline("text-classification")`
  over a `KeyDataset`; for seq2seq and causal students batched greedy `generate` (left padding for
  the causal one) with max_new_tokens = the longest label + EOS, then parsing the text. Rows in
  corpus order, on the first --baseline-rows rows, at each of --baseline-batch-sizes; the best kept.
- flops_fraction: the useful FLOPs per row (torch's FlopCounterMode over the engine's own predict,
  one row at a time so that no padding counts) times the engine's rows/s, over this machine's
  measured matmul rate (bf16 on a GPU, fp32 on a CPU).
- invalid_labels: engine rows without a valid label (the baseline's are reported beside it; with
  random weights a generated text is rarely a label, which is why the engine scores candidates).
Writes {"encoder": {...}, "seq2seq": {...}, "causal": {...}, "machine": {...}} and prints a table.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
import shapes  # noqa: E402

from distill.config import load_config  # noqa: E402
from distill.data import load_split, prepare_data  # noqa: E402
from distill.errors import OutputError  # noqa: E402
from distill.label import label, peak_rss_mb  # noqa: E402
from distill.students import student_class  # noqa: E402
from distill.students.base import default_dtype, weights_hash  # noqa: E402
from distill.tasks import build_task  # noqa: E402

GPU = torch.cuda.is_available()


def sync() -> None:
    if GPU:
        torch.cuda.synchronize()


def matmul_flops(repeats: int = 5) -> float:
    """This machine's matmul FLOP/s (bf16 on a GPU, fp32 on a CPU): the best median over a few
    square sizes, the roofline the engine is held against."""
    dev, dtype = ("cuda", torch.bfloat16) if GPU else ("cpu", torch.float32)
    best = 0.0
    for n in (4096, 8192) if GPU else (1024, 2048, 3072):
        a, b = torch.randn(n, n, device=dev, dtype=dtype), torch.randn(n, n, device=dev, dtype=dtype)
        a @ b
        times = []
        for _ in range(repeats):
            sync()
            start = time.perf_counter()
            for _ in range(4):
                a @ b
            sync()
            times.append((time.perf_counter() - start) / 4)
        best = max(best, 2 * n**3 / statistics.median(times))
    return best


def setup(kind: str, root: Path, rows: int, batch_size: int, batch_tokens: int):
    """The run directory of one shape: the bulk corpus, and a saved 'trained' student of that shape."""
    run_dir = root / kind
    corpus = root / f"data-{rows}"  # one corpus for every shape
    cfg = load_config([
        "recipe=demo", f"run_dir={run_dir}", "data.demo.name=topic_bulk", f"data.demo.dir={corpus}",
        f"data.demo.sizes.corpus={rows}", "data.demo.sizes.seed=16", "data.demo.sizes.gold=16",
        f"data.seed.path={corpus}/seed.jsonl", f"data.corpus.path={corpus}/corpus.jsonl",
        f"data.gold.path={corpus}/gold.jsonl", "label.splits=[corpus]", shapes.SHAPES[kind]["config"],
        "student.tiny=null", f"student.model={run_dir}/student/merged", f"label.batch_size={batch_size}",
        f"label.batch_tokens={batch_tokens}", f"label.window={max(8192, 8 * batch_size)}"])
    prepare_data(cfg)
    task = build_task(cfg.task)
    student_dir = run_dir / "student"
    if not (student_dir / "student.json").exists():
        texts = [json.loads(line)["text"] for line, _ in zip(open(corpus / "corpus.jsonl"), range(20000))]
        head = {"id2label": dict(enumerate(task.labels)), "label2id": {lab: i for i, lab in enumerate(task.labels)}}
        shapes.write_model(kind, student_dir / "merged", texts + [" ".join(task.labels)],
                           **(head if kind == "encoder" else {}))
        (student_dir / "student.json").write_text(json.dumps({
            "kind": kind, "name": f"random-{shapes.SHAPES[kind]['name']}-shape", "method": "full", "merged": True,
            "adapter_hash": weights_hash(student_dir / "merged")}))
        (student_dir / "calibration.json").write_text(json.dumps({"temperature": 1.0}))
    return cfg, task


def engine(cfg, repeats: int) -> dict:
    runs = []
    for _ in range(repeats):
        shutil.rmtree(Path(cfg.run_dir) / "labels", ignore_errors=True)
        summary = label(cfg)["corpus"]
        runs.append({"rows_per_s": summary["rows_per_s"], "invalid": summary["invalid"], "rows": summary["rows"]})
        gc.collect()
    return {"rows_per_s": statistics.median(r["rows_per_s"] for r in runs),
            "invalid": max(r["invalid"] for r in runs), "runs": runs}


def baseline(kind: str, student, rows: list[dict], batch_size: int) -> tuple[float, int]:
    """What a user writes: rows/s and how many outputs were not a label."""
    from transformers import pipeline
    from transformers.pipelines.pt_utils import KeyDataset

    import datasets

    model, tok, task = student.model, student.tokenizer, student.task
    invalid = 0
    sync()
    start = time.perf_counter()
    if kind == "encoder":
        pipe = pipeline("text-classification", model=model, tokenizer=tok, device=model.device)
        data = KeyDataset(datasets.Dataset.from_dict({"text": [r["text"] for r in rows]}), "text")
        for out in pipe(data, batch_size=batch_size, truncation=True, max_length=student.cfg.max_source_length):
            invalid += out["label"] not in task.labels
    else:
        longest = max(len(tok(" " + t, add_special_tokens=False)["input_ids"]) for t in student.candidate_targets) + 1
        tok.padding_side = "left" if kind == "causal" else "right"
        with torch.inference_mode():
            for s in range(0, len(rows), batch_size):
                batch = rows[s : s + batch_size]
                enc = tok([task.student_prompt(r) for r in batch], padding=True, truncation=True,
                          max_length=student.cfg.max_source_length, return_tensors="pt").to(model.device)
                out = model.generate(**enc, max_new_tokens=longest, do_sample=False, num_beams=1,
                                     pad_token_id=tok.pad_token_id)
                if kind == "causal":
                    out = out[:, enc["input_ids"].shape[1]:]
                for row, text in zip(batch, tok.batch_decode(out, skip_special_tokens=True)):
                    try:
                        task.parse_student(text, row)
                    except OutputError:
                        invalid += 1
    sync()
    return len(rows) / (time.perf_counter() - start), invalid


def measure(kind: str, args, peak: float) -> dict:
    cfg, task = setup(kind, Path(args.run_dir), args.rows, args.batch_size, args.batch_tokens)
    eng = engine(cfg, args.repeats)
    rss = peak_rss_mb()

    # the same saved model, as the engine loads it (bf16 on a GPU)
    student = student_class(cfg.student).load(cfg.student, task, Path(cfg.run_dir) / "student")
    rows = list(load_split(cfg, "corpus", task, labels=False).select(range(min(args.baseline_rows, args.rows))))
    ids = student.input_ids(rows)
    tokens = statistics.mean(map(len, ids))
    # useful work: one row a batch, so no padding is counted
    sample = rows[:64]
    with FlopCounterMode(display=False) as counter:
        student.predict(sample, 1, progress=False)
    flops_per_row = counter.get_total_flops() / len(sample)
    base = {}
    for bs in args.baseline_batch_sizes:
        baseline(kind, student, rows[: 2 * bs], bs)  # warm-up: kernels, allocator
        base[bs] = baseline(kind, student, rows, bs)
        print(f"  {kind} baseline batch {bs}: {base[bs][0]:.1f} rows/s", file=sys.stderr)
    best = max(base, key=lambda bs: base[bs][0])
    params = sum(p.numel() for p in student.model.parameters())
    del student
    gc.collect()
    if GPU:
        torch.cuda.empty_cache()
    return {
        "engine_rows_per_s": round(eng["rows_per_s"], 1),
        "baseline_rows_per_s": round(base[best][0], 1),
        "speedup": round(eng["rows_per_s"] / base[best][0], 2),
        "flops_fraction": round(eng["rows_per_s"] * flops_per_row / peak, 4),
        "invalid_labels": eng["invalid"],
        "baseline_invalid_labels": base[best][1],
        "baseline": "pipeline('text-classification')" if kind == "encoder" else "batched model.generate",
        "baseline_batch_size": best,
        "baseline_by_batch_size": {str(bs): round(r, 1) for bs, (r, _) in base.items()},
        "baseline_rows": len(rows),
        "engine_gflops_per_s": round(eng["rows_per_s"] * flops_per_row / 1e9, 1),
        "gflops_per_row": round(flops_per_row / 1e9, 4),
        "mean_input_tokens": round(tokens, 1),
        "engine_tokens_per_s": round(eng["rows_per_s"] * tokens, 1),
        "peak_rss_mb": round(rss, 1),
        **({"peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)} if GPU else {}),
        "rows": args.rows, "repeats": args.repeats, "engine_runs": eng["runs"],
        "engine_settings": {"batch_size": args.batch_size, "batch_tokens": args.batch_tokens},
        "shape": shapes.SHAPES[kind]["name"], "params": params, "dtype": str(default_dtype()).replace("torch.", ""),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench_label.json")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--kinds", nargs="+", default=list(shapes.SHAPES), choices=list(shapes.SHAPES))
    parser.add_argument("--repeats", type=int, default=2 if GPU else 3)
    parser.add_argument("--batch-size", type=int, default=4096 if GPU else 64, help="engine: label.batch_size")
    parser.add_argument("--batch-tokens", type=int, default=131072 if GPU else 8192, help="engine: label.batch_tokens")
    parser.add_argument("--baseline-rows", type=int, default=16384 if GPU else 384)
    parser.add_argument("--baseline-batch-sizes", type=int, nargs="+", default=[64, 256, 1024] if GPU else [8, 32, 128])
    parser.add_argument("--run-dir", default="runs/bench_label")
    args = parser.parse_args()

    peak = matmul_flops()
    result = {"machine": {
        "platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if GPU else None,
        "matmul_tflops": round(peak / 1e12, 2), "matmul_dtype": "bfloat16" if GPU else "float32"}}
    for kind in args.kinds:
        result[kind] = measure(kind, args, peak)
        Path(args.out).write_text(json.dumps(result, indent=2))  # after each shape: a time limit keeps what is done

    m = result["machine"]
    where = m["gpu"] or f"{m['cpus']} CPUs"
    print(f"\nbulk labeling, {args.rows} rows ({where}, matmul "
          f"{m['matmul_tflops']} TFLOP/s {m['matmul_dtype']})")
    print(f"{'shape':<22}{'engine rows/s':>14}{'baseline rows/s':>16}{'speedup':>9}{'FLOPs frac':>11}{'invalid':>9}")
    for kind in args.kinds:
        r = result[kind]
        print(f"{kind + ' (' + r['shape'] + ')':<22}{r['engine_rows_per_s']:>14.1f}{r['baseline_rows_per_s']:>16.1f}"
              f"{r['speedup']:>9.2f}{r['flops_fraction']:>11.4f}{r['invalid_labels']:>9}")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
