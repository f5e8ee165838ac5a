"""The library layer's scoring: rows without a label count as wrong against gold, and agreement
counts only the rows both sides labeled."""

import pytest

from distill.api import agreement, score
from distill.config import load_config
from distill.tasks import build_task


def test_score_counts_a_gold_row_without_a_label_as_wrong_and_agreement_only_shared_rows(tmp_path):
    task = build_task(load_config(["recipe=demo", f"run_dir={tmp_path}"]).task)
    a, b = task.labels[:2]
    gold = [{"id": "1", "label": a}, {"id": "2", "label": b}, {"id": "3", "label": a}, {"id": "4", "label": b}]
    preds = {"1": {"label": a}, "2": {"label": a}, "3": {"label": a}}  # row 4 unlabeled
    m = score(task, gold, preds)
    assert m["accuracy"] == pytest.approx(0.5) and m["invalid"] == 1
    assert agreement(task, {"1": a, "2": b, "9": a}, preds) == pytest.approx(0.5)
    assert agreement(task, {"9": a}, preds) is None
