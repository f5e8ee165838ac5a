"""Failures that used to pass in silence: a simulated teacher asked about rows it has no label for,
invalid answers served from the cache forever, and an audit slice with no usable answer."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from distill.cli import main
from distill.config import load_config
from distill.data import load_split, read_jsonl
from distill.errors import ConfigError
from distill.label import label
from distill.refine import refine
from distill.route import route
from distill.tasks import build_task
from distill.teach import teach
from distill.teacher import Teacher
from distill.teacher.cache import Cache, request_key
from distill.train import train

SIZES = ["data.demo.sizes.seed=30", "data.demo.sizes.gold=20", "data.demo.sizes.corpus=40"]
REFINE = ["student=tiny_encoder", "train.max_steps=20", "refine.rounds=1", "refine.fraction=0.1",
          "label.audit_fraction=0.2"]


def test_route_with_an_unlabeled_corpus_and_the_simulator_stops_before_any_request(make_cfg, capsys, billed):
    cfg = make_cfg("demo", *SIZES)
    teach(cfg)  # a run whose seed pool the teacher labeled
    spent = Cache(Path(cfg.run_dir) / "teacher" / "cache.sqlite").spent()
    billed.clear()
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:  # the same run, its corpus without a label column
        main(["route", "recipe=demo", f"run_dir={cfg.run_dir}", *SIZES, "data.corpus.label_column=null",
              "label.audit_fraction=0.5"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1, err
    assert "data.corpus.label_column=COLUMN" in err and "teacher=simulated" in err
    # nothing was asked or paid: no simulator started, no audit answers, the cache spent nothing more
    assert billed == [] and not (Path(cfg.run_dir) / "labels" / "teacher" / "audit.jsonl").exists()
    assert Cache(Path(cfg.run_dir) / "teacher" / "cache.sqlite").spent() == spent


def test_run_with_an_unlabeled_corpus_and_an_audit_slice_stops_before_the_seed_is_paid(make_cfg, capsys, billed):
    cfg = make_cfg("demo", *SIZES)
    with pytest.raises(SystemExit) as stop:
        main(["run", "recipe=demo", f"run_dir={cfg.run_dir}", *SIZES, "data.corpus.label_column=null",
              "label.audit_fraction=0.5"])
    assert stop.value.code == 2 and "data.corpus.label_column=COLUMN" in capsys.readouterr().err
    assert billed == [] and not (Path(cfg.run_dir) / "teacher" / "seed.jsonl").exists()


def test_refine_and_teach_with_unlabeled_rows_and_the_simulator_stop_first(make_cfg, billed):
    cfg = make_cfg("demo", *SIZES, *REFINE)
    with pytest.raises(ConfigError, match=r"teacher=simulated answers each row from its label, and data.corpus has "
                                          r"no label column.*set data.corpus.label_column=COLUMN"):
        refine(OmegaConf.merge(cfg, {"data": {"corpus": {"label_column": None}}}))
    with pytest.raises(ConfigError, match=r"data.seed has no label column.*set data.seed.label_column=COLUMN"):
        teach(OmegaConf.merge(cfg, {"data": {"seed": {"label_column": None}}}))
    # stopped before the first student was trained or the teacher was asked anything
    assert billed == [] and not (Path(cfg.run_dir) / "teacher" / "seed.jsonl").exists()
    assert not (Path(cfg.run_dir) / "student").exists()


def test_a_cached_invalid_answer_is_asked_again_on_the_next_run(make_cfg, capsys, billed):
    cfg = make_cfg("demo", *SIZES, "monitor.score_teacher=false", "teacher.reask=0", "teacher.sim.malformed_rate=0.5")
    first = teach(cfg)
    before = read_jsonl(Path(cfg.run_dir) / "teacher" / "seed.jsonl")
    bad = {r["id"] for r in before if r["error"]}
    assert 0 < len(bad) < 30 and billed == [30] and first["seed"]["invalid"] == len(bad)
    assert f"{len(bad)} answers invalid (asked again on the next run)" in capsys.readouterr().out

    # the endpoint answers well now: only the invalid rows are asked again, and their new replies cached
    fixed = OmegaConf.merge(cfg, {"teacher": {"sim": {"malformed_rate": 0.0}}})
    second = teach(fixed)
    assert billed == [30, len(bad)] and second["seed"]["this_run"]["billed"] == len(bad)
    records = read_jsonl(Path(cfg.run_dir) / "teacher" / "seed.jsonl")
    assert len(records) == 30 and all(r["error"] is None and r["label"] for r in records)
    assert [r for r in records if r["id"] not in bad] == [r for r in before if r["id"] not in bad]  # kept as they were
    assert all(not r["cached"] and r["cost_usd"] > 0 for r in records if r["id"] in bad)  # asked anew, and billed
    task = build_task(cfg.task)
    teacher = Teacher(fixed.teacher, task, simulated=True)
    cache = Cache(Path(cfg.run_dir) / "teacher" / "cache.sqlite")
    for row in load_split(cfg, "seed", task):
        reply = cache.get(request_key(teacher.body(teacher.messages(row), row)))
        assert json.loads(reply["choices"][0]["content"])["label"] in task.labels
    # the cache still counts every billed reply, the replaced invalid ones too
    paid = sum(r["cost_usd"] for r in before) + sum(r["cost_usd"] for r in records if r["id"] in bad)
    assert cache.spent() == pytest.approx(paid) and second["spent_usd"] == pytest.approx(paid, abs=1e-6)
    billed.clear()
    assert teach(fixed)["seed"]["this_run"] is None and billed == []  # a third run has nothing to ask


@pytest.fixture(scope="module")
def first_student(tmp_path_factory):
    """A demo run directory whose student learned from the teacher's seed labels."""
    run_dir = tmp_path_factory.mktemp("silent") / "run"
    train(load_config(["recipe=demo", f"run_dir={run_dir}", *SIZES, *REFINE]))
    return run_dir


def test_refine_says_its_stopping_rule_is_off_when_the_audit_slice_has_no_usable_answer(first_student, tmp_path,
                                                                                         capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(first_student, run_dir)
    (run_dir / "labels").mkdir()
    (run_dir / "labels" / "corpus.parquet").write_bytes(b"")  # the old student's labels, as `distill label` left them
    # the endpoint answers every corpus row with broken JSON, re-asks included
    cfg = load_config(["recipe=demo", f"run_dir={run_dir}", *SIZES, *REFINE, "teacher.sim.malformed_rate=1.0",
                       "teacher.reask=1"])
    summary = refine(cfg)
    out = capsys.readouterr().out
    audit = read_jsonl(run_dir / "refine" / "audit.jsonl")
    assert audit and all(r["error"] == "invalid_json" for r in audit) and summary["audit_rows"] == 0
    assert (f"refine: warning: none of the {len(audit)} audit-slice rows has a usable teacher answer, so the "
            "stopping rule (refine.min_gain) is off: every round runs") in out
    assert f"teacher: refine audit slice: 0 of {len(audit)} rows answered, {len(audit)} answers invalid" in out
    # the messages say plainly what happened
    assert "refine: round 1 student: agreement with the teacher on " in out
    assert "(trained on 30 seed labels + 0 teacher answers to corpus rows)" in out
    assert "refine: 1 round trained; stopped because all 1 rounds done (refine.rounds=1)" in out
    assert f"`distill label recipe=demo run_dir={run_dir}` relabels the corpus with the new student" in out
    ledger = json.loads((run_dir / "refine" / "ledger.json").read_text())["total"]
    assert ledger["answers_used"] == 0 and ledger["billed_rows"] == ledger["rows"] > 0 and ledger["cached_rows"] == 0


def test_route_prints_its_threshold_warns_on_an_unusable_audit_slice_and_asks_invalid_answers_again(
        first_student, tmp_path, capsys, billed):
    run_dir = tmp_path / "run"
    shutil.copytree(first_student, run_dir)
    base = ["recipe=demo", f"run_dir={run_dir}", *SIZES, *REFINE, "label.route_fraction=0.1", "teacher.reask=1"]
    label(load_config(base))
    capsys.readouterr()
    summary = route(load_config([*base, "teacher.sim.malformed_rate=1.0"]))  # every answer is broken JSON
    out = capsys.readouterr().out
    assert (f"route: label.route_fraction=0.1 resolves to the confidence threshold {summary['threshold']:.4f} "
            "on this batch") in out
    routed = read_jsonl(run_dir / "labels" / "teacher" / "corpus.jsonl")
    audit = read_jsonl(run_dir / "labels" / "teacher" / "audit.jsonl")
    assert len(routed) == 4 and audit and all(r["error"] == "invalid_json" for r in [*routed, *audit])
    assert "teacher: low-confidence rows: 0 of 4 rows answered, 4 answers invalid (asked again on the next run)" in out
    assert f"warning: none of the {len(audit)} audit-slice rows has a usable teacher answer" in out
    corpus = pd.read_parquet(run_dir / "labels" / "corpus.parquet")
    assert (corpus["route"] == "review").sum() == 4

    # the endpoint answers well now: the rerun asks again for every invalid answer, once per request
    billed.clear()
    route(load_config(base))
    asked = {r["id"] for r in [*routed, *audit]}
    assert sum(billed) == len(asked)
    assert all(r["label"] is not None for r in read_jsonl(run_dir / "labels" / "teacher" / "corpus.jsonl"))
    assert all(r["label"] is not None for r in read_jsonl(run_dir / "labels" / "teacher" / "audit.jsonl"))
    corpus = pd.read_parquet(run_dir / "labels" / "corpus.parquet")
    assert (corpus["route"] == "teacher").sum() == 4 and (corpus["route"] == "review").sum() == 0
