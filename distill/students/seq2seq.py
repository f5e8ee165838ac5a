"""Seq2seq students (T5 / Flan-T5 family), trained with `transformers.Seq2SeqTrainer`."""

from __future__ import annotations

from pathlib import Path

import datasets
import torch
from transformers import (AutoModelForSeq2SeqLM, DataCollatorForSeq2Seq, Seq2SeqTrainer,
                          Seq2SeqTrainingArguments, T5Config, T5ForConditionalGeneration)

from distill.students.base import Student


class Seq2SeqStudent(Student):
    kind = "seq2seq"
    task_type = "SEQ_2_SEQ_LM"
    auto_class = AutoModelForSeq2SeqLM

    @classmethod
    def tiny_model(cls, tiny, tokenizer):
        config = T5Config(vocab_size=len(tokenizer), d_model=tiny.hidden, d_ff=tiny.hidden * 2,
                          d_kv=tiny.hidden // tiny.heads, num_layers=tiny.layers, num_heads=tiny.heads,
                          decoder_start_token_id=tokenizer.pad_token_id, pad_token_id=tokenizer.pad_token_id,
                          eos_token_id=tokenizer.eos_token_id, dropout_rate=0.0)
        return T5ForConditionalGeneration(config)

    def _encode(self, rows: list[dict]) -> datasets.Dataset:
        sources = [self.task.student_prompt(r) for r in rows]
        targets = [self.task.student_target(r["label"], r) for r in rows]
        enc = self.tokenizer(sources, max_length=self.cfg.max_source_length, truncation=True)
        enc["labels"] = self.tokenizer(text_target=targets, max_length=self.cfg.max_target_length,
                                       truncation=True)["input_ids"]
        return datasets.Dataset.from_dict(dict(enc))

    def fit(self, train_rows: list[dict], train_cfg, output_dir: Path) -> dict:
        trainer = Seq2SeqTrainer(
            model=self.model,
            args=self.training_args(train_cfg, output_dir, Seq2SeqTrainingArguments),
            train_dataset=self._encode(train_rows),
            data_collator=DataCollatorForSeq2Seq(self.tokenizer, model=self.model),
            processing_class=self.tokenizer,
        )
        result = trainer.train()
        return {"train_loss": result.training_loss, "steps": result.global_step}

    def _inputs(self, prompts: list[str]) -> dict:
        return self.tokenizer(prompts, max_length=self.cfg.max_source_length, truncation=True,
                              padding=True, return_tensors="pt").to(self.model.device)

    def score(self, prompts: list[str], targets: list[str]) -> torch.Tensor:
        enc = self._inputs(prompts)
        # one encoder pass, then every target is scored against the same encoder states
        encoder_out = self.model.get_encoder()(**enc)
        labels = self.tokenizer(text_target=targets, padding=True, return_tensors="pt")["input_ids"]
        labels = labels.masked_fill(labels == self.tokenizer.pad_token_id, -100).to(self.model.device)
        n, k = len(prompts), len(targets)
        hidden = encoder_out.last_hidden_state.repeat_interleave(k, 0)
        mask = enc["attention_mask"].repeat_interleave(k, 0)
        tiled = labels.repeat(n, 1)
        logits = self.model(encoder_outputs=(hidden,), attention_mask=mask, labels=tiled).logits
        logp = logits.float().log_softmax(-1)
        token_lp = logp.gather(-1, tiled.clamp(min=0).unsqueeze(-1)).squeeze(-1) * (tiled != -100)
        return token_lp.sum(-1).view(n, k)

    def generate(self, prompts: list[str]) -> list[tuple[str, float]]:
        enc = self._inputs(prompts)
        out = self.model.generate(**enc, max_new_tokens=self.cfg.max_target_length, do_sample=False,
                                  num_beams=1, output_scores=True, return_dict_in_generate=True)
        lp = self.model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
        tokens = out.sequences[:, 1:]
        keep = (tokens != self.tokenizer.pad_token_id)
        conf = ((lp * keep).sum(-1) / keep.sum(-1).clamp(min=1)).exp()
        texts = self.tokenizer.batch_decode(out.sequences, skip_special_tokens=True)
        return list(zip(texts, conf.tolist()))
