"""Students: LoRA trains (adapter weights move, base weights do not), save/load, prediction."""

import pytest
import torch

from distill.data import load_split
from distill.students import student_class
from distill.tasks import build_task
from distill.teach import prepare_data


@pytest.fixture(scope="module")
def topic_rows(tmp_path_factory):
    from distill.config import load_config

    cfg = load_config(["recipe=demo", f"run_dir={tmp_path_factory.mktemp('s')}"])
    prepare_data(cfg)
    task = build_task(cfg.task)
    return cfg, task, list(load_split(cfg, "seed", task))


@pytest.mark.parametrize("student", ["tiny_t5", "tiny_causal"])
def test_lora_trains_adapter_only_and_round_trips(make_cfg, tmp_path, student, topic_rows):
    _, task, rows = topic_rows
    cfg = make_cfg("demo", f"student={student}", "train.max_steps=30", "train.batch_size=8")
    model = student_class(cfg.student).create(cfg.student, task, seed=0)
    before = {n: p.detach().clone() for n, p in model.model.named_parameters()}
    lora = [n for n in before if "lora_" in n]
    assert lora and all(not p.requires_grad for n, p in model.model.named_parameters() if "lora_" not in n)

    metrics = model.fit(rows[:120], cfg.train, tmp_path / "ckpt")
    assert metrics["steps"] == 30 and metrics["train_loss"] > 0
    after = dict(model.model.named_parameters())
    changed = [n for n in lora if not torch.equal(before[n], after[n])]
    assert len(changed) > len(lora) // 2, "LoRA weights should move in training"
    for n, p in after.items():
        if "lora_" not in n:
            assert torch.equal(before[n], p), f"base weight {n} changed"

    preds = model.predict(rows[:20], batch_size=8, progress=False)
    assert len(preds) == 20
    assert all(p["label"] in task.labels and 0 < p["confidence"] <= 1 for p in preds)

    meta = model.save(tmp_path / "student", {"train_rows": 120})
    assert (tmp_path / "student" / "adapter" / "adapter_config.json").exists()
    assert len(meta["adapter_hash"]) == 12
    loaded = student_class(cfg.student).load(cfg.student, task, tmp_path / "student")
    again = loaded.predict(rows[:20], batch_size=5, progress=False)
    assert [p["label"] for p in again] == [p["label"] for p in preds]
    assert [round(p["confidence"], 4) for p in again] == [round(p["confidence"], 4) for p in preds]


def test_label_scores_are_a_distribution(make_cfg, topic_rows):
    _, task, rows = topic_rows
    cfg = make_cfg("demo")
    model = student_class(cfg.student).create(cfg.student, task, seed=0)
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
        else:
            assert p["label"] is None
