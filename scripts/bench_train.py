"""Training throughput and peak memory of each student kind at a real student's shape, LoRA against
full fine-tuning: how many examples a second a user's student trains on, and how much memory it takes.

    python scripts/bench_train.py [--out bench_train.json] [--steps 40] [--warmup 5] [--repeats 3]
    python scripts/bench_train.py --out /tmp/bench_train_cpu.json --steps 12 --warmup 3 --repeats 1  # CPU

Each kind trains a random-weight model of one real student's shape (scripts/shapes.py): encoder at
all-MiniLM-L6-v2 (22M), seq2seq at t5-base (223M), causal at SmolLM2-135M (135M). Speed depends on
the shape, not on the weights, and no model hub is needed. The models and their word-level
tokenizers (about one token per word, like a real subword tokenizer on plain English) are written
once under runs/bench_train/models/<kind> and reused. Training is the built-in demo's 4-class topic
task through the project's own path (`student.model=<dir>`, loaded like a download), 16 rows a step.

Each measurement runs in its own process, so peak memory is that configuration's alone: resident
memory (VmHWM, the high-water mark of RSS) and, on CUDA, torch.cuda.max_memory_allocated. examples_per_s
counts the steps after the warm-up ones (allocator, kernel choice and first-step caches excluded);
each entry is the median over --repeats. tokens_per_example is the mean real (unpadded) token count
per example, encoder input plus decoder target for seq2seq, so examples/s converts to tokens/s. On a
GPU the trainer runs in bf16, as a user's training does; the dtype is recorded.
CPU runs take minutes per shape: defaults are 40 steps after 5 warm-up on a GPU, 12 after 3 on CPU.
Run on a quiet machine: another process on the same cores can slow single steps tenfold.

Writes {"machine", "shapes": {kind: {"name", "params"}}, "<kind>": {"lora": {"examples_per_s",
"peak_rss_mb", "peak_gpu_mb" (CUDA), "trainable_params", "params", ...}, "full": {...}}, "runs"}
and prints a table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import shapes  # scripts/shapes.py, beside this file

ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = ROOT / "runs" / "bench_train" / "models"  # runs/ is git-ignored
KINDS = ("encoder", "seq2seq", "causal")
METHODS = ("lora", "full")
STUDENT = {"encoder": "tiny_encoder", "seq2seq": "tiny_t5", "causal": "tiny_causal"}  # LoRA targets, lengths
STEPS = {"cuda": (40, 5), "cpu": (12, 3)}  # (steps, warm-up) when not given


def demo_config(run_dir: str, *overrides: str):
    from distill.config import load_config

    return load_config(["recipe=demo", f"run_dir={run_dir}", *overrides])


def seed_texts() -> list[str]:
    """The demo's seed texts, which the word-level tokenizers are trained on."""
    from distill.data import load_split, prepare_data
    from distill.tasks import build_task

    with tempfile.TemporaryDirectory() as tmp:
        cfg = demo_config(tmp)
        prepare_data(cfg)
        return [r["text"] for r in load_split(cfg, "seed", build_task(cfg.task))]


def write_models(models_dir: Path) -> dict:
    """Each shape's model directory (written once, reused after) and its parameter count."""
    from safetensors import safe_open

    texts = None
    out = {}
    for kind in KINDS:
        path = models_dir / kind
        if not (path / "config.json").exists():
            texts = texts or seed_texts()
            print(f"writing a random {shapes.SHAPES[kind]['name']}-shaped model to {path}", file=sys.stderr)
            shapes.write_model(kind, path, texts)
        params = 0
        for f in path.glob("*.safetensors"):  # tied weights are stored once, as they count
            with safe_open(f, "pt") as st:
                params += sum(math.prod(st.get_slice(key).get_shape()) for key in st.keys())  # noqa: SIM118
        out[kind] = {"name": shapes.SHAPES[kind]["name"], "params": params, "dir": str(path)}
    return out


def peak_rss_mb() -> float:
    """This process's resident high-water mark: VmHWM, else ru_maxrss (KiB on Linux)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(kind: str, method: str, steps: int, warmup: int, batch_size: int, models_dir: Path) -> dict:
    """One training run in this process: examples/s after warm-up, peak memory, sizes."""
    import torch
    from transformers import TrainerCallback

    from distill.data import load_split, prepare_data
    from distill.students import student_class
    from distill.students.trainer import SaveEvery
    from distill.tasks import build_task

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if args.device.type == "cuda":
                torch.cuda.synchronize()  # the step's kernels are done, not just queued
            if state.global_step == warmup:
                self.start = time.perf_counter()
            self.end = time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp:
        cfg = demo_config(tmp, f"student={STUDENT[kind]}", "student.tiny=null", f"student.model={models_dir / kind}",
                          f"student.method={method}", f"train.max_steps={steps}", f"train.batch_size={batch_size}",
                          "train.logging_steps=1000", "train.lr=1e-4")
        prepare_data(cfg)
        task = build_task(cfg.task)
        rows = list(load_split(cfg, "seed", task))
        student = student_class(cfg.student).create(cfg.student, task, seed=0)
        trainer = student.trainer(rows, [], cfg.train, Path(tmp) / "ckpt")
        trainer.remove_callback(SaveEvery)  # checkpoint writing is not training speed
        clock = Clock()
        trainer.add_callback(clock)
        trainer.args.disable_tqdm = True
        trainer.train()
        seconds = clock.end - clock.start
        data = trainer.train_dataset
        inputs = statistics.mean(len(ids) for ids in data["input_ids"])
        targets = statistics.mean(len(ids) for ids in data["labels"]) if kind == "seq2seq" else 0.0
        trainable = sum(p.numel() for p in student.model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in student.model.parameters())
        dtype = str(next(student.model.parameters()).dtype).removeprefix("torch.")
        bf16 = bool(trainer.args.bf16)
    out = {"examples_per_s": (steps - warmup) * batch_size / seconds, "peak_rss_mb": peak_rss_mb(),
           "trainable_params": trainable, "params": total, "tokens_per_example": inputs + targets,
           **({"target_tokens_per_example": targets} if kind == "seq2seq" else {}),
           "weights_dtype": dtype, "dtype": "bfloat16" if bf16 else "float32"}
    if torch.cuda.is_available():
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def machine() -> dict:
    import torch

    from distill.students.base import bf16_ok

    info = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch": torch.__version__, "device": "cpu", "dtype": "bfloat16" if bf16_ok() else "float32"}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    if torch.cuda.is_available():
        info["device"] = torch.cuda.get_device_name(0)
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench_train.json")
    parser.add_argument("--steps", type=int, help="training steps per run (default 40 on a GPU, 12 on CPU)")
    parser.add_argument("--warmup", type=int, help="steps left out of examples/s (default 5 on a GPU, 3 on CPU)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--models-dir", type=Path, default=MODELS_DIR)
    parser.add_argument("--one", nargs=2, metavar=("KIND", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(*args.one, args.steps, args.warmup, args.batch_size, args.models_dir)))
        return

    m = machine()
    default_steps, default_warmup = STEPS["cpu" if m["device"] == "cpu" else "cuda"]
    steps = args.steps if args.steps is not None else default_steps
    warmup = args.warmup if args.warmup is not None else default_warmup
    if not 0 < warmup < steps:
        sys.exit(f"bench_train: need 0 < --warmup < --steps, got {warmup} and {steps}")
    models = write_models(args.models_dir)
    results = {"machine": m, "shapes": {k: {key: models[k][key] for key in ("name", "params")} for k in args.kinds},
               "steps": steps, "warmup": warmup, "batch_size": args.batch_size, "repeats": args.repeats}
    runs = {}
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    for kind in args.kinds:
        for method in METHODS:
            samples = []
            for r in range(args.repeats):
                began = time.perf_counter()
                proc = subprocess.run([sys.executable, __file__, "--one", kind, method, "--steps", str(steps),
                                       "--warmup", str(warmup), "--batch-size", str(args.batch_size),
                                       "--models-dir", str(args.models_dir)],
                                      capture_output=True, text=True, env=env, check=False)
                if proc.returncode:
                    sys.exit(f"bench_train: {kind}/{method} failed:\n{proc.stderr[-3000:]}")
                samples.append({**json.loads(proc.stdout.strip().splitlines()[-1]),
                                "wall_s": time.perf_counter() - began})  # the whole process, load included
                s = samples[-1]
                print(f"{kind:<8} {method:<5} run {r + 1}: {s['examples_per_s']:.2f} examples/s, "
                      f"{s['peak_rss_mb']:.0f} MB RSS"
                      + (f", {s['peak_gpu_mb']:.0f} MB GPU" if "peak_gpu_mb" in s else "")
                      + f", {s['wall_s']:.0f} s", file=sys.stderr)
            runs[f"{kind}/{method}"] = samples
            results.setdefault(kind, {})[method] = {
                key: statistics.median(s[key] for s in samples) if isinstance(samples[0][key], (int, float))
                else samples[0][key] for key in samples[0]}
            results["runs"] = runs
            Path(args.out).write_text(json.dumps(results, indent=2))  # after each run: a time limit keeps what is done

    gpu = m["device"] != "cpu"
    print(f"\nstudent training at real shapes, batch {args.batch_size}, {steps} steps after {warmup} warm-up, "
          f"median of {args.repeats} ({m['device']}, {m['dtype']}; {m['cpu']}, {m['cores']} cores)")
    print(f"{'kind':<8} {'shape':<17} {'method':<6} {'examples/s':>10} {'tok/ex':>7} {'RSS MB':>7}"
          + (f" {'GPU MB':>7}" if gpu else "") + f" {'trainable':>12} {'params':>12} {'run s':>6}")
    for kind in args.kinds:
        for method in METHODS:
            r = results[kind][method]
            print(f"{kind:<8} {results['shapes'][kind]['name']:<17} {method:<6} {r['examples_per_s']:>10.2f} "
                  f"{r['tokens_per_example']:>7.1f} {r['peak_rss_mb']:>7.0f}"
                  + (f" {r['peak_gpu_mb']:>7.0f}" if gpu else "")
                  + f" {r['trainable_params']:>12,.0f} {r['params']:>12,.0f} {r['wall_s']:>6.0f}")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
