"""The teacher engine over real HTTP: the async `openai` client against the local simulator."""

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest
from omegaconf import OmegaConf

from distill.config import load_config
from distill.data import load_split, prepare_data, read_jsonl
from distill.errors import ConfigError, OutputError, TeacherError
from distill.tasks import build_task
from distill.teach import teach
from distill.teacher import Simulator, Teacher
from distill.teacher.batch import label_batch
from distill.teacher.cache import Cache
from distill.teacher.client import label_summary
from distill.teacher.simulator import key_id


@pytest.fixture
def demo(make_cfg):
    cfg = make_cfg("demo")
    prepare_data(cfg)
    task = build_task(cfg.task)
    return cfg, task, list(load_split(cfg, "seed", task))


def make_teacher(cfg, task, sim, tmp_path, cache="cache.sqlite", **overrides):
    return Teacher(OmegaConf.merge(cfg.teacher, overrides), task, base_url=sim.base_url, simulated=True,
                   cache_path=tmp_path / cache)


def teach_against(sim, cfg, *args) -> tuple[list[str], dict]:
    """`distill teach` as a process talking to `sim` like a real endpoint: (command, environment)."""
    cmd = [sys.executable, "-m", "distill", "teach", "recipe=demo", f"run_dir={cfg.run_dir}", *args,
           "monitor.score_teacher=false", "teacher.simulated=false", f"teacher.base_url={sim.base_url}",
           "teacher.api_key_env=DISTILL_TEST_KEY"]
    return cmd, {**os.environ, "DISTILL_TEST_KEY": "sk-test"}


def kill_after(cmd: list[str], env: dict, out: Path, lines: int) -> None:
    """Start `cmd` and SIGKILL it once `out` has `lines` lines (or after a minute)."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and (not out.exists() or len(out.read_text().splitlines()) < lines):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def accuracy(records, rows):
    gold = {r["id"]: r["label"] for r in rows}
    return sum(r["label"] == gold[r["id"]] for r in records) / len(records)


def test_simulator_speaks_openai_and_hits_target_accuracy(demo, tmp_path):
    cfg, task, rows = demo
    with Simulator(task, rows, {**cfg.teacher.sim, "accuracy": 0.8}) as sim:
        client = openai.OpenAI(base_url=sim.base_url, api_key="sk-test")
        assert [m.id for m in client.models.list().data] == ["simulated-teacher"]
        records = make_teacher(cfg, task, sim, tmp_path).label_records(rows)
        assert sim.billed == len(rows)
    assert [r["id"] for r in records] == [r["id"] for r in rows]
    assert 0.72 <= accuracy(records, rows) <= 0.88
    assert all(r["error"] is None and r["raw"] and r["prompt_tokens"] > 0 and r["cost_usd"] > 0 for r in records)
    # confidence comes from the label's token logprobs, and is higher on right answers
    gold = {r["id"]: r["label"] for r in rows}
    right = [r["confidence"] for r in records if r["label"] == gold[r["id"]]]
    wrong = [r["confidence"] for r in records if r["label"] != gold[r["id"]]]
    assert all(r["confidence_source"] == "logprobs" and 0 < r["confidence"] <= 1 for r in records)
    assert sum(right) / len(right) > sum(wrong) / len(wrong) + 0.15


def test_invalid_json_is_reasked_and_what_stays_invalid_is_a_row_error(demo, tmp_path):
    cfg, task, rows = demo
    rows = rows[:80]
    with Simulator(task, rows, {**cfg.teacher.sim, "malformed_rate": 0.5}) as sim:
        no_reask = make_teacher(cfg, task, sim, tmp_path, "a.sqlite", reask=0)
        stats = no_reask.label(rows, tmp_path / "a.jsonl")
        records = read_jsonl(tmp_path / "a.jsonl")
        bad = [r for r in records if r["error"]]
        assert len(records) == 80 and 20 <= len(bad) <= 60 and stats["reasks"] == 0
        assert all(r["error"] == "invalid_json" and r["label"] is None and r["raw"] for r in bad)
        assert label_summary(records)["errors"] == {"invalid_json": len(bad)}

        billed = sim.billed
        reask = make_teacher(cfg, task, sim, tmp_path, "b.sqlite", reask=3)
        stats = reask.label(rows, tmp_path / "b.jsonl")
        records = read_jsonl(tmp_path / "b.jsonl")
    # each re-ask carries the validation error and is a new, billed request
    assert stats["reasks"] >= len(bad) and sim.billed - billed == 80 + stats["reasks"]
    assert sum(r["error"] is not None for r in records) <= 0.1 * 80
    assert max(r["requests"] for r in records) > 1


def test_rate_limit_429_is_retried_after_retry_after(demo, tmp_path):
    cfg, task, rows = demo
    rows = rows[:60]
    with Simulator(task, rows, {**cfg.teacher.sim, "rate_limit": 20}) as sim:
        teacher = make_teacher(cfg, task, sim, tmp_path, max_retries=8)
        start = time.perf_counter()
        stats = teacher.label(rows, tmp_path / "seed.jsonl")
        seconds = time.perf_counter() - start
        faults = sim.stats()["faults"]
    records = read_jsonl(tmp_path / "seed.jsonl")
    assert len(records) == 60 and all(r["error"] is None for r in records)
    assert faults["rate_limit"] > 0 and stats["retries"] >= faults["rate_limit"]
    assert seconds >= (60 - 20) / 20 * 0.9  # the server's pace, not ours
    assert faults["rate_limit"] < 4 * 60  # waited as told instead of hammering


def test_client_token_bucket_keeps_under_the_server_limit(demo, tmp_path):
    cfg, task, rows = demo
    rows = rows[:50]
    with Simulator(task, rows, {**cfg.teacher.sim, "rate_limit": 30}) as sim:
        teacher = make_teacher(cfg, task, sim, tmp_path, rpm=25 * 60)
        start = time.perf_counter()
        teacher.label(rows, tmp_path / "seed.jsonl")
        seconds = time.perf_counter() - start
        assert sim.stats()["faults"].get("rate_limit", 0) == 0
    assert seconds >= 49 / 25 * 0.9


def test_server_errors_and_dropped_connections_are_retried_and_never_billed(demo, tmp_path):
    cfg, task, rows = demo
    rows = rows[:80]
    with Simulator(task, rows, {**cfg.teacher.sim, "error_rate": 0.2, "drop_rate": 0.2}) as sim:
        stats = make_teacher(cfg, task, sim, tmp_path, max_retries=10).label(rows, tmp_path / "seed.jsonl")
        faults = sim.stats()["faults"]
        assert sim.billed == 80
    records = read_jsonl(tmp_path / "seed.jsonl")
    assert len(records) == 80 and all(r["error"] is None for r in records)
    assert faults["error_rate"] > 0 and faults["drop_rate"] > 0
    assert stats["retries"] >= faults["error_rate"] + faults["drop_rate"]


def test_requests_that_keep_failing_end_as_row_errors_and_a_rerun_retries_them(demo, tmp_path):
    cfg, task, rows = demo
    rows = rows[:20]
    with Simulator(task, rows, {**cfg.teacher.sim, "error_rate": 1.0}) as sim:
        stats = make_teacher(cfg, task, sim, tmp_path, max_retries=2).label(rows, tmp_path / "seed.jsonl")
    assert stats["errors"] == {"server_error": 20} and stats["retries"] == 40
    assert len(Cache(tmp_path / "cache.sqlite")) == 0  # errors are never cached
    with Simulator(task, rows, cfg.teacher.sim) as sim:
        stats = make_teacher(cfg, task, sim, tmp_path).label(rows, tmp_path / "seed.jsonl")
        assert sim.billed == 20
    records = read_jsonl(tmp_path / "seed.jsonl")
    assert sorted(r["id"] for r in records) == sorted(r["id"] for r in rows)
    assert all(r["error"] is None for r in records)


def test_timeouts_and_unreachable_endpoints_become_row_errors(demo, tmp_path):
    cfg, task, rows = demo
    with Simulator(task, rows[:2], {**cfg.teacher.sim, "latency": 1.5}) as sim:
        records = make_teacher(cfg, task, sim, tmp_path, timeout=0.3, max_retries=1).label_records(rows[:2])
    assert [r["error"] for r in records] == ["timeout", "timeout"]
    teacher = Teacher(OmegaConf.merge(cfg.teacher, {"max_retries": 1, "timeout": 2}), task,
                      base_url="http://127.0.0.1:9/v1", simulated=True, cache_path=tmp_path / "c.sqlite")
    assert [r["error"] for r in teacher.label_records(rows[:2])] == ["connection_error"] * 2


def test_keys_rotate_when_one_is_rate_limited_or_rejected(demo, tmp_path, monkeypatch, capfd):
    cfg, task, rows = demo
    rows = rows[:40]
    keys = {"KEY_LIMITED": "sk-limited-0001", "KEY_BAD": "sk-revoked-0002", "KEY_GOOD": "sk-good-0003"}
    for env, key in keys.items():
        monkeypatch.setenv(env, key)
    faults = {keys["KEY_LIMITED"]: "rate_limited", keys["KEY_BAD"]: "invalid"}
    with Simulator(task, rows, {**cfg.teacher.sim, "key_faults": faults}) as sim:
        teacher = Teacher(OmegaConf.merge(cfg.teacher, {"simulated": False, "concurrency": 4,
                                                        "api_key_env": list(keys)}),
                          task, base_url=sim.base_url, cache_path=tmp_path / "cache.sqlite")
        start = time.perf_counter()
        records = teacher.label_records(rows)
        seconds = time.perf_counter() - start
        by_key = sim.stats()["requests_by_key"]
    assert all(r["error"] is None for r in records) and len(records) == 40
    assert seconds < 10  # the limited key's 30 s Retry-After did not hold the run up
    assert by_key[key_id(keys["KEY_LIMITED"])] <= 4 and by_key[key_id(keys["KEY_BAD"])] <= 4
    assert by_key[key_id(keys["KEY_GOOD"])] >= 40
    err = capfd.readouterr().err
    assert "$KEY_BAD was rejected" in err and keys["KEY_BAD"] not in err


def test_every_key_rejected_ends_as_row_errors(demo, tmp_path, monkeypatch):
    cfg, task, rows = demo
    monkeypatch.setenv("KEY_BAD", "sk-revoked")
    with Simulator(task, rows, {**cfg.teacher.sim, "key_faults": {"sk-revoked": "invalid"}}) as sim:
        teacher = Teacher(OmegaConf.merge(cfg.teacher, {"simulated": False, "api_key_env": "KEY_BAD"}),
                          task, base_url=sim.base_url, cache_path=tmp_path / "cache.sqlite")
        records = teacher.label_records(rows[:5])
    assert [r["error"] for r in records] == ["auth_failed"] * 5


@pytest.mark.parametrize("supported", [["json_schema"], ["json_object"], ["text"]])
def test_output_mode_falls_back_to_what_the_endpoint_accepts(demo, tmp_path, supported, capfd):
    cfg, task, rows = demo
    rows = rows[:30]
    with Simulator(task, rows, {**cfg.teacher.sim, "output_modes": supported}) as sim:
        teacher = make_teacher(cfg, task, sim, tmp_path, output="json_schema")
        records = teacher.label_records(rows)
    assert teacher.mode == supported[0]
    assert all(r["error"] is None for r in records) and accuracy(records, rows) > 0.7
    if supported == ["text"]:  # the answer came inside prose and a code fence
        assert all(r["raw"].startswith("Sure.") for r in records)
        assert all(r["confidence_source"] == "logprobs" for r in records)
    assert ("refused response_format" in capfd.readouterr().err) == (supported != ["json_schema"])


def test_ner_confidence_per_entity_from_logprobs(make_cfg, tmp_path):
    cfg = make_cfg("demo_ner")
    prepare_data(cfg)
    task = build_task(cfg.task)
    rows = list(load_split(cfg, "seed", task))[:150]
    with Simulator(task, rows, {**cfg.teacher.sim, "accuracy": 0.7}) as sim:
        records = make_teacher(cfg, task, sim, tmp_path).label_records(rows)
    from distill.tasks.ner import spans

    gold = {r["id"]: set(spans(r["label"])) for r in rows}
    right, wrong = [], []
    for r in records:
        ents = spans(r["label"])
        assert len(r["entity_confidence"]) == len(ents)
        for ent, conf in zip(ents, r["entity_confidence"]):
            (right if ent in gold[r["id"]] else wrong).append(conf)
    assert right and wrong and None not in right + wrong
    assert sum(right) / len(right) > sum(wrong) / len(wrong) + 0.15


def test_self_consistency_votes_and_reports_agreement(demo, tmp_path):
    cfg, task, rows = demo
    rows = rows[:150]
    sim_cfg = {**cfg.teacher.sim, "accuracy": 0.7, "confusions": {}}
    with Simulator(task, rows, sim_cfg) as sim:
        single = make_teacher(cfg, task, sim, tmp_path, "a.sqlite").label_records(rows)
        voted = make_teacher(cfg, task, sim, tmp_path, "b.sqlite", samples=5).label_records(rows)
        assert sim.billed == 300  # the 5 samples come in one request (n=5)
    assert all(r["confidence_source"] == "agreement" for r in voted)
    assert {round(r["confidence"], 6) for r in voted} <= {0.2, 0.4, 0.6, 0.8, 1.0}
    assert accuracy(voted, rows) > accuracy(single, rows) + 0.05
    gold = {r["id"]: r["label"] for r in rows}
    assert sum(r["confidence"] for r in voted if r["label"] == gold[r["id"]]) / sum(
        r["label"] == gold[r["id"]] for r in voted) > 0.7


def test_cache_serves_reruns_and_changes_with_the_request(demo, tmp_path):
    cfg, task, rows = demo
    rows = rows[:50]
    with Simulator(task, rows, cfg.teacher.sim) as sim:
        make_teacher(cfg, task, sim, tmp_path).label(rows, tmp_path / "a.jsonl")
        stats = make_teacher(cfg, task, sim, tmp_path).label(rows, tmp_path / "b.jsonl")
        assert sim.billed == 50 and stats["cache_hits"] == 50 and stats["billed"] == 0
        assert all(r["cached"] and r["cost_usd"] == 0 for r in read_jsonl(tmp_path / "b.jsonl"))
        labels = [{r["id"]: r["label"] for r in read_jsonl(tmp_path / f)} for f in ("a.jsonl", "b.jsonl")]
        assert labels[0] == labels[1]
        # another model or temperature is another request
        make_teacher(cfg, task, sim, tmp_path, model="other-model").label(rows[:10], tmp_path / "c.jsonl")
        make_teacher(cfg, task, sim, tmp_path, temperature=0.3).label(rows[:10], tmp_path / "d.jsonl")
        assert sim.billed == 70
    assert "sk-simulated" not in (tmp_path / "cache.sqlite").read_bytes().decode(errors="ignore")


def test_rerun_resumes_without_repeating_requests(demo, tmp_path):
    cfg, task, rows = demo
    out = tmp_path / "seed.jsonl"
    with Simulator(task, rows, cfg.teacher.sim) as sim:
        make_teacher(cfg, task, sim, tmp_path).label(rows[:50], out)
        with open(out, "a") as f:
            f.write('{"id": "torn')  # a crash mid-write leaves a torn line
        assert sim.billed == 50
        assert make_teacher(cfg, task, sim, tmp_path).label(rows[:120], out)["billed"] == 70
        assert sim.billed == 120
    assert sorted(r["id"] for r in read_jsonl(out)) == sorted(r["id"] for r in rows[:120])


def test_budget_stops_cleanly_and_a_bigger_budget_finishes_without_rebilling(make_cfg, tmp_path, capsys):
    cfg = make_cfg("demo", "data.demo.sizes.seed=100", "data.demo.sizes.gold=20", "data.demo.sizes.corpus=10",
                   "monitor.score_teacher=false", "teacher.budget_usd=0.01")
    summary = teach(cfg)
    out = capsys.readouterr().out
    records = read_jsonl(Path(cfg.run_dir) / "teacher" / "seed.jsonl")
    assert summary["stopped"] == "budget" and "stopped at the budget" in out
    assert 10 <= len(records) < 100 and all(r["label"] for r in records)
    first = len(records)
    assert sum(r["cost_usd"] for r in records) <= 0.01 + 0.0005  # at most the requests already in flight
    summary = teach(OmegaConf.merge(cfg, {"teacher": {"budget_usd": 1.0}}))
    records = read_jsonl(Path(cfg.run_dir) / "teacher" / "seed.jsonl")
    assert summary["stopped"] is None and len({r["id"] for r in records}) == len(records) == 100
    # the finished rows were kept, so only the rest was asked for
    assert summary["seed"]["this_run"]["billed"] == 100 - first


def test_budget_needs_a_price(make_cfg):
    with pytest.raises(ConfigError, match="has no price"):
        make_cfg("demo", "teacher.model=unpriced-model", "teacher.budget_usd=5")
    cfg = make_cfg("demo", "teacher.model=unpriced-model")
    with pytest.raises(ConfigError, match="has no price"):  # the engine checks it too
        Teacher(OmegaConf.merge(cfg.teacher, {"budget_usd": 5}), build_task(cfg.task), simulated=True)


def test_dry_run_estimates_without_sending_anything(make_cfg, capsys, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # a dry run needs no key
    cfg = make_cfg("demo", "teacher=openai", "teacher.dry_run=true", "data.demo.sizes.seed=100",
                   "data.demo.sizes.gold=40", "data.demo.sizes.corpus=10")
    summary = teach(cfg)
    out = capsys.readouterr().out
    assert summary["dry_run"] and summary["seed"]["rows"] == 100 and summary["gold"]["rows"] == 40
    seed = summary["seed"]
    assert seed["prompt_tokens"] > 100 * 50 and seed["cost_usd"] == pytest.approx(
        (seed["prompt_tokens"] * 2.5 + seed["completion_tokens"] * 10) / 1e6)
    assert seed["batch_cost_usd"] == pytest.approx(seed["cost_usd"] / 2)
    assert "nothing was sent" in out and "online $" in out
    assert not (Path(cfg.run_dir) / "teacher" / "seed.jsonl").exists()


def test_batch_api_mode_labels_at_half_price_and_resumes_by_batch_id(demo, tmp_path, monkeypatch):
    cfg, task, rows = demo
    rows = rows[:60]
    out = tmp_path / "seed.jsonl"
    sim_cfg = {**cfg.teacher.sim, "malformed_rate": 0.2, "batch_seconds": 0.2}
    with Simulator(task, rows, sim_cfg) as sim:
        teacher = make_teacher(cfg, task, sim, tmp_path, mode="batch", batch_poll_s=0.05)
        # the process dies while waiting on its first batch
        import distill.teacher.batch as batch_mod

        real_wait = batch_mod._wait
        monkeypatch.setattr(batch_mod, "_wait", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            label_batch(teacher, rows, out)
        assert len(sim.batches) == 1 and out.with_suffix(".batch.json").exists()
        out.with_suffix(".batch.json").unlink()  # even without the saved id, the tag finds it
        monkeypatch.setattr(batch_mod, "_wait", real_wait)
        stats = label_batch(make_teacher(cfg, task, sim, tmp_path, mode="batch", batch_poll_s=0.05), rows, out)
        first_batch = sim.batches["batch_000001"]
        assert first_batch["request_counts"]["total"] == 60  # the first batch was resumed, not resent
        assert sim.billed == 0 and sim.batch_billed == 60 + stats["reasks"]
        assert len(sim.batches) >= 2  # re-asks of malformed answers went in a later batch
    records = read_jsonl(out)
    assert sorted(r["id"] for r in records) == sorted(r["id"] for r in rows)
    assert sum(r["error"] is None for r in records) >= 55
    # half price: each record's cost is half what the same tokens cost online
    for r in records[:10]:
        assert r["cost_usd"] == pytest.approx(teacher.cost(r["prompt_tokens"], r["completion_tokens"]) / 2)
    assert not out.with_suffix(".batch.json").exists()


def test_real_teacher_needs_its_key_env(make_cfg, monkeypatch):
    cfg = make_cfg("demo", "teacher=openai", "teacher.api_key_env=DISTILL_TEST_KEY")
    monkeypatch.delenv("DISTILL_TEST_KEY", raising=False)
    with pytest.raises(TeacherError, match="export DISTILL_TEST_KEY"):
        Teacher(cfg.teacher, build_task(cfg.task))


def test_api_keys_never_written(make_cfg, monkeypatch, tmp_path, capfd):
    """Real (non-simulated) teachers pointed at the simulator: no key reaches a file or a log line."""
    secrets = {"DISTILL_TEST_KEY": "sk-live-DO-NOT-LEAK-1234567890", "DISTILL_TEST_KEY_2": "sk-live-SECOND-0987"}
    for env, key in secrets.items():
        monkeypatch.setenv(env, key)
    cfg = make_cfg("demo", "teacher.api_key_env=[DISTILL_TEST_KEY,DISTILL_TEST_KEY_2]", "data.demo.sizes.seed=30",
                   "data.demo.sizes.gold=20", "data.demo.sizes.corpus=10")
    prepare_data(cfg)
    task = build_task(cfg.task)
    rows = list(load_split(cfg, "seed", task))
    sim_cfg = {**cfg.teacher.sim, "key_faults": {secrets["DISTILL_TEST_KEY"]: "invalid"}, "error_rate": 0.2}
    with Simulator(task, rows, sim_cfg) as sim:
        teacher = Teacher(OmegaConf.merge(cfg.teacher, {"simulated": False}), task, base_url=sim.base_url)
        teacher.label(rows, Path(cfg.run_dir) / "teacher" / "seed.jsonl")
    teach(cfg)
    for f in Path(cfg.run_dir).rglob("*"):
        if f.is_file():
            data = f.read_bytes().decode(errors="ignore")
            assert not any(s in data for s in secrets.values()), f
    out, err = capfd.readouterr()
    assert "DISTILL_TEST_KEY" in err  # the rejected key is named by its variable...
    assert not any(s in out + err for s in secrets.values())  # ...never by its value


def test_teach_stage_labels_seed_and_gold(make_cfg):
    cfg = make_cfg("demo", "data.demo.sizes.seed=40", "data.demo.sizes.gold=30", "data.demo.sizes.corpus=10")
    summary = teach(cfg)
    assert summary["simulated"] is True
    assert summary["seed"]["rows"] == 40 and summary["gold"]["rows"] == 30
    assert summary["seed"]["this_run"]["billed"] == 40 and summary["seed"]["cost_usd"] > 0
    seed = read_jsonl(Path(cfg.run_dir) / "teacher" / "seed.jsonl")
    assert all(r["source"] == "teacher" and r["simulated"] and r["model"] == cfg.teacher.model for r in seed)
    # idempotent: a second run asks nothing new, and needs no teacher at all
    again = teach(OmegaConf.merge(cfg, {"teacher": {"simulated": False, "api_key_env": "DISTILL_UNSET_KEY"}}))
    assert again["seed"]["this_run"] is None
    assert json.loads((Path(cfg.run_dir) / "teacher" / "summary.json").read_text())["simulated"]
    assert not any(math.isnan(r["confidence"]) for r in seed if r["confidence"] is not None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_distill_simulate_serves_the_recipe(tmp_path):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "distill", "simulate", "recipe=demo", f"run_dir={tmp_path}",
                             f"teacher.sim.port={port}", "teacher.sim.accuracy=1.0"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert f"127.0.0.1:{port}" in proc.stdout.readline()
        gold = read_jsonl(tmp_path / "data" / "gold.jsonl")[:5]
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-test")
        for row in gold:
            reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": row["text"]}],
                                                   response_format={"type": "json_object"})
            assert json.loads(reply.choices[0].message.content) == {"label": row["label"]}
        stats = client.get("/sim/stats", cast_to=object)
        assert stats["billed"] == 5
    finally:
        proc.terminate()
        proc.wait(10)


def test_simulator_answers_unlabeled_rows_without_failing(demo, tmp_path):
    cfg, task, rows = demo
    unlabeled = [{k: v for k, v in r.items() if k != "label"} for r in rows[:5]]
    with Simulator(task, [*rows[5:10], *unlabeled], cfg.teacher.sim) as sim:
        records = make_teacher(cfg, task, sim, tmp_path, reask=0).label_records(rows[:10])
    # no gold to answer from: a reply without the field, recorded as such, never a server error
    assert [r["error"] for r in records[:5]] == ["missing_field"] * 5
    assert all(r["error"] is None for r in records[5:])


def test_sigkill_midway_then_rerun_labels_every_row_once_and_bills_every_request_once(make_cfg, tmp_path):
    cfg = make_cfg("demo", "data.demo.sizes.seed=300", "data.demo.sizes.gold=20", "data.demo.sizes.corpus=10")
    prepare_data(cfg)
    task = build_task(cfg.task)
    rows = list(load_split(cfg, "seed", task))
    sim_cfg = {**cfg.teacher.sim, "latency": 0.05, "error_rate": 0.05, "drop_rate": 0.03, "malformed_rate": 0.1}
    out = Path(cfg.run_dir) / "teacher" / "seed.jsonl"
    with Simulator(task, rows, sim_cfg) as sim:
        cmd, env = teach_against(sim, cfg, "data.demo.sizes.seed=300", "data.demo.sizes.gold=20",
                                 "data.demo.sizes.corpus=10", "teacher.max_retries=8")
        kill_after(cmd, env, out, 100)
        written = len(read_jsonl(out))
        assert 100 <= written < 300, "the kill should land midway"
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stats = sim.stats()
        billed_by_request = dict(sim.billed_by_request)
    records = read_jsonl(out)
    assert sorted(r["id"] for r in records) == sorted(r["id"] for r in rows)  # every row exactly once
    assert all(r["error"] is None or r["error"] == "invalid_json" for r in records)
    assert stats["duplicate_billed"] == 0 and set(billed_by_request.values()) == {1}
    # every paid request is in the cache: one row per distinct billed request
    assert len(Cache(Path(cfg.run_dir) / "teacher" / "cache.sqlite")) == stats["billed"] == len(billed_by_request)


# -- weak endpoints: compact prompts and choice mode ------------------------------------------------
def test_compact_prompt_is_short_names_every_label_and_still_labels(demo, tmp_path):
    cfg, task, rows = demo
    rows = rows[:60]
    full, compact = task.system_prompt(), task.system_prompt(compact=True)
    assert all(label in compact for label in task.labels) and task.guidelines.splitlines()[0] not in compact
    assert len(compact) < len(full) / 3 and compact.count("\n") == 1
    with Simulator(task, rows, {**cfg.teacher.sim, "accuracy": 0.8}) as sim:
        records = make_teacher(cfg, task, sim, tmp_path, prompt="compact").label_records(rows)
        long = make_teacher(cfg, task, sim, tmp_path, "b.sqlite").label_records(rows)
    assert all(r["error"] is None for r in records) and accuracy(records, rows) > 0.65
    assert sum(r["prompt_tokens"] for r in records) < sum(r["prompt_tokens"] for r in long) / 2
    with pytest.raises(ConfigError, match=r"teacher.prompt must be one of \['full', 'compact'\]"):
        load_config(["recipe=demo", "teacher.prompt=tiny"])


def test_choice_mode_reads_the_label_from_prose_with_label_token_confidence(demo, tmp_path):
    cfg, task, rows = demo
    rows = rows[:150]
    with Simulator(task, rows, {**cfg.teacher.sim, "accuracy": 0.8}) as sim:
        teacher = make_teacher(cfg, task, sim, tmp_path, output="choice", prompt="compact", max_tokens=512)
        records = teacher.label_records(rows)
    body = teacher.body(teacher.messages(rows[0]), rows[0])
    assert "response_format" not in body and body["max_tokens"] == task.choice_tokens() < 40
    assert "JSON" not in body["messages"][0]["content"]
    # the simulator learns what was asked from the request's metadata, not from the prompt's words
    assert body["metadata"] == {"distill_request": "label", "answer": "choice"}
    # the endpoint answered in a sentence; the label is the one it names
    assert all(r["raw"].startswith("The answer is ") and r["error"] is None for r in records)
    assert all(r["raw"] == f"The answer is {r['label']}." for r in records)
    assert 0.72 <= accuracy(records, rows) <= 0.88
    gold = {r["id"]: r["label"] for r in rows}
    right = [r["confidence"] for r in records if r["label"] == gold[r["id"]]]
    wrong = [r["confidence"] for r in records if r["label"] != gold[r["id"]]]
    assert all(r["confidence_source"] == "logprobs" for r in records)
    assert sum(right) / len(right) > sum(wrong) / len(wrong) + 0.15  # the label's tokens, not "The"


def test_choice_mode_parses_bare_labels_and_never_guesses_one(demo):
    _, task, _ = demo
    parse = lambda content: task.parse_teacher(content, {}, choice=True)  # noqa: E731
    assert parse("sports") == parse(" **Sports**.") == parse("The answer is Sports.") == "sports"
    assert parse("sprots") == "sports"  # a near miss of a label
    assert parse("It is about finance, finance.") == "business"  # an alias, named twice
    assert parse('{"label": "weather"}') == "weather"  # JSON anyway: its label is named
    for content, error in (("", "empty_output"), ("I cannot tell.", "label_not_in_schema"),
                           ("Scored 3-1 in the 90th minute", "label_not_in_schema"),
                           # a list of labels is no answer: never the first of them by default
                           ("It is sports, business, science or weather", "ambiguous_label")):
        with pytest.raises(OutputError) as e:
            parse(content)
        assert e.value.kind == error


def test_choice_mode_reasks_an_unreadable_answer_and_keeps_what_stays_unreadable(demo, tmp_path):
    cfg, task, rows = demo
    rows = rows[:80]
    with Simulator(task, rows, {**cfg.teacher.sim, "malformed_rate": 0.5}) as sim:
        records = make_teacher(cfg, task, sim, tmp_path, "a.sqlite", output="choice", reask=0).label_records(rows)
        bad = [r for r in records if r["error"]]
        assert 20 <= len(bad) <= 60  # "The answer" cut short names no label
        assert all(r["error"] == "label_not_in_schema" and r["label"] is None for r in bad)
        teacher = make_teacher(cfg, task, sim, tmp_path, "b.sqlite", output="choice", reask=3)
        records = teacher.label_records(rows)
        assert teacher.stats["reasks"] >= len(bad)
    assert sum(r["error"] is not None for r in records) <= 0.1 * 80
    asked = Cache(tmp_path / "b.sqlite").db.execute("SELECT COUNT(*) FROM replies").fetchone()[0]
    assert asked == 80 + teacher.stats["reasks"]


def test_choice_output_needs_a_task_with_one_label_and_no_rationale(make_cfg, tmp_path):
    cfg = make_cfg("demo_ner")
    with pytest.raises(ConfigError, match=r"json_schema.*json_object.*text"):
        Teacher(OmegaConf.merge(cfg.teacher, {"output": "choice"}), build_task(cfg.task), simulated=True,
                cache_path=tmp_path / "a")
    cfg = make_cfg("demo", "task.rationale=true")
    with pytest.raises(ConfigError, match="rationale"):
        Teacher(OmegaConf.merge(cfg.teacher, {"output": "choice"}), build_task(cfg.task), simulated=True,
                cache_path=tmp_path / "b")


def test_local_teacher_config_needs_no_key_and_labels_in_choice_mode(make_cfg, tmp_path, monkeypatch):
    cfg = make_cfg("demo", "teacher=local", "teacher.output=choice")
    prepare_data(cfg)
    task = build_task(cfg.task)
    rows = list(load_split(cfg, "seed", task))[:20]
    assert cfg.teacher.api_key_env is None and cfg.teacher.price == {"input": 0, "output": 0}
    with Simulator(task, rows, {**cfg.teacher.sim, "accuracy": 1.0}) as sim:
        teacher = Teacher(cfg.teacher, task, base_url=sim.base_url, cache_path=tmp_path / "c.sqlite")
        records = teacher.label_records(rows)
    assert accuracy(records, rows) == 1.0 and teacher.stats["cost_usd"] == 0.0


def test_a_refused_json_schema_is_asked_again_as_json_object_carrying_the_schema(demo, tmp_path, capfd):
    cfg, task, rows = demo
    with Simulator(task, rows[:10], {**cfg.teacher.sim, "output_modes": ["json_object", "text"]}) as sim:
        teacher = make_teacher(cfg, task, sim, tmp_path, output="json_schema")
        records = teacher.label_records(rows[:10])
        seen = sum(sim.requests_by_key.values())
        # a rerun remembers the refusal: served from the cache without a single request
        again = make_teacher(cfg, task, sim, tmp_path, output="json_schema")
        assert [r["label"] for r in again.label_records(rows[:10])] == [r["label"] for r in records]
        assert sum(sim.requests_by_key.values()) == seen and again.stats["cache_hits"] == 10
    # the form llama.cpp's server (and others) take: a grammar from the schema, not just any JSON
    assert teacher.body([], rows[0])["response_format"] == {"type": "json_object", "schema": task.schema()}
    assert all(r["error"] is None for r in records) and sim.billed == 10
    assert "using json_object with the schema" in capfd.readouterr().err


def test_a_repeated_text_in_flight_is_asked_once(demo, tmp_path):
    cfg, task, rows = demo
    rows = rows[:10]
    twice = [*rows, *({**r, "id": r["id"] + "-again"} for r in rows)]
    with Simulator(task, rows, {**cfg.teacher.sim, "latency": 0.3}) as sim:
        teacher = make_teacher(cfg, task, sim, tmp_path, concurrency=20)
        records = teacher.label_records(twice)  # all 20 in flight together
        assert sim.billed == 10 and sim.stats()["duplicate_billed"] == 0
    assert len(records) == 20 and teacher.stats["billed"] == 10 and teacher.stats["cache_hits"] == 10
    assert [r["label"] for r in records[:10]] == [r["label"] for r in records[10:]]


def test_spend_after_a_kill_during_reasks_is_the_billed_total_and_the_budget_holds(make_cfg, tmp_path, capsys,
                                                                                  monkeypatch):
    """What was paid is read from the cache: re-asks of rows killed mid-way and of rows stopped by
    the budget count, so a rerun's budget covers every request ever billed."""
    sizes = ["data.demo.sizes.seed=200", "data.demo.sizes.gold=20", "data.demo.sizes.corpus=10"]
    cfg = make_cfg("demo", *sizes)
    prepare_data(cfg)
    task = build_task(cfg.task)
    rows = list(load_split(cfg, "seed", task))
    out = Path(cfg.run_dir) / "teacher" / "seed.jsonl"
    sim_cfg = {**cfg.teacher.sim, "latency": 0.03, "malformed_rate": 0.5}  # every other answer is re-asked
    with Simulator(task, rows, sim_cfg, cfg.teacher.model) as sim:
        cmd, env = teach_against(sim, cfg, *sizes)
        kill_after(cmd, env, out, 40)
        killed_at = sim.stats()
        in_file = sum(r["cost_usd"] for r in read_jsonl(out))
        assert killed_at["billed_usd"] > in_file + 0.001, "the kill should land with paid re-asks not yet written"

        budget = round(killed_at["billed_usd"] + 0.05, 4)  # room for about 25 more requests, not for all rows
        monkeypatch.setenv("DISTILL_TEST_KEY", "sk-test")
        summary = teach(load_config([*cmd[4:], f"teacher.budget_usd={budget}"]))
        billed = sim.stats()
    assert summary["stopped"] == "budget" and len(read_jsonl(out)) < 200
    assert abs(summary["spent_usd"] - billed["billed_usd"]) < 0.005  # to the cent
    cache = Cache(Path(cfg.run_dir) / "teacher" / "cache.sqlite")
    dearest = cache.db.execute("SELECT MAX(cost_usd) FROM replies").fetchone()[0]
    assert billed["billed_usd"] <= budget + dearest  # over by at most one request
    assert f"${summary['spent_usd']:.4f} spent in all" in capsys.readouterr().out
