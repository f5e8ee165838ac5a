"""The monitor judges what users ship (routed labels) and cannot be talked down by a loop: a class
lost against a previous student is critical, and the teacher stays the bar beside it."""

import json

import pandas as pd
import pytest

from distill.config import load_config
from distill.data import load_split, read_jsonl
from distill.monitor import monitor
from distill.route import route
from distill.tasks import build_task


def stage(fn, run_dir, *overrides) -> dict:
    """A stage called as the library does (in process: no interpreter start per call)."""
    return fn(load_config(["recipe=demo", f"run_dir={run_dir}", *overrides]))


def gold_truth(run_dir) -> dict:
    cfg = load_config(["recipe=demo", f"run_dir={run_dir}"])
    truth = load_split(cfg, "gold", build_task(cfg.task), labels=True)
    return dict(zip(truth["id"], truth["label"]))


@pytest.mark.slow
def test_monitor_scores_the_routed_labels_users_ship_and_warns_on_an_empty_audit_slice(demo_copy, capsys):
    run_dir = demo_copy
    stage(route, run_dir, "label.route_fraction=0.3")
    # an audit slice whose every answer failed: a warning, not a silently missing line
    ids = pd.read_parquet(run_dir / "labels" / "corpus.parquet")["id"][:5]
    audit = run_dir / "labels" / "teacher" / "audit.jsonl"
    audit.write_text("".join(json.dumps({"id": i, "label": None, "error": "missing_field"}) + "\n" for i in ids))
    stage(monitor, run_dir, "monitor.fail_on=never")
    out = capsys.readouterr().out
    report = json.loads((run_dir / "monitor" / "metrics.json").read_text())

    # the replay, computed here from the files: gold rows under the route's threshold take the teacher's answer
    threshold = json.loads((run_dir / "labels" / "summary.json").read_text())["threshold"]
    truth = gold_truth(run_dir)
    student = pd.read_parquet(run_dir / "labels" / "gold.parquet").set_index("id")
    teacher = {r["id"]: r["label"] for r in read_jsonl(run_dir / "teacher" / "gold.jsonl")}
    shipped, sent = {}, 0
    for i in truth:
        label, conf = student.loc[i, "label"], student.loc[i, "confidence"]
        unsure = label is None or conf < threshold
        sent += unsure
        shipped[i] = teacher[i] if unsure and teacher.get(i) is not None else label
    accuracy = sum(shipped[i] == truth[i] for i in truth) / len(truth)

    got = report["systems"]["shipped labels"]
    assert report["shipping"]["gold_rows_routed"] == sent > 0
    assert got["accuracy"] == pytest.approx(accuracy)
    assert got["accuracy"] != report["systems"]["student"]["accuracy"]
    assert report["shipping"]["corpus"]["teacher"] > 0
    # the demo corpus carries human labels: the corpus as shipped is scored on them too
    scored = report["corpus_scored"]
    assert scored["scored_on_human_labels"] == report["corpus_rows"]
    assert scored["shipped"]["accuracy"] != scored["student"]["accuracy"]
    assert "shipped labels" in out and f"{threshold:.4f}" in out
    assert report["audit"] is None and "no usable teacher answer" in report["warnings"][0]
    assert "warning: the audit slice" in out


@pytest.mark.slow
def test_a_class_lost_after_a_good_student_is_critical(demo_copy, capsys):
    run_dir = demo_copy
    truth = gold_truth(run_dir)
    gold = pd.read_parquet(run_dir / "labels" / "gold.parquet")

    # a good student on record: its gold labels are right but for every fifth row
    good = gold.copy()
    good["label"] = [truth[i] if k % 5 else "sports" for k, i in enumerate(good["id"])]
    good["student"] = "good-student"
    good.to_parquet(run_dir / "labels" / "gold.parquet")
    assert stage(monitor, run_dir, "monitor.fail_on=never")["exit_status"] == 0

    # the next student never labels weather right, and still says weather on a few other rows
    lost = good.copy()
    lost.loc[lost["label"] == "weather", "label"] = "science"
    others = lost.index[lost["id"].map(truth) != "weather"][:3]
    lost.loc[others, "label"] = "weather"
    lost["student"] = "collapsed-student"
    lost.to_parquet(run_dir / "labels" / "gold.parquet")
    capsys.readouterr()
    assert stage(monitor, run_dir)["exit_status"] == 1  # `distill monitor` exits 1
    out = capsys.readouterr().out

    report = json.loads((run_dir / "monitor" / "metrics.json").read_text())
    assert report["baseline"].startswith("previous student good-student")
    assert report["systems"]["student"]["per_class"]["weather"]["f1"] == 0.0
    fired = {a["test"]: a for a in report["alerts"]}
    assert fired["class_collapse"]["severity"] == "critical" and "'weather'" in fired["class_collapse"]["reason"]
    assert "vanished" not in fired  # the bulk labels still name weather: only gold shows the loss
    # the teacher is tested too, whatever the baseline
    assert {"accuracy_vs_teacher", "class_recall_vs_teacher"} <= set(report["tests"])
    assert "ALERT [critical] class_collapse" in out
    assert report["history"]["run"] == report["history"]["runs"] == 3

