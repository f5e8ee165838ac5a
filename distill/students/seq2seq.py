"""Seq2seq students (T5 / Flan-T5 family), trained with `transformers.Seq2SeqTrainer`."""

from __future__ import annotations

import torch
from transformers import (
    AutoModelForSeq2SeqLM,
    DataCollatorForSeq2Seq,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
    T5Config,
    T5ForConditionalGeneration,
)

from distill.students.base import Student
from distill.students.trainer import TaskWeighted


class WeightedSeq2SeqTrainer(TaskWeighted, Seq2SeqTrainer):
    pass


class Seq2SeqStudent(Student):
    kind = "seq2seq"
    task_type = "SEQ_2_SEQ_LM"
    auto_class = AutoModelForSeq2SeqLM
    args_class = Seq2SeqTrainingArguments

    @classmethod
    def tiny_model(cls, tiny, tokenizer, task):
        config = T5Config(vocab_size=len(tokenizer), d_model=tiny.hidden, d_ff=tiny.hidden * 2,
                          d_kv=tiny.hidden // tiny.heads, num_layers=tiny.layers, num_heads=tiny.heads,
                          decoder_start_token_id=tokenizer.pad_token_id, pad_token_id=tokenizer.pad_token_id,
                          eos_token_id=tokenizer.eos_token_id, dropout_rate=0.0)
        return T5ForConditionalGeneration(config)

    def encode(self, prompts: list[str], targets: list[str]) -> dict:
        enc = self.tokenizer(prompts, max_length=self.cfg.max_source_length, truncation=True)
        enc["labels"] = self.tokenizer(text_target=targets, max_length=self.cfg.max_target_length,
                                       truncation=True)["input_ids"]
        return dict(enc)

    def make_trainer(self, args, train_data, dev_data, weighted: bool):
        return (WeightedSeq2SeqTrainer if weighted else Seq2SeqTrainer)(
            model=self.model, args=args, train_dataset=train_data, eval_dataset=dev_data,
            data_collator=DataCollatorForSeq2Seq(self.tokenizer, model=self.model),
            processing_class=self.tokenizer)

    def hidden_states(self, enc) -> torch.Tensor:
        return self.model.get_encoder()(**enc).last_hidden_state

    def score_ids(self, ids: list[list[int]], targets: list[str]) -> torch.Tensor:
        enc = self.padded(ids)
        n, k = len(ids), len(targets)
        # one encoder pass, and one decoder step that also fills the cross-attention cache: the
        # encoder states are projected once per row, not once per candidate
        hidden = self.hidden_states(enc)
        start = torch.full((n, 1), self.model.config.decoder_start_token_id, device=self.model.device)
        first = self.model(encoder_outputs=(hidden,), attention_mask=enc["attention_mask"], decoder_input_ids=start,
                           use_cache=True)
        cache = first.past_key_values
        cache.batch_repeat_interleave(k)
        labels = self.target_ids(tuple(targets))
        tiled = labels.repeat(n, 1)  # row-major: row i's k candidates are adjacent
        rest = self.model(encoder_outputs=(hidden.repeat_interleave(k, 0),),
                          attention_mask=enc["attention_mask"].repeat_interleave(k, 0),
                          decoder_input_ids=tiled[:, :-1], past_key_values=cache).logits
        logits = torch.cat([first.logits.repeat_interleave(k, 0), rest], 1)  # [n*k, target length, V]
        token_lp = logits.float().log_softmax(-1).gather(-1, tiled.unsqueeze(-1)).squeeze(-1)
        return (token_lp * (tiled != self.tokenizer.pad_token_id)).sum(-1).view(n, k)

    def target_ids(self, targets: tuple[str, ...]) -> torch.Tensor:
        """The candidates' token ids, padded, on the model's device: tokenized once, not per batch."""
        return self.once_per_device(targets, lambda: self.tokenizer(
            text_target=list(targets), padding=True, return_tensors="pt")["input_ids"].to(self.model.device))

    def generate_ids(self, ids: list[list[int]]):
        enc = self.padded(ids)
        out = self.model.generate(**enc, max_new_tokens=self.cfg.max_target_length, do_sample=False,
                                  num_beams=1, output_scores=True, return_dict_in_generate=True)
        tokens = out.sequences[:, 1:]  # after the decoder start token
        texts = self.tokenizer.batch_decode(out.sequences, skip_special_tokens=True)
        return texts, list(out.scores), tokens, tokens != self.tokenizer.pad_token_id
