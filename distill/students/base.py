"""What every student kind shares: building (real or tiny; LoRA, QLoRA or full), the trainer,
exporting, loading, and prediction with calibrated confidence."""

from __future__ import annotations

import contextlib
import copy
import gc
import hashlib
from functools import cached_property
from pathlib import Path

import datasets
import numpy as np
import torch
from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training
from tqdm.auto import tqdm
from transformers import (
    AutoTokenizer,
    ByT5Tokenizer,
    EarlyStoppingCallback,
    TrainingArguments,
    set_seed,
)

from distill.data import read_json
from distill.errors import ConfigError, OutputError
from distill.rundir import StudentDir
from distill.students.calibration import fit_temperature, mean_over, top_confidence
from distill.students.trainer import Collator, MinSteps, SaveEvery, quiet_progress
from distill.tasks import Task

PROCESS_GROUP_TIMEOUT = 6 * 3600  # seconds other ranks wait at a collective: rank 0 exports and calibrates alone


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def bf16_ok() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def default_dtype() -> torch.dtype:
    return torch.bfloat16 if bf16_ok() else torch.float32


def weights_dtype(method: str) -> torch.dtype:
    """The dtype the base is loaded in for training. Full fine-tuning keeps fp32 master weights
    (the trainer computes in bf16 under autocast): in bf16 an update smaller than 1/256 of a
    weight rounds away. A frozen LoRA base may stay in bf16; its adapters and head train in fp32."""
    return torch.float32 if method == "full" else default_dtype()


def mixed_precision(model) -> contextlib.AbstractContextManager:
    """bf16 autocast for a model with bf16 and fp32 weights (a bf16 base with fp32 adapters and
    head, before export), so their matrix products meet in one dtype; otherwise nothing."""
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    if {torch.bfloat16, torch.float32} <= dtypes:
        return torch.autocast(next(model.parameters()).device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def free_memory() -> None:
    """Return what dropped models held: Python's cycles, then the CUDA allocator's cached blocks."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def weights_hash(weights_dir: Path) -> str:
    digest = hashlib.sha256()
    for f in sorted(Path(weights_dir).glob("*.safetensors")):
        digest.update(f.read_bytes())
    return digest.hexdigest()[:12]


def student_identity(meta: dict) -> str:
    """How labels name the student that made them: model name, method and weights hash."""
    return f"{meta['name']}+{'full' if meta['method'] == 'full' else 'lora'}:{meta['adapter_hash']}"


def check_method(cfg) -> None:
    """What student.method=qlora needs of this machine (the schema checked the config)."""
    if cfg.method != "qlora":
        return
    if not torch.cuda.is_available():
        raise ConfigError("student.method=qlora loads the base model in 4-bit with bitsandbytes, which needs a "
                          "CUDA GPU, and this machine has none; use student.method=lora (or full) on CPU")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ConfigError("student.method=qlora needs bitsandbytes: pip install 'distill[gpu]'") from None


class Student:
    """A fine-tuned model behind one interface: trainer, export, load, predict with confidence."""

    kind: str
    generative = True  # writes its answer as text (and so can learn rationales too)
    task_type: str
    auto_class = None  # the AutoModel class for real checkpoints
    args_class = TrainingArguments

    def __init__(self, cfg, task: Task, model, tokenizer, name: str, temperature: float = 1.0):
        self.cfg, self.task, self.model, self.tokenizer, self.name = cfg, task, model, tokenizer, name
        self.temperature = temperature
        self.calibration: dict = {}  # calibration.json: the temperature and what else the kind fitted

    # -- building -----------------------------------------------------------------------------
    @classmethod
    def for_task(cls, task: Task) -> type["Student"]:
        """The class that builds and loads this kind's student for `task` (a kind may have one per
        task shape, as the encoder's heads)."""
        return cls

    @classmethod
    def tiny_model(cls, tiny_cfg, tokenizer, task: Task):
        raise NotImplementedError

    @classmethod
    def tiny_tokenizer(cls, texts: list[str]):
        return ByT5Tokenizer()  # bytes: needs no files and no training

    @classmethod
    def lora_task_type(cls, task: Task) -> str:
        return cls.task_type

    @classmethod
    def from_pretrained(cls, path, task: Task, cfg, **kwargs):
        """The kind's model from a checkpoint (cfg: the student's config)."""
        return cls.auto_class.from_pretrained(path, **kwargs)

    @classmethod
    def create(cls, cfg, task: Task, seed: int = 0, texts: list[str] = ()) -> "Student":
        """The base model (a hub id, a local directory, or a tiny random one), with LoRA unless
        `student.method=full`; QLoRA loads the base in 4-bit first."""
        cls = cls.for_task(task)
        check_method(cfg)
        set_seed(seed)
        if cfg.get("tiny"):
            tokenizer = cls.tiny_tokenizer(list(texts))
            base = cls.tiny_model(cfg.tiny, tokenizer, task)
            name = f"tiny-random-{cfg.kind}"
        else:
            tokenizer = AutoTokenizer.from_pretrained(cfg.model)
            kwargs = {"dtype": weights_dtype(cfg.method)}
            if cfg.method == "qlora":
                from transformers import BitsAndBytesConfig

                kwargs["quantization_config"] = BitsAndBytesConfig(
                    load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                    bnb_4bit_compute_dtype=kwargs["dtype"])
            base = cls.from_pretrained(cfg.model, task, cfg, **kwargs)
            name = cfg.model
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        student = cls(cfg, task, base, tokenizer, name)
        if cfg.get("tiny") and cfg.method != "full":
            # a random base exists nowhere else: keep an untouched copy to save beside the adapter
            student.tiny_base = copy.deepcopy(base)
        if cfg.method == "qlora":
            base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=True)
        if cfg.method != "full":
            lora = LoraConfig(task_type=cls.lora_task_type(task), r=cfg.lora.r, lora_alpha=cfg.lora.alpha,
                              lora_dropout=cfg.lora.dropout, target_modules=list(cfg.lora.target_modules))
            student.model = get_peft_model(base, lora)
            # peft keeps LoRA's matrices in fp32 but a new head (modules_to_save) in the base's dtype
            for param in student.model.parameters():
                if param.requires_grad and param.dtype != torch.float32:
                    param.data = param.data.float()
        return student

    # -- training -----------------------------------------------------------------------------
    def examples(self, rows: list[dict], alpha: float | None, first: int = 0) -> list[tuple]:
        """(row number, prompt, target, weight) per training example: the row's own weight (class
        balancing) times its task's; with rationale distillation each row also gives a rationale
        example."""
        out = []
        for i, row in enumerate(rows):
            weight = row.get("weight", 1.0)
            out.append((first + i, self.task.student_prompt(row), self.task.student_target(row["label"], row),
                        weight * (1.0 if alpha is None else alpha)))
            if alpha is not None and row.get("rationale"):
                out.append((first + i, self.task.rationale_prompt(row), row["rationale"], weight * (1 - alpha)))
        return out

    def dataset(self, rows: list[dict], alpha: float | None, first: int = 0, weighted: bool = False) -> datasets.Dataset:
        """The kind's encoded examples, numbered by row (for the sharding record) and, when
        `weighted` (always with rationales), with each example's loss weight."""
        numbers, prompts, targets, weights = zip(*self.examples(rows, alpha, first))
        data = {**self.encode(list(prompts), list(targets)), "row": list(numbers)}
        if weighted or alpha is not None:
            data["task_weight"] = list(weights)
        return datasets.Dataset.from_dict(data)

    def encode(self, prompts: list[str], targets: list[str]) -> dict:
        """Columns the kind's trainer reads, from prompt and target texts."""
        raise NotImplementedError

    @classmethod
    def trainer_args(cls, cfg) -> dict:
        """Arguments the kind's `args_class` needs beyond the shared ones (cfg: the student's)."""
        return {}

    @classmethod
    def training_args(cls, cfg, train_cfg, output_dir: Path, has_dev: bool) -> TrainingArguments:
        """The trainer's arguments. Made before the model: with DeepSpeed ZeRO-3 they switch on
        `zero.Init`, so that `from_pretrained` shards the weights as it loads them instead of
        building the whole model on every process."""
        return cls.args_class(
            output_dir=str(output_dir), num_train_epochs=train_cfg.epochs, max_steps=train_cfg.max_steps,
            learning_rate=train_cfg.lr, per_device_train_batch_size=train_cfg.batch_size,
            per_device_eval_batch_size=train_cfg.batch_size,
            gradient_accumulation_steps=train_cfg.grad_accum, weight_decay=train_cfg.weight_decay,
            warmup_steps=train_cfg.warmup, lr_scheduler_type=train_cfg.scheduler,
            logging_steps=train_cfg.logging_steps, report_to=list(train_cfg.report_to) or "none",
            eval_strategy="epoch" if has_dev else "no", save_strategy="epoch" if has_dev else "no",
            save_total_limit=train_cfg.save_total_limit, load_best_model_at_end=has_dev,
            metric_for_best_model="eval_loss" if has_dev else None, greater_is_better=False if has_dev else None,
            restore_callback_states_from_checkpoint=True, seed=train_cfg.seed,
            use_cpu=not torch.cuda.is_available(), bf16=bf16_ok(), ddp_find_unused_parameters=False,
            ddp_timeout=PROCESS_GROUP_TIMEOUT, gradient_checkpointing=cfg.method == "qlora",
            remove_unused_columns=False, dataloader_num_workers=0, disable_tqdm=False, **cls.trainer_args(cfg))

    def make_trainer(self, args, train_data, dev_data, weighted: bool):
        raise NotImplementedError

    def trainer(self, train_rows: list[dict], dev_rows: list[dict], train_cfg, output_dir: Path,
                args: TrainingArguments | None = None):
        """The kind's Hugging Face trainer: dev evaluation each epoch, best checkpoint by dev loss,
        early stopping, a checkpoint every `train.save_steps` steps. `args`: from `training_args`,
        when made before the model."""
        alpha = None
        if self.task.rationale:  # the schema refuses it for students that are not generative
            alpha = float(train_cfg.rationale_alpha)
        weighted = alpha is not None or any(r.get("weight", 1.0) != 1.0 for r in train_rows)
        train_data = self.dataset(train_rows, alpha, weighted=weighted)
        dev_data = self.dataset(dev_rows, alpha, first=-len(dev_rows), weighted=weighted) if dev_rows else None
        has_dev = dev_data is not None
        args = args or self.training_args(self.cfg, train_cfg, output_dir, has_dev)
        trainer = self.make_trainer(args, train_data, dev_data, weighted=weighted)
        trainer.data_collator = Collator(trainer.data_collator)
        trainer.add_callback(trainer.data_collator)
        trainer.add_callback(SaveEvery(train_cfg.save_steps))
        quiet_progress(trainer)
        if has_dev and train_cfg.min_steps > 0 and train_cfg.max_steps <= 0:  # before early stopping reads the best
            trainer.add_callback(MinSteps(train_cfg.min_steps))
        if has_dev and train_cfg.early_stopping_patience:
            trainer.add_callback(EarlyStoppingCallback(early_stopping_patience=train_cfg.early_stopping_patience))
        return trainer

    # -- saving and loading ---------------------------------------------------------------------
    @property
    def lora(self) -> bool:
        return self.cfg.method != "full"

    def weights_dir(self, student_dir: Path) -> Path:
        """Where the trainer saves the trained weights: the adapter, or the whole model."""
        return Path(student_dir) / ("adapter" if self.lora else "merged")

    def export(self, student_dir: Path) -> dict:
        """After the trainer saved the weights: the tiny random base beside the adapter, and the
        adapter merged into its base (`merge_and_unload`) as a plain model to serve."""
        student_dir = Path(student_dir)
        if not self.lora:
            return {"merged": True}
        if self.cfg.get("tiny"):
            self.tiny_base.save_pretrained(student_dir / "base")
        if not self.cfg.merge:
            return {"merged": False}
        # the base again, unquantized, so QLoRA adapters merge into full-precision weights
        base = self.from_pretrained(self.base_path(self.cfg, student_dir), self.task, self.cfg, dtype=default_dtype())
        merged = PeftModel.from_pretrained(base, student_dir / "adapter").merge_and_unload()
        merged.save_pretrained(student_dir / "merged")
        self.tokenizer.save_pretrained(student_dir / "merged")
        return {"merged": True}

    @staticmethod
    def base_path(cfg, student_dir: Path):
        """Where the LoRA base lives: saved beside the adapter for a tiny random model, else cfg.model."""
        return Path(student_dir) / "base" if cfg.get("tiny") else cfg.model

    @classmethod
    def load(cls, cfg, task: Task, student_dir: Path, on: torch.device | None = None) -> "Student":
        """The merged model when exported, else the adapter on its base; with its calibration."""
        cls = cls.for_task(task)
        student_dir = Path(student_dir)
        meta = read_json(StudentDir(student_dir).record)
        dtype = default_dtype()
        if (student_dir / "merged" / "config.json").exists():
            tokenizer = AutoTokenizer.from_pretrained(student_dir / "merged")
            model = cls.from_pretrained(student_dir / "merged", task, cfg, dtype=dtype)
        else:
            # student.json may not exist yet: train calibrates the adapter before writing it
            tokenizer = AutoTokenizer.from_pretrained(student_dir / "adapter")
            model = PeftModel.from_pretrained(cls.from_pretrained(cls.base_path(cfg, student_dir), task, cfg, dtype=dtype),
                                              student_dir / "adapter")
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        calibration = read_json(StudentDir(student_dir).calibration)
        student = cls(cfg, task, model.to(on or device()).eval(), tokenizer, meta.get("name", cfg.model),
                      calibration.get("temperature", 1.0))
        student.calibration = calibration
        student.meta = meta  # student.json: identity and training record
        return student

    def calibrate(self, dev_rows: list[dict], batch_size: int, target: str) -> dict:
        """What calibration.json holds: the temperature fitted on the dev split (and whatever else
        the kind fits there)."""
        return fit_temperature(self, dev_rows, batch_size, target)

    # -- prediction ---------------------------------------------------------------------------
    def predict(self, rows: list[dict], batch_size: int = 32, progress: bool = True,
                temps: torch.Tensor | None = None, batch_tokens: int | None = None,
                ids: list[list[int]] | None = None) -> list[dict]:
        """One dict per row: label (None when invalid), confidence at the calibrated temperature
        (a list, one per temperature, when `temps` is given), entity_confidence (NER: one per
        entity, in order), error type, raw output.

        The rows are tokenized in one call and sorted by length; a batch holds up to `batch_size`
        rows and, with `batch_tokens`, up to that many tokens of padded input, so short rows go in
        large batches and long ones in small. Each batch's work is queued on the device before the
        previous batch's results are read back, so the host turns results into labels while the
        device computes. `ids`: the rows' `input_ids`, when tokenized ahead (the label stage
        tokenizes the next window while this one is labeled)."""
        if not rows:
            return []
        self.model.eval()
        grid = temps if temps is not None else torch.tensor([self.temperature])
        ids = ids if ids is not None else self.input_ids(rows)
        # word-split input is tokenized per batch: its length in words stands in for tokens
        lengths = [len(x) for x in ids] if ids is not None else [len(r["text"].split()) + 2 for r in rows]
        order = sorted(range(len(rows)), key=lengths.__getitem__)
        results: list[dict | None] = [None] * len(rows)
        with tqdm(total=len(rows), desc="student: labeling", unit="row", disable=not progress) as bar:
            def collect(idx: list[int], finish) -> None:
                for i, pred in zip(idx, finish()):
                    if temps is None:
                        pred["confidence"] = pred["confidence"][0]
                    results[i] = pred
                bar.update(len(idx))

            queued = []  # at most two batches: the one the device runs, the one read back meanwhile
            with mixed_precision(self.model):
                for idx in token_batches(order, lengths, batch_size, batch_tokens):
                    with torch.inference_mode():
                        queued.append((idx, self.predict_batch([rows[i] for i in idx], grid,
                                                               None if ids is None else [ids[i] for i in idx])))
                    if len(queued) == 2:
                        collect(*queued.pop(0))
                for batch in queued:
                    collect(*batch)
        return results

    def tokenizing_copy(self) -> "Student":
        """This student with a tokenizer of its own, for tokenizing in another thread. A fast
        tokenizer sets truncation and padding on itself for each call, so a padded call in one
        thread (the candidate labels, a generation batch) can pad another thread's output."""
        other = copy.copy(self)
        other.tokenizer = copy.deepcopy(self.tokenizer)
        return other

    def input_ids(self, rows: list[dict]) -> list[list[int]] | None:
        """Each row's input token ids (truncated), from one tokenizer call; None where the kind
        tokenizes each batch itself (word-split input)."""
        return self.token_ids([self.task.student_prompt(r) for r in rows])

    def token_ids(self, prompts: list[str]) -> list[list[int]]:
        return self.tokenizer(prompts, max_length=self.cfg.max_source_length, truncation=True)["input_ids"]

    def padded(self, ids: list[list[int]], left: bool = False) -> dict:
        """input_ids and attention_mask on the model's device, padded to the longest row (on the
        left for generation), copied from pinned memory without blocking the host."""
        width = max(map(len, ids))
        tokens = np.full((len(ids), width), self.tokenizer.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(ids), width), dtype=np.int64)
        for i, row in enumerate(ids):
            span = slice(width - len(row), width) if left else slice(0, len(row))
            tokens[i, span], mask[i, span] = row, 1
        return {name: to_device(torch.from_numpy(a), self.model.device)
                for name, a in (("input_ids", tokens), ("attention_mask", mask))}

    def predict_batch(self, rows: list[dict], temps: torch.Tensor, ids: list[list[int]] | None = None):
        """Queue one batch's predictions; returns a function that gives them (one dict per row,
        confidences per temperature) once the device is done. Generative students score each
        candidate label when the task has a fixed set (a probability for every label, never an
        invalid one), and otherwise generate and parse, flagging output that does not parse."""
        ids = ids if ids is not None else self.input_ids(rows)
        candidates = self.task.candidates()
        if candidates:
            scores = self.score_ids(ids, self.candidate_targets)
            (best, conf), ready = to_host(scores.argmax(-1), top_confidence(scores, temps).exp())

            def finish() -> list[dict]:
                ready()
                return [{"label": candidates[b], "confidence": c, "entity_confidence": None, "error": None,
                         "raw": candidates[b]} for b, c in zip(best.tolist(), conf.tolist())]
            return finish
        texts, step_logits, tokens, mask = self.generate_ids(ids)
        logp = torch.stack([top_confidence(s, temps) for s in step_logits], 1)  # [B, steps, G]
        conf = mean_over(logp, mask).tolist()
        tokens, lp0, mask = tokens.cpu(), logp[..., 0].cpu(), mask.cpu()  # one copy per batch
        out = []
        for b, (row, text) in enumerate(zip(rows, texts)):
            label, error, units = None, None, None
            try:
                label = self.task.parse_student(text, row)
            except OutputError as e:
                error = e.kind
            if label is not None:  # per unit (entity, label) where the task has units
                keep = mask[b]
                units = self.task.student_unit_confidence(
                    text, self.pieces(tokens[b][keep].tolist(), lp0[b][keep].tolist()), label, row)
            out.append({"label": label, "confidence": conf[b], "entity_confidence": units, "error": error,
                        "raw": text})
        return lambda: out

    def class_scores(self, rows: list[dict], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """Log-probability of every label for each row, [rows, labels], at the calibrated
        temperature (one label per text): the grow loop ranks corpus rows per label by it, and a
        shortlist ranks labels per row."""
        self.model.eval()
        ids = self.input_ids(rows)
        lengths = [len(x) for x in ids]
        out = np.zeros((len(rows), len(self.task.labels)), np.float32)
        with mixed_precision(self.model), tqdm(total=len(rows), desc="student: scoring labels", unit="row",
                                               disable=not progress) as bar:
            for idx in token_batches(sorted(range(len(rows)), key=lengths.__getitem__), lengths, batch_size, None):
                with torch.inference_mode():
                    logits = self.class_logits([ids[i] for i in idx]).float()
                out[idx] = torch.log_softmax(logits / self.temperature, -1).cpu().numpy()
                bar.update(len(idx))
        return out

    def class_logits(self, ids: list[list[int]]) -> torch.Tensor:
        """[B, labels] scores of a batch: each label's log-likelihood as the answer."""
        return self.score_ids(ids, self.candidate_targets)

    @classmethod
    def base_embeddings(cls, cfg, task: Task, seed: int, *texts: list[str], batch_size: int = 32,
                        on: torch.device | None = None) -> list[np.ndarray]:
        """Each list of texts embedded by the untrained base model (a tiny model's tokenizer is
        built from the first list), which is freed after: the cleaning probe and shortlists."""
        probe = cls.create(cfg, task, seed, texts=list(texts[0]))
        probe.model.to(on or device()).eval()
        out = [probe.embed(list(t), batch_size=batch_size, progress=len(t) > 1000) for t in texts]
        del probe
        free_memory()
        return out

    def embed(self, texts: list[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """Mean-pooled last hidden states of the student's own encoder (a causal LM: its last
        layer), one row per text: the monitor compares corpus and gold inputs with them."""
        out, precision = [], mixed_precision(self.model)
        for start in tqdm(range(0, len(texts), batch_size), desc="student: embedding", unit="batch",
                          disable=not progress):
            enc = self.padded(self.token_ids(texts[start : start + batch_size]))
            with torch.inference_mode(), precision:
                hidden = self.hidden_states(enc).float()
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    def hidden_states(self, enc) -> torch.Tensor:
        return self.model(**enc, output_hidden_states=True).hidden_states[-1]

    def pieces(self, ids: list[int], logps: list[float]) -> list[tuple[str, float]]:
        """(text, logprob) of each generated token, the texts spelling the decoded output."""
        out, before = [], ""
        for k, lp in enumerate(logps):
            text = self.tokenizer.decode(ids[: k + 1], skip_special_tokens=True)
            out.append((text[len(before):], lp))
            before = text
        return out

    def once_per_device(self, key, make):
        """make() the first time for this key on the model's device, then the same value: the
        candidates' token ids are tokenized once, not per batch."""
        key = (key, self.model.device)
        if getattr(self, "_once", (None,))[0] != key:
            self._once = (key, make())
        return self._once[1]

    @cached_property
    def candidate_targets(self) -> list[str]:
        return [self.task.student_target(c, None) for c in self.task.candidates()]

    def score(self, prompts: list[str], targets: list[str]) -> torch.Tensor:
        """Log-likelihood of each target after each prompt: [len(prompts), len(targets)]."""
        return self.score_ids(self.token_ids(prompts), targets)

    def score_ids(self, ids: list[list[int]], targets: list[str]) -> torch.Tensor:
        raise NotImplementedError

    def generate(self, prompts: list[str]) -> tuple[list[str], list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Greedy output texts, the logits at each step ([B, V] each), the output token ids
        [B, steps] and which of them are output (not padding)."""
        return self.generate_ids(self.token_ids(prompts))

    def generate_ids(self, ids: list[list[int]]):
        raise NotImplementedError


def token_batches(order: list[int], lengths: list[int], batch_size: int, batch_tokens: int | None) -> list[list[int]]:
    """Consecutive runs of `order` (rows sorted by length) of at most batch_size rows and, with
    batch_tokens, at most that many padded tokens (rows times the longest row's length)."""
    batches, current, longest = [], [], 0
    for i in order:
        wider = max(longest, lengths[i])
        if current and (len(current) == batch_size or (batch_tokens and wider * (len(current) + 1) > batch_tokens)):
            batches.append(current)
            current, wider = [], lengths[i]
        current.append(i)
        longest = wider
    return batches + ([current] if current else [])


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on the device: through pinned memory and without blocking on CUDA."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def to_host(*tensors: torch.Tensor):
    """Start copying device tensors to the host. Returns the host tensors and a function that
    waits until they have arrived (only for them, not for work queued after)."""
    if not tensors[0].is_cuda:
        return tensors, lambda: None
    host = tuple(torch.empty(t.shape, dtype=t.dtype, pin_memory=True).copy_(t, non_blocking=True) for t in tensors)
    done = torch.cuda.Event()
    done.record()
    return host, done.synchronize
