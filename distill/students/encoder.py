"""Encoder students (BERT, DeBERTa, ModernBERT families): a classification head over the text, or
over each word for NER. They give class probabilities in one forward pass: the cheapest labelers."""

from __future__ import annotations

import datasets
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    BertConfig,
    BertForSequenceClassification,
    BertForTokenClassification,
    DataCollatorForTokenClassification,
    DataCollatorWithPadding,
    PreTrainedTokenizerFast,
    Trainer,
)

from distill.errors import ConfigError
from distill.students.base import Student
from distill.students.calibration import mean_over, top_confidence
from distill.tasks.ner import spans

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def first_subtokens(enc, i: int) -> list[tuple[int, int]]:
    """(position, word) of each word's first sub-token in row i of a word-split encoding."""
    words = enc.word_ids(i)
    return [(pos, w) for pos, w in enumerate(words) if w is not None and (pos == 0 or words[pos - 1] != w)]


def label_maps(task) -> dict:
    """The classification head's config: one class per label (or per NER tag)."""
    names = task.class_names()
    return {"num_labels": len(names), "id2label": dict(enumerate(names)),
            "label2id": {n: i for i, n in enumerate(names)}}


class EncoderStudent(Student):
    kind = "encoder"
    generative = False

    @classmethod
    def auto(cls, task):
        return AutoModelForTokenClassification if task.token_level else AutoModelForSequenceClassification

    @classmethod
    def lora_task_type(cls, task) -> str:
        return "TOKEN_CLS" if task.token_level else "SEQ_CLS"  # peft then trains the new head in full

    @classmethod
    def from_pretrained(cls, path, task, **kwargs):
        return cls.auto(task).from_pretrained(path, **label_maps(task), **kwargs)

    @classmethod
    def tiny_tokenizer(cls, texts: list[str]):
        """A word-level vocabulary of the training texts: trains in milliseconds, needs no files."""
        tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=SPECIAL))
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[(t, tok.token_to_id(t)) for t in ("[CLS]", "[SEP]")])
        return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                       cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                       model_max_length=512)

    @classmethod
    def tiny_model(cls, tiny, tokenizer, task):
        config = BertConfig(vocab_size=len(tokenizer), hidden_size=tiny.hidden, num_hidden_layers=tiny.layers,
                            num_attention_heads=tiny.heads, intermediate_size=tiny.hidden * 2,
                            max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id, **label_maps(task))
        return (BertForTokenClassification if task.token_level else BertForSequenceClassification)(config)

    # -- training -----------------------------------------------------------------------------
    def _encode(self, rows: list[dict]) -> dict:
        if not self.task.token_level:
            return self.tokenizer([r["text"] for r in rows], max_length=self.cfg.max_source_length, truncation=True)
        if not self.tokenizer.is_fast:
            raise ConfigError(f"encoder NER needs a fast tokenizer (word alignment); {self.name} has none")
        return self.tokenizer([r["tokens"] for r in rows], is_split_into_words=True,
                              max_length=self.cfg.max_source_length, truncation=True)

    def dataset(self, rows: list[dict], alpha: float | None, first: int = 0) -> datasets.Dataset:
        enc = self._encode(rows)
        labels = []
        for i, row in enumerate(rows):
            ids = self.task.to_class_ids(row["label"], row)
            if self.task.token_level:  # the first sub-token of each word carries its tag
                tagged = dict(first_subtokens(enc, i))
                ids = [ids[tagged[pos]] if pos in tagged else -100 for pos in range(len(enc["input_ids"][i]))]
            labels.append(ids)
        return datasets.Dataset.from_dict({**enc, "labels": labels, "row": list(range(first, first + len(rows)))})

    def make_trainer(self, args, train_data, dev_data, weighted: bool):
        collator = (DataCollatorForTokenClassification if self.task.token_level else DataCollatorWithPadding)(
            self.tokenizer)
        return Trainer(model=self.model, args=args, train_dataset=train_data, eval_dataset=dev_data,
                       data_collator=collator, processing_class=self.tokenizer)

    # -- prediction ---------------------------------------------------------------------------
    def predict_batch(self, rows: list[dict], temps: torch.Tensor) -> list[dict]:
        enc = self._encode(rows)
        batch = self.tokenizer.pad(enc, return_tensors="pt").to(self.model.device)
        logits = self.model(**batch).logits.float()
        if not self.task.token_level:
            conf = top_confidence(logits, temps).exp().tolist()
            labels = [self.task.from_class_ids(i, r) for i, r in zip(logits.argmax(-1).tolist(), rows)]
            return [{"label": lab, "confidence": c, "entity_confidence": None, "error": None, "raw": lab}
                    for lab, c in zip(labels, conf)]
        # one position per word (its first sub-token); words cut off by truncation get O
        width = max(len(r["tokens"]) for r in rows)
        word_logits = torch.zeros(len(rows), width, logits.shape[-1], device=logits.device)
        word_logits[..., 0] = 1e4
        mask = torch.zeros(len(rows), width, dtype=torch.bool, device=logits.device)
        # (row, position, word) of every word's first sub-token, gathered in one indexing op
        where = torch.tensor([(b, pos, w) for b in range(len(rows)) for pos, w in first_subtokens(enc, b)],
                             dtype=torch.long, device=logits.device).reshape(-1, 3)
        at_row, at_pos, at_word = where.unbind(1)
        word_logits[at_row, at_word], mask[at_row, at_word] = logits[at_row, at_pos], True
        word_lp = top_confidence(word_logits, temps)  # [B, W, G]
        conf = mean_over(word_lp, mask).tolist()
        ids = word_logits.argmax(-1).tolist()
        lp0 = word_lp[..., 0].cpu()  # one copy per batch
        out = []
        for b, row in enumerate(rows):
            tags = self.task.from_class_ids(ids[b][: len(row["tokens"])], row)
            # an entity's confidence: the geometric mean of its words' tag probabilities
            units = [round(float(lp0[b, s:e].mean().exp()), 6) for _, s, e in spans(tags)]
            out.append({"label": tags, "confidence": conf[b], "entity_confidence": units, "error": None,
                        "raw": " ".join(tags)})
        return out
