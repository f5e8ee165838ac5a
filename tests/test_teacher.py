"""The teacher over real HTTP: the `openai` client against the local simulator."""

import json
import math
from pathlib import Path

import openai
import pytest
from omegaconf import OmegaConf

from distill.data import load_split, read_jsonl
from distill.errors import TeacherError
from distill.tasks import build_task
from distill.teach import prepare_data, teach
from distill.teacher import Simulator, Teacher
from distill.teacher.client import label_summary


@pytest.fixture
def demo(make_cfg):
    cfg = make_cfg("demo")
    prepare_data(cfg)
    task = build_task(cfg.task)
    return cfg, task, list(load_split(cfg, "seed", task))


def test_simulator_speaks_openai_and_hits_target_accuracy(demo):
    cfg, task, rows = demo
    with Simulator(task, rows, {**cfg.teacher.sim, "accuracy": 0.8}) as sim:
        client = openai.OpenAI(base_url=sim.base_url, api_key="sk-test")
        assert [m.id for m in client.models.list().data] == ["simulated-teacher"]
        teacher = Teacher(cfg.teacher, task, base_url=sim.base_url, simulated=True)
        records = [teacher.request(r) for r in rows]
    right = [rec["label"] == row["label"] for rec, row in zip(records, rows)]
    assert 0.72 <= sum(right) / len(rows) <= 0.88
    assert all(rec["error"] is None and rec["raw"] and rec["prompt_tokens"] > 0 for rec in records)
    # confidence comes from token logprobs, and is higher on right answers
    conf_right = [r["confidence"] for r, ok in zip(records, right) if ok]
    conf_wrong = [r["confidence"] for r, ok in zip(records, right) if not ok]
    assert all(0 < c <= 1 for c in conf_right + conf_wrong)
    assert sum(conf_right) / len(conf_right) > sum(conf_wrong) / len(conf_wrong) + 0.1
    assert sim.billed == len(rows)


def test_invalid_json_from_teacher_is_a_row_error_not_a_crash(demo, tmp_path):
    cfg, task, rows = demo
    with Simulator(task, rows[:60], {**cfg.teacher.sim, "malformed_rate": 0.5}) as sim:
        teacher = Teacher(cfg.teacher, task, base_url=sim.base_url, simulated=True)
        assert teacher.label(rows[:60], tmp_path / "seed.jsonl") == 60
    records = read_jsonl(tmp_path / "seed.jsonl")
    summary = label_summary(records)
    assert len(records) == 60 and summary["rows"] == 60
    bad = [r for r in records if r["error"]]
    assert 15 <= len(bad) <= 45
    assert all(r["error"] == "invalid_json" and r["label"] is None and r["raw"] for r in bad)
    assert summary["errors"] == {"invalid_json": len(bad)}


def test_rerun_resumes_without_repeating_requests(demo, tmp_path):
    cfg, task, rows = demo
    out = tmp_path / "seed.jsonl"
    with Simulator(task, rows, cfg.teacher.sim) as sim:
        teacher = Teacher(cfg.teacher, task, base_url=sim.base_url, simulated=True)
        teacher.label(rows[:50], out)
        with open(out, "a") as f:
            f.write('{"id": "torn')  # a crash mid-write leaves a torn line
        assert sim.billed == 50
        assert teacher.label(rows[:120], out) == 70
        assert sim.billed == 120
    records = read_jsonl(out)
    assert sorted(r["id"] for r in records) == sorted(r["id"] for r in rows[:120])


def test_unreachable_endpoint_becomes_row_errors(demo, tmp_path):
    cfg, task, rows = demo
    teacher = Teacher(OmegaConf.merge(cfg.teacher, {"max_retries": 0, "timeout": 2}), task,
                      base_url="http://127.0.0.1:9/v1", simulated=True)
    record = teacher.request(rows[0])
    assert record["label"] is None and record["error"].startswith("request_failed")


def test_real_teacher_needs_its_key_env(make_cfg, monkeypatch):
    cfg = make_cfg("demo", "teacher=openai", "teacher.api_key_env=DISTILL_TEST_KEY")
    monkeypatch.delenv("DISTILL_TEST_KEY", raising=False)
    with pytest.raises(TeacherError, match="export DISTILL_TEST_KEY"):
        Teacher(cfg.teacher, build_task(cfg.task))


def test_api_key_never_written(make_cfg, monkeypatch, tmp_path, capfd):
    """A real (non-simulated) teacher pointed at the simulator: the key reaches no file or log."""
    secret = "sk-live-DO-NOT-LEAK-1234567890"
    monkeypatch.setenv("DISTILL_TEST_KEY", secret)
    cfg = make_cfg("demo", "teacher.api_key_env=DISTILL_TEST_KEY", "data.demo.sizes.seed=30",
                   "data.demo.sizes.gold=20", "data.demo.sizes.corpus=10")
    prepare_data(cfg)
    task = build_task(cfg.task)
    rows = list(load_split(cfg, "seed", task))
    with Simulator(task, rows, cfg.teacher.sim) as sim:
        teacher = Teacher(OmegaConf.merge(cfg.teacher, {"simulated": False, "base_url": sim.base_url}), task)
        teacher.label(rows, tmp_path / "run" / "teacher" / "seed.jsonl")
    teach(cfg)
    for f in (tmp_path / "run").rglob("*"):
        if f.is_file():
            assert secret not in f.read_text(errors="ignore"), f
    out, err = capfd.readouterr()
    assert secret not in out + err


def test_teach_stage_labels_seed_and_gold(make_cfg):
    cfg = make_cfg("demo", "data.demo.sizes.seed=40", "data.demo.sizes.gold=30", "data.demo.sizes.corpus=10")
    summary = teach(cfg)
    assert summary["simulated"] is True
    assert summary["seed"]["rows"] == 40 and summary["gold"]["rows"] == 30
    seed = read_jsonl(Path(cfg.run_dir) / "teacher" / "seed.jsonl")
    assert all(r["source"] == "teacher" and r["simulated"] and r["model"] == cfg.teacher.model for r in seed)
    # idempotent: a second run asks nothing new, and needs no teacher at all
    assert teach(OmegaConf.merge(cfg, {"teacher": {"simulated": False, "api_key_env": "DISTILL_UNSET_KEY"}}))[
        "seed"]["new_requests"] == 0
    assert json.loads((Path(cfg.run_dir) / "teacher" / "summary.json").read_text())["simulated"]
    assert not any(math.isnan(r["confidence"]) for r in seed if r["confidence"] is not None)


def test_distill_simulate_serves_the_recipe(tmp_path):
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "distill", "simulate", "recipe=demo", f"run_dir={tmp_path}",
                             f"teacher.sim.port={port}", "teacher.sim.accuracy=1.0"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert f"127.0.0.1:{port}" in proc.stdout.readline()
        gold = read_jsonl(tmp_path / "data" / "gold.jsonl")[:5]
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-test")
        for row in gold:
            reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": row["text"]}])
            assert json.loads(reply.choices[0].message.content) == {"label": row["label"]}
    finally:
        proc.terminate()
        proc.wait(10)


def test_simulator_answers_unlabeled_rows_without_failing(demo, tmp_path):
    cfg, task, rows = demo
    unlabeled = [{k: v for k, v in r.items() if k != "label"} for r in rows[:5]]
    with Simulator(task, [*rows[5:10], *unlabeled], cfg.teacher.sim) as sim:
        teacher = Teacher(cfg.teacher, task, base_url=sim.base_url, simulated=True)
        records = [teacher.request(r) for r in rows[:10]]
    # no gold to answer from: a reply without the field, recorded as such, never a server error
    assert [r["error"] for r in records[:5]] == ["missing_field"] * 5
    assert all(r["error"] is None for r in records[5:])
