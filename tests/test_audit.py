"""The collapse audit: which rows each generation learns from, resuming after a kill, the report."""

import json
import os
import signal
import subprocess
import time
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT

from distill import stats
from distill.audit import anchor_rows, training_rows
from distill.config import load_config
from distill.data import read_jsonl
from distill.errors import ConfigError
from distill.train import rows_hash


def rows(source, n, start=0):
    return [{"id": f"r{i}", "text": f"text {i}", "label": "a", "source": source} for i in range(start, start + n)]


def test_training_rows_follow_each_strategy():
    seed = rows("teacher", 50)
    gens = [rows(f"gen{j}", 30, start=100) for j in range(3)]  # every generation labels the same corpus
    anchor = anchor_rows(seed, 0.1, 42)
    assert len(anchor) == 5 and {r["id"] for r in anchor} <= {r["id"] for r in seed}
    assert anchor_rows(list(reversed(seed)), 0.1, 42) == anchor  # a fixed subset, whatever the order

    assert training_rows("replace", seed, gens, anchor) == gens[2]
    acc = training_rows("accumulate", seed, gens, anchor)
    assert Counter(r["source"] for r in acc) == {"teacher": 50, "gen0": 30, "gen1": 30, "gen2": 30}
    assert len({(r["id"], r["source"]) for r in acc}) == len(acc) == 140
    anc = training_rows("anchor", seed, gens, anchor)
    assert anc == gens[2] + anchor
    with pytest.raises(ValueError, match="unknown strategy"):
        training_rows("mix", seed, gens, anchor)


def test_paired_bootstrap_difference():
    rng = np.random.default_rng(0)
    counts = np.zeros((200, 2, 3))
    gold = rng.integers(0, 2, 200)
    counts[np.arange(200), gold, 2] = 1
    counts[np.arange(200), gold, 0] = counts[np.arange(200), gold, 1] = 1  # always right
    assert stats.paired_bootstrap_diff(counts, counts, stats.macro_f1, 200) == [0.0, 0.0]
    worse = counts.copy()
    worse[:60, :, :2] = 0  # 60 rows now unanswered
    lo, hi = stats.paired_bootstrap_diff(counts, worse, stats.macro_f1, 500)
    drop = float(stats.macro_f1(worse.sum(0)) - stats.macro_f1(counts.sum(0)))
    assert lo < drop < hi < 0


def test_bad_audit_settings_are_refused_as_the_recipe_loads(make_cfg):
    from distill.schema import strategies

    with pytest.raises(ConfigError, match=r"audit.strategies\[1\] must be one of \['replace', 'accumulate', 'anchor'\]"):
        make_cfg("demo", "audit.strategies=[replace,forget]")
    with pytest.raises(ConfigError, match="choose one or more distinct of replace, accumulate, anchor"):
        make_cfg("demo", "audit.strategies=[anchor,anchor]")
    with pytest.raises(ConfigError, match=r"audit.generations must be at least 1 \(generations after generation 0\)"):
        make_cfg("demo", "audit.generations=0")
    with pytest.raises(ConfigError, match=r"audit.anchor_fraction must be a share of the seed rows in \(0, 1\]"):
        make_cfg("demo", "audit.anchor_fraction=0")
    with pytest.raises(ConfigError, match="audit.generations must be a whole number"):
        make_cfg("demo", "audit.generations=two")
    assert strategies(make_cfg("demo", "audit.strategies=accumulate")) == ["accumulate"]


AUDIT = ["audit.generations=2", "data.demo.sizes.seed=120", "data.demo.sizes.corpus=80", "data.demo.sizes.gold=60",
         "train.epochs=2", "monitor.n_boot=200", "monitor.n_perm=200", "monitor.embed_rows=0"]


@pytest.mark.slow
def test_killed_audit_resumes_and_each_generation_learns_from_its_strategy_rows(tmp_path):
    run_dir = tmp_path / "demo"
    cmd = ["distill", "audit", "recipe=demo", f"run_dir={run_dir}", *AUDIT]
    out = run_dir / "audit"

    # kill the audit once generation 0 and replace's generation 1 are done
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.time() + 600
        while not (out / "replace" / "gen1" / "generation.json").exists():
            assert proc.poll() is None and time.time() < deadline, (tmp_path / "first.log").read_text()[-3000:]
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    done = {k: (out / k / "generation.json").stat().st_mtime_ns for k in ("gen0", "replace/gen1")}
    assert not (out / "anchor" / "gen1" / "generation.json").exists()

    # the same command resumes: finished generations are kept as they were, the rest are trained
    second = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"generation 0: already done ({out / 'gen0'})" in second.stdout
    assert f"replace generation 1: already done ({out / 'replace' / 'gen1'})" in second.stdout
    assert "accumulate generation 1: training on 200 rows" in second.stdout
    assert second.stdout.count("training on") == 5  # accumulate 1, anchor 1, and the three second generations
    assert {k: (out / k / "generation.json").stat().st_mtime_ns for k in done} == done
    assert f"audit: {out / 'audit.json'}" in second.stdout and f"audit: {out / 'audit.html'}" in second.stdout

    # each generation trained on exactly the rows its strategy prescribes
    seed = {r["id"]: r["label"] for r in read_jsonl(run_dir / "teacher" / "seed.jsonl") if r["label"] is not None}
    cfg = load_config(["recipe=demo", f"run_dir={run_dir}", *AUDIT])
    anchor = {r["id"] for r in anchor_rows([{"id": i} for i in seed], cfg.audit.anchor_fraction, cfg.seed)}

    def corpus(key):
        labels = pd.read_parquet(out / key / "labels" / "corpus.parquet")
        return [(i, lab, key.rpartition("/")[2]) for i, lab in zip(labels["id"], labels["label"])]

    teacher = [(i, lab, "teacher") for i, lab in seed.items()]
    expected = {"gen0": teacher}
    for s in ("replace", "accumulate", "anchor"):
        chain = ["gen0", f"{s}/gen1"]
        expected[f"{s}/gen1"] = {"replace": corpus("gen0"), "accumulate": teacher + corpus("gen0"),
                                 "anchor": corpus("gen0") + [t for t in teacher if t[0] in anchor]}[s]
        expected[f"{s}/gen2"] = {"replace": corpus(chain[1]), "accumulate": teacher + corpus(chain[0]) + corpus(chain[1]),
                                 "anchor": corpus(chain[1]) + [t for t in teacher if t[0] in anchor]}[s]
    for key, want in expected.items():
        got = [(r["id"], r["label"], r["source"]) for r in read_jsonl(out / key / "train_rows.jsonl")]
        assert Counter(got) == Counter(want), key
        meta = json.loads((out / key / "student" / "student.json").read_text())
        # the trainer consumed those rows: the hash it took of the ids and labels it trained on
        assert meta["data_hashes"]["rows"] == rows_hash(sorted(({"id": i, "label": lab} for i, lab, _ in want),
                                                               key=lambda r: (r["id"], json.dumps(r["label"])))), key
        assert meta["train_rows"] + meta["dev_rows"] == len(want)
    assert len(expected["accumulate/gen2"]) == len(seed) + 160 and len(anchor) == round(0.1 * len(seed))

    # every later generation is paired against generation 0 by the monitor
    report = json.loads((out / "anchor" / "gen2" / "monitor" / "metrics.json").read_text())
    assert report["baseline"].endswith(f"of {out / 'gen0'}") and "accuracy" in report["tests"]

    # the report: per generation the figures the issue names, a verdict per strategy, a plot
    result = json.loads((out / "audit.json").read_text())
    assert set(result) == {"replace", "accumulate", "anchor"}
    for s, v in result.items():
        assert v["verdict"] in ("degrades", "stable", "improves") and "macro-F1" in v["reason"]
        assert [g["generation"] for g in v["generations"]] == [0, 1, 2]
        for g in v["generations"]:
            assert {"macro_f1", "minority_recall", "entropy", "mean_confidence", "alerts"} <= set(g)
            assert 0 <= g["macro_f1"] <= 1 and 0 < g["mean_confidence"] <= 1 and 0 <= g["entropy"] <= 2
        assert v["generations"][0]["macro_f1"] == result["replace"]["generations"][0]["macro_f1"]  # one gen 0
    page = (out / "audit.html").read_text()
    assert page.count("data:image/png;base64,") == 1 and "Verdicts" in page and (out / "audit.png").exists()
