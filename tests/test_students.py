"""Student kinds on tiny random models: what trains and what stays frozen, export and reload,
calibration, rationale distillation, pretrained loading from a local directory."""

import json
import math
import random
import shutil

import datasets
import numpy as np
import pytest
import torch
from conftest import same

from distill import stats
from distill.card import write_card
from distill.data import load_split, prepare_data
from distill.errors import ConfigError
from distill.rundir import RunDir
from distill.students import student_class
from distill.students.base import check_method
from distill.students.calibration import ece, fit_temperature
from distill.tasks import build_task
from distill.tasks.ner import spans

KINDS = ["tiny_t5", "tiny_causal", "tiny_encoder"]


def build(make_cfg, student, rows, *overrides, recipe="demo"):
    cfg = make_cfg(recipe, f"student={student}", *overrides)
    task = build_task(cfg.task)
    return cfg, task, student_class(cfg.student).create(cfg.student, task, seed=0, texts=[r["text"] for r in rows])


def snapshot(model) -> tuple[dict, list[str]]:
    """Every weight, cloned where it lives, and the names training may change: LoRA's (and an
    encoder's new head). Checks that only those are trainable."""
    before = {n: p.detach().clone() for n, p in model.model.named_parameters()}
    trained = [n for n in before if "lora_" in n or "modules_to_save" in n]  # encoders train their new head
    assert any("lora_" in n for n in trained)
    assert all(not p.requires_grad for n, p in model.model.named_parameters() if n not in trained)
    return before, trained


def assert_only_adapter_moved(model, before: dict, trained: list[str]) -> None:
    after = dict(model.model.named_parameters())
    changed = [n for n in trained if not same(before[n], after[n])]
    assert len(changed) > len(trained) // 2, "LoRA weights should move in training"
    for n, p in after.items():
        if n not in trained:
            assert same(before[n], p), f"base weight {n} changed"


@pytest.mark.parametrize("student", KINDS)
def test_lora_trains_adapter_only_exports_and_round_trips(make_cfg, tmp_path, student, topic_rows):
    _, rows = topic_rows
    cfg, task, model = build(make_cfg, student, rows, "train.max_steps=30", "train.batch_size=8")
    before, trained = snapshot(model)

    trainer = model.trainer(rows[:120], rows[120:140], cfg.train, tmp_path / "ckpt")
    result = trainer.train()
    assert result.global_step == 30 and trainer.state.best_metric is not None  # dev loss each epoch
    assert_only_adapter_moved(model, before, trained)

    preds = model.predict(rows[:20], batch_size=8, progress=False)
    assert len(preds) == 20
    assert all(p["label"] in task.labels and 0 < p["confidence"] <= 1 for p in preds)

    # export: adapter, the tiny base beside it, the merged model; loading prefers the merged one
    student_dir = tmp_path / "student"
    trainer.save_model(str(model.weights_dir(student_dir)))
    assert model.export(student_dir) == {"merged": True}
    assert (student_dir / "adapter" / "adapter_config.json").exists()
    assert (student_dir / "merged" / "config.json").exists()
    assert not list((student_dir / "merged").glob("adapter_*")), "the merged model has no adapter left"
    for _ in ("merged", "adapter on its base"):
        loaded = student_class(cfg.student).load(cfg.student, task, student_dir)
        again = loaded.predict(rows[:20], batch_size=5, progress=False)
        assert [p["label"] for p in again] == [p["label"] for p in preds]
        assert [p["confidence"] for p in again] == pytest.approx([p["confidence"] for p in preds], abs=1e-3)
        shutil.rmtree(student_dir / "merged", ignore_errors=True)


@pytest.mark.parametrize("student", KINDS)
def test_full_fine_tuning_moves_the_base_weights(make_cfg, tmp_path, student, topic_rows):
    _, rows = topic_rows
    cfg, task, model = build(make_cfg, student, rows, "student.method=full", "train.max_steps=10",
                             "train.lr=1e-3", "train.dev_fraction=0")
    assert not any("lora_" in n for n, _ in model.model.named_parameters())
    before = {n: p.detach().clone() for n, p in model.model.named_parameters()}
    trainer = model.trainer(rows[:80], [], cfg.train, tmp_path / "ckpt")
    trainer.train()
    changed = [n for n, p in model.model.named_parameters() if not same(before[n], p)]
    assert len(changed) > 0.8 * len(before)
    trainer.save_model(str(model.weights_dir(tmp_path / "student")))
    assert model.weights_dir(tmp_path / "student").name == "merged"
    loaded = student_class(cfg.student).load(cfg.student, task, tmp_path / "student")
    assert [p["label"] for p in loaded.predict(rows[:8], progress=False)] == \
        [p["label"] for p in model.predict(rows[:8], progress=False)]


def sharpen(model, factor: float) -> None:
    """Multiply the output logits by `factor`: the same answers, far surer of them."""
    with torch.no_grad():
        for name, p in model.model.named_parameters():
            if name.endswith(("decoder.final_layer_norm.weight", "model.norm.weight")) or (
                    "classifier.modules_to_save" in name):
                p.mul_(factor)


@pytest.mark.parametrize("student", KINDS)
def test_calibration_lowers_dev_ece_of_an_overconfident_student(make_cfg, tmp_path, student, topic_rows):
    _, rows = topic_rows
    # a random head: sharpened, it is overconfident everywhere alike, what a temperature corrects
    cfg, task, model = build(make_cfg, student, rows, "train.max_steps=40", "train.dev_fraction=0",
                             "train.head_init=random")
    model.trainer(rows[:200], [], cfg.train, tmp_path / "ckpt").train()
    sharpen(model, 8.0)
    # a dev split where the teacher disagrees with the student a third of the time
    rng = random.Random(0)
    preds = model.predict(rows[200:320], progress=False)
    dev = [{**r, "label": p["label"] if rng.random() > 1 / 3 else rng.choice([x for x in task.labels if x != p["label"]])}
           for r, p in zip(rows[200:320], preds)]
    fit = fit_temperature(model, dev)
    assert fit["mean_confidence_before"] > 0.95 and fit["dev_agreement"] < 0.8
    assert fit["temperature"] > 1.5
    assert fit["ece_after"] < fit["ece_before"] / 2, fit
    # applied whenever the student labels: the confidences drop, the labels stay
    model.temperature = fit["temperature"]
    calibrated = model.predict(rows[200:320], progress=False)
    assert [p["label"] for p in calibrated] == [p["label"] for p in preds]
    correct = [p["label"] == d["label"] for p, d in zip(calibrated, dev)]
    assert ece([p["confidence"] for p in calibrated], correct) == pytest.approx(fit["ece_after"], abs=1e-3)


def test_ece_of_known_cases():
    assert ece([0.9] * 10, [True] * 9 + [False]) == pytest.approx(0.0)
    assert ece([1.0] * 4, [True, False, True, False]) == pytest.approx(0.5)
    assert ece([0.25, 0.75], [False, True]) == pytest.approx(0.25)
    # bins are [lo, hi): 0.9 and 0.85 fall in different bins, (|1 - .9| + |0 - .85|) / 2
    assert ece([0.9, 0.85], [True, False]) == pytest.approx(0.475)


class FixedStudent:
    """Answers 'a' then 'b' with the same confidences at every temperature."""

    def __init__(self, conf):
        self.conf = conf

    def predict(self, rows, batch_size, progress, temps):
        return [{"label": label, "confidence": [c] * len(temps)} for label, c in zip("ab", self.conf)]


def test_model_card_and_monitor_measure_one_ece():
    # the card's dev ECE (fit_temperature) and the monitor's gold ECE (stats.ece_test) are one function;
    # 0.5 and 0.4375 are exact in float32, and 0.5 opens bin 5 rather than closing bin 4
    fit = fit_temperature(FixedStudent([0.5, 0.4375]), [{"label": "a"}, {"label": "a"}])
    monitor = stats.ece_test(np.array([0.5, 0.4375]), np.array([1, 0]), n_sim=10)["ece"]
    assert type(fit["ece_before"]) is float and fit["ece_before"] == monitor == (0.5 + 0.4375) / 2
    assert ece is stats.ece and stats.ece(np.array([0.9, 0.85]), np.array([1, 0])) == pytest.approx(0.475)


# the causal student runs the same code path through trl's SFTTrainer: opt-in, it is the slowest test
@pytest.mark.parametrize("student", ["tiny_t5", pytest.param("tiny_causal", marks=pytest.mark.extended)])
def test_rationale_distillation_trains_both_tasks_and_labels_with_one(make_cfg, tmp_path, student, topic_rows):
    _, rows = topic_rows
    # full fine-tuning: LoRA on a frozen random base learns the two prompts apart too slowly for a test
    cfg, task, model = build(make_cfg, student, rows, "task.rationale=true", "train.rationale_alpha=0.6",
                             "student.method=full", "train.max_steps=150", "train.dev_fraction=0")
    rows = [{**r, "rationale": task.simulated_rationale({"label": r["label"]}, r)} for r in rows[:160]]
    data = model.dataset(rows, alpha=0.6)
    assert len(data) == 2 * len(rows) and sorted(set(data["task_weight"])) == pytest.approx([0.4, 0.6])
    label_task = data.filter(lambda e: e["task_weight"] > 0.5)
    rationale_task = data.filter(lambda e: e["task_weight"] < 0.5)

    trainer = model.trainer(rows, [], cfg.train, tmp_path / "ckpt")
    before = [trainer.evaluate(d)["eval_loss"] for d in (label_task, rationale_task)]
    trainer.train()
    after = [trainer.evaluate(d)["eval_loss"] for d in (label_task, rationale_task)]
    assert after[0] < 0.7 * before[0] and after[1] < 0.7 * before[1], (before, after)

    # labeling asks the label task only: answers come from the label set, not rationale text
    preds = model.predict(rows[:16], progress=False)
    assert all(p["label"] in task.labels and p["raw"] in task.labels for p in preds)
    texts, *_ = model.generate([task.rationale_prompt(r) for r in rows[:4]])
    assert all(t.strip().startswith("The text mentions") for t in texts), texts


def test_rationale_needs_a_generative_student(make_cfg, tmp_path, topic_rows):
    with pytest.raises(ConfigError, match="task.rationale needs a seq2seq or causal student; encoder students"):
        make_cfg("demo", "student=tiny_encoder", "task.rationale=true")


def test_encoder_ner_tags_every_word(make_cfg, tmp_path):
    cfg = make_cfg("demo_ner", "student=tiny_encoder", "train.max_steps=60", "train.dev_fraction=0")
    prepare_data(cfg)
    task = build_task(cfg.task)
    rows = list(load_split(cfg, "seed", task))
    model = student_class(cfg.student).create(cfg.student, task, seed=0, texts=[r["text"] for r in rows])
    data = model.dataset(rows[:4], None)
    # one tag per word, on its first sub-token; special tokens and continuations are ignored
    assert [sum(t != -100 for t in labels) for labels in data["labels"]] == [len(r["tokens"]) for r in rows[:4]]
    model.trainer(rows[:150], [], cfg.train, tmp_path / "ckpt").train()
    gold = list(load_split(cfg, "gold", task))[:30]
    preds = model.predict(gold, batch_size=8, progress=False)
    assert all(len(p["label"]) == len(r["tokens"]) and 0 < p["confidence"] <= 1 for p, r in zip(preds, gold))
    # one confidence per predicted entity: the geometric mean of its words' tag probabilities
    assert any(p["entity_confidence"] for p in preds)
    for p in preds:
        assert len(p["entity_confidence"]) == len(spans(p["label"]))
        assert all(0 < c <= 1 for c in p["entity_confidence"])
    scores = task.metrics([r["label"] for r in gold], [p["label"] for p in preds])
    assert scores["f1"] > 0.3, scores  # the tiny model learned something of the entities


def pretrained(make_cfg, student, rows, path, *overrides):
    """A tiny random model saved like a downloaded checkpoint, and a config pointing at it."""
    _, task, tiny = build(make_cfg, student, rows)
    tiny.tiny_base.save_pretrained(path)
    tiny.tokenizer.save_pretrained(path)
    cfg = make_cfg("demo", f"student={student}", "student.tiny=null", f"student.model={path}",
                   "train.dev_fraction=0", *overrides)
    return cfg, task, tiny


def test_a_pretrained_model_loads_from_a_local_directory(make_cfg, tmp_path, topic_rows):
    """The same code path as a hub id: AutoTokenizer / AutoModel.from_pretrained on `student.model`."""
    _, rows = topic_rows
    cfg, task, tiny = pretrained(make_cfg, "tiny_encoder", rows, tmp_path / "pretrained", "train.max_steps=5")
    model = student_class(cfg.student).create(cfg.student, task, seed=0)
    assert model.name == str(tmp_path / "pretrained")
    base = dict(tiny.tiny_base.named_parameters())
    loaded = {n.replace("base_model.model.", ""): p for n, p in model.model.named_parameters() if "lora_" not in n}
    name = "bert.embeddings.word_embeddings.weight"  # loaded in bf16 on a GPU
    assert same(base[name].to(loaded[name].dtype), loaded[name])
    model.trainer(rows[:40], [], cfg.train, tmp_path / "ckpt").train()
    assert all(p["label"] in task.labels for p in model.predict(rows[:4], progress=False))


def test_qlora_is_refused_on_cpu_with_a_clear_message(make_cfg):
    with pytest.raises(ConfigError, match=r"student.method must be one of \['lora', 'qlora', 'full'\]"):
        make_cfg("demo", "student.method=dora")
    with pytest.raises(ConfigError, match="quantizes pretrained weights"):
        make_cfg("demo", "student=tiny_causal", "student.method=qlora")
    cfg = make_cfg("demo", "student=tiny_causal", "student.method=qlora", "student.tiny=null", "student.model=/a/model")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigError, match="needs a\\s+CUDA GPU.*student.method=lora"):
        check_method(cfg.student)


def test_label_scores_are_a_distribution(make_cfg, topic_rows):
    task, rows = topic_rows
    _, _, model = build(make_cfg, "tiny_t5", rows)
    prompts = [task.student_prompt(r) for r in rows[:3]]
    with torch.inference_mode():
        scores = model.score(prompts, task.labels)
    assert scores.shape == (3, 4) and (scores < 0).all()
    # scoring one prompt alone gives the same numbers as in a padded batch
    with torch.inference_mode():
        single = model.score(prompts[:1], task.labels)
    assert torch.allclose(single[0], scores[0], atol=1e-4)


@pytest.mark.parametrize("student", ["tiny_t5", "tiny_causal"])
def test_ner_generation_gives_tags_or_an_error_type(make_cfg, student):
    cfg = make_cfg("demo_ner", f"student={student}", "student.max_target_length=24")
    prepare_data(cfg)
    task = build_task(cfg.task)
    rows = list(load_split(cfg, "gold", task))[:6]
    model = student_class(cfg.student).create(cfg.student, task, seed=0)
    preds = model.predict(rows, batch_size=4, progress=False)
    for row, p in zip(rows, preds):
        assert isinstance(p["raw"], str) and 0 < p["confidence"] <= 1
        if p["error"] is None:
            assert len(p["label"]) == len(row["tokens"])
            assert p["entity_confidence"] is None or len(p["entity_confidence"]) == len(spans(p["label"]))
        else:
            assert p["label"] is None


@pytest.mark.parametrize("student", ["tiny_t5", "tiny_causal"])
def test_candidate_scores_are_each_labels_log_likelihood(make_cfg, student, topic_rows):
    task, rows = topic_rows
    _, _, model = build(make_cfg, student, rows)
    model.model.eval()
    prompts = [task.student_prompt(r) for r in rows[:3]]  # different lengths: padded in the batch
    with torch.inference_mode():
        scores = model.score(prompts, model.candidate_targets)
        for i, prompt in enumerate(prompts):
            for j, target in enumerate(model.candidate_targets):
                # the same pair alone, through the model's own loss: mean token NLL times tokens
                enc = model.encode([prompt], [target])
                if student == "tiny_t5":
                    labels = torch.tensor(enc["labels"])
                    out = model.model(input_ids=torch.tensor(enc["input_ids"]), labels=labels)
                    assert scores[i, j] == pytest.approx(-out.loss.item() * labels.shape[1], abs=1e-3)
                else:
                    p = model.tokenizer(prompt)["input_ids"][:-1]  # without the byte tokenizer's EOS
                    t = model.tokenizer(" " + target, add_special_tokens=False)["input_ids"] + [model.tokenizer.eos_token_id]
                    ids = torch.tensor([p + t])
                    labels = torch.tensor([[-100] * len(p) + t])
                    out = model.model(input_ids=ids, labels=labels)
                    assert scores[i, j] == pytest.approx(-out.loss.item() * len(t), abs=1e-3)


def test_generated_entities_get_the_probability_of_their_own_tokens(make_cfg):
    task = build_task(make_cfg("demo_ner").task)
    row = {"text": "Ann Lee met Bob in Paris", "tokens": "Ann Lee met Bob in Paris".split()}
    text = "PER: Ann Lee; LOC: Paris; PER: Zed"  # Zed is not in the text: dropped from the label
    label = task.parse_student(text, row)
    # tokens as a byte-level student writes them, each with its logprob
    cut = [0, 4, 8, 12, 13, 18, 24, 25, 34]
    lps = [-0.1, -0.2, -0.3, -0.05, -0.5, -0.6, -0.01, -2.0]
    pieces = [(text[a:b], lp) for a, b, lp in zip(cut, cut[1:], lps)]
    conf = task.student_unit_confidence(text, pieces, label, row)
    # entities in label order: Ann Lee (tokens 0-2 span "PER: Ann Lee"), Paris (tokens 4-5)
    assert conf == [pytest.approx(math.exp(-0.6), abs=1e-6), pytest.approx(math.exp(-1.1), abs=1e-6)]
    assert task.student_unit_confidence(text + "x", pieces, label, row) is None  # tokens must spell the text


def test_model_card_names_teacher_data_recipe_dev_metrics_and_calibration(make_cfg, tmp_path):
    cfg = make_cfg("demo")
    student_dir = tmp_path / "run" / "student"
    (student_dir / "adapter").mkdir(parents=True)
    (student_dir / "merged").mkdir()
    meta = {"kind": "seq2seq", "name": "tiny-random-seq2seq", "base_model": "tiny-random-seq2seq", "steps": 12,
            "train_rows": 360, "dev_rows": 40, "world_size": 1, "train_loss": 0.5, "best_dev_loss": 0.4,
            "dev_agreement": 0.9, "adapter_hash": "abc", "data_hashes": {"train": "t1", "dev": "d1", "gold": "g1"}}
    (student_dir / "student.json").write_text(json.dumps(meta))
    (student_dir / "calibration.json").write_text(json.dumps({"temperature": 1.7, "dev_rows": 40,
                                                              "ece_before": 0.2, "ece_after": 0.05}))
    paths = write_card(cfg, RunDir(tmp_path / "run"))
    assert [p.parent.name for p in paths] == ["adapter", "merged"]
    card = paths[0].read_text()
    for needle in ("simulated-gpt-4", "recipe: `demo`", "360 rows labeled by the teacher", "40 more as the dev split",
                   "train `t1`, dev `d1`, gold `g1`", "agreement with the teacher: 0.900", "T = 1.7",
                   "0.200 before, 0.050 after", "library_name: peft"):
        assert needle in card, needle
    assert "library_name: transformers" in paths[1].read_text()


def test_dataset_rows_are_numbered_for_the_sharding_record(make_cfg, topic_rows):
    _, rows = topic_rows
    _, _, model = build(make_cfg, "tiny_t5", rows)
    assert model.dataset(rows[:5], None)["row"] == [0, 1, 2, 3, 4]
    assert model.dataset(rows[:3], None, first=-3)["row"] == [-3, -2, -1]
    assert isinstance(model.dataset(rows[:2], None), datasets.Dataset)


@pytest.mark.parametrize("marker", [None, "^"])
def test_case_marker_lets_an_uncased_tagger_see_capitals(make_cfg, tmp_path, marker):
    """An uncased tokenizer reads 'Apple' and 'apple' alike: only the marker after a capitalized
    word lets the tagger tell the company from the fruit."""
    from tokenizers import normalizers

    cfg = make_cfg("demo_ner", "student=tiny_encoder", "student.method=full", "train.max_steps=80",
                   "train.dev_fraction=0", "train.lr=3e-3", f"student.case_marker={repr(marker) if marker else 'null'}")
    task = build_task(cfg.task)
    rng = random.Random(0)
    names, frames = ["apple", "shell", "amazon", "bush", "jaguar"], [["we", "saw"], ["they", "bought"], ["like"]]
    rows = []
    for i in range(160):
        name, frame, cap = rng.choice(names), rng.choice(frames), i % 2 == 0
        tokens = [*frame, name.capitalize() if cap else name, "today"]
        tags = ["O"] * len(frame) + ["B-ORG" if cap else "O", "O"]
        rows.append({"id": str(i), "text": " ".join(tokens), "tokens": tokens, "label": tags})
    texts = [r["text"].lower() for r in rows] + ["^"]
    model = student_class(cfg.student).create(cfg.student, task, seed=0, texts=texts)
    model.tokenizer.backend_tokenizer.normalizer = normalizers.Lowercase()  # uncased, as MiniLM's
    data = model.dataset(rows[:2], None)
    assert [sum(t != -100 for t in labels) for labels in data["labels"]] == [4, 4]  # the marker carries no tag
    model.trainer(rows, [], cfg.train, tmp_path / "ckpt").train()
    preds = model.predict(rows[:40], batch_size=16, progress=False)
    assert all(len(p["label"]) == len(r["tokens"]) for p, r in zip(preds, rows))
    right = sum(p["label"][-2] == r["label"][-2] for p, r in zip(preds, rows[:40]))
    if marker:
        assert right == 40
    else:
        assert right <= 30  # the two spellings are one input: about half right at best

    cfg.student.case_marker = "zzqq"
    with pytest.raises(ConfigError, match="case_marker 'zzqq' is not one token"):
        student_class(cfg.student).create(cfg.student, task, seed=0, texts=texts)


def test_token_batches_keep_every_row_once_within_both_limits():
    from distill.students.base import token_batches

    rng = random.Random(0)
    lengths = [rng.randint(1, 120) for _ in range(500)]
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    batches = token_batches(order, lengths, batch_size=64, batch_tokens=1000)
    assert sorted(i for b in batches for i in b) == list(range(500))
    assert all(len(b) <= 64 and (len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 1000) for b in batches)
    short, long = batches[0], batches[-1]
    assert len(short) == 64 and len(long) < len(short)  # short rows share big batches, long rows small ones
    assert token_batches(order, lengths, 64, None) == [order[k : k + 64] for k in range(0, 500, 64)]


@pytest.mark.parametrize("student", KINDS)
def test_batching_and_overlap_do_not_change_any_rows_label(make_cfg, student, topic_rows):
    """Token-budget batches of length-sorted rows, results read back a batch behind: each row
    still gets the label and confidence it gets alone."""
    _, rows = topic_rows
    _, _, model = build(make_cfg, student, rows)
    sample = rows[:40]
    alone = model.predict(sample, batch_size=1, progress=False)
    batched = model.predict(sample, batch_size=16, batch_tokens=300, progress=False)
    assert [p["label"] for p in batched] == [p["label"] for p in alone]
    assert [p["confidence"] for p in batched] == pytest.approx([p["confidence"] for p in alone], abs=1e-4)


def test_the_reader_threads_tokenizer_is_its_own(make_cfg, topic_rows):
    """The label stage tokenizes the next window in a second thread. A fast tokenizer sets
    padding and truncation on itself for each call, so with one shared tokenizer a padded call in
    the main thread (candidate labels, a generation batch) can pad that thread's output."""
    _, rows = topic_rows
    _, _, student = build(make_cfg, "tiny_encoder", rows)
    reader = student.tokenizing_copy()
    assert reader.model is student.model and reader.task is student.task
    texts = rows[:200]
    want = [len(x) for x in student.input_ids(texts)]
    student.tokenizer.backend_tokenizer.enable_padding(length=300)  # what a padded call leaves set meanwhile
    assert reader.tokenizer.backend_tokenizer.padding is None
    assert [len(x) for x in reader.input_ids(texts)] == want
