"""What every student kind shares: building (real or tiny), LoRA, training arguments, saving."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from tqdm.auto import tqdm
from transformers import AutoTokenizer, ByT5Tokenizer, TrainingArguments, set_seed

from distill.errors import OutputError
from distill.tasks import Task


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def bf16_ok() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def adapter_hash(adapter_dir: Path) -> str:
    digest = hashlib.sha256()
    for f in sorted(Path(adapter_dir).glob("adapter_model.*")):
        digest.update(f.read_bytes())
    return digest.hexdigest()[:12]


class Student:
    """A LoRA-fine-tuned model behind one interface: fit, predict with confidence, save, load."""

    kind: str
    task_type: str
    auto_class = None  # the AutoModel class for real checkpoints

    def __init__(self, cfg, task: Task, model, tokenizer, name: str):
        self.cfg, self.task, self.model, self.tokenizer, self.name = cfg, task, model, tokenizer, name

    # -- building -----------------------------------------------------------------------------
    @classmethod
    def tiny_model(cls, tiny_cfg, tokenizer):
        raise NotImplementedError

    @classmethod
    def create(cls, cfg, task: Task, seed: int = 0) -> "Student":
        """The base model (a hub id, a local directory, or a tiny random one) wrapped with LoRA."""
        set_seed(seed)
        if cfg.get("tiny"):
            tokenizer = ByT5Tokenizer()
            base = cls.tiny_model(cfg.tiny, tokenizer)
            name = f"tiny-random-{cfg.kind}"
        else:
            tokenizer = AutoTokenizer.from_pretrained(cfg.model)
            base = cls.auto_class.from_pretrained(cfg.model, dtype=torch.bfloat16 if bf16_ok() else torch.float32)
            name = cfg.model
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        lora = LoraConfig(task_type=cls.task_type, r=cfg.lora.r, lora_alpha=cfg.lora.alpha,
                          lora_dropout=cfg.lora.dropout, target_modules=list(cfg.lora.target_modules))
        student = cls(cfg, task, None, tokenizer, name)
        if cfg.get("tiny"):
            # a random base exists nowhere else: keep an untouched copy to save beside the adapter
            student.tiny_base = copy.deepcopy(base)
        student.model = get_peft_model(base, lora)
        return student

    @classmethod
    def load(cls, cfg, task: Task, student_dir: Path) -> "Student":
        """The saved adapter on its base; tiny students keep their random base beside the adapter."""
        student_dir = Path(student_dir)
        meta = json.loads((student_dir / "student.json").read_text())
        base_path = student_dir / "base" if (student_dir / "base").exists() else meta["base_model"]
        base = cls.auto_class.from_pretrained(base_path)
        tokenizer = AutoTokenizer.from_pretrained(student_dir / "adapter")
        model = PeftModel.from_pretrained(base, student_dir / "adapter").to(device()).eval()
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return cls(cfg, task, model, tokenizer, meta["name"])

    def save(self, student_dir: Path, meta: dict) -> dict:
        student_dir = Path(student_dir)
        self.model.save_pretrained(student_dir / "adapter")
        self.tokenizer.save_pretrained(student_dir / "adapter")
        if self.cfg.get("tiny"):
            self.tiny_base.save_pretrained(student_dir / "base")
        meta = {**meta, "kind": self.kind, "name": self.name, "base_model": self.name,
                "adapter_hash": adapter_hash(student_dir / "adapter")}
        (student_dir / "student.json").write_text(json.dumps(meta, indent=2))
        return meta

    # -- training -----------------------------------------------------------------------------
    def training_args(self, train_cfg, output_dir: Path, args_class=TrainingArguments, **extra):
        return args_class(
            output_dir=str(output_dir), num_train_epochs=train_cfg.epochs, max_steps=train_cfg.max_steps,
            learning_rate=train_cfg.lr, per_device_train_batch_size=train_cfg.batch_size,
            per_device_eval_batch_size=train_cfg.batch_size,
            gradient_accumulation_steps=train_cfg.grad_accum, weight_decay=train_cfg.weight_decay,
            warmup_steps=train_cfg.warmup, lr_scheduler_type=train_cfg.scheduler,
            logging_steps=train_cfg.logging_steps, save_strategy="no", eval_strategy="no",
            report_to=list(train_cfg.report_to) or "none", seed=train_cfg.seed,
            use_cpu=not torch.cuda.is_available(), bf16=bf16_ok(), ddp_find_unused_parameters=False,
            dataloader_num_workers=0, **extra)

    def fit(self, train_rows: list[dict], train_cfg, output_dir: Path) -> dict:
        raise NotImplementedError

    # -- prediction ---------------------------------------------------------------------------
    def predict(self, rows: list[dict], batch_size: int = 32, progress: bool = True) -> list[dict]:
        """One dict per row: label (None when invalid), confidence, error type, raw output."""
        self.model.eval()
        candidates = self.task.candidates()
        targets = [self.task.student_target(c, None) for c in candidates] if candidates else None
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]["text"]))  # fewer pad tokens
        results: dict[int, dict] = {}
        for start in tqdm(range(0, len(order), batch_size), desc="student: labeling", unit="batch",
                          disable=not progress):
            idx = order[start : start + batch_size]
            batch = [rows[i] for i in idx]
            prompts = [self.task.student_prompt(r) for r in batch]
            with torch.inference_mode():
                if candidates:
                    scores = self.score(prompts, targets)
                    probs = scores.float().softmax(-1)
                    conf, best = probs.max(-1)
                    preds = [(candidates[b], c, candidates[b]) for b, c in zip(best.tolist(), conf.tolist())]
                else:
                    preds = [(None, c, t) for t, c in self.generate(prompts)]
            for i, row, (label, conf, raw) in zip(idx, batch, preds):
                error = None
                if label is None:
                    try:
                        label = self.task.parse_student(raw, row)
                    except OutputError as e:
                        error = e.kind
                results[i] = {"label": label, "confidence": conf, "error": error, "raw": raw}
        return [results[i] for i in range(len(rows))]

    def score(self, prompts: list[str], targets: list[str]) -> torch.Tensor:
        """Log-likelihood of each target after each prompt: [len(prompts), len(targets)]."""
        raise NotImplementedError

    def generate(self, prompts: list[str]) -> list[tuple[str, float]]:
        """Greedy output text and its probability (geometric mean over tokens) per prompt."""
        raise NotImplementedError
