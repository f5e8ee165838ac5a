"""The monitor's statistics against hand-computed values, its alert rule and exit codes, its
history, and a whole monitor run on the demo with a degraded student."""

import json
import math
import shutil
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from distill import drift, history, stats
from distill.config import load_config
from distill.data import load_split
from distill.tasks import build_task

ROOT = Path(__file__).resolve().parents[1]
CFG = OmegaConf.load(ROOT / "distill" / "configs" / "monitor" / "default.yaml")


# -- statistics, by hand -------------------------------------------------------------------------
def test_mcnemar_midp_by_hand():
    # b=10, c=2: P(X > 10) + P(X = 10) / 2 with X ~ Bin(12, 1/2) = (13 + 66/2) / 4096
    assert stats.mcnemar_midp(10, 2) == pytest.approx(46 / 4096)
    assert stats.mcnemar_midp(7, 0) == pytest.approx(0.5 / 128)
    assert stats.mcnemar_midp(0, 0) == pytest.approx(0.5)
    assert stats.mcnemar_midp(2, 10) == pytest.approx(1 - 46 / 4096)  # improvement: far from significant
    # a paired 0/1 difference is the exact McNemar test
    d = np.array([1] * 10 + [-1] * 2 + [0] * 50)
    assert stats.signflip_p(d) == pytest.approx(46 / 4096)


def test_monte_carlo_p_values_count_the_observed_statistic():
    # no null statistic reaches the observed one (all 30 signs or swaps at once: chance 2^-30),
    # so p is 1 / (B + 1), never 0
    assert stats.signflip_p(np.full(30, 0.5), n_perm=200) == 1 / 201
    task = build_task(OmegaConf.create({"kind": "classification", "labels": ["a", "b"]}))
    gold = ["a", "b"] * 15
    good, bad = task.counts(gold, gold), task.counts(gold, [{"a": "b", "b": "a"}[g] for g in gold])
    assert stats.paired_permutation(good, bad, stats.macro_f1, n_perm=200) == 1 / 201


def test_atc_reproduces_the_accuracy_it_was_fitted_on_and_follows_a_shift():
    rng = np.random.default_rng(0)
    conf = np.round(rng.uniform(0.3, 1.0, 500), 2)  # rounded: many ties at the threshold
    right = rng.uniform(size=500) < conf
    fit = stats.atc_fit(conf, right)
    assert stats.atc_estimate(conf, fit) == pytest.approx(right.mean(), abs=1e-12)
    # a batch whose confidences all fall under the threshold is estimated wholly wrong, one above it right
    assert stats.atc_estimate(conf[conf < fit[0]], fit) == 0.0
    assert stats.atc_estimate(conf[conf > fit[0]], fit) == 1.0
    est = stats.label_free_estimates(conf, right, conf[:100])
    assert est["atc"]["estimate"] == pytest.approx(stats.atc_estimate(conf[:100], fit))
    assert est["mean_confidence"]["gold_error"] == pytest.approx(conf.mean() - right.mean())


def collapse_evidence(lost: bool, start: float = 0.9) -> drift.Evidence:
    """Three classes of 40 gold rows; the baseline gets class c right at `start`, the current student
    then either keeps it or (lost) never gets it right, still saying c on five other rows."""
    task = build_task(OmegaConf.create({"kind": "classification", "labels": ["a", "b", "c"]}))
    gold = ["a", "b", "c"] * 40
    base = [g if g != "c" or k % 120 < 120 * start else "a" for k, g in enumerate(gold)]
    now = [("b" if g == "c" else g) if lost else g for g in base]
    if lost:
        now[:15:3] = ["c"] * 5  # five "a" rows called c: the class is still named
    counts, base_counts = task.counts(gold, now), task.counts(gold, base)
    return drift.Evidence(classes=task.labels, f1_key="macro_f1", counts=counts, correct=task.correct(gold, now),
                          baseline="previous student", base_counts=base_counts, base_correct=task.correct(gold, base))


def test_a_class_lost_on_gold_is_a_critical_alert_and_a_kept_one_is_not():
    tests = drift.run_tests(collapse_evidence(lost=True), CFG)
    assert tests["class_collapse"]["significant"] and set(tests["class_collapse"]["classes"]) == {"c"}
    alerts = {a["test"]: a for a in drift.alerts(tests, CFG, "previous student")}
    assert alerts["class_collapse"]["severity"] == "critical" and "'c'" in alerts["class_collapse"]["reason"]
    assert not drift.run_tests(collapse_evidence(lost=False), CFG)["class_collapse"]["significant"]
    # a class the baseline never had (F1 under collapse_from) is not "lost"
    assert not drift.run_tests(collapse_evidence(lost=True, start=0.05), CFG)["class_collapse"]["significant"]


def test_the_class_recall_alert_names_the_largest_drop_not_the_first_label():
    # 'person' loses a few of many right answers, 'product' nearly all of its: both p-values sit at
    # the permutation floor, and the alert must name 'product'
    task = build_task(OmegaConf.create({"kind": "classification", "labels": ["person", "product", "other"]}))
    gold = ["person"] * 300 + ["product"] * 40 + ["other"] * 100
    base = list(gold)
    now = ["other" if (g == "person" and k % 10 == 0) or (g == "product" and k % 40 < 36) else g
           for k, g in enumerate(gold)]
    ev = drift.Evidence(classes=task.labels, f1_key="macro_f1", counts=task.counts(gold, now),
                        correct=task.correct(gold, now), baseline="previous student",
                        base_counts=task.counts(gold, base), base_correct=task.correct(gold, base))
    tests = drift.run_tests(ev, CFG)
    assert tests["class_recall"]["worst"] == "product" and tests["class_recall"]["significant_classes"][0] == "product"
    reason = {a["test"]: a for a in drift.alerts(tests, CFG, "previous student")}["class_recall"]["reason"]
    assert reason.startswith("recall of 'product' fell from 1.000")


def test_holm_by_hand():
    adj = stats.holm({"a": 0.01, "b": 0.04, "c": 0.03})
    # sorted .01 x3 = .03, .03 x2 = .06, .04 x1 = .04 -> running maximum .06
    assert adj == pytest.approx({"a": 0.03, "c": 0.06, "b": 0.06})


def test_label_mix_statistics_by_hand():
    chi2, p, dof = stats.chi2_homogeneity(np.array([10, 20]), np.array([20, 10]))
    assert chi2 == pytest.approx(4 * 25 / 15) and dof == 1 and p == pytest.approx(0.009823, abs=1e-5)
    # PSI of (.5, .5) against (.25, .75): .25 ln 2 + .25 ln 1.5
    assert stats.psi(np.array([50, 50]), np.array([25, 75])) == pytest.approx(0.25 * math.log(2) + 0.25 * math.log(1.5))
    assert stats.js_distance(np.array([1, 0]), np.array([0, 1])) == pytest.approx(1.0)
    assert stats.js_distance(np.array([3, 1]), np.array([6, 2])) == pytest.approx(0.0, abs=1e-7)
    assert stats.entropy_bits(np.array([5, 5, 5, 5])) == pytest.approx(2.0)
    assert stats.entropy_bits(np.array([7, 0])) == pytest.approx(0.0)
    assert stats.tail_classes(np.array([60, 25, 10, 5])) == [3, 2]  # 5% + 10% <= 20%, adding 25% is not
    assert stats.vanished_p(0, 100, 0.05) == pytest.approx(0.95 ** 100)


def test_more_statistics_by_hand():
    # JS distance of (1, 0) and (.5, .5): M = (.75, .25); KL(P||M) = log2(4/3), KL(Q||M) = (log2(2/3) + 1) / 2
    jsd = (math.log2(4 / 3) + (math.log2(2 / 3) + 1) / 2) / 2
    assert stats.js_distance(np.array([2, 0]), np.array([1, 1])) == pytest.approx(math.sqrt(jsd))
    # every row right: every resample is right, the CI is a point
    task = build_task(OmegaConf.create({"kind": "classification", "labels": ["a", "b"]}))
    gold = ["a", "b", "a", "a"]
    ci = stats.bootstrap_ci(task.counts(gold, gold), task.correct(gold, gold), "macro_f1", n_boot=200)
    assert ci["accuracy"] == [1.0, 1.0] and ci["macro_f1"] == [1.0, 1.0]
    # identical samples: the mean embeddings coincide, MMD^2 is 0 and nothing is larger than it by chance
    x = np.random.default_rng(3).normal(size=(50, 4))
    same = stats.mmd_test(x, x.copy())
    assert same["mmd2"] == pytest.approx(0.0, abs=1e-12) and same["p"] == 1.0
    # error persistence: the baseline is wrong on rows 0-3, the new model on rows 0-1 and 5 -> 2 of 4
    base = np.array([0, 0, 0, 0, 1, 1], bool)
    new = np.array([0, 0, 1, 1, 1, 0], bool)
    assert stats.persistence(base, new) == pytest.approx(0.5)


def test_calibration_statistics_by_hand():
    conf, right = np.array([0.9, 0.9, 0.6, 0.6]), np.array([1, 0, 1, 1])
    # bin 9: |1 - 1.8|, bin 6: |2 - 1.2| -> (0.8 + 0.8) / 4
    assert stats.ece(conf, right) == pytest.approx(0.4)
    rng = np.random.default_rng(0)
    calibrated = rng.uniform(0.5, 1.0, 2000)
    assert stats.ece_test(calibrated, rng.random(2000) < calibrated)["p"] > 0.05
    over = stats.ece_test(np.full(500, 0.95), rng.random(500) < 0.6)
    assert over["p"] < 0.01 and over["ece"] > over["noise_floor"]
    est = stats.label_free_accuracy(np.array([0.5, 1.0]))
    # mean .75, se sqrt(.25) / 2 = .25
    assert est["estimate"] == pytest.approx(0.75) and est["ci"] == pytest.approx([0.75 - 0.49, 1.0])


def test_scores_and_bootstrap_from_counts():
    task = build_task(OmegaConf.create({"kind": "classification", "labels": ["a", "b", "c"]}))
    gold, pred = ["a", "b", "a", "c"], ["a", "a", None, "c"]
    counts = task.counts(gold, pred)
    assert counts.sum(0).tolist() == [[1, 2, 2], [0, 0, 1], [1, 1, 1]]
    m = task.metrics(gold, pred)
    assert m["accuracy"] == 0.5 and m["invalid"] == 1
    # per class F1: a: p 1/2 r 1/2 -> .5; b: 0; c: 1 -> macro (.5 + 0 + 1) / 3
    assert m["macro_f1"] == pytest.approx(0.5) and m["per_class"]["a"]["f1"] == pytest.approx(0.5)
    rng = np.random.default_rng(1)
    g = rng.integers(0, 3, 400)
    p = np.where(rng.random(400) < 0.8, g, rng.integers(0, 3, 400))
    labels = ["a", "b", "c"]
    big = task.counts([labels[i] for i in g], [labels[i] for i in p])
    ci = stats.bootstrap_ci(big, g == p, "macro_f1", n_boot=500)
    acc = (g == p).mean()
    assert ci["accuracy"][0] < acc < ci["accuracy"][1] and 0.05 < ci["accuracy"][1] - ci["accuracy"][0] < 0.12


def test_ner_counts_resample_whole_documents():
    task = build_task(OmegaConf.create({"kind": "ner", "labels": ["PER", "LOC"]}))
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-LOC"]]
    pred = [["B-PER", "O", "O", "B-LOC"], None]
    counts = task.counts(gold, pred)
    # document 0: PER missed on its boundary (1 predicted, 1 gold, 0 right), LOC right; document 1: LOC missed
    assert counts[0].tolist() == [[0, 1, 1], [1, 1, 1]] and counts[1].tolist() == [[0, 0, 0], [0, 0, 1]]
    assert task.metrics(gold, pred)["f1"] == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))
    assert task.correct(gold, pred).tolist() == [False, False]


def test_paired_permutation_and_mmd():
    rng = np.random.default_rng(2)
    task = build_task(OmegaConf.create({"kind": "classification", "labels": ["a", "b"]}))
    gold = ["a" if x else "b" for x in rng.random(300) < 0.6]
    flip = {"a": "b", "b": "a"}
    good = [g if r < 0.9 else flip[g] for g, r in zip(gold, rng.random(300))]
    bad = [g if r < 0.7 else flip[g] for g, r in zip(gold, rng.random(300))]
    same = task.counts(gold, good)
    assert stats.paired_permutation(same, same, stats.macro_f1) == 1.0  # every null draw ties the observed 0
    assert stats.paired_permutation(same, task.counts(gold, bad), stats.macro_f1) < 0.01
    assert stats.paired_permutation(task.counts(gold, bad), same, stats.macro_f1) > 0.99
    x = rng.normal(size=(300, 8))
    assert stats.mmd_test(x, rng.normal(size=(300, 8)))["p"] > 0.05
    shifted = rng.normal(size=(300, 8))
    shifted[:, 0] += 1.0
    assert stats.mmd_test(x, shifted)["p"] < 0.01


def test_cusum_and_power_by_hand():
    # se = sqrt(.9 * .1 / 100) = .03: z = 0, 3.33, 3.33 -> S = 0, 2.83, 5.67 > 4
    out = stats.cusum([0.9, 0.8, 0.8], [100, 100, 100], 0.9)
    assert out["path"] == pytest.approx([0.0, 0.1 / 0.03 - 0.5, 2 * (0.1 / 0.03 - 0.5)]) and out["signal"]
    assert not stats.cusum([0.9, 0.9, 0.91], [100] * 3, 0.9)["signal"]
    # no drop: the test fires at most alpha of the time; n = 1 with every row lost: 1/4 < .05 is false
    assert stats.mcnemar_power(500, 0.05, 0.0) <= 0.05
    assert stats.mcnemar_power(5, 0.0, 1.0) == pytest.approx(1.0)  # 5 of 5 rows lost: mid-p 1/64
    small, large = stats.detectable_drop(200, 0.05), stats.detectable_drop(2000, 0.05)
    assert 0 < large < small < 0.2
    assert stats.mcnemar_power(2000, 0.05, large) == pytest.approx(0.8, abs=0.01)


# -- alerts and exit codes -------------------------------------------------------------------------
def evidence(drop: float = 0.0, vanish: bool = False, seed: int = 0) -> drift.Evidence:
    rng = np.random.default_rng(seed)
    task = build_task(OmegaConf.create({"kind": "classification", "labels": ["a", "b", "c"]}))
    gold = list(rng.choice(["a", "b", "c"], size=1000, p=[0.5, 0.3, 0.2]))
    base = [g if r < 0.9 else "a" for g, r in zip(gold, rng.random(1000))]
    cur = [("b" if p == "a" else "a") if p == g and r < drop else p for g, p, r in zip(gold, base, rng.random(1000))]
    corpus = list(rng.choice(["a", "b", "c"], size=3000, p=[0.5, 0.3, 0.2]))
    if vanish:
        corpus = [x if x != "c" else "b" for x in corpus]
    conf = np.full(1000, 0.9)
    return drift.Evidence(
        classes=task.labels, f1_key="macro_f1", counts=task.counts(gold, cur), correct=task.correct(gold, cur),
        confidence=conf, baseline="previous", base_counts=task.counts(gold, base),
        base_correct=task.correct(gold, base), base_confidence=conf,
        mix={"corpus": task.label_counts(corpus), "gold": task.label_counts(gold), "seed": None})


def test_no_change_raises_no_alert():
    tests = drift.run_tests(evidence(), CFG)
    assert tests["accuracy"]["p"] == pytest.approx(0.5)  # identical predictions: no discordant rows
    assert not [a for a in drift.alerts(tests, CFG, "previous") if a["severity"] != "info"]
    assert not drift.fails(drift.alerts(tests, CFG, "previous"), "warning")


def test_accuracy_drop_and_vanished_class_alert_with_reasons_and_mitigations():
    tests = drift.run_tests(evidence(drop=0.08, vanish=True), CFG)
    alerts = {a["test"]: a for a in drift.alerts(tests, CFG, "previous")}
    assert alerts["accuracy"]["severity"] == "critical"  # about 7 points, past critical_drop 0.05
    assert "fell from" in alerts["accuracy"]["reason"] and "10%" in alerts["accuracy"]["mitigation"]
    assert alerts["vanished"]["severity"] == "critical" and "c" in alerts["vanished"]["reason"]
    assert "Gerstgrasser" in alerts["vanished"]["mitigation"]
    assert tests["accuracy"]["error_persistence"] == pytest.approx(1.0)  # it keeps every old error
    # confidence held while accuracy fell: overconfidence; had confidence fallen further, it is not
    assert alerts["overconfidence"]["severity"] == "warning"
    humbler = evidence(drop=0.08, vanish=True)
    humbler.confidence = np.full(1000, 0.5)
    assert "overconfidence" not in {a["test"] for a in drift.alerts(drift.run_tests(humbler, CFG), CFG)}
    assert drift.fmt_p(0.0) == "<0.001" and drift.fmt_p(0.0123) == "0.012"
    assert drift.fails(list(alerts.values()), "warning") and drift.fails(list(alerts.values()), "critical")
    assert not drift.fails(list(alerts.values()), "never")
    info = [{"severity": "info"}]
    assert not drift.fails(info, "warning") and drift.fails(info, "info")


def test_history_updates_a_rerun_in_place(tmp_path):
    db = tmp_path / "h.sqlite"
    run = {"time": "t", "recipe": "r", "student": "s1", "baseline": None, "corpus_batch": "c", "gold": "g",
           "gold_rows": 2, "metrics": {"accuracy": 0.5}, "tests": {}, "alerts": [], "predictions": {"x": ["a", 0.9]}}
    first = history.record(db, run)
    assert history.record(db, {**run, "metrics": {"accuracy": 0.6}}) == first
    history.record(db, {**run, "student": "s2"})
    runs = history.runs(db, "r")
    assert [r["student"] for r in runs] == ["s1", "s2"] and runs[0]["metrics"] == {"accuracy": 0.6}
    assert runs[0]["predictions"] == {"x": ["a", 0.9]}
    assert sqlite3.connect(db).execute("SELECT count(*) FROM runs").fetchone()[0] == 2


# -- a whole monitor run, through the CLI ------------------------------------------------------------
def cli(*args):
    return subprocess.run(["distill", *args], capture_output=True, text=True, cwd=ROOT)


@pytest.mark.slow
def test_monitor_catches_a_degraded_student_and_exits_1(demo_copy, capsys):
    run_dir = demo_copy
    first = json.loads((run_dir / "monitor" / "metrics.json").read_text())
    assert first["baseline"] == "teacher" and first["history"]["runs"] == 1
    assert first["systems"]["student"]["ci"]["accuracy"][0] < first["systems"]["student"]["accuracy"]
    assert {"accuracy", "f1", "class_recall", "calibration", "label_mix_gold", "label_mix_seed", "input"} <= set(first["tests"])
    lf = first["label_free"]
    assert lf["rows"] == 300 and 0 < lf["atc"]["estimate"] <= 1 and 0 < lf["mean_confidence"]["estimate"] < 1
    assert lf["atc"]["gold_error"] < 0.05 and "label-free accuracy estimate by ATC" in (run_dir / "monitor" / "report.html").read_text()

    # monitoring the same student again changes nothing in the history
    from distill.monitor import monitor

    again = monitor(load_config(["recipe=demo", f"run_dir={run_dir}", "monitor.fail_on=never", "monitor.power=true"]))
    assert again["exit_status"] == 0 and "smallest accuracy drop" in capsys.readouterr().out
    assert json.loads((run_dir / "monitor" / "metrics.json").read_text())["history"]["runs"] == 1

    # a degraded student: a third of its right gold answers turned wrong, weather gone from its bulk labels
    gold = pd.read_parquet(run_dir / "labels" / "gold.parquet")
    cfg = load_config(["recipe=demo", f"run_dir={run_dir}"])
    truth = load_split(cfg, "gold", build_task(cfg.task), labels=True)
    gold_truth = dict(zip(truth["id"], truth["label"]))
    wrong = {"sports": "business", "business": "science", "science": "weather", "weather": "sports"}
    rows = gold.index[(gold["label"] == gold["id"].map(gold_truth))][::3]
    gold.loc[rows, "label"] = gold.loc[rows, "label"].map(wrong)
    gold["student"] = "degraded-student"
    gold.to_parquet(run_dir / "labels" / "gold.parquet")
    corpus = pd.read_parquet(run_dir / "labels" / "corpus.parquet")
    corpus.loc[corpus["label"] == "weather", "label"] = "science"
    corpus.to_parquet(run_dir / "labels" / "corpus.parquet")

    proc = cli("monitor", "recipe=demo", f"run_dir={run_dir}")
    assert proc.returncode == 1, proc.stderr[-3000:]
    report = json.loads((run_dir / "monitor" / "metrics.json").read_text())
    assert report["baseline"].startswith("previous student tiny-random-seq2seq")
    fired = {a["test"]: a for a in report["alerts"]}
    assert fired["accuracy"]["severity"] == "critical" and fired["vanished"]["severity"] == "critical"
    assert "ALERT [critical] accuracy" in proc.stdout and "mitigation:" in proc.stdout
    assert report["history"]["runs"] == 2
    page = (run_dir / "monitor" / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4 and "CRITICAL" in page and "vanished" in page


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium (apt install chromium)")
def test_report_renders_in_headless_chromium(tmp_path):
    from distill.report import write_html

    report = json.loads((ROOT / "tests" / "data" / "monitor_report.json").read_text())
    runs = [{"metrics": {**report["systems"]["student"], "mean_confidence": 0.8, "label_free": report["label_free"]}}] * 2
    page = write_html(report, runs, tmp_path / "report.html")
    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1200,2400", page.as_uri()], capture_output=True, timeout=120, check=True)
    from matplotlib.image import imread

    img = imread(shot)
    assert img.shape[0] == 2400 and img[..., :3].std() > 0.05  # drawn, not a blank page
