"""Teacher-label cleaning before training (`train.clean.method`): leave out the seed rows whose
teacher label is most likely wrong, so the student does not learn the teacher's mistakes.

- `confidence`: rows whose teacher confidence is under `train.clean.min_confidence`. For NER a
  row (multi-label: a text) counts as confident as its least confident entity (label).
- `cleanlab`: confident learning (Northcutt et al., 2021, through `cleanlab`). A logistic
  regression on the student's own frozen embeddings gives out-of-fold class probabilities
  (`train.clean.folds`-fold cross-validation); rows whose teacher label those probabilities
  contradict are left out. Single-label classification only.

The rows left out, each with its label and the reason, go to `student/cleaning.json` for review.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from distill.tasks import Task


def check_clean(cfg, task: Task) -> str | None:
    """The configured method, or None (the schema checked that it fits the task)."""
    method = cfg.train.clean.method
    return None if method in (None, "none") else method


def by_confidence(rows: list[dict], min_confidence: float, task: Task) -> dict[str, dict]:
    """Rows under the threshold, each as confident as its least confident unit (`Task.least_sure`).
    Rows without a confidence (a teacher without logprobs) are kept."""
    out = {}
    for r in rows:
        conf = task.least_sure(r.get("confidence"), r.get("entity_confidence"))
        if conf is not None and conf < min_confidence:
            out[r["id"]] = {"score": round(conf, 4), "reason": f"teacher confidence {conf:.3f} < {min_confidence}"}
    return out


def by_cleanlab(rows: list[dict], features: np.ndarray, task: Task, folds: int, seed: int) -> dict[str, dict]:
    """Rows whose label the cross-validated probe contradicts (cleanlab's prune_by_noise_rate)."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    names = task.class_names()
    present, y = np.unique([task.to_class_ids(r["label"], r) for r in rows], return_inverse=True)
    smallest = np.bincount(y).min()
    if len(present) < 2 or smallest < 2:
        print(f"train: cleanlab needs two classes with two rows each; the teacher's labels have {len(present)} "
              f"class(es), the rarest with {smallest} row(s): nothing left out")
        return {}
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    cv = StratifiedKFold(n_splits=min(folds, int(smallest)), shuffle=True, random_state=seed)
    probs = cross_val_predict(probe, features, y, cv=cv, method="predict_proba")
    issues = find_label_issues(labels=y, pred_probs=probs, filter_by="prune_by_noise_rate", n_jobs=1)
    quality = get_label_quality_scores(y, probs)
    return {r["id"]: {"score": round(float(q), 4),
                      "reason": f"cross-validated probe says {names[present[probs[i].argmax()]]} "
                                f"({probs[i].max():.2f})"}
            for i, (r, bad, q) in enumerate(zip(rows, issues, quality)) if bad}


def noisy_rows(cfg, task: Task, rows: list[dict], features: np.ndarray | None = None) -> dict[str, dict]:
    """{row id: {score, reason}} of the rows to leave out under the (checked) train.clean settings;
    `features` (one row each, the student's frozen embeddings) are what cleanlab's probe learns from."""
    if cfg.train.clean.method == "confidence":
        return by_confidence(rows, float(cfg.train.clean.min_confidence), task)
    return by_cleanlab(rows, features, task, int(cfg.train.clean.folds), int(cfg.seed))


def write_record(path: Path, method: str, rows: list[dict], dropped: dict[str, dict]) -> None:
    labels = {r["id"]: r["label"] for r in rows}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps({
        "method": method, "rows": len(rows), "dropped": len(dropped), "kept": len(rows) - len(dropped),
        "rows_dropped": [{"id": i, "label": labels[i], **d} for i, d in sorted(dropped.items())]}, indent=1))
