"""The multilabel task kind: teacher answers through to student targets and back, metrics by hand,
the encoder's sigmoid head and its dev-tuned thresholds, the monitor's labels-per-text test, review
files, and a whole run on NLU++-shaped folds."""

import json
import math
import random
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import same
from omegaconf import OmegaConf

from distill import drift
from distill.config import load_config
from distill.data import load_split, read_jsonl
from distill.errors import DataError, OutputError
from distill.label import merge
from distill.students import student_class
from distill.students.encoder import tune_thresholds
from distill.tasks import build_task

LABELS = ["card", "pin", "loan", "refund"]
# the words that make a synthetic utterance carry each of the first intents of distill/recipes/intents.yaml
WORDS = {"card": "card", "pin": "pin", "loan": "loan", "refund": "refund", "balance": "balance",
         "cheque": "cheque"}


@pytest.fixture
def task():
    return build_task(OmegaConf.create({"kind": "multilabel", "labels": LABELS, "aliases": {"credit card": "card"}}))


def test_teacher_answers_round_trip_through_the_student_target(task):
    row = {"text": "my card and pin"}
    for content, labels in [
        ('{"labels": ["pin", "card"]}', ["card", "pin"]),  # the label set's order
        ('Sure:\n```json\n{"labels": ["Card", "refnd", "card"]}\n```', ["card", "refund"]),  # case, near miss, repeat
        ('{"labels": ["credit card"]}', ["card"]),  # an alias
        ('{"labels": []}', []),
    ]:
        parsed = task.parse_teacher(content, row)
        assert parsed == labels
        target = task.student_target(parsed, row)
        assert task.parse_student(target, row) == labels
        assert task.from_class_ids(task.to_class_ids(parsed, row), row) == labels
    assert task.student_target([], row) == "none"
    for content, kind in [("", "empty_output"), ("no answer here", "invalid_json"),
                          ('{"labels": ["card", "pi', "invalid_json"), ('{"label": "card"}', "missing_field"),
                          ('{"labels": {"card": true}}', "missing_field"),
                          ('{"labels": ["card", "mortgage"]}', "label_not_in_schema")]:
        with pytest.raises(OutputError) as e:
            task.parse_teacher(content, row)
        assert e.value.kind == kind, content
    with pytest.raises(OutputError, match="label_not_in_schema"):
        task.parse_student("card; mortgage", row)


def test_each_label_gets_the_probability_of_its_own_tokens(task):
    content = '{"labels": ["pin", "card"]}'
    pin = content.index("pin")
    # one token per character; the three characters of "pin" together have probability 0.5
    logprobs = [(ch, math.log(0.5) / 3 if pin <= i < pin + 3 else 0.0) for i, ch in enumerate(content)]
    row_conf, per_label = task.logprob_confidence(content, logprobs, ["card", "pin"], {})
    assert row_conf == pytest.approx(0.5) and per_label == pytest.approx([1.0, 0.5])
    assert task.confidence_spans(content) == [(pin, pin + 3), (content.index("card"), content.index("card") + 4)]


def test_metrics_match_hand_computed_values(task):
    gold = [["card"], ["card", "pin"], [], ["refund"]]
    pred = [["card"], ["pin"], ["card"], None]  # the last one invalid: no labels
    m = task.metrics(gold, pred)
    # tp 2 (card, pin), predicted 3, gold 4: P 2/3, R 1/2, F1 4/7
    assert (m["precision"], m["recall"], m["f1"], m["micro_f1"]) == pytest.approx((2 / 3, 1 / 2, 4 / 7, 4 / 7))
    # per label: card P 1/2 R 1/2, pin 1/1 1/1, refund 0/0 0/1; loan never seen (left out of the macro mean)
    assert m["per_class"]["card"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert m["per_class"]["pin"] == pytest.approx({"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1})
    assert m["per_class"]["refund"] == pytest.approx({"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1})
    assert m["macro_f1"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert m["subset_accuracy"] == m["accuracy"] == 0.25  # only the first row entirely right
    assert m["hamming_loss"] == pytest.approx(3 / 16)  # 1 false positive + 2 misses over 4 rows x 4 labels
    assert m["invalid"] == 1
    assert task.cardinality(pred).tolist() == [1, 1, 1]  # invalid labels are not counted
    assert task.label_counts(gold).tolist() == [2, 1, 0, 1]


def test_gold_labels_are_checked_and_put_in_order(task):
    assert task.check_gold(["refund", "Card", "card"], "f row 1") == ["card", "refund"]
    assert task.check_gold("pin; card", "f row 1") == ["card", "pin"]  # a CSV cell
    assert task.check_gold(None, "f row 1") == [] and task.check_gold("", "f row 1") == []
    with pytest.raises(DataError, match="f row 2: label 'mortgage' is not in the label set"):
        task.check_gold(["card", "mortgage"], "f row 2")
    with pytest.raises(DataError, match="f row 3: multi-label labels must be a list"):
        task.check_gold(5, "f row 3")


def test_a_bad_label_in_one_of_several_files_names_that_file_and_row(make_cfg, tmp_path):
    nlupp_like(tmp_path / "nlupp")
    fold = tmp_path / "nlupp" / "banking" / "fold16.json"
    rows = json.loads(fold.read_text())
    rows[2]["intents"] = ["card", "pension"]
    fold.write_text(json.dumps(rows))
    cfg = make_cfg("intents", f"data.dir={tmp_path / 'nlupp'}")
    with pytest.raises(DataError, match=f"{fold} row 3 field 'intents': label 'pension' is not in the label set"):
        load_split(cfg, "gold", build_task(cfg.task), labels=True)


def test_simulated_teacher_errs_per_label_decision(task):
    rng = random.Random(0)
    gold = ["card", "pin"]
    answers = [task.simulate(gold, {}, rng, {"accuracy": 0.8})[0]["labels"] for _ in range(2000)]
    kept = np.mean([k in a for a in answers for k in gold])
    added = np.mean([len(set(a) - set(gold)) for a in answers])
    assert 0.77 < kept < 0.83 and 0.17 < added < 0.23


def test_realistic_noise_misses_and_adds_labels_at_the_set_accuracy(make_cfg, tmp_path):
    nlupp_like(tmp_path / "nlupp", rows_per_fold=30)
    cfg = make_cfg("intents", f"data.dir={tmp_path / 'nlupp'}")
    task = build_task(cfg.task)
    rows = list(load_split(cfg, "seed", task, labels=True))
    plan = task.noise_plan({"seed": rows}, {"accuracy": 0.8, "seed": 0})
    gold = [u for p in plan.values() for u in p["gold"].values()]
    added = [p["intruder"] for p in plan.values() if p["intruder"]]
    wrong = sum(u["wrong"] for u in gold + added)
    assert wrong == round(0.2 * (len(gold) + len(added)))  # exactly the setting's share of decisions
    missed, extra = np.mean([u["wrong"] for u in gold]), np.mean([u["wrong"] for u in added])
    assert 0.05 < missed < 0.4 and 0.05 < extra < 0.6  # both kinds of mistake, neither swallowing the other


def test_thresholds_are_the_best_per_label_f1_on_dev():
    # label 0 is best cut at 0.3 (its positives score 0.35, its negatives 0.25); label 1 at 0.7;
    # label 2 has a single positive on dev: it takes the one threshold best for micro F1 overall
    probs = np.array([[0.35, 0.9, 0.6], [0.35, 0.75, 0.1], [0.25, 0.6, 0.1], [0.25, 0.2, 0.1]])
    truth = np.array([[1, 1, 1], [1, 1, 0], [0, 0, 0], [0, 0, 0]], bool)
    t = tune_thresholds(probs, truth, min_positives=2)
    assert 0.25 < t[0] <= 0.35 and 0.6 < t[1] <= 0.75
    assert t[2] == tune_thresholds(probs, truth, min_positives=5)[2]  # the shared one


def nlupp_like(root, rows_per_fold: int = 24, seed: int = 0) -> None:
    """20 folds of NLU++-shaped JSON lists, each utterance carrying zero to three intents."""
    rng = random.Random(seed)
    (root / "banking").mkdir(parents=True)
    for fold in range(20):
        rows = []
        for i in range(rows_per_fold):
            intents = sorted(rng.sample(list(WORDS), rng.choice([0, 1, 1, 2, 2, 3])))
            words = [WORDS[k] for k in intents] + rng.sample(["please", "my", "help", "about", "the", "today"], 3)
            rng.shuffle(words)
            row = {"text": " ".join(words) + f" ref{fold}x{i}"}
            if intents:  # NLU++ leaves the key out when no intent applies
                row["intents"] = intents
            rows.append(row)
        (root / "banking" / f"fold{fold}.json").write_text(json.dumps(rows))


def test_encoder_sigmoid_head_trains_and_takes_its_thresholds_from_dev(make_cfg, tmp_path):
    nlupp_like(tmp_path / "nlupp")
    cfg = make_cfg("intents", f"data.dir={tmp_path / 'nlupp'}", "student=tiny_encoder", "student.method=full",
                   "train=tiny", "train.max_steps=60")
    task = build_task(cfg.task)
    seed = list(load_split(cfg, "seed", task, labels=True))
    train_rows, dev_rows = seed[:180], seed[180:]
    student = student_class(cfg.student).create(cfg.student, task, seed=0, texts=[r["text"] for r in seed])
    assert student.model.config.problem_type == "multi_label_classification"
    before = {n: p.detach().clone() for n, p in student.model.named_parameters()}
    student.trainer(train_rows, dev_rows, cfg.train, tmp_path / "ckpt").train()
    after = dict(student.model.named_parameters())
    assert not same(before["classifier.weight"], after["classifier.weight"])
    assert sum(not same(before[n], p) for n, p in after.items()) > len(after) // 2

    # the thresholds: those best for each label's F1 on the dev rows given, different dev rows, different ones
    calibration = student.calibrate(dev_rows, 16, "agreement")
    enc = student.tokenizer([r["text"] for r in dev_rows], padding=True, return_tensors="pt").to(student.model.device)
    with torch.inference_mode():
        probs = torch.sigmoid(student.model(**enc).logits.float()).cpu().numpy()
    truth = np.array([task.to_class_ids(r["label"], r) for r in dev_rows], bool)
    assert calibration["thresholds"] == tune_thresholds(probs, truth)
    assert len(calibration["thresholds_by_label"]) == len(task.labels) and calibration["dev_rows"] == len(dev_rows)
    flipped = [{**r, "label": [k for k in task.labels[:6] if k not in r["label"]]} for r in dev_rows]
    assert student.calibrate(flipped, 16, "agreement")["thresholds"] != calibration["thresholds"]

    # predictions: the labels over their thresholds, in order; the row's confidence is the product of
    # every label decision's, so never above its least sure chosen label's
    preds = student.predict(dev_rows[:8], batch_size=4, progress=False)
    for p in preds:
        assert p["label"] == [k for k in task.labels if k in p["label"]]
        assert all(0.5 <= c <= 1 for c in p["entity_confidence"]) and len(p["entity_confidence"]) == len(p["label"])
        assert 0 < p["confidence"] <= min(p["entity_confidence"], default=1) + 1e-6


def test_labels_per_text_drift_is_tested_and_alerts_when_material():
    cfg = OmegaConf.create({"alpha": 0.05, "n_perm": 200, "seed": 0, "material_ratio": 1.5, "material_psi": 0.1,
                            "material_cardinality": 0.2, "critical_drop": 0.05, "min_support": 30})
    counts = np.zeros((200, 2, 3), dtype=np.int64)
    rng = np.random.default_rng(0)
    gold = rng.choice([1, 2, 3], size=200)

    def tests(corpus):
        ev = drift.Evidence(classes=["a", "b"], f1_key="f1", counts=counts, correct=np.ones(200, bool),
                            cardinality={"corpus": corpus, "gold": gold})
        return drift.run_tests(ev, cfg)

    same = tests(rng.choice([1, 2, 3], size=1000))["cardinality"]
    assert not same["significant"]
    shrunk = tests(rng.choice([0, 1], size=1000))  # the student stopped giving second labels
    assert shrunk["cardinality"]["significant"] and shrunk["cardinality"]["material"]
    assert [a["test"] for a in drift.alerts(shrunk, cfg)] == ["cardinality"]
    assert "cardinality" in tests(np.ones(1000, np.int64))  # gold varies: the test runs
    ones = drift.Evidence(classes=["a"], f1_key="f1", counts=counts[:, :1], correct=np.ones(200, bool),
                          cardinality={"corpus": np.ones(50, np.int64), "gold": np.ones(200, np.int64)})
    assert "cardinality" not in drift.run_tests(ones, cfg)  # one label per text: nothing to test


@pytest.mark.slow
def test_intents_recipe_runs_end_to_end_and_routes_on_the_least_sure_label(tmp_path, monkeypatch):
    nlupp_like(tmp_path / "nlupp")
    run_dir = tmp_path / "run"
    args = ["recipe=intents", f"run_dir={run_dir}", f"data.dir={tmp_path / 'nlupp'}", "teacher=simulated",
            "student=tiny_encoder", "student.method=full", "train=tiny", "monitor.n_boot=200", "monitor.n_perm=200",
            "monitor.embed_rows=100"]
    from distill.cli import run_all
    from distill.route import route

    report = run_all(load_config(args))
    labels = load_config(args).task.labels
    corpus = pd.read_parquet(run_dir / "labels" / "corpus.parquet")
    assert len(corpus) == 5 * 24 and corpus["id"].is_unique and (corpus["route"] == "student").all()
    assert all(isinstance(lab, np.ndarray) and list(lab) == [k for k in labels if k in lab] for lab in corpus["label"])

    # routing: the rows whose least sure label is under the threshold go to the teacher
    threshold = float(corpus["student_confidence"].median())
    route(load_config([*args, f"label.threshold={threshold}"]))
    corpus = pd.read_parquet(run_dir / "labels" / "corpus.parquet")
    unsure = corpus["student_confidence"] < threshold
    assert 0 < unsure.sum() < len(corpus)
    assert (corpus.loc[unsure, "route"] == "teacher").all() and (corpus.loc[~unsure, "route"] == "student").all()
    answers = {r["id"]: r["label"] for r in read_jsonl(run_dir / "labels" / "teacher" / "corpus.jsonl")}
    assert set(answers) == set(corpus.loc[unsure, "id"])
    assert all(list(corpus.set_index("id").loc[i, "label"]) == a for i, a in answers.items())

    # scored against gold: micro and macro F1 with CIs for teacher and student
    for name in ("teacher", "student"):
        m = report["systems"][name]
        assert m["ci"]["f1"][0] <= m["f1"] <= m["ci"]["f1"][1]
        assert 0 <= m["ci"]["macro_f1"][0] < m["ci"]["macro_f1"][1] <= 1  # percentile CI: may miss a skewed point
        assert 0 <= m["hamming_loss"] < 0.5 and m["subset_accuracy"] == m["accuracy"]
    assert report["systems"]["teacher"]["f1"] > 0.7
    assert "cardinality" in report["tests"]

    # the merge never reaches the teacher: with a higher threshold it only uses answers already given
    def no_teacher(*a, **k):
        raise AssertionError("the merge tried to reach the teacher")

    monkeypatch.setattr("distill.teacher.client.Teacher.__init__", no_teacher)
    monkeypatch.setattr("distill.teacher.simulator.Simulator.__init__", no_teacher)
    higher = float(corpus["student_confidence"].quantile(0.9))
    summary = merge(load_config([*args, f"label.threshold={higher}"]))
    assert summary["corpus"]["cascade"]["not_asked"] == ((corpus["student_confidence"] < higher) & ~unsure).sum() > 0

    # review files: several choices per text in Label Studio, Argilla's multi-label question
    merge(load_config([*args, f"label.threshold={higher}", "label.route=review"]))
    review = run_dir / "labels" / "review"
    config = ET.fromstring((review / "label_config.xml").read_text())
    assert next(config.iter("Choices")).get("choice") == "multiple"
    settings = json.loads((review / "argilla_settings.json").read_text())
    assert settings["questions"][0]["type"] == "multi_label_selection"
    tasks = json.loads((review / "corpus.label_studio.json").read_text())
    labeled = next(t for t in tasks if t["predictions"][0]["result"])
    chosen = labeled["predictions"][0]["result"][0]["value"]["choices"]
    assert chosen == list(corpus.set_index("id").loc[labeled["data"]["distill_id"], "student_label"])


@pytest.mark.parametrize("method", ["lora", "full"])
def test_the_head_starts_at_each_labels_log_odds(make_cfg, tmp_path, method):
    nlupp_like(tmp_path / "nlupp")
    cfg = make_cfg("intents", f"data.dir={tmp_path / 'nlupp'}", "student=tiny_encoder", f"student.method={method}")
    task = build_task(cfg.task)
    rows = list(load_split(cfg, "seed", task, labels=True))
    student = student_class(cfg.student).create(cfg.student, task, seed=0, texts=[r["text"] for r in rows])
    student._prior_bias(rows)
    share = torch.tensor([task.to_class_ids(r["label"], r) for r in rows]).mean(0).clamp(1e-3, 1 - 1e-3)
    # the bias that trains (under LoRA: peft's trainable copy of the head)
    trained = [p for n, p in student.model.named_parameters()
               if p.requires_grad and "classifier" in n and n.endswith("bias")]
    assert len(trained) == 1 and torch.allclose(trained[0].detach().cpu(), torch.logit(share))


@pytest.mark.parametrize("student", ["tiny_t5", "tiny_causal"])
def test_generative_students_write_label_lists_with_a_confidence_per_label(make_cfg, tmp_path, student):
    nlupp_like(tmp_path / "nlupp")
    cfg = make_cfg("intents", f"data.dir={tmp_path / 'nlupp'}", f"student={student}", "train=tiny",
                   "train.max_steps=80", "student.max_target_length=24")
    task = build_task(cfg.task)
    seed = list(load_split(cfg, "seed", task, labels=True))
    model = student_class(cfg.student).create(cfg.student, task, seed=0, texts=[r["text"] for r in seed])
    model.trainer(seed[:200], [], cfg.train, tmp_path / "ckpt").train()
    preds = model.predict(seed[200:], batch_size=8, progress=False)
    valid = [(r, p) for r, p in zip(seed[200:], preds) if p["error"] is None]
    if student == "tiny_t5":  # learns to write "a; b" or "none" in 80 steps (the byte-level causal one takes longer)
        assert len(valid) >= len(preds) // 2, [p["raw"] for p in preds]
    for row, p in valid:
        assert p["label"] == task.parse_student(p["raw"], row) and 0 < p["confidence"] <= 1
        assert p["entity_confidence"] is None or len(p["entity_confidence"]) == len(p["label"])
    for p in preds:
        assert (p["label"] is None) == (p["error"] is not None)
