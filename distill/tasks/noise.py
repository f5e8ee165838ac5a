"""The simulated teacher's `realistic` noise: mistakes where a real model makes them.

A real teacher is wrong on the hard, ambiguous rows, in systematic directions, and its logprob
confidence only partly separates right from wrong. Each task kind scores how hard every unit it
answers is (a row's label, an entity) and where a mistake would point; the shared parts are here:

- `error_probabilities`: a unit's chance of being wrong rises with its difficulty rank,
  `sigmoid(b - hardness * rank)`, with `b` solved so the mean equals `1 - accuracy`.
- `systematic`: which units are wrong, drawn with those probabilities but with exactly
  round(sum) mistakes per group of rows (gold, seed pool), so the accuracy a benchmark measures
  on a thousand rows sits on the setting instead of a point or two off it.
- `confidence`: a score drawn from N(d, 1) for a right answer and N(0, 1) for a wrong one, with
  d = sqrt(2) * Phi^-1(auroc) so that confidence ranks right above wrong with that AUROC, mapped
  through the posterior P(right | score) so that the confidences are calibrated on average.
"""

from __future__ import annotations

import hashlib
import math
import random

import numpy as np
from scipy.special import expit
from scipy.stats import norm as normal


def unit_random(*parts) -> float:
    """A uniform number in [0, 1) fixed by its parts: the same row always gets the same one."""
    digest = hashlib.sha256("\x00".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def ranks(difficulty: np.ndarray) -> np.ndarray:
    """Each unit's place from hardest (0) to easiest (1); ties share a place."""
    if len(difficulty) < 2:
        return np.full(len(difficulty), 0.5)
    order = np.argsort(np.argsort(-np.asarray(difficulty, float), kind="stable"), kind="stable")
    return order / (len(difficulty) - 1)


def error_probabilities(difficulty, accuracy: float, hardness: float) -> np.ndarray:
    """P(wrong) per unit: sigmoid(b - hardness * rank), rank 0 the hardest, mean exactly 1 - accuracy."""
    rank = ranks(np.asarray(difficulty, float))
    target = 1.0 - accuracy
    if len(rank) == 0 or target <= 0:
        return np.zeros(len(rank))
    if target >= 1:
        return np.ones(len(rank))
    lo, hi = -50.0, 50.0
    for _ in range(100):  # bisection: the mean rises with b
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if expit(mid - hardness * rank).mean() < target else (lo, mid)
    return expit((lo + hi) / 2 - hardness * rank)


def systematic(keys: list[str], probs, seed) -> np.ndarray:
    """Which units are wrong: unit i with probability probs[i], and exactly round(sum(probs)) of
    them (systematic sampling along an order fixed by the keys and seed). A key given several
    times is one unit that counts as many rows: such units are drawn apart, by how often they
    occur, so the count of wrong rows stays exact too."""
    probs = np.clip(np.asarray(probs, float), 0, 1)
    where: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        where.setdefault(key, []).append(i)
    picked = np.zeros(len(keys), bool)
    for times in sorted({len(at) for at in where.values()}):
        units = sorted((k for k, at in where.items() if len(at) == times), key=lambda k: unit_random(seed, "order", k))
        start, total = unit_random(seed, "start", times, len(units)), 0.0
        for key in units:
            before, total = total, total + probs[where[key][0]]
            # the unit is picked when a point start + k falls in (before, total]
            if math.floor(total - start) > math.floor(before - start):
                picked[where[key]] = True
    return picked


def planned_mistakes(difficulty, keys: list[str], sim, group: str) -> tuple[np.ndarray, np.ndarray]:
    """For one group of rows (gold, seed pool): each unit's error probability from its difficulty,
    and which units are wrong, exactly round(sum) of them."""
    p = error_probabilities(difficulty, sim["accuracy"], sim.get("hardness", 4.0))
    return p, systematic(keys, p, f"{sim.get('seed', 0)}\x00{group}")


def separation(auroc: float) -> float:
    """The gap d between right and wrong answers' scores (unit variance) that gives this AUROC."""
    return math.sqrt(2) * normal.ppf(min(max(auroc, 0.5), 0.999))


def confidence(right: bool, rng: random.Random, auroc: float, accuracy: float) -> float:
    """A confidence that separates right from wrong answers with the given AUROC, calibrated on
    average for a teacher of this accuracy."""
    d = separation(auroc)
    score = rng.gauss(d if right else 0.0, 1.0)
    acc = min(max(accuracy, 0.01), 0.99)
    # log-odds of being right given the score: the prior's, plus the two normals' likelihood ratio
    return float(expit(math.log(acc / (1 - acc)) - d * d / 2 + d * score))


def weak_model_probabilities(texts: list[str], labels: list[str], classes: list[str], seed: int = 0,
                             folds: int = 5) -> np.ndarray:
    """Out-of-fold class probabilities of a weak text classifier (TF-IDF + logistic regression):
    each row scored by a model fitted on the other folds, never on itself. [rows, classes]"""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    n = len(texts)
    out = np.full((n, len(classes)), 1.0 / len(classes))
    fold = np.array([int(unit_random(seed, "fold", t) * folds) for t in texts])
    y = np.array([classes.index(label) for label in labels])
    for k in range(folds):
        test, fit = fold == k, fold != k
        if not test.any() or len(set(y[fit])) < 2:
            continue
        vectorizer = TfidfVectorizer(sublinear_tf=True, min_df=2)
        model = LogisticRegression(max_iter=1000, C=1.0)
        model.fit(vectorizer.fit_transform([texts[i] for i in np.flatnonzero(fit)]), y[fit])
        probs = model.predict_proba(vectorizer.transform([texts[i] for i in np.flatnonzero(test)]))
        out[np.ix_(test, model.classes_)] = probs
        out[np.ix_(test, np.setdiff1d(np.arange(len(classes)), model.classes_))] = 0.0
    return out
