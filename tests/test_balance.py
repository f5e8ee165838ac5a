"""Minority classes in training (train.class_balance) and calibration that targets accuracy."""

from collections import Counter

import pytest
import torch
from omegaconf import OmegaConf

from distill.config import load_config
from distill.errors import ConfigError
from distill.students.calibration import GRID, fit_temperature
from distill.students.encoder import WeightedTrainer as EncoderWeightedTrainer
from distill.students.trainer import TaskWeighted
from distill.tasks import build_task
from distill.teach import teach
from distill.train import balanced, train

CLF = build_task(OmegaConf.create({"kind": "classification", "labels": ["a", "b", "c"]}))
NER = build_task(OmegaConf.create({"kind": "ner", "labels": ["PER", "ORG", "MISC"]}))


def clf_rows():
    return [{"id": str(i), "text": f"t{i}", "label": "a" if i < 80 else "b" if i < 95 else "c"} for i in range(100)]


def test_weighted_gives_inverse_count_weights_with_mean_one():
    rows, summary = balanced(CLF, clf_rows(), "weighted", 0)
    w = {r["label"]: r["weight"] for r in rows}
    assert sum(r["weight"] for r in rows) / len(rows) == pytest.approx(1.0)
    assert w["c"] / w["a"] == pytest.approx(80 / 5) and w["b"] / w["a"] == pytest.approx(80 / 15)
    assert summary["class_rows"] == {"a": 80, "b": 15, "c": 5} and summary["examples"] == 100


def test_auto_weights_only_when_one_class_holds_far_more_than_an_even_share():
    # 80 of 100 rows in one of 3 classes: 2.4 times an even share, left alone
    rows, summary = balanced(CLF, clf_rows(), "auto", 0)
    assert rows == clf_rows() and summary["auto"] == {"largest_share_of_even": 2.4, "chose": "none"}
    # four classes, 91 of 100 rows in one: 3.64 times an even share, weighted
    four = build_task(OmegaConf.create({"kind": "classification", "labels": ["a", "b", "c", "d"]}))
    skewed = [{"id": str(i), "text": f"t{i}", "label": "a" if i < 91 else "bcd"[i % 3]} for i in range(100)]
    rows, summary = balanced(four, skewed, "auto", 0)
    assert summary["method"] == "weighted" and summary["auto"]["chose"] == "weighted"
    assert {r["label"]: r["weight"] for r in rows}["b"] > 5 * {r["label"]: r["weight"] for r in rows}["a"]


def test_oversample_repeats_minority_rows_until_classes_are_about_even():
    rows, summary = balanced(CLF, clf_rows(), "oversample", 0)
    counts = Counter(r["label"] for r in rows)
    assert counts["a"] == 80 and abs(counts["b"] - 80) <= 8 and counts["c"] == 80
    assert summary["examples"] == len(rows) and {r["id"] for r in rows} == {r["id"] for r in clf_rows()}
    assert balanced(CLF, clf_rows(), "none", 0) == (clf_rows(), None)


def test_ner_rows_count_for_their_rarest_entity_type_and_rows_without_entities_stay():
    tags = {"per": ["B-PER", "O"], "misc": ["B-PER", "B-MISC"], "none": ["O", "O"]}
    rows = [{"id": f"{k}{i}", "text": "x y", "tokens": ["x", "y"], "label": tags[k]}
            for k, n in (("per", 30), ("misc", 10), ("none", 20)) for i in range(n)]
    out, summary = balanced(NER, rows, "oversample", 0)
    assert summary["class_rows"] == {"PER": 30, "MISC": 10}
    counts = Counter(r["id"][:-1].rstrip("0123456789") for r in out)
    assert counts == {"per": 30, "misc": 30, "none": 20}


def test_weighted_loss_weights_each_example():
    class Model(torch.nn.Module):
        def forward(self, **inputs):
            return type("Out", (), {"logits": inputs["x"]})()

    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    weight = torch.tensor([1.0, 3.0, 0.5])
    loss = TaskWeighted().compute_loss(Model(), {"x": logits, "labels": labels, "task_weight": weight})
    per_example = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    assert torch.allclose(loss, (weight * per_example).sum() / weight.sum())


def test_weighted_tagging_loss_counts_every_token_once():
    class Model(torch.nn.Module):
        def forward(self, **inputs):
            return type("Out", (), {"logits": inputs["x"]})()

    torch.manual_seed(0)
    logits = torch.randn(3, 5, 4)
    labels = torch.tensor([[0, 1, -100, -100, -100], [2, 3, 1, 0, 2], [-100, 1, 1, -100, -100]])
    ones = torch.ones(3)
    tagger = EncoderWeightedTrainer.__new__(EncoderWeightedTrainer)
    loss = tagger.compute_loss(Model(), {"x": logits, "labels": labels, "task_weight": ones})
    # equal weights: exactly the plain loss the unweighted Trainer uses, a mean over tagged tokens
    assert torch.allclose(loss, torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100))
    weight = torch.tensor([2.0, 1.0, 0.5])
    token = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")
    w = weight[:, None] * (labels != -100)
    loss = tagger.compute_loss(Model(), {"x": logits, "labels": labels, "task_weight": weight})
    assert torch.allclose(loss, (w * token).sum() / w.sum())


class FixedStudent:
    """Always agrees with the teacher, with logits that put 0.9 on its answer at T = 1."""

    def predict(self, rows, batch_size, progress=False, temps=None):
        logits = torch.tensor([2.1972, 0.0])  # softmax: 0.9, 0.1
        conf = [float(torch.softmax(logits / t, -1).max()) for t in temps.tolist()]
        return [{"label": r["label"], "confidence": conf} for r in rows]


def test_teacher_confidence_calibration_targets_accuracy_not_agreement():
    rows = [{"id": str(i), "text": "t", "label": "a", "confidence": 0.7} for i in range(200)]
    by_agreement = fit_temperature(FixedStudent(), rows, target="agreement")
    by_teacher = fit_temperature(FixedStudent(), rows, target="teacher_confidence")
    assert by_agreement["mean_confidence_after"] > 0.99  # agreeing with the teacher is all it learns
    # a teacher right 70% of the time: the student that copies it is right about 70% of the time
    assert by_teacher["target"] == "teacher_confidence" and by_teacher["mean_confidence_after"] == pytest.approx(0.7, abs=0.03)
    assert by_teacher["dev_accuracy_estimate"] == pytest.approx(0.7)
    # rows without a teacher confidence: agreement it is
    bare = [{**r, "confidence": None} for r in rows]
    assert fit_temperature(FixedStudent(), bare, target="teacher_confidence")["target"] == "agreement"
    assert len(GRID) == 121


def test_a_dev_split_agreeing_on_every_row_gives_a_finite_temperature():
    rows = [{"id": str(i), "text": "t", "label": "a"} for i in range(42)]
    fit = fit_temperature(FixedStudent(), rows)
    # Platt's target for 42 agreements of 42 is 43/44, not certainty: T stays off the grid's end
    assert fit["temperature"] > float(GRID[0]) * 2
    assert fit["mean_confidence_after"] == pytest.approx(43 / 44, abs=0.01)
    assert fit["dev_accuracy_estimate"] == 1.0


def test_bad_balance_settings_are_refused_before_the_teacher_is_paid(tmp_path):
    with pytest.raises(ConfigError, match=r"train.class_balance must be one of \['auto', 'none', 'weighted', 'oversample'\]"):
        load_config(["recipe=demo", f"run_dir={tmp_path}", "train.class_balance=smote"])
    with pytest.raises(ConfigError, match=r"train.calibration must be one of \['agreement', 'teacher_confidence'\].*not 'gold'"):
        load_config(["recipe=demo", f"run_dir={tmp_path}", "train.calibration=gold"])
    assert not (tmp_path / "teacher").exists()


@pytest.mark.slow
@pytest.mark.parametrize("method,student", [("oversample", "tiny_t5"), ("weighted", "tiny_encoder")])
def test_balanced_training_consumes_the_balanced_rows(tmp_path, method, student):
    cfg = load_config(["recipe=demo", f"run_dir={tmp_path}", f"student={student}", f"train.class_balance={method}",
                       "train.epochs=1"])
    teach(cfg)
    meta = train(cfg, teach_first=False)
    balance = meta["class_balance"]
    assert balance["method"] == method and balance["factors"]["weather"] > 2 * balance["factors"]["sports"]
    # every example the trainer was given, repeated rows included, went through one epoch
    assert sum(meta["rows_per_process"]) == balance["examples"] == meta["rows_seen"]
    assert meta["train_rows"] + meta["dev_rows"] == sum(balance["class_rows"].values()) + meta["dev_rows"]
    assert meta["calibration_target"] == "agreement"
