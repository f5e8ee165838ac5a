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

    @classmethod
    def trainer_args(cls, cfg) -> dict:
        return {"completion_only_loss": True, "max_length": cfg.max_source_length + cfg.max_target_length}

    def token_ids(self, prompts: list[str]) -> list[list[int]]:
        ids = super().token_ids(prompts)
        eos = self.tokenizer.eos_token_id
        return [p[:-1] if p and p[-1] == eos else p for p in ids]  # byte tokenizers append EOS

    def score_ids(self, ids: list[list[int]], targets: list[str]) -> torch.Tensor:
        n, k = len(ids), len(targets)
        # the prompts once, left-padded so each ends at the last column; their cache is then
        # repeated for every candidate, which only runs its own few tokens
        enc = self.padded(ids, left=True)
        mask = enc["attention_mask"]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        first = self.model(**enc, position_ids=positions, use_cache=True, logits_to_keep=1)
        cache = first.past_key_values
        cache.batch_repeat_interleave(k)
        target, target_mask = self.target_ids(tuple(targets))
        tiled, tiled_mask = target.repeat(n, 1), target_mask.repeat(n, 1)  # row i's k candidates adjacent
        width = target.shape[1]
        after = positions[:, -1:].repeat_interleave(k, 0) + 1 + torch.arange(width - 1, device=mask.device)
        rest = self.model(input_ids=tiled[:, :-1], position_ids=after, past_key_values=cache,
                          attention_mask=torch.cat([mask.repeat_interleave(k, 0), tiled_mask[:, :-1]], 1)).logits
        # the last prompt position predicts each candidate's first token
        logits = torch.cat([first.logits.repeat_interleave(k, 0), rest], 1)  # [n*k, width, V]
        token_lp = logits.float().log_softmax(-1).gather(-1, tiled.unsqueeze(-1)).squeeze(-1)
        return (token_lp * tiled_mask).sum(-1).view(n, k)

    def target_ids(self, targets: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """Each candidate as the model writes it after a prompt (' label' and EOS), right-padded,
        with its mask, on the model's device: tokenized once, not per batch."""
        def make():
            ids = [self.tokenizer(" " + t, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]
                   for t in targets]
            padded = self.padded(ids)
            return padded["input_ids"], padded["attention_mask"]
        return self.once_per_device(targets, make)

    def generate_ids(self, ids: list[list[int]]):
        enc = self.padded(ids, left=True)  # every prompt ends where generation starts
        pad = self.tokenizer.pad_token_id
        out = self.model.generate(**enc, max_new_tokens=self.cfg.max_target_length,
                                  do_sample=False, num_beams=1, output_scores=True, return_dict_in_generate=True,
                                  pad_token_id=pad, eos_token_id=self.tokenizer.eos_token_id)
        new = out.sequences[:, enc["input_ids"].shape[1]:]
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return texts, list(out.scores), new, new != pad
