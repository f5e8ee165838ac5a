"""Causal students (Mistral / Llama / Qwen family), trained with `trl.SFTTrainer` on the completion only."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM
from trl import SFTConfig, SFTTrainer

from distill.students.base import Student
from distill.students.trainer import TaskWeighted


class WeightedSFTTrainer(TaskWeighted, SFTTrainer):
    shift_labels = True


class CausalStudent(Student):
    kind = "causal"
    task_type = "CAUSAL_LM"
    auto_class = AutoModelForCausalLM
    args_class = SFTConfig

    @classmethod
    def tiny_model(cls, tiny, tokenizer, task):
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=tiny.hidden, intermediate_size=tiny.hidden * 2,
                             num_hidden_layers=tiny.layers, num_attention_heads=tiny.heads,
                             num_key_value_heads=tiny.heads, max_position_embeddings=1024,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                             bos_token_id=None, tie_word_embeddings=False)
        return LlamaForCausalLM(config)

    def encode(self, prompts: list[str], targets: list[str]) -> dict:
        return {"prompt": prompts, "completion": [" " + t for t in targets]}  # SFTTrainer tokenizes

    def make_trainer(self, args, train_data, dev_data, weighted: bool):
        return (WeightedSFTTrainer if weighted else SFTTrainer)(
            model=self.model, args=args, train_dataset=train_data, eval_dataset=dev_data,
            processing_class=self.tokenizer)

    def trainer_args(self) -> dict:
        return {"completion_only_loss": True, "max_length": self.cfg.max_source_length + self.cfg.max_target_length}

    def _prompt_ids(self, prompts: list[str]) -> list[list[int]]:
        ids = self.tokenizer(prompts, max_length=self.cfg.max_source_length, truncation=True)["input_ids"]
        eos = self.tokenizer.eos_token_id
        return [p[:-1] if p and p[-1] == eos else p for p in ids]  # byte tokenizers append EOS

    def score(self, prompts: list[str], targets: list[str]) -> torch.Tensor:
        prompt_ids = self._prompt_ids(prompts)
        target_ids = [self.tokenizer(" " + t, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]
                      for t in targets]
        seqs, spans = [], []
        for p in prompt_ids:
            for t in target_ids:
                seqs.append(p + t)
                spans.append((len(p), len(p) + len(t)))
        width = max(map(len, seqs))
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs], device=self.model.device)
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=self.model.device)
        logp = self.model(input_ids=ids, attention_mask=mask).logits.float().log_softmax(-1)
        # logits at position i predict token i+1
        token_lp = logp[:, :-1].gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        positions = torch.arange(width - 1, device=ids.device)
        starts = torch.tensor([s - 1 for s, _ in spans], device=ids.device)[:, None]
        ends = torch.tensor([e - 1 for _, e in spans], device=ids.device)[:, None]
        in_target = (positions >= starts) & (positions < ends)
        return (token_lp * in_target).sum(-1).view(len(prompts), len(targets))

    def generate(self, prompts: list[str]):
        prompt_ids = self._prompt_ids(prompts)
        width = max(map(len, prompt_ids))
        pad = self.tokenizer.pad_token_id
        # left padding so every prompt ends where generation starts
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompt_ids], device=self.model.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompt_ids], device=self.model.device)
        out = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=self.cfg.max_target_length,
                                  do_sample=False, num_beams=1, output_scores=True, return_dict_in_generate=True,
                                  pad_token_id=pad, eos_token_id=self.tokenizer.eos_token_id)
        new = out.sequences[:, width:]
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return texts, list(out.scores), new, new != pad
