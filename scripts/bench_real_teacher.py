"""A real local LLM teacher: SmolLM2-135M-Instruct behind real OpenAI-compatible servers, on human gold.

    python scripts/bench_real_teacher.py --out bench_real_teacher.json [--rows 200] [--servers llamacpp transformers]

Opt-in and slow (minutes on CPU). For each server whose package is installed (llama.cpp's
`python -m llama_cpp.server`, `transformers serve`), it converts the GGUF once (scripts/smollm2.py),
starts the server on a free loopback port, labels the first `rows` human-gold rows, in content-hash
order (a fixed sample), of AG News and of the SMS Spam Collection (../shared/data) through the
project's Teacher engine over HTTP with the settings that suit that server, and stops it. Gold
labels only score the answers. SmolLM2-135M is a poor classifier: the figures measure the engine
against a weak, unconstrained endpoint, not a teacher worth distilling.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from contextlib import contextmanager
from importlib.metadata import version
from importlib.util import find_spec
from pathlib import Path

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from smollm2 import GGUF, gguf_path, hf_dir  # noqa: E402

from distill.config import load_config  # noqa: E402
from distill.data import load_split, read_jsonl  # noqa: E402
from distill.errors import OutputError  # noqa: E402
from distill.tasks import build_task  # noqa: E402
from distill.tasks.base import extract_json  # noqa: E402
from distill.teacher import Teacher  # noqa: E402

HOST = "127.0.0.1"
DATA = ROOT.parent / "shared" / "data"
DATASETS = {  # name: (recipe, data override, where it must be)
    "ag_news": ("topic", f"data.dir={DATA / 'ag_news'}", DATA / "ag_news"),
    "sms_spam": ("spam", f"data.file={DATA / 'sms_spam' / 'SMSSpamCollection'}", DATA / "sms_spam"),
}


def llamacpp(port: int, threads: int) -> tuple[list[str], str]:
    """Command line and the model name to send. It serves the GGUF as it is (Q4_1)."""
    return ([sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_path()), "--host", HOST,
             "--port", str(port), "--n_ctx", "2048", "--n_threads", str(threads),
             "--n_threads_batch", str(threads), "--verbose", "False"], "smollm2-135m-instruct")


def transformers_serve(port: int, threads: int) -> tuple[list[str], str]:
    """It serves the converted fp32 directory, and answers only to that directory's path as the model."""
    model = str(hf_dir())
    cli = Path(sys.executable).with_name("transformers")
    return ([str(cli), "serve", model, "--host", HOST, "--port", str(port), "--device", "cpu"], model)


# each server with the settings that suit it: llama.cpp turns the schema into a grammar (after
# refusing OpenAI's json_schema form, the engine sends it as json_object + schema) and returns
# logprobs when top_logprobs is set; transformers serve ignores response_format and logprobs, so
# it is asked for the bare label, with a few tokens (the model echoes the text when it can)
SERVERS = {
    "llamacpp": {"modules": ("llama_cpp", "sse_starlette"), "install": 'pip install "llama-cpp-python[server]"',
                 "package": "llama_cpp_python", "launch": llamacpp,
                 "teacher": {"output": "json_schema", "prompt": "compact", "logprobs": True, "top_logprobs": 1,
                             "max_tokens": 24}},
    "transformers": {"modules": ("fastapi", "uvicorn"), "install": 'pip install "transformers[serving]"',
                     "package": "transformers", "launch": transformers_serve,
                     "teacher": {"output": "choice", "prompt": "compact", "logprobs": False, "max_tokens": 6}},
}


def missing(server: str) -> str | None:
    """Why `server` cannot run here, or None."""
    absent = [m for m in SERVERS[server]["modules"] if find_spec(m) is None]
    if absent:
        return f"{', '.join(absent)} not installed ({SERVERS[server]['install']})"
    try:
        gguf_path()
    except FileNotFoundError as e:
        return str(e)
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@contextmanager
def serve(server: str, threads: int, log_path: Path, ready_s: float = 600):
    """Start `server` on a free port; yield (base_url, model name); always stop it."""
    port = free_port()
    cmd, model = SERVERS[server]["launch"](port, threads)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}  # oversubscribed cores make CPU inference crawl
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    base_url = f"http://{HOST}:{port}/v1"
    try:
        deadline = time.monotonic() + ready_s
        while True:  # ready once it lists its model (both load the model before they listen)
            if proc.poll() is not None:
                raise RuntimeError(f"{server} exited with status {proc.returncode} before it was ready:\n"
                                   + log_path.read_text()[-2000:])
            try:
                with urllib.request.urlopen(base_url + "/models", timeout=5) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{server} not ready after {ready_s:.0f}s; log: {log_path}")
            time.sleep(1)
        yield base_url, model
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def gold_rows(dataset: str, rows: int, run_dir: Path):
    """The task and the first `rows` gold rows in content-hash order, with the recipe's local teacher config."""
    recipe, data, _ = DATASETS[dataset]
    cfg = load_config([f"recipe={recipe}", data, "teacher=local", f"run_dir={run_dir}"])
    task = build_task(cfg.task)
    gold = sorted(load_split(cfg, "gold", task, labels=True), key=lambda r: r["id"])[:rows]
    return cfg, task, gold


def answer_form(task, raw: str) -> str:
    """How a valid answer came: JSON, a bare label, or a label named in prose."""
    try:
        extract_json(raw)
        return "json"
    except OutputError:
        pass
    try:
        task.normalize_label(raw.strip().strip("\"'`*.!").strip())
        return "bare"
    except OutputError:
        return "prose"


def score(task, rows: list[dict], records: list[dict], stats: dict, seconds: float) -> dict:
    from sklearn.metrics import roc_auc_score

    gold = {r["id"]: r["label"] for r in rows}
    n = len(rows)
    valid = [r for r in records if r["label"] is not None]
    right = [r for r in valid if r["label"] == gold[r["id"]]]
    scored = [(r["confidence"], r["label"] == gold[r["id"]]) for r in valid if r["confidence"] is not None]
    both = len({ok for _, ok in scored}) == 2
    return {
        "rows": n, "rows_written": len(records), "distinct_ids_written": len({r["id"] for r in records}),
        "valid_label_rate": round(len(valid) / n, 4),
        "accuracy_vs_gold": round(len(right) / n, 4),  # an invalid answer counts as wrong
        "accuracy_on_valid": round(len(right) / len(valid), 4) if valid else None,
        "majority_baseline": round(max(Counter(gold.values()).values()) / n, 4),
        "error_types": dict(Counter(r["error"] for r in records if r["error"])),
        "reasks_per_row": round(stats["reasks"] / n, 4),
        "rows_per_s": round(n / seconds, 3), "seconds": round(seconds, 1),
        "confidence_source": "logprobs" if scored else "none",
        "confidence_auroc": round(roc_auc_score([ok for _, ok in scored], [c for c, _ in scored]), 4) if both else None,
        "confidence_mean": round(sum(c for c, _ in scored) / len(scored), 6) if scored else None,
        "predicted_mix": dict(Counter(r["label"] for r in valid)),
        "gold_mix": dict(Counter(gold.values())),
        "answer_forms": dict(Counter(answer_form(task, r["raw"]) for r in valid)),
        "billed_requests": stats["billed"], "cache_hits": stats["cache_hits"], "retries": stats["retries"],
        "prompt_tokens": stats["prompt_tokens"], "completion_tokens": stats["completion_tokens"],
    }


def bench_server(server: str, datasets: list[str], rows: int, threads: int, work: Path) -> dict:
    spec = SERVERS[server]
    if server == "transformers":
        hf_dir()  # convert before the clock starts
    start = time.perf_counter()
    out = {}
    with serve(server, threads, work / f"{server}.log") as (base_url, model):
        ready_s = time.perf_counter() - start
        for dataset in datasets:
            cfg, task, gold = gold_rows(dataset, rows, work / dataset)
            teacher_cfg = OmegaConf.merge(cfg.teacher, spec["teacher"], {"model": model, "base_url": base_url})
            teacher = Teacher(teacher_cfg, task, cache_path=work / f"{server}-{dataset}.sqlite")
            path = work / f"{server}-{dataset}.jsonl"
            begin = time.perf_counter()
            stats = teacher.label(gold, path, f"{server} {dataset}")
            result = score(task, gold, read_jsonl(path), stats, time.perf_counter() - begin)
            result["settings"] = {
                "prompt": teacher_cfg.prompt, "output": teacher_cfg.output, "output_used": teacher._format(),
                "max_tokens_sent": teacher.body(teacher.messages(gold[0]), gold[0])["max_tokens"],
                "logprobs": teacher_cfg.logprobs, "top_logprobs": teacher_cfg.top_logprobs,
                "temperature": teacher_cfg.temperature, "concurrency": teacher_cfg.concurrency,
                "reask": teacher_cfg.reask, "timeout_s": teacher_cfg.timeout, "model": model,
                "system_prompt": teacher.messages(gold[0])[0]["content"]}
            out[dataset] = result
    return {"server": {"package": f"{spec['package']} {version(spec['package'])}", "threads": threads,
                       "ready_s": round(ready_s, 1), "weights": GGUF if server == "llamacpp" else
                       f"{GGUF} de-quantized to fp32 (scripts/smollm2.py)"}, **out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--servers", nargs="+", default=list(SERVERS), choices=list(SERVERS))
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                        help="server threads (default: half the cores; the rest for the client and others)")
    args = parser.parse_args()

    datasets = [d for d in args.datasets if DATASETS[d][2].is_dir()]
    for d in set(args.datasets) - set(datasets):
        print(f"skip {d}: {DATASETS[d][2]} is absent")
    result = {"machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                          "cpu_count": os.cpu_count(), "python": platform.python_version(),
                          "load_average_at_start": [round(x, 2) for x in os.getloadavg()]},
              "rows_per_dataset": args.rows, "sample": "first rows of each gold split in content-hash (id) order"}
    skipped = {}
    with tempfile.TemporaryDirectory() as tmp:
        for server in args.servers:
            why = missing(server)
            if why:
                print(f"skip {server}: {why}")
                skipped[server] = why
                continue
            begin = time.perf_counter()
            result[server] = bench_server(server, datasets, args.rows, args.threads, Path(tmp))
            result[server]["server"]["total_s"] = round(time.perf_counter() - begin, 1)
            Path(args.out).write_text(json.dumps({**result, "skipped": skipped}, indent=2))
    result["skipped"] = skipped
    Path(args.out).write_text(json.dumps(result, indent=2))

    print(f"\nSmolLM2-135M-Instruct as the teacher, {args.rows} human-gold rows per dataset "
          f"({result['machine']['cpu_count']} CPU cores, {args.threads} server thread(s))")
    print(f"{'server':<13}{'dataset':<10}{'output':<13}{'valid':>7}{'acc':>7}{'major.':>7}{'auroc':>7}"
          f"{'reask/row':>10}{'rows/s':>8}  errors")
    for server in (s for s in args.servers if s in result):
        for dataset in datasets:
            r = result[server][dataset]
            auroc = f"{r['confidence_auroc']:.3f}" if r["confidence_auroc"] is not None else "-"
            print(f"{server:<13}{dataset:<10}{r['settings']['output']:<13}{r['valid_label_rate']:>7.3f}"
                  f"{r['accuracy_vs_gold']:>7.3f}{r['majority_baseline']:>7.3f}{auroc:>7}"
                  f"{r['reasks_per_row']:>10.3f}{r['rows_per_s']:>8.3f}  {r['error_types'] or '-'}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
