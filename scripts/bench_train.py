"""Training throughput and peak memory of each student kind, LoRA against full fine-tuning.

    python scripts/bench_train.py [--out bench_train.json] [--steps 40] [--repeats 3]

Every kind gets the same small but non-trivial random model (6 layers, hidden size 256, 4 heads)
and trains on the built-in demo's topic labels, 16 rows per step. Each measurement runs in its own
process, so peak resident memory (ru_maxrss) is that configuration's alone. examples_per_s counts
the steps after the first 5 (warm-up excluded). On a GPU the trainer runs in bf16.
Writes {"<kind>": {"lora": {"examples_per_s", "peak_rss_mb"}, "full": {...}}, ...} and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KINDS = {"seq2seq": "tiny_t5", "causal": "tiny_causal", "encoder": "tiny_encoder"}
METHODS = ("lora", "full")
SIZE = {"layers": 6, "hidden": 256, "heads": 4}
WARMUP = 5


def measure(kind: str, method: str, steps: int, batch_size: int) -> dict:
    """One training run in this process: examples/s after warm-up, peak RSS."""
    import torch
    from transformers import TrainerCallback

    from distill.config import load_config
    from distill.data import load_split
    from distill.students import student_class
    from distill.students.trainer import SaveEvery
    from distill.tasks import build_task
    from distill.data import prepare_data

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == WARMUP:
                self.start = time.perf_counter()
            self.end = time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(["recipe=demo", f"run_dir={tmp}", f"student={KINDS[kind]}", f"student.method={method}",
                           *(f"student.tiny.{k}={v}" for k, v in SIZE.items()), f"train.max_steps={steps}",
                           f"train.batch_size={batch_size}", "train.logging_steps=1000", "train.lr=1e-4"])
        prepare_data(cfg)
        task = build_task(cfg.task)
        rows = list(load_split(cfg, "seed", task))
        student = student_class(cfg.student).create(cfg.student, task, seed=0, texts=[r["text"] for r in rows])
        trainer = student.trainer(rows, [], cfg.train, Path(tmp) / "ckpt")
        trainer.remove_callback(SaveEvery)  # checkpoint writing is not training speed
        clock = Clock()
        trainer.add_callback(clock)
        trainer.args.disable_tqdm = True
        trainer.train()
        seconds = clock.end - clock.start
        trainable = sum(p.numel() for p in student.model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in student.model.parameters())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    if torch.cuda.is_available():
        peak_gpu = torch.cuda.max_memory_allocated() / 2**20
    return {"examples_per_s": (steps - WARMUP) * batch_size / seconds, "peak_rss_mb": peak,
            "trainable_params": trainable, "params": total,
            **({"peak_gpu_mb": peak_gpu} if torch.cuda.is_available() else {})}


def machine() -> dict:
    import torch

    info = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch": torch.__version__, "device": "cpu", "dtype": "float32"}
    try:
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if "model name" in line)
    except (OSError, StopIteration):
        pass
    if torch.cuda.is_available():
        info.update(device=torch.cuda.get_device_name(0),
                    dtype="bfloat16" if torch.cuda.is_bf16_supported() else "float32")
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench_train.json")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one", nargs=2, metavar=("KIND", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(*args.one, args.steps, args.batch_size)))
        return

    results, runs = {"machine": machine(), "model": SIZE, "steps": args.steps, "batch_size": args.batch_size}, {}
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    for kind in KINDS:
        for method in METHODS:
            samples = []
            for r in range(args.repeats):
                proc = subprocess.run([sys.executable, __file__, "--one", kind, method, "--steps", str(args.steps),
                                       "--batch-size", str(args.batch_size)], capture_output=True, text=True, env=env)
                if proc.returncode:
                    sys.exit(f"bench_train: {kind}/{method} failed:\n{proc.stderr[-3000:]}")
                samples.append(json.loads(proc.stdout.strip().splitlines()[-1]))
                print(f"{kind:<8} {method:<5} run {r + 1}: {samples[-1]['examples_per_s']:.1f} examples/s, "
                      f"{samples[-1]['peak_rss_mb']:.0f} MB", file=sys.stderr)
            runs[f"{kind}/{method}"] = samples
            results.setdefault(kind, {})[method] = {
                key: statistics.median(s[key] for s in samples) for key in samples[0]}
    results["runs"] = runs
    Path(args.out).write_text(json.dumps(results, indent=2))

    m = results["machine"]
    print(f"\nstudent training, {SIZE['layers']} layers, hidden {SIZE['hidden']}, batch {args.batch_size}, "
          f"median of {args.repeats} ({m['device']}, {m['dtype']}; {m['cpu']}, {m['cores']} cores)")
    print(f"{'kind':<9} {'method':<6} {'examples/s':>11} {'peak RSS MB':>12} {'trainable':>11} {'params':>11}")
    for kind in KINDS:
        for method in METHODS:
            r = results[kind][method]
            print(f"{kind:<9} {method:<6} {r['examples_per_s']:>11.1f} {r['peak_rss_mb']:>12.0f} "
                  f"{r['trainable_params']:>11,.0f} {r['params']:>11,.0f}")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
