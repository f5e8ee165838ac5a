"""A decoder backbone (Llama family, as SmolLM2) under the encoder kind: a token classifier for NER
and a sequence classifier for classification, built from a tiny random Llama checkpoint saved like
a download, with a byte-level BPE tokenizer (GPT-2 / SmolLM2 style, no pad token) trained in
milliseconds. Goes through the same path as `student=smollm2_135m_tagger student.model=DIR`."""

import numpy as np
import pytest
import torch
from conftest import same
from sklearn.linear_model import LogisticRegression
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from distill.data import load_split, prepare_data
from distill.students import student_class
from distill.students.encoder import EncoderStudent, word_prefix
from distill.tasks import build_task
from distill.tasks.ner import spans


def byte_bpe(texts: list[str]) -> PreTrainedTokenizerFast:
    """A GPT-2 style tokenizer: byte-level BPE, a word's leading space part of its token, EOS but no pad."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", unk_token="<|endoftext|>")


def tiny_llama_dir(path, texts: list[str]):
    """A tiny random causal Llama and its tokenizer, saved as a pretrained checkpoint: no pad token anywhere."""
    tokenizer = byte_bpe(texts)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=None, pad_token_id=None,
                         tie_word_embeddings=True)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def decoder_student(make_cfg, recipe: str, path, *overrides):
    # demo_ner widens its tiny students: none here, the model is the saved checkpoint
    cfg = make_cfg(recipe, "student=smollm2_135m_tagger", f"student.model={path}", "student.tiny=null", "student.merge=false",
                   "train.dev_fraction=0", "train.batch_size=8", *overrides)
    prepare_data(cfg)
    task = build_task(cfg.task)
    rows = list(load_split(cfg, "seed", task))
    return cfg, task, rows


def snapshot(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_word_split_input_is_spelled_as_in_running_text():
    texts = ["Peter Blackburn visited Brussels", "EU rejects German call to boycott British lamb ."] * 20
    bpe = byte_bpe(texts)
    assert word_prefix(bpe) == " "  # byte-level BPE: 'ĠPeter' inside a text, 'Peter' alone
    enc = bpe([[" " + w for w in texts[0].split()]], is_split_into_words=True)
    running = bpe(" " + texts[0])
    assert enc["input_ids"][0] == running["input_ids"]  # every word exactly as inside running text
    assert enc.word_ids(0)[0] == 0 and max(enc.word_ids(0)) == 3
    assert word_prefix(EncoderStudent.tiny_tokenizer(texts)) == ""  # word-level: nothing to add


@pytest.mark.parametrize("bidirectional", [False, True])
def test_llama_token_classifier_trains_lora_and_head_and_tags_every_word(make_cfg, tmp_path, bidirectional):
    cfg, task, rows = decoder_student(make_cfg, "demo_ner", tmp_path / "pending", "train.max_steps=40",
                                      "train.lr=3e-3", f"student.bidirectional={bidirectional}")
    path = tiny_llama_dir(tmp_path / "llama", [r["text"] for r in rows])
    cfg.student.model = str(path)
    model = student_class(cfg.student).create(cfg.student, task, seed=0)
    assert model.tokenizer.pad_token == "<|endoftext|>" and model.model.config.pad_token_id == model.tokenizer.eos_token_id
    before = snapshot(model.model)
    trained = [n for n, p in model.model.named_parameters() if p.requires_grad]
    assert any("lora_" in n for n in trained) and any("score.modules_to_save" in n for n in trained)

    model.trainer(rows[:120], [], cfg.train, tmp_path / "ckpt").train()
    after = dict(model.model.named_parameters())
    assert all(not same(before[n], after[n]) for n in trained if "lora_B" in n or "score" in n)
    assert all(same(before[n], p) for n, p in after.items() if n not in trained), "base weights moved"

    gold = list(load_split(cfg, "gold", task))[:40]
    preds = model.predict(gold, batch_size=16, progress=False)
    assert all(len(p["label"]) == len(r["tokens"]) and 0 < p["confidence"] <= 1 for p, r in zip(preds, gold))
    assert any(p["entity_confidence"] for p in preds)
    assert all(len(p["entity_confidence"]) == len(spans(p["label"])) for p in preds)
    # padding changes nothing: each row alone gets the tags and confidence it got in a padded batch,
    # whichever side the tokenizer pads on
    model.tokenizer.padding_side = "left"
    alone = model.predict(gold[:6], batch_size=1, progress=False)
    assert [p["label"] for p in alone] == [p["label"] for p in preds[:6]]
    assert [p["confidence"] for p in alone] == pytest.approx([p["confidence"] for p in preds[:6]], abs=1e-4)
    assert [p["label"] for p in model.predict(gold, batch_size=16, progress=False)] == [p["label"] for p in preds]

    # a decoder's first word sees the words after it only with bidirectional attention
    row = next(r for r in gold if len(r["tokens"]) > 3)
    changed = {**row, "tokens": [*row["tokens"][:-1], "zebra"]}
    with torch.inference_mode():
        first = [model.model(**model.tokenizer.pad(model._encode([r]), return_tensors="pt")).logits[0, 0]
                 for r in (row, changed)]
    assert torch.allclose(first[0], first[1], atol=1e-5) != bidirectional

    # the adapter reloads on its base with the same attention and tags
    student_dir = tmp_path / "student"
    model.model.save_pretrained(student_dir / "adapter")
    model.tokenizer.save_pretrained(student_dir / "adapter")
    (student_dir / "student.json").write_text("{}")
    (student_dir / "calibration.json").write_text("{}")
    loaded = student_class(cfg.student).load(cfg.student, task, student_dir)
    assert [p["label"] for p in loaded.predict(gold[:16], progress=False)] == [p["label"] for p in preds[:16]]


def test_llama_sequence_classifier_full_fine_tuning(make_cfg, tmp_path):
    cfg, task, rows = decoder_student(make_cfg, "demo", tmp_path / "pending", "student.method=full",
                                      "train.max_steps=30", "train.lr=1e-3")
    path = tiny_llama_dir(tmp_path / "llama", [r["text"] for r in rows])
    cfg.student.model = str(path)
    model = student_class(cfg.student).create(cfg.student, task, seed=0)
    assert not any("lora_" in n for n, _ in model.model.named_parameters())
    before = snapshot(model.model)
    trainer = model.trainer(rows[:160], [], cfg.train, tmp_path / "ckpt")
    trainer.train()
    changed = [n for n, p in model.model.named_parameters() if not same(before[n], p)]
    assert len(changed) > 0.8 * len(before)

    preds = model.predict(rows[160:200], batch_size=16, progress=False)
    assert all(p["label"] in task.labels and 0 < p["confidence"] <= 1 for p in preds)
    # the head reads each row's last real token, wherever the batch's padding ends
    alone = model.predict(rows[160:166], batch_size=1, progress=False)
    assert [p["confidence"] for p in alone] == pytest.approx([p["confidence"] for p in preds[:6]], abs=1e-4)

    trainer.save_model(str(model.weights_dir(tmp_path / "student")))
    (tmp_path / "student" / "student.json").write_text("{}")
    (tmp_path / "student" / "calibration.json").write_text("{}")
    loaded = student_class(cfg.student).load(cfg.student, task, tmp_path / "student")
    assert [p["label"] for p in loaded.predict(rows[160:176], progress=False)] == [p["label"] for p in preds[:16]]


def test_llama_classifier_probe_head_reads_the_last_real_token(make_cfg, tmp_path):
    """train.head_init=probe on a decoder: its head runs on every token and is read at the last
    real one, so the probe's features are that token's, wherever the batch's padding ends."""
    cfg, task, rows = decoder_student(make_cfg, "demo", tmp_path / "pending", "student.method=full",
                                      "train.max_steps=1", "train.head_init=probe")
    cfg.student.model = str(tiny_llama_dir(tmp_path / "llama", [r["text"] for r in rows]))
    model = student_class(cfg.student).create(cfg.student, task, seed=0)
    rows = rows[:120]
    x, y, _ = model.head_inputs(model.dataset(rows, None), 16)
    assert x.shape[0] == len(rows) and len(set(map(len, (r["text"] for r in rows[:16])))) > 1
    alone, _, _ = model.head_inputs(model.dataset(rows[5:6], None), 1)
    np.testing.assert_allclose(alone[0], x[5], atol=1e-4)

    model.trainer(rows, [], cfg.train, tmp_path / "ckpt")  # fits the head
    [head] = model.head_layers()
    with torch.inference_mode():
        predicted = head(torch.from_numpy(x).to(head.weight)).argmax(-1).cpu().numpy()
    fitted = LogisticRegression(C=10.0, max_iter=1000, fit_intercept=False).fit(x, y)  # the head has no bias
    assert (predicted == fitted.predict(x)).mean() > 0.97
