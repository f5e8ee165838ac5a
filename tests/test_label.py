"""The bulk labeling engine: shards, kill and resume, a corpus larger than it holds in memory,
the routing step (unsure rows to the teacher or to review), and the threshold picked on gold."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from unittest import mock

import pandas as pd
import pyarrow.parquet as pq
import pytest

from distill.cascade import curve, held_out_check, pick, resolve_threshold, seed_cost_per_row
from distill.config import load_config
from distill.data import load_split, read_jsonl
from distill.errors import ConfigError, DataError, TeacherError
from distill.label import label, merge
from distill.monitor import monitor
from distill.route import audit_draw, audit_rows, check_route, route
from distill.shards import join_parts, label_files, write_table
from distill.tasks import build_task
from distill.teacher.cache import Cache, spent
from distill.train import train

ROOT = Path(__file__).resolve().parents[1]
# a bound the README states: labeling 200,000 rows with the tiny encoder peaks under this
BOUND_MB = 900


def run(*args, env=None):
    proc = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run directory with a trained, calibrated demo student (tiny seq2seq)."""
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    train(load_config(["recipe=demo", f"run_dir={run_dir}", "train.max_steps=120"]))
    return run_dir


def copy_run(trained, tmp_path) -> Path:
    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir, ignore=shutil.ignore_patterns("labels", "checkpoints"))
    return run_dir


def cfg_for(run_dir, *overrides):
    return load_config(["recipe=demo", f"run_dir={run_dir}", *overrides])


def big_corpus(path: Path, n: int, seed: int = 0) -> list[str]:
    """n distinct short news-like texts, as JSONL."""
    rng = random.Random(seed)
    words = ("team match market shares storm rain research space coach deal forecast launch players "
             "profits wind study league bank heat telescope").split()
    texts = [f"{' '.join(rng.choices(words, k=rng.randint(5, 14)))} item {i}" for i in range(n)]
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return texts


def test_labels_carry_provenance_and_a_rerun_labels_nothing(trained, tmp_path, capsys):
    run_dir = copy_run(trained, tmp_path)
    summary = label(cfg_for(run_dir, "label.window=64"))
    meta = json.loads((run_dir / "student" / "student.json").read_text())
    corpus = pd.read_parquet(run_dir / "labels" / "corpus.parquet")
    task = build_task(cfg_for(run_dir).task)
    ids = load_split(cfg_for(run_dir), "corpus", task, labels=False)["id"]
    assert list(corpus["id"]) == ids  # every row once, in corpus order
    assert corpus["label"].isin(task.labels).all() and corpus["error"].isna().all()  # scored, never invalid
    assert ((corpus["confidence"] > 0) & (corpus["confidence"] <= 1)).all()
    assert (corpus["route"] == "student").all() and corpus["time"].notna().all()
    assert (corpus["student"] == f"tiny-random-seq2seq+lora:{meta['adapter_hash']}").all()
    assert summary["corpus"]["labeled_this_run"] == len(ids) and summary["corpus"]["repeated_rows_dropped"] == 0
    manifest = json.loads((run_dir / "labels" / "corpus" / "manifest.json").read_text())
    assert manifest["rows"] == len(ids) and [f["file"] for f in manifest["files"]] == ["shard-00000-of-00001.parquet"]

    again = label(cfg_for(run_dir, "label.window=64"))
    assert again["corpus"]["labeled_this_run"] == 0 and again["corpus"]["skipped_already_written"] == len(ids)
    pd.testing.assert_frame_equal(pd.read_parquet(run_dir / "labels" / "corpus.parquet"), corpus)

    # a copy of the corpus elsewhere is the same corpus; an edited one is labeled afresh, saying why
    copy = tmp_path / "copy.jsonl"
    shutil.copy(run_dir / "data" / "corpus.jsonl", copy)
    moved = label(cfg_for(run_dir, "label.window=64", f"data.corpus.path={copy}", "label.splits=[corpus]"))
    assert moved["corpus"]["labeled_this_run"] == 0
    with open(copy, "a") as f:
        f.write(json.dumps({"text": "one more story about the league"}) + "\n")
    capsys.readouterr()
    edited = label(cfg_for(run_dir, "label.window=64", f"data.corpus.path={copy}", "label.splits=[corpus]"))
    assert edited["corpus"]["labeled_this_run"] == len(ids) + 1
    out = capsys.readouterr().out
    assert "labeling it afresh (file.bytes: " in out and "file.sha256: " in out, out


@pytest.mark.slow
def test_two_processes_shard_the_corpus_exactly_once(trained, tmp_path):
    run_dir = copy_run(trained, tmp_path)
    run("accelerate", "launch", "--config_file", "distill/configs/accelerate/multi_gpu.yaml", "--num_processes", "2",
        "--mixed_precision", "no", "distill/label.py", "recipe=demo", f"run_dir={run_dir}", "label.window=40")
    task = build_task(cfg_for(run_dir).task)
    ids = load_split(cfg_for(run_dir), "corpus", task, labels=False)["id"]
    shards = [run_dir / "labels" / "corpus" / f"shard-0000{r}-of-00002.parquet" for r in (0, 1)]
    per_shard = [pq.read_table(p, columns=["id"]).column("id").to_pylist() for p in shards]
    assert all(per_shard) and not set(per_shard[0]) & set(per_shard[1])
    assert sorted(per_shard[0] + per_shard[1]) == sorted(ids)  # every row exactly once
    assert not list((run_dir / "labels" / "corpus" / "parts").glob("*.parquet"))  # parts joined
    summary = json.loads((run_dir / "labels" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["corpus"]["rows"] == len(ids)
    merged = pd.read_parquet(run_dir / "labels" / "corpus.parquet")
    assert list(merged["id"]) == ids
    # the same student labels the same way whichever process holds the row
    single = copy_run(trained, tmp_path / "single")
    label(cfg_for(single))
    alone = pd.read_parquet(single / "labels" / "corpus.parquet")
    assert (alone["label"] == merged["label"]).mean() >= 0.99


@pytest.mark.slow
def test_killed_labeling_resumes_without_relabeling_or_repeating(trained, tmp_path):
    run_dir = copy_run(trained, tmp_path)
    big_corpus(tmp_path / "corpus.jsonl", 3000)
    args = ["distill", "label", "recipe=demo", f"run_dir={run_dir}", f"data.corpus.path={tmp_path / 'corpus.jsonl'}",
            "data.corpus.label_column=null", "label.window=100", "label.batch_size=50"]
    parts = run_dir / "labels" / "corpus" / "parts"
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while len(list(parts.glob("*.parquet"))) < 4:
        assert proc.poll() is None and time.time() < deadline, "labeling ended before it could be killed"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = pd.concat([pd.read_parquet(p) for p in label_files(run_dir / "labels" / "corpus")])
    assert 400 <= len(before) < 3000 and before["id"].is_unique

    run(*args)
    after = pd.read_parquet(run_dir / "labels" / "corpus.parquet")
    cfg = cfg_for(run_dir, f"data.corpus.path={tmp_path / 'corpus.jsonl'}", "data.corpus.label_column=null")
    ids = load_split(cfg, "corpus", build_task(cfg.task), labels=False)["id"]
    assert list(after["id"]) == ids  # every row exactly once
    # rows written before the kill were kept as they were, not labeled again
    kept = after.set_index("id").loc[before["id"]]
    assert (kept["time"].values == before["time"].values).all()
    summary = json.loads((run_dir / "labels" / "summary.json").read_text())
    assert summary["corpus"]["skipped_already_written"] == len(before)
    assert summary["corpus"]["labeled_this_run"] == 3000 - len(before)


def test_a_kill_between_joining_and_cleaning_up_repeats_nothing(make_cfg, tmp_path):
    cfg = make_cfg("demo")
    task = build_task(cfg.task)
    out = tmp_path / "labels" / "corpus"
    row = {"text": "t", "label": "sports", "confidence": 0.9, "entity_confidence": None, "error": None, "raw": "sports",
           "route": "student", "model": "m", "student": "m", "student_label": "sports", "student_confidence": 0.9,
           "cost_usd": 0.0, "time": None}
    for k in range(3):
        write_table([{**row, "id": f"{k}-{j}"} for j in range(5)], out / "parts" / f"shard-00000-of-00001-{k:012d}-x.parquet", task)
    with mock.patch.object(Path, "unlink", side_effect=OSError("killed")), pytest.raises(OSError):
        join_parts(out, "shard-00000-of-00001", task)
    assert len(list((out / "parts").glob("*.parquet"))) == 3  # the parts outlived the join
    assert [p.name for p in label_files(out)] == ["shard-00000-of-00001.parquet"]  # but are not read twice
    join_parts(out, "shard-00000-of-00001", task)  # nothing new to join
    assert pq.read_metadata(out / "shard-00000-of-00001.parquet").num_rows == 15


@pytest.mark.slow
@pytest.mark.extended  # the memory figure itself is scripts/bench_label.py's
def test_a_200k_row_corpus_is_labeled_in_bounded_memory(tmp_path):
    run_dir = tmp_path / "run"
    base = ["recipe=demo", f"run_dir={run_dir}", "student=tiny_encoder", "train.max_steps=10"]
    train(load_config(base))
    texts = big_corpus(tmp_path / "corpus.jsonl", 200_000)
    env = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "hf")}
    run(sys.executable, "-m", "distill.cli", "label", *base, f"data.corpus.path={tmp_path / 'corpus.jsonl'}",
        "data.corpus.label_column=null", "label.splits=[corpus]", "label.batch_size=256", "label.window=8192", env=env)
    summary = json.loads((run_dir / "labels" / "summary.json").read_text())
    assert summary["corpus"]["rows"] == 200_000 and summary["corpus"]["repeated_rows_dropped"] == 0
    assert pq.read_metadata(run_dir / "labels" / "corpus.parquet").num_rows == len(texts)
    print(f"200k rows: peak RSS {summary['peak_rss_mb']:.0f} MB, "
          f"{summary['corpus']['rows_per_s']} rows/s")
    assert summary["peak_rss_mb"] < BOUND_MB


def test_unsure_rows_go_to_the_teacher_once(trained, tmp_path):
    run_dir = copy_run(trained, tmp_path)
    billed = len(Cache(run_dir / "teacher" / "cache.sqlite"))
    # labeling never pays: unsure rows keep the student's label until the routing step
    summary = label(cfg_for(run_dir, "label.threshold=0.6"))
    corpus = pd.read_parquet(run_dir / "labels" / "corpus.parquet")
    unsure = corpus["student_confidence"] < 0.6
    assert 0 < unsure.sum() < len(corpus)
    assert summary["corpus"]["cascade"]["not_asked"] == unsure.sum() and (corpus["route"] == "student").all()
    assert len(Cache(run_dir / "teacher" / "cache.sqlite")) == billed
    assert not (run_dir / "labels" / "teacher" / "corpus.jsonl").exists()

    summary = route(cfg_for(run_dir, "label.threshold=0.6"))
    corpus = pd.read_parquet(run_dir / "labels" / "corpus.parquet")
    assert (corpus.loc[unsure, "route"] == "teacher").all() and (corpus.loc[~unsure, "route"] == "student").all()
    answers = {r["id"]: r for r in read_jsonl(run_dir / "labels" / "teacher" / "corpus.jsonl")}
    assert set(answers) == set(corpus.loc[unsure, "id"])  # only the unsure rows were asked
    for _, row in corpus[unsure].iterrows():
        assert row["label"] == answers[row["id"]]["label"] and row["model"] == "simulated-gpt-4 (simulated)"
    assert (corpus.loc[~unsure, "label"] == corpus.loc[~unsure, "student_label"]).all()
    assert summary["corpus"]["routes"] == {"student": int((~unsure).sum()), "teacher": int(unsure.sum())}
    assert summary["corpus"]["teacher_cost_usd"] > 0

    route(cfg_for(run_dir, "label.threshold=0.6"))  # a rerun asks the teacher nothing new
    assert len(read_jsonl(run_dir / "labels" / "teacher" / "corpus.jsonl")) == unsure.sum()
    pd.testing.assert_frame_equal(pd.read_parquet(run_dir / "labels" / "corpus.parquet"), corpus)

    # distill merge never pays: with a higher threshold the new unsure rows keep the student's label
    billed = len(Cache(run_dir / "teacher" / "cache.sqlite"))
    summary = merge(cfg_for(run_dir, "label.threshold=0.9"))
    more = (corpus["student_confidence"] < 0.9) & ~unsure
    assert more.sum() > 0 and summary["corpus"]["cascade"]["not_asked"] == more.sum()
    assert len(Cache(run_dir / "teacher" / "cache.sqlite")) == billed
    assert len(read_jsonl(run_dir / "labels" / "teacher" / "corpus.jsonl")) == unsure.sum()
    merged = pd.read_parquet(run_dir / "labels" / "corpus.parquet")
    assert (merged.loc[more, "route"] == "student").all() and (merged.loc[unsure, "route"] == "teacher").all()


def test_rows_the_budget_stops_go_to_review(trained, tmp_path):
    run_dir = copy_run(trained, tmp_path)
    label(cfg_for(run_dir, "label.threshold=0.6"))
    # room for about three more requests
    cost = max(r["cost_usd"] for r in read_jsonl(run_dir / "teacher" / "seed.jsonl"))
    budget = spent(run_dir / "teacher" / "cache.sqlite") + 3.5 * cost
    summary = route(cfg_for(run_dir, "label.threshold=0.6", f"teacher.budget_usd={budget}"))
    corpus = pd.read_parquet(run_dir / "labels" / "corpus.parquet")
    unsure = corpus["student_confidence"] < 0.6
    routes = corpus.loc[unsure, "route"].value_counts().to_dict()
    assert routes.get("teacher", 0) > 0 and routes.get("review", 0) > 0 and sum(routes.values()) == unsure.sum()
    assert summary["corpus"]["cascade"]["not_asked"] == 0  # asked, stopped by the budget: a person decides
    tasks = json.loads((run_dir / "labels" / "review" / "corpus.label_studio.json").read_text())
    assert {t["data"]["distill_id"] for t in tasks} == set(corpus.loc[corpus["route"] == "review", "id"])


def test_review_route_writes_label_studio_and_argilla_files(trained, tmp_path):
    run_dir = copy_run(trained, tmp_path)
    label(cfg_for(run_dir, "label.threshold=0.6", "label.route=review"))
    corpus = pd.read_parquet(run_dir / "labels" / "corpus.parquet")
    review = corpus[corpus["route"] == "review"]
    assert len(review) == (corpus["student_confidence"] < 0.6).sum() > 0
    assert (review["label"] == review["student_label"]).all()  # the student's answer stays as the suggestion
    tasks = json.loads((run_dir / "labels" / "review" / "corpus.label_studio.json").read_text())
    assert [t["data"]["distill_id"] for t in tasks] == list(review["id"])
    for t, (_, row) in zip(tasks, review.iterrows()):
        pred = t["predictions"][0]
        assert pred["result"][0]["value"]["choices"] == [row["label"]] and pred["score"] == pytest.approx(row["confidence"])
    config = ET.fromstring((run_dir / "labels" / "review" / "label_config.xml").read_text())
    assert [c.get("value") for c in config.iter("Choice")] == ["sports", "business", "science", "weather"]
    records = read_jsonl(run_dir / "labels" / "review" / "corpus.argilla.jsonl")
    assert [r["label"] for r in records] == list(review["label"])
    settings = json.loads((run_dir / "labels" / "review" / "argilla_settings.json").read_text())
    assert settings["questions"] == [{"name": "label", "type": "label_selection",
                                      "labels": ["sports", "business", "science", "weather"]}]


def test_cascade_picks_the_cheapest_threshold_reaching_the_target(trained, tmp_path):
    task = build_task(cfg_for(tmp_path).task)
    # four rows: the student is wrong exactly where it is unsure, the teacher always right
    truth = ["sports", "business", "science", "weather"]
    student = ["sports", "business", "business", "sports"]
    confidence = [0.9, 0.8, 0.4, 0.3]
    points = curve(task, truth, student, confidence, truth, cost_per_row=0.01)
    chosen, reached = pick(points, target=1.0)
    assert reached and chosen["teacher_share"] == 0.5 and chosen["quality"] == 1.0 and 0.4 < chosen["threshold"] <= 0.8
    assert chosen["teacher_cost_per_1k_rows"] == pytest.approx(5.0)
    assert pick(points, target=0.5)[0]["teacher_share"] == 0.0  # the student alone is enough
    # an unreachable target: the best point, flagged
    best, reached = pick(curve(task, truth, student, confidence, student, None), target=1.0)
    assert not reached and best["quality"] == 0.5

    # the command: on gold, writes the threshold label.threshold=auto reads, the curve and its plot
    run_dir = copy_run(trained, tmp_path)
    label(cfg_for(run_dir, "label.splits=[gold]"))
    run("distill", "cascade", "recipe=demo", f"run_dir={run_dir}", "label.target=0.9")
    result = json.loads((run_dir / "cascade" / "threshold.json").read_text())
    points = json.loads((run_dir / "cascade" / "curve.json").read_text())
    assert (run_dir / "cascade" / "curve.png").read_bytes()[:4] == b"\x89PNG"
    if result["reached"]:
        assert result["expected"]["quality"] >= 0.9
        assert all(p["quality"] < 0.9 for p in points if p["teacher_share"] < result["expected"]["teacher_share"])
    assert resolve_threshold(cfg_for(run_dir, "label.threshold=auto")) == result["threshold"]


def test_bad_thresholds_are_refused_clearly(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(TeacherError, match="OPENAI_API_KEY"):  # before any row is labeled
        check_route(cfg_for(tmp_path, "teacher=openai", "label.threshold=0.5"), build_task(cfg_for(tmp_path).task))
    with pytest.raises(ConfigError, match="needs label.threshold"):
        check_route(cfg_for(tmp_path, "label.audit_fraction=0"), build_task(cfg_for(tmp_path).task))
    with pytest.raises(ConfigError, match="give one of label.threshold, label.route_fraction"):
        check_route(cfg_for(tmp_path, "label.threshold=0.5", "label.route_fraction=0.1"), build_task(cfg_for(tmp_path).task))
    with pytest.raises(ConfigError, match="label.route_fraction must be a share"):
        check_route(cfg_for(tmp_path, "label.route_fraction=2"), build_task(cfg_for(tmp_path).task))
    with pytest.raises(ConfigError, match="distill cascade"):
        resolve_threshold(cfg_for(tmp_path, "label.threshold=auto"))
    with pytest.raises(ConfigError, match="number in"):
        resolve_threshold(cfg_for(tmp_path, "label.threshold=high"))
    with pytest.raises(ConfigError, match="label.route"):
        resolve_threshold(cfg_for(tmp_path, "label.threshold=0.5", "label.route=nowhere"))
    with pytest.raises(DataError, match="no labels to merge"):
        merge(cfg_for(tmp_path))


def test_a_bad_token_budget_is_refused_as_the_recipe_loads(make_cfg):
    with pytest.raises(ConfigError, match="label.batch_tokens must be a positive token count or null, not 0"):
        make_cfg("demo", "label.batch_tokens=0")


def test_route_fraction_sends_the_least_sure_share_asked_and_the_monitor_scores_the_audit_slice(trained, tmp_path):
    run_dir = copy_run(trained, tmp_path)
    label(cfg_for(run_dir))
    summary = route(cfg_for(run_dir, "label.route_fraction=0.2", "label.audit_fraction=0.1"))
    corpus = pd.read_parquet(run_dir / "labels" / "corpus.parquet")
    sent = corpus["route"] == "teacher"
    assert abs(sent.mean() - 0.2) <= 0.01  # the share asked, set from the batch's own confidences
    assert corpus.loc[sent, "student_confidence"].max() <= corpus.loc[~sent, "student_confidence"].min()
    assert summary["threshold"] == pytest.approx(corpus.loc[~sent, "student_confidence"].min())

    # the audit slice: rows drawn from their ids alone, sure and unsure alike, answered by the teacher
    audit = {r["id"]: r for r in read_jsonl(run_dir / "labels" / "teacher" / "audit.jsonl")}
    assert set(audit) == {i for i in corpus["id"] if audit_draw(i, 0) < 0.1} and summary["corpus"]["audit"]["rows"] == len(audit)
    slice_ = corpus[corpus["id"].isin(audit)]
    assert (slice_["route"] == "teacher").any() and (slice_["route"] == "student").any()
    assert (slice_["label"] == slice_["student_label"])[slice_["route"] == "student"].all()  # an audit changes no label

    report = monitor(cfg_for(run_dir, "monitor.embed_rows=0"))
    agree = sum(audit[i]["label"] == s for i, s in zip(slice_["id"], slice_["student_label"])) / len(slice_)
    assert report["audit"]["rows"] == len(slice_) and report["audit"]["agreement"] == pytest.approx(agree)
    lo, hi = report["audit"]["ci"]
    assert lo <= agree <= hi and report["audit"]["estimate"] is not None

    # a budget instead: as many rows as it buys at the teacher's cost per seed row
    per_row = seed_cost_per_row(cfg_for(run_dir))
    summary = route(cfg_for(run_dir, f"label.route_budget_usd={per_row * 45.5}", "label.audit_fraction=0"))
    corpus = pd.read_parquet(run_dir / "labels" / "corpus.parquet")
    assert abs((corpus["route"] == "teacher").sum() - 45) <= 3


def test_the_audit_slice_ignores_confidence_and_is_the_same_for_the_same_seed(tmp_path):
    import pyarrow as pa

    task = build_task(cfg_for(tmp_path).task)
    ids = [f"row-{i}" for i in range(20_000)]
    conf = [random.Random(0).random() for _ in ids]
    files = []
    for name, c in (("a", conf), ("b", [1 - x for x in conf])):  # the same rows, confidences turned around
        table = pa.table({"id": ids, "text": ids, "student_label": ["sports"] * len(ids), "student_confidence": c})
        files.append(tmp_path / f"{name}.parquet")
        pq.write_table(table, files[-1])
    one = audit_rows(task, files[:1], 0.02, 10_000, seed=0)
    assert [r["id"] for r in one] == [r["id"] for r in audit_rows(task, files[1:], 0.02, 10_000, seed=0)]
    assert abs(len(one) / len(ids) - 0.02) < 0.003
    other = {r["id"] for r in audit_rows(task, files[:1], 0.02, 10_000, seed=1)}
    assert len(other & {r["id"] for r in one}) < 0.1 * len(one)  # another seed, other rows
    assert len(audit_rows(task, files[:1], 0.02, 50, seed=0)) == 50  # capped by audit_max_rows


def test_a_macro_f1_target_picks_a_threshold_that_meets_it_on_the_held_out_half(tmp_path):
    task = build_task(cfg_for(tmp_path).task)
    rng = random.Random(0)
    # a rare class the student mostly gets wrong, with middling confidence; the teacher right on 95%
    truth = rng.choices(task.labels, weights=[45, 30, 20, 5], k=4000)
    student, confidence, teacher = [], [], []
    for t in truth:
        wrong = rng.random() < (0.6 if t == "weather" else 0.08)
        student.append("sports" if wrong and t != "sports" else ("business" if wrong else t))
        confidence.append(rng.uniform(0.3, 0.8) if wrong else rng.uniform(0.5, 1.0))
        teacher.append(t if rng.random() < 0.95 else rng.choice(task.labels))
    ids = [f"g{i}" for i in range(len(truth))]
    check = held_out_check(task, ids, truth, student, confidence, teacher, 0.9, "macro_f1")
    assert check["reached_on_first_half"] and check["met"] and check["macro_f1"] >= 0.9
    # the same number on accuracy is reached with fewer rows sent, and misses macro-F1
    on_accuracy = held_out_check(task, ids, truth, student, confidence, teacher, 0.9, "accuracy")
    assert on_accuracy["teacher_share"] < check["teacher_share"] and on_accuracy["macro_f1"] < 0.9
    points = curve(task, truth, student, confidence, teacher, None, metric="macro_f1")
    assert all(p["quality"] == p["macro_f1"] and "worst_recall" in p and "accuracy" in p for p in points)
