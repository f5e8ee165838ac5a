"""Teacher-label cleaning (train.clean): which rows it leaves out, and that training then learns
from exactly the rest."""

import json

import numpy as np
import pytest

from distill.clean import by_cleanlab, by_confidence, check_clean
from distill.config import load_config
from distill.data import load_split, read_jsonl
from distill.errors import ConfigError
from distill.tasks import build_task
from distill.teach import teach
from distill.train import rows_hash, train


def test_confidence_uses_the_least_confident_entity_and_keeps_rows_without_one(make_cfg):
    rows = [{"id": "a", "confidence": 0.9, "entity_confidence": [0.95, 0.5]},  # one doubtful entity
            {"id": "b", "confidence": 0.6, "entity_confidence": None},
            {"id": "c", "confidence": 0.65, "entity_confidence": [0.99]},  # whole answer low, entity sure
            {"id": "d", "confidence": None},  # a teacher without logprobs
            {"id": "e", "confidence": 0.8, "entity_confidence": []}]
    dropped = by_confidence(rows, 0.7, build_task(make_cfg("demo_ner").task))
    assert set(dropped) == {"a", "b"}
    assert dropped["a"]["score"] == 0.5 and "0.500 < 0.7" in dropped["a"]["reason"]


def test_cleanlab_finds_flipped_labels_from_cross_validated_probabilities(make_cfg):
    task = build_task(make_cfg("demo").task)
    labels = task.labels
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 4, size=(len(labels), 16))
    truth = rng.integers(0, len(labels), 400)
    features = centers[truth] + rng.normal(0, 1, size=(400, 16))
    flipped = set(rng.choice(400, 40, replace=False).tolist())
    given = [(t + 1) % len(labels) if i in flipped else t for i, t in enumerate(truth)]
    rows = [{"id": str(i), "text": "x", "label": labels[g]} for i, g in enumerate(given)]
    dropped = {int(i) for i in by_cleanlab(rows, features, task, folds=5, seed=0)}
    caught = len(dropped & flipped)
    assert caught >= 36 and len(dropped - flipped) <= 4, (caught, len(dropped - flipped))


def test_bad_clean_settings_are_config_errors(make_cfg):
    with pytest.raises(ConfigError, match=r"train.clean.method must be one of \['none', 'confidence', 'cleanlab'\] or null"):
        make_cfg("demo", "train.clean.method=magic")
    with pytest.raises(ConfigError, match="for ner use train.clean.method=confidence"):
        make_cfg("demo_ner", "train.clean.method=cleanlab")
    with pytest.raises(ConfigError, match=r"train.clean.min_confidence must be in \(0, 1\), not 1.5"):
        make_cfg("demo", "train.clean.method=confidence", "train.clean.min_confidence=1.5")
    assert check_clean(make_cfg("demo"), build_task(make_cfg("demo").task)) is None


@pytest.mark.slow
def test_training_leaves_out_doubtful_teacher_rows_and_learns_from_the_rest(tmp_path):
    run_dir = tmp_path / "run"
    cfg = load_config(["recipe=demo", f"run_dir={run_dir}", "train.clean.method=confidence",
                       "train.clean.min_confidence=0.75", "train.epochs=2"])
    teach(cfg)
    task = build_task(cfg.task)
    teacher = [r for r in read_jsonl(run_dir / "teacher" / "seed.jsonl") if r["label"] is not None]
    meta = train(cfg, teach_first=False)

    record = json.loads((run_dir / "student" / "cleaning.json").read_text())
    dropped = {d["id"] for d in record["rows_dropped"]}
    assert dropped == {r["id"] for r in teacher if r["confidence"] < 0.75}
    assert record["rows"] == len(teacher) and record["kept"] == len(teacher) - len(dropped)
    # the simulated teacher is less sure of its wrong answers: most rows left out were wrong
    gold = {r["id"]: r["label"] for r in load_split(cfg, "seed", task, labels=True)}
    wrong = {r["id"] for r in teacher if r["label"] != gold[r["id"]]}
    assert len(dropped & wrong) >= 0.8 * len(dropped) and len(dropped & wrong) >= 0.7 * len(wrong)
    # the trainer consumed exactly the rows kept
    kept = sorted(({"id": r["id"], "label": r["label"]} for r in teacher if r["id"] not in dropped),
                  key=lambda r: (r["id"], json.dumps(r["label"])))
    assert meta["data_hashes"]["rows"] == rows_hash(kept)
    assert meta["train_rows"] + meta["dev_rows"] == len(kept)
    assert meta["cleaning"] == {"method": "confidence", "rows": len(teacher), "dropped": len(dropped),
                                "kept": len(kept)}


def test_cleanlab_cleaning_embeds_with_the_untrained_student_and_records_its_choice(tmp_path):
    from accelerate import PartialState

    from distill.rundir import RunDir
    from distill.train import cleaned

    run_dir = tmp_path / "run"
    cfg = load_config(["recipe=demo", f"run_dir={run_dir}", "train.clean.method=cleanlab", "train.clean.folds=3"])
    teach(cfg)
    task = build_task(cfg.task)
    teacher = [r for r in read_jsonl(run_dir / "teacher" / "seed.jsonl") if r["label"] is not None]
    kept, summary = cleaned(cfg, task, list(reversed(teacher)), RunDir(run_dir), PartialState(cpu=True))
    record = json.loads((run_dir / "student" / "cleaning.json").read_text())
    dropped = {d["id"] for d in record["rows_dropped"]}
    assert summary == {"method": "cleanlab", "rows": len(teacher), "dropped": len(dropped), "kept": len(kept)}
    assert {r["id"] for r in kept} == {r["id"] for r in teacher} - dropped and len(kept) == len(teacher) - len(dropped)
    assert all("cross-validated probe says" in d["reason"] for d in record["rows_dropped"])
    # the order the teacher's replies arrived in does not change the choice
    again, _ = cleaned(cfg, task, teacher, RunDir(run_dir), PartialState(cpu=True))
    assert [r["id"] for r in again] == [r["id"] for r in kept]
    # switched off, the record of an earlier cleaning goes
    off = load_config(["recipe=demo", f"run_dir={run_dir}"])
    assert cleaned(off, task, teacher, RunDir(run_dir), PartialState(cpu=True)) == (teacher, None)
    assert not (run_dir / "student" / "cleaning.json").exists()
