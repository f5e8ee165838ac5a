"""Small additions to the Hugging Face trainers that every student kind shares."""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import PrinterCallback, ProgressCallback, TrainerCallback
from transformers.utils import logging as hf_logging


class Collator(TrainerCallback):
    """Wraps a trainer's collator: notes which training rows this process saw (and where each
    epoch ended, as a callback), passes task weights on."""

    def __init__(self, inner):
        self.inner, self.seen, self.epoch_ends = inner, [], []

    def on_epoch_end(self, args, state, control, **kwargs):
        self.epoch_ends.append(len(self.seen))

    def __call__(self, examples: list[dict]) -> dict:
        examples = [dict(e) for e in examples]
        rows = [e.pop("row") for e in examples]
        self.seen += [r for r in rows if r >= 0]  # dev rows are numbered below 0
        weights = [e.pop("task_weight") for e in examples] if "task_weight" in examples[0] else None
        batch = self.inner(examples)
        if weights is not None:
            batch["task_weight"] = torch.tensor(weights, dtype=torch.float32)
        return batch


class TaskWeighted:
    """Trainer mixin for per-example loss weights: by task in rationale distillation (`alpha` for
    the label, `1 - alpha` for the rationale), and by class with `train.class_balance=weighted`."""

    shift_labels = False  # causal LMs predict token i+1 at position i
    # True: every tagged token counts once, weighted by its row, so equal weights give the plain
    # token-mean loss (NER tagging); False: every sequence counts once (label and rationale tasks)
    weight_tokens = False
    loss_is_scaled_for_ga = False  # a per-batch mean: the Trainer divides by accumulation steps

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        weight, labels = inputs.pop("task_weight"), inputs.pop("labels")
        outputs = model(**inputs)
        logits = outputs.logits.float()
        if self.shift_labels:
            logits, labels = logits[:, :-1], labels[:, 1:]
        if logits.dim() == 2:  # one class per example
            losses = F.cross_entropy(logits, labels, reduction="none")
        else:
            token_loss = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")
            mask = (labels != -100).float()
            if self.weight_tokens:
                losses, weight = token_loss, weight[:, None] * mask
            else:
                losses = token_loss.sum(1) / mask.sum(1).clamp(min=1)
        loss = (weight * losses).sum() / weight.sum().clamp(min=1e-8)
        return (loss, outputs) if return_outputs else loss


class SaveEvery(TrainerCallback):
    """A checkpoint every `steps` optimizer steps and at the last one, so a killed run resumes
    close to where it stopped and a finished one is not trained again."""

    def __init__(self, steps: int):
        self.steps = steps

    def on_step_end(self, args, state, control, **kwargs):
        if (self.steps and state.global_step % self.steps == 0) or state.global_step >= state.max_steps:
            control.should_save = True
        return control


class MinSteps(TrainerCallback):
    """`train.min_steps`: neither early stopping nor the best-checkpoint choice looks at the dev
    loss before that step (on a few dev rows, an untrained model's can look best)."""

    def __init__(self, steps: int):
        self.steps = steps

    def on_evaluate(self, args, state, control, **kwargs):
        # before the trainer records this evaluation: forget a best from before min_steps
        if state.best_global_step is not None and state.best_global_step < self.steps:
            state.best_metric, state.best_global_step, state.best_model_checkpoint = None, 0, None
        return control


class Progress(TrainerCallback):
    """In place of the Trainer's nested bars and its loss dictionary every `logging_steps`: one bar
    over optimizer steps (on a terminal only: a log file gets no redraws) and about `lines` loss
    lines a run, each with the last dev figures."""

    KEYS = {"loss": "loss", "eval_loss": "dev loss", "eval_agreement": "dev agreement"}

    def __init__(self, lines: int = 8):
        self.lines, self.bar, self.latest, self.next, self.every = lines, None, {}, 0, 1

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="train", unit="step", disable=None)
        self.every = max(1, math.ceil(state.max_steps / self.lines))
        self.next = state.global_step + self.every

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.latest.update({k: v for k, v in (logs or {}).items() if k in self.KEYS})
        if not state.is_world_process_zero or not any(k in (logs or {}) for k in self.KEYS):
            return
        if state.global_step >= self.next or state.global_step >= state.max_steps:
            self.next = state.global_step + self.every
            figures = ", ".join(f"{name} {self.latest[k]:.4g}" for k, name in self.KEYS.items() if k in self.latest)
            tqdm.write(f"train: step {state.global_step}/{state.max_steps} (epoch {state.epoch:.1f}): {figures}")

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def quiet_progress(trainer) -> None:
    """`Progress` in place of the Trainer's own output, unless transformers logs warnings (the
    default in a script or notebook; `distill STAGE --verbose`): entry points lower it to errors."""
    if hf_logging.get_verbosity() < hf_logging.ERROR:
        return
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(Progress())


def first_epoch_rows(trainer) -> list[int]:
    collator = trainer.data_collator
    return sorted(set(collator.seen[: collator.epoch_ends[0]] if collator.epoch_ends else collator.seen))


def checkpoint_step(checkpoint: Path) -> int:
    return int(Path(checkpoint).name.rsplit("-", 1)[1])


def last_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint: the Trainer writes trainer_state.json last."""
    done = [p for p in Path(output_dir).glob("checkpoint-*") if (p / "trainer_state.json").exists()]
    return max(done, key=checkpoint_step, default=None)


def final_loss(trainer) -> float | None:
    """The last logged training loss (kept across resumes, unlike the mean of this run's steps)."""
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return losses[-1] if losses else None




class KeepStart(TrainerCallback):
    """Keeps the weights training started from (a head fitted as a linear probe on the frozen
    model) when they agree with the dev labels more than the best checkpoint does: with a thousand
    noisy labels over dozens of classes, fine-tuning can leave a good probe worse than it found it.
    Needs the dev evaluation at the start (`eval_on_start`) and an `eval_agreement` metric."""

    def __init__(self):
        self.start, self.agreement = None, None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step == 0:  # not when resuming: the start is gone
            self.start = {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if state.global_step == 0 and self.start is not None:
            self.agreement = metrics.get("eval_agreement")

    def on_train_end(self, args, state, control, model=None, **kwargs):
        best = next((e["eval_agreement"] for e in state.log_history
                     if e.get("step") == state.best_global_step and "eval_agreement" in e), None)
        if self.agreement is None or best is None or self.agreement <= best:
            return
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in self.start:
                    p.copy_(self.start[n].to(p.device))
        state.log_history.append({"kept_start": True, "start_agreement": self.agreement,
                                  "best_agreement": best, "step": state.global_step})


def agreement(eval_pred) -> dict:
    """Dev agreement with the labels: a class per row or per tagged word (argmax), or micro F1 of
    the label decisions at 0.5 (multi-label)."""
    logits, labels = eval_pred.predictions, eval_pred.label_ids
    if labels.dtype.kind == "f":
        pred, truth = logits > 0, labels > 0.5
        return {"agreement": float(2 * (pred & truth).sum() / max(pred.sum() + truth.sum(), 1))}
    keep = labels != -100
    return {"agreement": float((logits.argmax(-1)[keep] == labels[keep]).mean())}
