"""Encoder students classify from the sentence embedding their checkpoint declares, and start
their head as a linear probe (LP-FT)."""

import json

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from transformers import BertModel

from distill.students import student_class
from distill.students.encoder import declared_pooling
from distill.tasks import build_task


@pytest.fixture
def checkpoint(make_cfg, tmp_path, topic_rows):
    """A tiny random BERT classifier saved as a local checkpoint, and a batch of padded inputs."""
    _, rows = topic_rows
    cfg = make_cfg("demo", "student=tiny_encoder", "student.method=full")
    task = build_task(cfg.task)
    cls = student_class(cfg.student)
    student = cls.create(cfg.student, task, seed=0, texts=[r["text"] for r in rows])
    path = tmp_path / "ckpt"
    student.model.save_pretrained(path)
    student.tokenizer.save_pretrained(path)
    texts = [r["text"] for r in rows[:6]]
    batch = student.tokenizer(texts, padding=True, return_tensors="pt")
    assert (batch["attention_mask"] == 0).any(), "the batch must hold padding for the mean to differ"
    return cfg, task, cls.for_task(task), path, batch


def declare_mean(path) -> None:
    """What a sentence-transformers checkpoint ships: modules.json naming a Pooling module."""
    (path / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (path / "1_Pooling").mkdir()
    (path / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 64, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True}))


def logits_of(model, batch) -> torch.Tensor:
    with torch.inference_mode():
        return model.eval()(**batch).logits


def by_hand(path, head, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """The head over the masked mean of the backbone's last states, and over its own pooler,
    from a plain BertModel loaded apart (no hooks)."""
    with torch.inference_mode():
        out = BertModel.from_pretrained(path).eval()(**batch)
        mask = batch["attention_mask"].unsqueeze(-1).float()
        mean = (out.last_hidden_state * mask).sum(1) / mask.sum(1)
        return head(mean), head(out.pooler_output)


def test_declared_mean_pooling_classifies_from_the_mean(checkpoint):
    cfg, task, cls, path, batch = checkpoint
    declare_mean(path)
    assert declared_pooling(path) == "mean"
    model = cls.from_pretrained(path, task, cfg.student)
    mean, pooler = by_hand(path, model.classifier, batch)
    got = logits_of(model, batch)
    torch.testing.assert_close(got, mean, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(got, pooler, atol=1e-3), "the [CLS] pooler would give other logits"
    assert model.bert.pooler is None  # dropped: untrained for this use, and unused under DDP

    # saved (as a merged student is) without the sentence-transformers files: the config says mean
    model.save_pretrained(path / "merged")
    assert json.loads((path / "merged" / "config.json").read_text())["sentence_pooling"] == "mean"
    again = cls.from_pretrained(path / "merged", task, cfg.student)
    torch.testing.assert_close(logits_of(again, batch), got, atol=1e-5, rtol=1e-4)


def test_no_declared_pooling_keeps_the_models_pooler(checkpoint, make_cfg):
    cfg, task, cls, path, batch = checkpoint
    assert declared_pooling(path) is None
    model = cls.from_pretrained(path, task, cfg.student)
    mean, pooler = by_hand(path, model.classifier, batch)
    torch.testing.assert_close(logits_of(model, batch), pooler, atol=1e-5, rtol=1e-4)
    # student.pooling=model ignores a declaration
    declare_mean(path)
    plain = cls.from_pretrained(path, task, make_cfg("demo", "student=tiny_encoder", "student.pooling=model").student)
    torch.testing.assert_close(logits_of(plain, batch), pooler, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("recipe", ["demo", "demo_ner"])
def test_probe_head_starts_where_a_logistic_regression_ends(make_cfg, recipe, topic_rows, tmp_path):
    """train.head_init=probe: before any step the head predicts what a logistic regression fitted
    on the frozen features predicts, and the body has not moved."""
    cfg = make_cfg(recipe, "student=tiny_encoder", "train.max_steps=1", "train.head_init=probe")
    task = build_task(cfg.task)
    from distill.data import load_split, prepare_data

    prepare_data(cfg)
    seed = load_split(cfg, "seed", task, labels=True)
    rows = [r for r in seed.to_list() if r["label"] is not None][:120]
    student = student_class(cfg.student).create(cfg.student, task, seed=0, texts=[r["text"] for r in rows])
    body = {n: p.detach().clone() for n, p in student.model.named_parameters() if "lora_" in n}
    data = student.dataset(rows, None)
    x, y, w = student.head_inputs(data, 16)
    [head] = student.head_layers()
    before = head.weight.detach().clone()

    trainer = student.trainer(rows, [], cfg.train, tmp_path / "ckpt")
    assert not torch.equal(head.weight.detach(), before.to(head.weight.device))
    fitted = LogisticRegression(C=10.0, max_iter=1000).fit(x, y)
    with torch.inference_mode():
        logits = head(torch.from_numpy(x).to(head.weight)).float().cpu().numpy()
    agree = (logits.argmax(-1) == fitted.predict(x)).mean()
    assert agree > 0.97, agree
    assert agree > (logits.argmax(-1) == np.random.default_rng(0).permutation(y)).mean()
    assert all(torch.equal(p.detach(), body[n].to(p.device)) for n, p in student.model.named_parameters() if n in body)


def test_a_probe_start_that_fine_tuning_makes_worse_is_kept(make_cfg, topic_rows, tmp_path):
    """A learning rate that wrecks the model: no epoch agrees with dev as the probe did, so the
    student ends with the weights it started from, and says so."""
    _, rows = topic_rows
    cfg = make_cfg("demo", "student=tiny_encoder", "student.method=full", "train.epochs=2", "train.lr=5.0",
                   "train.head_lr=null", "train.head_init=probe", "train.early_stopping_patience=null")
    task = build_task(cfg.task)
    student = student_class(cfg.student).create(cfg.student, task, seed=0, texts=[r["text"] for r in rows])
    trainer = student.trainer(rows[:160], rows[160:220], cfg.train, tmp_path / "ckpt")
    start = {n: p.detach().clone() for n, p in student.model.named_parameters()}  # after the probe fit
    trainer.train()
    kept = [e for e in trainer.state.log_history if e.get("kept_start")]
    assert kept and kept[0]["start_agreement"] > kept[0]["best_agreement"]
    assert all(torch.equal(p.detach(), start[n].to(p.device)) for n, p in student.model.named_parameters())


def test_fine_tuning_that_helps_replaces_the_probe_start(make_cfg, topic_rows, tmp_path):
    _, rows = topic_rows
    cfg = make_cfg("demo", "student=tiny_encoder", "student.method=full", "train.epochs=6", "train.head_init=probe")
    task = build_task(cfg.task)
    student = student_class(cfg.student).create(cfg.student, task, seed=0, texts=[r["text"] for r in rows])
    trainer = student.trainer(rows[:200], rows[200:260], cfg.train, tmp_path / "ckpt")
    trainer.train()
    evals = [e for e in trainer.state.log_history if "eval_agreement" in e]
    assert evals[0]["step"] == 0 and len(evals) > 1  # the start is scored, then every epoch
    best = next(e["eval_agreement"] for e in evals if e["step"] == trainer.state.best_global_step)
    assert best > evals[0]["eval_agreement"]
    assert not any(e.get("kept_start") for e in trainer.state.log_history)


def test_head_lr_gives_the_head_steps_of_its_own(make_cfg, topic_rows, tmp_path):
    """Adam moves each weight by about its learning rate a step: a head at 1e-2 over a body at
    1e-5 moves about a thousand times as far; at train.lr=0 nothing moves, the head included."""
    _, rows = topic_rows

    def moved(*overrides) -> tuple[float, float]:
        cfg = make_cfg("demo", "student=tiny_encoder", "student.method=full", "train.max_steps=5",
                       "train.head_lr=1e-2", "train.head_init=random", *overrides)
        task = build_task(cfg.task)
        student = student_class(cfg.student).create(cfg.student, task, seed=0, texts=[r["text"] for r in rows])
        before = {n: p.detach().clone() for n, p in student.model.named_parameters()}
        student.trainer(rows[:80], [], cfg.train, tmp_path / "ckpt").train()
        delta = {n: (p.detach() - before[n].to(p.device)).abs().max().item() for n, p in student.model.named_parameters()}
        return max(v for n, v in delta.items() if n.startswith("classifier")), max(
            v for n, v in delta.items() if not n.startswith("classifier"))

    head, body = moved("train.lr=1e-5")
    assert head > 100 * body > 0
    assert moved("train.lr=0") == (0.0, 0.0)
