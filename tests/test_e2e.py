"""The whole loop through the real CLI: teach → train → label → monitor."""

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from distill.config import load_config
from distill.data import load_split
from distill.tasks import build_task

ROOT = Path(__file__).resolve().parents[1]


def run(*args, cwd=ROOT):
    proc = subprocess.run(args, capture_output=True, text=True, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_demo_end_to_end_student_beats_majority(demo_run):
    run_dir, proc = demo_run
    cfg = load_config(["recipe=demo", f"run_dir={run_dir}"])
    task = build_task(cfg.task)

    # a student label for every corpus row, none lost or repeated
    corpus = load_split(cfg, "corpus", task, labels=False)
    labels = pd.read_parquet(run_dir / "labels" / "corpus.parquet")
    assert sorted(labels["id"]) == sorted(corpus["id"]) and labels["id"].is_unique
    assert labels["label"].isin(task.labels).all()
    assert ((labels["confidence"] > 0) & (labels["confidence"] <= 1)).all()
    meta = json.loads((run_dir / "student" / "student.json").read_text())
    assert (labels["model"] == f"tiny-random-seq2seq+lora:{meta['adapter_hash']}").all()

    # monitor metrics are the ones the label files give
    report = json.loads((run_dir / "monitor" / "metrics.json").read_text())
    gold = load_split(cfg, "gold", task, labels=True)
    student_gold = pd.read_parquet(run_dir / "labels" / "gold.parquet").set_index("id")["label"]
    accuracy = sum(student_gold[i] == g for i, g in zip(gold["id"], gold["label"])) / len(gold)
    systems = report["systems"]
    assert systems["student"]["accuracy"] == pytest.approx(accuracy)
    assert systems["student"]["n"] == len(gold) == report["gold_rows"]

    # distillation works: the student clearly beats the majority class, and is near the teacher
    majority = systems["majority baseline"]["accuracy"]
    assert systems["student"]["accuracy"] >= majority + 0.25, systems
    assert systems["student"]["accuracy"] >= systems["teacher"]["accuracy"] - 0.1, systems
    assert report["teacher"]["simulated"] is True

    # the printed table and the model card say what was compared, and that the teacher was simulated
    assert "SIMULATED" in proc.stdout and "majority baseline" in proc.stdout and "student" in proc.stdout
    card = (run_dir / "student" / "adapter" / "README.md").read_text()
    assert "simulated-gpt-4" in card and "simulated" in card and "recipe: `demo`" in card
    assert f"{systems['student']['accuracy']:.3f}" in card


@pytest.mark.slow
def test_ner_demo_end_to_end(tmp_path):
    run_dir = tmp_path / "ner"
    # the tiny encoder tagger learns the demo in 72 steps, about as fast as the old seq2seq run that
    # learned nothing (a tiny byte-level T5 needs hundreds of steps to copy names)
    run("distill", "run", "recipe=demo_ner", f"run_dir={run_dir}", "student=tiny_encoder",
        "data.demo.sizes.seed=160", "data.demo.sizes.corpus=30", "data.demo.sizes.gold=30", "train.epochs=8")
    labels = pd.read_parquet(run_dir / "labels" / "corpus.parquet")
    assert len(labels) == 30 and labels["id"].is_unique
    # every row has tags aligned to its tokens, or an error type saying why not
    for tokens, label, error in zip(labels["tokens"], labels["label"], labels["error"]):
        assert (label is not None and len(label) == len(tokens)) or isinstance(error, str)
    report = json.loads((run_dir / "monitor" / "metrics.json").read_text())
    assert set(report["systems"]) == {"majority baseline", "teacher", "student"}
    assert 0.8 < report["systems"]["teacher"]["f1"] < 1.0  # the simulator's noise shows
    # the student learned the entities: entity F1 on gold was 0.93 here (0.88-0.94 over seeds 1-3);
    # a student that finds nothing scores 0. Floor: 0.6
    assert report["systems"]["student"]["f1"] >= 0.6, report["systems"]["student"]
    # whole-sentence rightness is named for what it is, in metrics.json and the report page
    assert report["accuracy_name"] == "sentence exact match"
    assert "sentence_exact_match" in (run_dir / "monitor" / "report.html").read_text()
