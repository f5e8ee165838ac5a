"""The simulated teacher's realistic noise: mistakes on hard rows, pointed where a weak model
points, at the set accuracy, with confidences that separate right from wrong at the set AUROC."""

import random

import numpy as np
import pytest
from omegaconf import OmegaConf
from sklearn.metrics import roc_auc_score

from distill.config import load_config
from distill.errors import ConfigError
from distill.tasks import build_task
from distill.tasks.ner import spans
from distill.tasks.noise import error_probabilities, systematic, weak_model_probabilities
from distill.teacher import Simulator, Teacher


@pytest.fixture(scope="module")
def demo_rows(tmp_path_factory):
    """2,000 labeled rows in four topics, one a 10% minority; each text mixes words of its own topic
    with others', more or less, so some rows are easy and some ambiguous."""
    from distill.config import load_config

    cfg = load_config(["recipe=demo", f"run_dir={tmp_path_factory.mktemp('noise')}"])
    task = build_task(cfg.task)
    rng = random.Random(0)
    vocab = {label: [f"{label[:3]}{k}" for k in range(40)] for label in task.labels}
    rows = []
    for i in range(2000):
        label = rng.choices(task.labels, [0.4, 0.3, 0.2, 0.1])[0]
        own = rng.uniform(0.35, 0.95)
        words = [rng.choice(vocab[label] if rng.random() < own else vocab[rng.choice(task.labels)]) for _ in range(8)]
        rows.append({"id": str(i), "text": f"{i} " + " ".join(words), "label": label})
    return cfg, task, rows


def label_over_http(cfg, task, rows, tmp_path, **sim):
    with Simulator(task, {"seed": rows}, {**cfg.teacher.sim, "noise": "realistic", **sim}) as server:
        teacher = Teacher(OmegaConf.merge(cfg.teacher, {"concurrency": 32}), task, base_url=server.base_url,
                          simulated=True, cache_path=tmp_path / f"cache-{sim.get('auroc')}.sqlite")
        return teacher.label_records(rows), server.plan


@pytest.mark.parametrize("accuracy,auroc", [(0.85, 0.8), (0.7, 0.7)])
def test_accuracy_and_auroc_match_their_settings_over_http(demo_rows, tmp_path, accuracy, auroc):
    cfg, task, rows = demo_rows
    records, _ = label_over_http(cfg, task, rows, tmp_path, accuracy=accuracy, auroc=auroc)
    gold = {r["id"]: r["label"] for r in rows}
    right = np.array([r["label"] == gold[r["id"]] for r in records])
    assert len(records) == 2000 and all(r["confidence_source"] == "logprobs" for r in records)
    assert abs(right.mean() - accuracy) <= 0.015
    assert abs(roc_auc_score(right, [r["confidence"] for r in records]) - auroc) <= 0.05
    # confidences are calibrated on average, not all near 1
    assert abs(np.mean([r["confidence"] for r in records]) - accuracy) <= 0.05


def test_mistakes_concentrate_on_low_margin_rows_and_follow_the_weak_model(demo_rows, tmp_path):
    cfg, task, rows = demo_rows
    records, plan = label_over_http(cfg, task, rows, tmp_path, accuracy=0.8)
    by_id = {r["id"]: r for r in records}
    # the weak model's margin for the gold label, recomputed here, out of fold as the simulator does
    probs = weak_model_probabilities([r["text"] for r in rows], [r["label"] for r in rows], task.labels,
                                     cfg.teacher.sim.seed)
    gold = np.array([task.labels.index(r["label"]) for r in rows])
    others = probs.copy()
    others[np.arange(len(rows)), gold] = -1
    margin = probs[np.arange(len(rows)), gold] - others.max(1)
    wrong = np.array([by_id[r["id"]]["label"] != r["label"] for r in rows])
    lowest, highest = margin <= np.quantile(margin, 0.2), margin >= np.quantile(margin, 0.8)
    assert wrong[lowest].mean() >= 3 * max(wrong[highest].mean(), 1e-9) and wrong[lowest].mean() > 0.3
    # a wrong answer is the weak model's top wrong label
    top_wrong = [task.labels[k] for k in others.argmax(1)]
    assert all(by_id[r["id"]]["label"] == top_wrong[i] for i, r in enumerate(rows) if wrong[i])
    assert sum(p["wrong"] for p in plan.values()) == wrong.sum()


def test_uniform_noise_stays_available_and_unknown_noise_is_refused(demo_rows):
    cfg, task, rows = demo_rows
    with pytest.raises(ConfigError, match=r"teacher.sim.noise must be one of \['uniform', 'realistic'\]"):
        load_config(["recipe=demo", "teacher.sim.noise=gaussian"])
    assert Simulator(task, rows[:10], {**cfg.teacher.sim, "noise": "uniform"}).plan == {}


def test_error_probabilities_and_exact_systematic_counts():
    difficulty = np.linspace(0, 1, 1000)
    p = error_probabilities(difficulty, 0.9, 4.0)
    assert p.mean() == pytest.approx(0.1, abs=1e-6) and p[-1] > 5 * p[0]  # hardest (last) most likely wrong
    keys = [f"row {i}" for i in range(1000)] + ["repeated"] * 3
    picked = systematic(keys, np.r_[p, [0.5] * 3], seed=1)
    assert abs(picked.sum() - (p.sum() + 1.5)) <= 3  # within the repeated unit's three rows
    assert picked[-3:].all() or not picked[-3:].any()  # a repeated text is one unit
    # each unit is picked at its own chance across seeds
    hits = np.mean([systematic(keys[:1000], p, seed=s) for s in range(300)], 0)
    assert np.abs(hits[:100].mean() - p[:100].mean()) < 0.02 and np.abs(hits[-100:].mean() - p[-100:].mean()) < 0.03


def ner_rows(n=2000, seed=0):
    """Sentences with frequent capitalised names, rare ones, lower-case ones and long ones."""
    rng = random.Random(seed)
    common = [("PER", "Smith"), ("ORG", "Reuters"), ("LOC", "Paris"), ("MISC", "German")]
    rows = []
    for i in range(n):
        kind = rng.choice(["common", "rare", "lower", "long"])
        typ, name = rng.choice(common)
        words = {"common": [name], "rare": [f"Name{i}"], "lower": [f"{typ.lower()}thing{i % 20}"],
                 "long": ["New", f"{typ}{i % 20}", "Stock", "Exchange"]}[kind]
        tokens = ["Yesterday", *words, "said", "it", "would", "rise", str(i), "."]
        tags = ["O", f"B-{typ}", *[f"I-{typ}"] * (len(words) - 1), "O", "O", "O", "O", "O", "O"]
        rows.append({"id": str(i), "text": " ".join(tokens), "tokens": tokens, "label": tags, "kind": kind})
    return rows


def test_ner_mistakes_hit_rare_lower_case_and_long_entities_and_confuse_org_with_loc():
    task = build_task(OmegaConf.create({"kind": "ner", "labels": ["PER", "ORG", "LOC", "MISC"]}))
    rows = ner_rows()
    sim = {"accuracy": 0.86, "auroc": 0.8, "seed": 0, "hardness": 4.0}
    plan = task.noise_plan({"seed": rows}, sim)
    rng = random.Random(0)
    answers = [task.simulate(r["label"], r, rng, sim, plan[task.user_message(r)])[0] for r in rows]
    pred = [task.from_answer(a, r) for a, r in zip(answers, rows)]
    right = {kind: [] for kind in ("common", "rare", "lower", "long")}
    retyped = []
    for r, p in zip(rows, pred):
        (typ, s, e), = spans(r["label"])
        right[r["kind"]].append((typ, s, e) in set(spans(p)))
        retyped += [(typ, t) for t, s2, e2 in spans(p) if (s2, e2) == (s, e) and t != typ]
    recall = np.mean([x for v in right.values() for x in v])
    assert abs(recall - 0.86) <= 0.015
    err = {k: 1 - np.mean(v) for k, v in right.items()}
    assert min(err["rare"], err["lower"], err["long"]) > 2 * err["common"]
    # retyped ORG mostly becomes LOC, and LOC mostly ORG, as taggers confuse them
    org = [t for g, t in retyped if g == "ORG"]
    loc = [t for g, t in retyped if g == "LOC"]
    assert org and org.count("LOC") / len(org) > 0.35 and loc and loc.count("ORG") / len(loc) > 0.4
