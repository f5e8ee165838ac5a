"""Encoder students (BERT, DeBERTa, ModernBERT families, or a decoder such as Llama or SmolLM2 with a
classification head). They give class probabilities in one forward pass: the cheapest labelers.
Three heads, one class each, picked from the task's shape in `EncoderStudent.for_task` alone:
`EncoderClassifier`, a softmax over the labels of the text; `EncoderMultiLabel`, a sigmoid per
label with per-label thresholds tuned on the dev split; `EncoderTagger`, a tag per word (NER)."""

from __future__ import annotations

import json

import datasets
import numpy as np
import torch
import torch.nn.functional as F
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
from transformers.integrations import is_deepspeed_zero3_enabled
from transformers.utils import cached_file

from distill.errors import ConfigError
from distill.students.base import Student, mixed_precision, to_host
from distill.students.calibration import fit_temperature, mean_over, top_confidence
from distill.students.trainer import KeepStart, TaskWeighted, agreement


HEAD_NAMES = {"classifier", "score", "out_proj"}  # what transformers' heads are called, also inside peft's wrapper
POOLING = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max",
           "pooling_mode_lasttoken": "lasttoken"}  # sentence-transformers' Pooling keys -> ours


def declared_pooling(path) -> str | None:
    """How the checkpoint says its sentence embedding is made: what distill saved in its config
    (`sentence_pooling`), else the sentence-transformers Pooling module its modules.json names
    (a local directory or the hub); None when it declares nothing."""
    def read(name: str):
        found = cached_file(str(path), name, _raise_exceptions_for_missing_entries=False,
                            _raise_exceptions_for_connection_errors=False)
        return json.loads(open(found, encoding="utf-8").read()) if found else None

    config = read("config.json") or {}
    if config.get("sentence_pooling"):
        return config["sentence_pooling"]
    module = next((m for m in read("modules.json") or [] if m.get("type", "").endswith("models.Pooling")), None)
    settings = module and read(f"{module['path']}/config.json")
    return next((mode for key, mode in POOLING.items() if (settings or {}).get(key)), None)


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """[B, T, H] hidden states and a [B, T] 0/1 mask (right padding) -> [B, H]."""
    mask = mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "mean":
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
    if mode == "max":
        return hidden.masked_fill(mask == 0, torch.finfo(hidden.dtype).min).max(1).values
    if mode == "lasttoken":
        return hidden[torch.arange(len(hidden), device=hidden.device), mask.squeeze(-1).sum(1).long() - 1]
    return hidden[:, 0]  # cls: the first token's state itself, without the pooler's dense layer


def sentence_pooling(model, mode: str) -> None:
    """Classify from the sentence embedding the checkpoint was trained to give instead of the
    architecture's default (BERT's pooler over [CLS], which a sentence-transformers checkpoint
    never trained). The backbone's output carries the pooled vector where the head reads it:
    `pooler_output` (BERT: the unused pooler is dropped) or else the first token's state (heads
    that read token 0: RoBERTa, MPNet, DeBERTa). The mode is saved in the config, so a merged
    model loads the same way."""
    backbone = getattr(model, model.base_model_prefix)
    if getattr(backbone, "pooler", None) is not None:
        backbone.pooler = None  # untrained for this use, and unused parameters break DDP
    model.config.sentence_pooling = mode
    seen = {}

    def keep_mask(module, args, kwargs):
        seen["mask"] = kwargs.get("attention_mask")

    def pooled(module, args, kwargs, output):
        hidden = output.last_hidden_state
        mask = seen["mask"] if seen["mask"] is not None else torch.ones(hidden.shape[:2], device=hidden.device)
        vector = pool(hidden, mask, mode)
        if "pooler_output" in type(output).__dataclass_fields__:
            return type(output)(**{**output, "pooler_output": vector})
        hidden = hidden.clone()
        hidden[:, 0] = vector
        return type(output)(**{**output, "last_hidden_state": hidden})

    backbone.register_forward_pre_hook(keep_mask, with_kwargs=True)
    backbone.register_forward_hook(pooled, with_kwargs=True)


class EncoderTrainer(Trainer):
    """A Trainer whose new head may learn at a rate of its own (`train.head_lr`): a head that
    starts from nothing needs far larger steps than the pretrained body it sits on."""

    head_lr: float | None = None

    def create_optimizer(self, model=None):
        fresh = self.optimizer is None
        optimizer = super().create_optimizer(model)
        if fresh and self.head_lr is not None:
            head = {id(p) for n, p in (model or self.model).named_parameters() if HEAD_NAMES & set(n.split("."))}
            # each of the trainer's groups (decay, no decay) split in two; the scheduler, made
            # after, scales every group's own rate
            groups = [{**g, "params": [p for p in g["params"] if (id(p) in head) == is_head],
                       **({"lr": self.head_lr} if is_head else {})}
                      for g in optimizer.param_groups for is_head in (False, True)]
            optimizer.param_groups = [g for g in groups if g["params"]]
        return optimizer


class WeightedTrainer(TaskWeighted, EncoderTrainer):
    weight_tokens = True  # class-weighted tagging keeps the unweighted loss's token mean

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not inputs["labels"].is_floating_point():
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        # multi-label: a 0/1 target per label, binary cross-entropy averaged over labels, weighted per row
        inputs = dict(inputs)
        weight, labels = inputs.pop("task_weight"), inputs.pop("labels")
        outputs = model(**inputs)
        losses = F.binary_cross_entropy_with_logits(outputs.logits.float(), labels, reduction="none").mean(-1)
        loss = (weight * losses).sum() / weight.sum().clamp(min=1e-8)
        return (loss, outputs) if return_outputs else loss


PROBE_C = 10.0  # the head's logistic regression: inverse L2 strength, as in the probe the benchmark compares with
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def first_subtokens(enc, i: int) -> list[tuple[int, int]]:
    """(position, word) of each word's first sub-token in row i of a word-split encoding."""
    words = enc.word_ids(i)
    return [(pos, w) for pos, w in enumerate(words) if w is not None and (pos == 0 or words[pos - 1] != w)]


def word_prefix(tokenizer) -> str:
    """What goes before each word of word-split input so that it is spelled as inside running text.
    Byte-level BPE tokenizers (GPT-2, Llama 3, SmolLM2) mark a word start with its space ('ĠPeter'
    inside a sentence, 'Peter' at its start) yet tokenize split words each on its own, as at a text's
    start, unless built with add_prefix_space=True; such tokenizers get a space before every word.
    WordPiece and SentencePiece tokenizers already spell split words as in running text."""
    def ids(text, **kw):
        return tokenizer(text, add_special_tokens=False, **kw)["input_ids"]

    inside = ids(" Peter")
    if ids(["Peter"], is_split_into_words=True) != inside and ids([" Peter"], is_split_into_words=True) == inside:
        return " "
    return ""


def shape_marks(word: str, marker: str | None) -> str:
    """What follows a word so that an uncased tokenizer still shows its capitals: one marker after
    a capitalized word, two after an all-capitals one ('EU'), none otherwise or without a marker."""
    if not marker or not word[:1].isupper():
        return ""
    return f" {marker} {marker}" if len(word) > 1 and word.isupper() else f" {marker}"


def full_attention(backbone) -> None:
    """Let every token attend to the whole text, not only to the tokens before it: a decoder's word
    then sees its right context, as an encoder's does (Li et al. 2023, "Label Supervised LLaMA
    Finetuning"). Each 2D padding mask becomes a 4D additive one, which transformers passes through
    in place of the causal mask it would build (eager and SDPA attention; not flash-attention)."""
    def hook(module, args, kwargs):
        mask = kwargs.get("attention_mask")
        if mask is not None and mask.dim() == 2:
            dtype = module.dtype if module.dtype.is_floating_point else torch.float32
            kwargs["attention_mask"] = (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min
        return args, kwargs

    backbone.register_forward_pre_hook(hook, with_kwargs=True)


THRESHOLDS = [round(0.05 * k, 2) for k in range(1, 20)]  # candidate per-label thresholds, 0.05 to 0.95


def tune_thresholds(probs: np.ndarray, truth: np.ndarray, min_positives: int = 3) -> list[float]:
    """Per label, the threshold with the best F1 on the dev rows (ties: nearest 0.5). A label
    with fewer than `min_positives` dev rows gets the one threshold best for micro F1 overall."""
    grid, truth = np.array(THRESHOLDS), truth.astype(bool)
    pred = probs[None] >= grid[:, None, None]  # [T, n, C]
    tp, predicted, actual = (pred & truth).sum(1), pred.sum(1), truth.sum(0)  # [T, C], [T, C], [C]
    per_label = 2 * tp / np.maximum(predicted + actual, 1)
    micro = 2 * tp.sum(1) / np.maximum(predicted.sum(1) + actual.sum(), 1)
    near = np.argsort(np.abs(grid - 0.5), kind="stable")  # ties go to the threshold nearest 0.5

    def best(score: np.ndarray) -> float:
        return THRESHOLDS[near[np.argmax(score[near])]]

    shared = best(micro)
    return [best(per_label[:, c]) if actual[c] >= min_positives else shared for c in range(probs.shape[1])]


class EncoderStudent(Student):
    """What the three heads share: the backbone, a word-level tiny tokenizer, a head per label."""

    kind = "encoder"
    generative = False
    auto_class = AutoModelForSequenceClassification
    tiny_class = BertForSequenceClassification
    task_type = "SEQ_CLS"  # peft then trains the new head in full
    collator = DataCollatorWithPadding
    problem_type: dict = {}
    sentence_level = True  # one prediction per text, from a pooled sentence embedding

    @classmethod
    def for_task(cls, task) -> type["EncoderStudent"]:
        if cls is not EncoderStudent:
            return cls
        return EncoderTagger if task.token_level else EncoderMultiLabel if task.multi_label else EncoderClassifier

    def __init__(self, cfg, task, model, tokenizer, name: str, temperature: float = 1.0):
        super().__init__(cfg, task, model, tokenizer, name, temperature)
        # decoders (Llama, SmolLM2) may name no pad token: the tokenizer pads with EOS, and a sequence
        # head finds each row's last real token by the pad id
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        if cfg.get("bidirectional"):
            base = model.get_base_model() if hasattr(model, "get_base_model") else model
            full_attention(getattr(base, base.base_model_prefix))

    @classmethod
    def label_maps(cls, task) -> dict:
        """The head's config: one class per label (or per NER tag)."""
        names = task.class_names()
        return {"num_labels": len(names), "id2label": dict(enumerate(names)),
                "label2id": {n: i for i, n in enumerate(names)}, **cls.problem_type}

    @classmethod
    def from_pretrained(cls, path, task, cfg, **kwargs):
        """With student.pooling=auto, a sentence-level head reads the pooling the checkpoint
        declares (none declared, or student.pooling=model: the architecture's own)."""
        model = cls.auto_class.from_pretrained(path, **cls.label_maps(task), **kwargs)
        mode = declared_pooling(path) if cls.sentence_level and cfg.get("pooling", "auto") == "auto" else None
        if mode:
            sentence_pooling(model, mode)
        return model

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
                            max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id, **cls.label_maps(task))
        return cls.tiny_class(config)

    # -- training -----------------------------------------------------------------------------
    def _encode(self, rows: list[dict]) -> dict:
        return self.tokenizer([r["text"] for r in rows], max_length=self.cfg.max_source_length, truncation=True)

    def _targets(self, enc, i: int, row: dict):
        return self.task.to_class_ids(row["label"], row)

    def dataset(self, rows: list[dict], alpha: float | None, first: int = 0, weighted: bool = False) -> datasets.Dataset:
        enc = self._encode(rows)
        labels = [self._targets(enc, i, row) for i, row in enumerate(rows)]
        data = {**enc, "labels": labels, "row": list(range(first, first + len(rows)))}
        if weighted:  # class balancing: each row's loss weight
            data["task_weight"] = [r.get("weight", 1.0) for r in rows]
        return datasets.Dataset.from_dict(data)

    def make_trainer(self, args, train_data, dev_data, weighted: bool):
        return (WeightedTrainer if weighted else EncoderTrainer)(
            model=self.model, args=args, train_dataset=train_data, eval_dataset=dev_data,
            data_collator=self.collator(self.tokenizer), processing_class=self.tokenizer)

    def trainer(self, train_rows: list[dict], dev_rows: list[dict], train_cfg, output_dir, args=None):
        trainer = super().trainer(train_rows, dev_rows, train_cfg, output_dir, args)
        trainer.head_lr = train_cfg.get("head_lr") if train_cfg.lr > 0 else None  # lr 0 freezes every weight
        # under DeepSpeed ZeRO-3 the weights are already sharded: no forward pass outside its engine
        if train_cfg.get("head_init", "random") == "probe" and train_cfg.lr > 0 and not is_deepspeed_zero3_enabled():
            self.probe_head(trainer.train_dataset, trainer.args.per_device_eval_batch_size)
            if dev_rows:  # the probe is a candidate too: scored on dev before the first step
                trainer.args.eval_on_start = True
                trainer.compute_metrics = agreement
                trainer.add_callback(KeepStart())
        return trainer

    # -- the head, started as a linear probe (LP-FT) ------------------------------------------------
    def head_layers(self) -> list[torch.nn.Linear]:
        """The trainable output layer of the head, one output per label (or tag): under LoRA,
        peft's trainable copy, not the original it keeps beside it."""
        n = self.model.config.num_labels
        return [m for name, m in self.model.named_modules() if isinstance(m, torch.nn.Linear) and m.out_features == n
                and m.weight.requires_grad and HEAD_NAMES & set(name.split("."))]

    def head_inputs(self, data: datasets.Dataset, batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What the output layer reads for each training example (a text, or a tagged word), with
        its target and weight, from the frozen model in eval mode."""
        layer, seen = self.head_layers()[0], []
        handle = layer.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().float()))
        features, targets, weights = [], [], []
        collate = self.collator(self.tokenizer)
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, len(data), batch_size):
                part = data[start : start + batch_size]
                batch = collate([{"input_ids": i, "attention_mask": m, "labels": y}
                                 for i, m, y in zip(part["input_ids"], part["attention_mask"], part["labels"])])
                labels = batch.pop("labels")
                with torch.inference_mode(), mixed_precision(self.model):
                    self.model(**{k: v.to(self.model.device) for k, v in batch.items()})
                x = seen.pop().cpu()
                w = torch.tensor(part["task_weight"]) if "task_weight" in part else torch.ones(len(labels))
                if x.dim() == 3 and labels.dim() == 1:  # a decoder's head runs on every token, read at the last real one
                    mask = batch["attention_mask"]
                    x = x[torch.arange(len(x)), (torch.arange(mask.shape[1]) * mask).argmax(-1)]
                elif x.dim() == 3:  # a tag per word: the words' first sub-tokens
                    keep = labels != -100
                    x, labels, w = x[keep], labels[keep], w[:, None].expand_as(keep)[keep]
                features.append(x.numpy()), targets.append(labels.numpy()), weights.append(w.numpy())
        finally:
            handle.remove()
            self.model.train(was_training)
        return np.concatenate(features), np.concatenate(targets), np.concatenate(weights)

    def probe_head(self, data: datasets.Dataset, batch_size: int) -> None:
        """Start the head as a logistic regression fitted on the frozen model's features (LP-FT,
        Kumar et al., ICLR 2022): fine-tuning then starts where a linear probe ends instead of
        from a random head, whose first large gradients distort the pretrained features."""
        from sklearn.linear_model import LogisticRegression

        x, y, w = self.head_inputs(data, batch_size)
        layers = self.head_layers()
        intercept = layers[0].bias is not None  # Llama's score has none
        weight, bias = np.zeros((self.model.config.num_labels, x.shape[1])), np.zeros(self.model.config.num_labels)
        if y.ndim == 2:  # several labels per text: one binary regression per label present and absent
            columns = [(c, y[:, c]) for c in range(y.shape[1]) if 0 < y[:, c].sum() < len(y)]
        else:
            columns = [(None, y)]
        for c, target in columns:
            fit = LogisticRegression(C=PROBE_C, max_iter=1000, fit_intercept=intercept).fit(x, target, sample_weight=w)
            if c is None:  # the classes present; an absent one keeps a low logit
                bias[:] = fit.intercept_.min() - 10
                weight[fit.classes_], bias[fit.classes_] = (fit.coef_, fit.intercept_) if len(fit.classes_) > 2 else (
                    np.stack([-fit.coef_[0], fit.coef_[0]]) / 2, np.array([-1, 1]) * fit.intercept_[0] / 2)
            else:
                weight[c], bias[c] = fit.coef_[0], fit.intercept_[0]
        if y.ndim == 2:  # a label never (or always) present: the log-odds of its share, far from 0.5
            fitted = {c for c, _ in columns}
            for c in (c for c in range(y.shape[1]) if c not in fitted):
                share = float(np.clip(y[:, c].mean(), 1e-3, 1 - 1e-3))
                bias[c] = np.log(share / (1 - share))
        for layer in layers:
            with torch.no_grad():
                layer.weight.copy_(torch.from_numpy(weight).to(layer.weight))
                if layer.bias is not None:
                    layer.bias.copy_(torch.from_numpy(bias).to(layer.bias))

    # -- prediction ---------------------------------------------------------------------------
    def _forward(self, rows: list[dict]):
        """The rows' encoding and the head's logits (float), right-padded: word positions are
        counted from each row's start."""
        enc = self._encode(rows)
        batch = self.tokenizer.pad(enc, return_tensors="pt", padding_side="right").to(self.model.device)
        return enc, self.model(**batch).logits.float()

    def input_ids(self, rows: list[dict]) -> list[list[int]] | None:
        return self.token_ids([r["text"] for r in rows])

    def class_logits(self, ids: list[list[int]]) -> torch.Tensor:
        return self.model(**self.padded(ids)).logits


class EncoderClassifier(EncoderStudent):
    """One label per text: a softmax over the labels."""

    def predict_batch(self, rows: list[dict], temps: torch.Tensor, ids: list[list[int]] | None = None):
        logits = self.model(**self.padded(ids if ids is not None else self.input_ids(rows))).logits.float()
        (best, conf), ready = to_host(logits.argmax(-1), top_confidence(logits, temps).exp())

        def finish() -> list[dict]:
            ready()
            labels = [self.task.from_class_ids(i, r) for i, r in zip(best.tolist(), rows)]
            return [{"label": lab, "confidence": c, "entity_confidence": None, "error": None, "raw": lab}
                    for lab, c in zip(labels, conf.tolist())]
        return finish


class EncoderMultiLabel(EncoderClassifier):
    """Any number of labels per text: a sigmoid and binary cross-entropy per label, thresholds
    tuned on the dev split."""

    problem_type = {"problem_type": "multi_label_classification"}

    def trainer(self, train_rows: list[dict], dev_rows: list[dict], train_cfg, output_dir, args=None):
        self._prior_bias(train_rows)
        return super().trainer(train_rows, dev_rows, train_cfg, output_dir, args)

    def _prior_bias(self, rows: list[dict]) -> None:
        """Start each label's output at the log-odds of its share of the training rows (Lin et al.
        2017): with dozens of rare labels, a head starting at 0.5 spends its first epochs only
        learning that most labels are absent."""
        share = torch.tensor([self.task.to_class_ids(r["label"], r) for r in rows]).mean(0).clamp(1e-3, 1 - 1e-3)
        # the head by name, also inside peft's wrapper (classifier.modules_to_save.default under LoRA);
        # a head without a bias (Llama's score) keeps its start
        for name, module in self.model.named_modules():
            if (isinstance(module, torch.nn.Linear) and module.bias is not None and module.out_features == len(share)
                    and {"classifier", "score", "out_proj"} & set(name.split("."))):
                with torch.no_grad():
                    module.bias.copy_(torch.logit(share).to(module.bias))

    def _bias(self, device) -> torch.Tensor:
        """Each label's threshold as a logit (0 for the default 0.5)."""
        thresholds = torch.tensor(self.calibration.get("thresholds") or [0.5] * len(self.task.labels),
                                  dtype=torch.float32, device=device)
        return torch.logit(thresholds)

    def predict_batch(self, rows: list[dict], temps: torch.Tensor, ids: list[list[int]] | None = None):
        """Labels over their thresholds. Each label decision's confidence is sigmoid(|z - b| / T),
        0.5 at its threshold; the row's is their product, the chance the whole label set is right
        (labels taken as independent), so its least sure labels weigh most and the temperature can
        be fitted against whole-set agreement. entity_confidence: each chosen label's."""
        logits = self.model(**self.padded(ids if ids is not None else self.input_ids(rows))).logits.float()
        z = logits - self._bias(logits.device)
        chosen = (z >= 0).tolist()
        conf = torch.stack([F.logsigmoid(z.abs() / t).sum(-1) for t in temps.tolist()], -1).exp().tolist()
        decided = torch.sigmoid(z.abs() / self.temperature).tolist()
        out = []
        for b, row in enumerate(rows):
            label = self.task.from_class_ids(chosen[b], row)
            units = [round(decided[b][k], 6) for k, on in enumerate(chosen[b]) if on]
            out.append({"label": label, "confidence": conf[b], "entity_confidence": units, "error": None,
                        "raw": "; ".join(label)})
        return lambda: out

    def calibrate(self, dev_rows: list[dict], batch_size: int, target: str) -> dict:
        """Per-label thresholds tuned for F1 against the dev rows' labels first, then the temperature."""
        if not dev_rows:
            return super().calibrate(dev_rows, batch_size, target)
        self.model.eval()
        with torch.inference_mode():
            probs = [torch.sigmoid(self._forward(dev_rows[start : start + batch_size])[1]).cpu().numpy()
                     for start in range(0, len(dev_rows), batch_size)]
        truth = np.array([self.task.to_class_ids(r["label"], r) for r in dev_rows], dtype=bool)
        thresholds = tune_thresholds(np.concatenate(probs), truth)
        self.calibration = {"thresholds": thresholds}
        return {**fit_temperature(self, dev_rows, batch_size, target), "thresholds": thresholds,
                "thresholds_by_label": dict(zip(self.task.labels, thresholds))}


class EncoderTagger(EncoderStudent):
    """A tag per word (NER), from each word's first sub-token."""

    auto_class = AutoModelForTokenClassification
    tiny_class = BertForTokenClassification
    task_type = "TOKEN_CLS"
    collator = DataCollatorForTokenClassification
    sentence_level = False

    def __init__(self, cfg, task, model, tokenizer, name: str, temperature: float = 1.0):
        super().__init__(cfg, task, model, tokenizer, name, temperature)
        self.word_prefix = word_prefix(tokenizer) if tokenizer.is_fast else ""
        self.case_marker = cfg.get("case_marker")
        if self.case_marker and tokenizer.tokenize(self.case_marker) != [self.case_marker]:
            raise ConfigError(f"student.case_marker {self.case_marker!r} is not one token of {name}'s vocabulary "
                              f"(it tokenizes as {tokenizer.tokenize(self.case_marker)}); pick one that is, or null")

    def _encode(self, rows: list[dict]) -> dict:
        if not self.tokenizer.is_fast:
            raise ConfigError(f"encoder NER needs a fast tokenizer (word alignment); {self.name} has none")
        # a marker token travels with its word (same word id), after the sub-token that carries the tag
        words = [[self.word_prefix + w + shape_marks(w, self.case_marker) for w in r["tokens"]] for r in rows]
        return self.tokenizer(words, is_split_into_words=True, max_length=self.cfg.max_source_length, truncation=True)

    def _targets(self, enc, i: int, row: dict):
        ids = self.task.to_class_ids(row["label"], row)
        tagged = dict(first_subtokens(enc, i))  # the first sub-token of each word carries its tag
        return [ids[tagged[pos]] if pos in tagged else -100 for pos in range(len(enc["input_ids"][i]))]

    def input_ids(self, rows: list[dict]) -> list[list[int]] | None:
        return None  # word-split input is encoded per batch, with its word alignment

    def predict_batch(self, rows: list[dict], temps: torch.Tensor, ids: list[list[int]] | None = None):
        enc, logits = self._forward(rows)
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
            units = self.task.word_unit_confidence(tags, lp0[b, : len(row["tokens"])].tolist())
            out.append({"label": tags, "confidence": conf[b], "entity_confidence": units, "error": None,
                        "raw": " ".join(tags)})
        return lambda: out
