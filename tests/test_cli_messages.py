"""What a newcomer reads: each stage's --help, the command cascade tells them to run next, and a
log short enough to read."""

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distill.cascade import format_result
from distill.cli import main
from distill.runner import STAGE_HELP

ROOT = Path(__file__).resolve().parents[1]


def distill(*args, **kw):
    return subprocess.run(["distill", *args], capture_output=True, text=True, cwd=ROOT, **kw)


def imports_torch(stderr: str) -> set[str]:
    """Heavy modules named in `python -X importtime` output."""
    return {m for m in ("torch", "transformers") if re.search(rf"\|\s+{m}$", stderr, re.M)}


def test_cascade_help_is_quick_and_says_what_it_reads_and_writes():
    began = time.perf_counter()
    proc = distill("cascade", "--help")
    took = time.perf_counter() - began
    print(f"distill cascade --help: {took:.2f} s")
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout.startswith("usage: distill cascade recipe=NAME")
    for said in ("labels/gold.parquet", "teacher/gold.jsonl", "cascade/threshold.json", "label.target", "distill route"):
        assert said in proc.stdout
    assert took < 10  # about 0.2 s unloaded; generous for a busy CI machine


@pytest.mark.parametrize("stage, command", [("train", ["-m", "distill.cli", "train", "--help"]),
                                            ("train", ["distill/train.py", "--help"]),
                                            ("label", ["-m", "distill.label", "-h"]),
                                            ("audit", ["distill/audit.py", "--help"])])
def test_help_comes_before_torch_is_imported(stage, command):
    proc = subprocess.run([sys.executable, "-X", "importtime", *command], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout.startswith(f"usage: distill {stage} ")
    assert imports_torch(proc.stderr) == set()


def test_every_stage_explains_itself(capsys):
    helps = {}
    for stage in ("teach", "train", "label", "merge", "cascade", "route", "monitor", "run", "audit", "grow",
                  "refine", "shortlist", "simulate"):
        for flag in ("--help", "-h"):
            with pytest.raises(SystemExit) as stop:
                main([stage, "recipe=demo", flag])
            assert stop.value.code == 0
            helps[stage, flag] = capsys.readouterr().out
        text = helps[stage, "-h"]
        assert text == helps[stage, "--help"] and text.startswith(f"usage: distill {stage} recipe=NAME")
        assert all(f"\n{field}:" in text for field in ("reads", "writes", "keys")) and "--verbose" in text
    assert len(set(helps.values())) == len(STAGE_HELP)  # each stage its own text
    main(["recipes", "--help"])
    assert capsys.readouterr().out.startswith("usage: distill recipes")


def cascade_result(best: float, target: float) -> tuple[dict, list[dict]]:
    point = lambda t, share, q: {"threshold": t, "coverage": 1 - share, "teacher_share": share,  # noqa: E731
                                 "quality": q, "accuracy": q, "macro_f1": q, "worst_recall": q,
                                 "teacher_cost_per_1k_rows": None}
    points = [point(0.0, 0.0, 0.8), point(0.7, 0.4, best), point(1.01, 1.0, 0.85)]
    return {"metric": "accuracy", "main_metric": "accuracy", "target": target, "gold_rows": 200, "reached": False,
            "threshold": 0.7, "expected": points[1], "student_only": points[0], "teacher_only": points[2],
            "teacher_cost_per_row_usd": None,
            "held_out": {"rows": [100, 100], "accuracy": best, "teacher_share": 0.4, "met": False}}, points


def test_an_unreachable_target_never_prints_like_the_best():
    result, points = cascade_result(best=0.8940, target=0.8943)
    text = format_result(result, points, Path("curve.png"), "distill route recipe=demo label.threshold=auto")
    assert "no threshold reaches accuracy 0.8943 on gold (best 0.8940," in text
    assert "accuracy 0.8940 with the teacher on 40.0% (misses" in text
    assert text.splitlines()[-1].startswith("distill route recipe=demo label.threshold=auto")
    result, points = cascade_result(best=0.5, target=0.8943)  # far apart: the usual three digits
    assert "(best 0.500, teacher alone 0.850)" in format_result(result, points, Path("c.png"), "distill route")


@pytest.mark.slow
def test_cascade_ends_with_the_route_command_that_uses_its_threshold(demo_copy):
    proc = distill("cascade", "recipe=demo", f"run_dir={demo_copy}", "label.target=0.99")
    assert proc.returncode == 0, proc.stderr[-2000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("distill route recipe=demo label.threshold=auto") and f"run_dir={demo_copy}" in last
    # the printed line runs as it is (the comment after # is the shell's)
    routed = distill(*shlex.split(last, comments=True)[1:])
    assert routed.returncode == 0, routed.stderr[-2000:]
    assert (demo_copy / "labels" / "teacher" / "corpus.jsonl").read_text().count("\n") > 0


@pytest.mark.slow
def test_a_demo_run_logs_a_few_kilobytes(demo_run):
    """`distill run recipe=demo > log 2>&1`: no load reports, no loss dictionaries, no bar redraws."""
    _, proc = demo_run
    log = proc.stdout + proc.stderr
    size = len(log.encode())
    print(f"distill run recipe=demo: {size} bytes of log")
    assert size < 10_000 and "LOAD REPORT" not in log and "{'loss'" not in log
    steps = re.findall(r"^train: step (\d+)/(\d+)", proc.stdout, re.M)
    assert 3 <= len(steps) <= 10 and steps[-1][0] == steps[-1][1]  # a few loss lines, the last at the last step
    assert "student saved to" in proc.stdout and "distill monitor" in proc.stdout


@pytest.mark.slow
def test_verbose_brings_the_trainer_output_back(demo_copy):
    quieted = ("TRANSFORMERS_VERBOSITY", "TQDM_MININTERVAL", "HF_HUB_DISABLE_PROGRESS_BARS")  # by in-process runs
    env = {k: v for k, v in os.environ.items() if k not in quieted}
    proc = distill("train", "recipe=demo", f"run_dir={demo_copy}", "train.max_steps=24", "--verbose", env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "{'loss'" in proc.stdout and "'eval_loss'" in proc.stdout  # the Trainer's own dictionaries
    assert "train: step" not in proc.stdout
    assert proc.stderr.count("%|") > 10  # its bars, redrawn as they go
