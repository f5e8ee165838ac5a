"""distill refine: students that learn from the teacher's answers to their least sure rows."""

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import record_training

import distill.refine
from distill.config import load_config
from distill.data import read_jsonl
from distill.errors import ConfigError
from distill.refine import refine
from distill.route import audit_draw
from distill.teacher import Teacher
from distill.train import train

# a tiny encoder student trains in seconds; 20% of the corpus over two rounds, 30% of it random, a 10% audit slice
SETTINGS = ["student=tiny_encoder", "train.max_steps=20", "refine.rounds=2", "refine.fraction=0.2",
            "refine.explore=0.3", "label.audit_fraction=0.1", "refine.min_gain=-1"]


@pytest.fixture(scope="module")
def first_student(tmp_path_factory):
    """A run directory whose student learned from the teacher's seed labels."""
    run_dir = tmp_path_factory.mktemp("refine") / "run"
    train(load_config(["recipe=demo", f"run_dir={run_dir}", *SETTINGS]))
    return run_dir


def cfg_at(run_dir: Path, *more):
    return load_config(["recipe=demo", f"run_dir={run_dir}", *SETTINGS, *more])


def test_a_killed_refine_resumes_bills_no_request_twice_and_trains_on_exactly_the_answers_so_far(
        first_student, tmp_path, monkeypatch, billed):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(first_student, run_dir, ignore=shutil.ignore_patterns("checkpoints"))
    trained = record_training(monkeypatch, distill.refine)

    class KilledInRound2(Teacher):
        def label(self, rows, out_path, desc="teacher"):
            if "round 2" not in desc:
                return super().label(rows, out_path, desc)
            super().label(rows[: len(rows) // 2], out_path, desc)
            raise KeyboardInterrupt  # as if the process were stopped halfway through round 2's rows

    monkeypatch.setattr("distill.teacher.Teacher", KilledInRound2)
    with pytest.raises(KeyboardInterrupt):
        refine(cfg_at(run_dir))
    out = run_dir / "refine"
    assert trained == ["round1"] and (out / "round1" / "round.json").exists()
    assert (out / "round2" / "asked.jsonl").exists() and not (out / "round2" / "round.json").exists()
    first = (out / "round1" / "round.json").read_text()

    monkeypatch.setattr("distill.teacher.Teacher", Teacher)
    summary = refine(cfg_at(run_dir))
    assert trained == ["round1", "round2"] and summary["rounds"] == 2 and summary["stopped"] == "rounds"
    assert (out / "round1" / "round.json").read_text() == first  # round 1 kept as it was

    # every request billed once over both runs: the audit slice and each round's rows
    asked = {k: [r["id"] for r in read_jsonl(out / f"round{k}" / "asked.jsonl")] for k in (1, 2)}
    audit = [r["id"] for r in read_jsonl(out / "audit.jsonl")]
    corpus = pd.read_parquet(out / "corpus.parquet")
    everything = [*audit, *asked[1], *asked[2]]
    assert len(set(everything)) == len(everything)  # no row asked twice
    assert sum(billed) == len(everything)
    assert len(asked[1]) == len(asked[2]) == round(0.2 * len(corpus) / 2)
    assert set(audit) == {i for i in corpus["id"] if audit_draw(i, 0) < 0.1}  # random, whatever the confidence

    # each round trained on the seed labels and exactly the answers so far, never on the audit slice
    seed = {r["id"] for r in read_jsonl(run_dir / "teacher" / "seed.jsonl") if r["label"] is not None}
    answers = {r["id"]: r for r in read_jsonl(out / "answers.jsonl")}
    for k in (1, 2):
        so_far = {i for j in range(1, k + 1) for i in asked[j] if answers[i]["label"] is not None}
        rows = read_jsonl(out / f"round{k}" / "train_rows.jsonl")
        assert [r["id"] for r in rows if r["id"] not in seed] and {r["id"] for r in rows} == seed | so_far
        assert not set(audit) & {r["id"] for r in rows}
        assert all(r["label"] == answers[r["id"]]["label"] for r in rows if r["id"] not in seed)

    # round 1 sent the first student's least sure rows, and an explore share drawn from the rest
    preds = read_jsonl(out / "round1" / "predictions.jsonl")[1:]
    conf = {p["id"]: p["confidence"] for p in preds if p["id"] not in set(audit)}
    ranked = sorted(conf, key=lambda i: (conf[i], i))
    n_least = len(asked[1]) - round(0.3 * len(asked[1]))
    assert asked[1][:n_least] == ranked[:n_least]
    assert all(conf[i] >= conf[ranked[n_least - 1]] for i in asked[1][n_least:])

    # the labels: the teacher's answer on every row it answered, the last student's elsewhere
    teacher_rows = corpus[corpus["route"] == "teacher"]
    assert set(teacher_rows["id"]) == {i for i in set(asked[1]) | set(asked[2]) if answers[i]["label"] is not None}
    assert all(row["label"] == answers[row["id"]]["label"] for _, row in teacher_rows.iterrows())
    student_rows = corpus[corpus["route"] == "student"]
    assert (student_rows["label"] == student_rows["student_label"]).all() and len(corpus) == len(set(corpus["id"]))
    ledger = json.loads((out / "ledger.json").read_text())
    assert [r["rows"] for r in ledger["rounds"]] == [len(asked[1]), len(asked[2])] and ledger["total"]["usd"] > 0
    meta = json.loads((run_dir / "student" / "student.json").read_text())
    assert meta["trained_on"].startswith("refine round 2")  # the last student is the run's student

    # a rerun asks nothing and trains nothing
    billed.clear()
    again = refine(cfg_at(run_dir))
    assert trained == ["round1", "round2"] and sum(billed) == 0 and again["teacher_rows"] == summary["teacher_rows"]


def test_bad_refine_settings_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"refine.fraction must be a share of the corpus rows in \(0, 1\], not 1.5"):
        cfg_at(tmp_path, "refine.fraction=1.5")
    with pytest.raises(ConfigError, match="refine.rounds must be at least 1, not 0"):
        cfg_at(tmp_path, "refine.rounds=0")
