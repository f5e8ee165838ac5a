"""Train stage: fine-tune the student on the teacher's seed labels, calibrate it, export it.

    accelerate launch distill/train.py recipe=NAME [key=value ...]
    accelerate launch --config_file distill/configs/accelerate/deepspeed_zero3.yaml distill/train.py recipe=NAME
    distill train recipe=NAME

Runs the teacher first (rank 0 only) for any seed rows it has not labeled yet. Killing it and
running the same command again resumes from the last checkpoint.
"""

if __name__ == "__main__":
    import pathlib
    import sys

    if not __package__:  # run as a file: import the installed package, not its modules as top-level names
        sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])
    from distill.runner import before_imports

    before_imports("train", sys.argv[1:])  # help, or quiet libraries, before torch and tqdm are imported

import hashlib
import json
import math
import random
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path

import torch
from accelerate import PartialState
from accelerate.utils import gather_object
from omegaconf import OmegaConf

from distill.card import write_card
from distill.clean import check_clean, noisy_rows, write_record
from distill.data import check_held_out, load_split, prepare_data, read_json, read_jsonl
from distill.errors import DataError
from distill.rundir import RunDir, StudentDir, resume
from distill.students import student_class
from distill.students.base import PROCESS_GROUP_TIMEOUT, check_method, free_memory, weights_hash
from distill.students.trainer import (
    checkpoint_step,
    final_loss,
    first_epoch_rows,
    last_checkpoint,
)
from distill.tasks import build_task
from distill.teach import teach


def train(cfg, teach_first: bool = True) -> dict:
    """The train stage: the teacher's valid seed labels (less what `train.clean` leaves out), or
    the rows of `train.rows` when set (a JSONL file: id, text, label and `tokens` for token-level
    tasks), fitted into the run directory's student/."""
    state = PartialState(cpu=not torch.cuda.is_available(), timeout=timedelta(seconds=PROCESS_GROUP_TIMEOUT))
    run = RunDir(cfg.run_dir)
    task = build_task(cfg.task)
    check_method(cfg.student)  # before the teacher is paid

    # teacher labels: rank 0 fills in what is missing while the other ranks wait
    if teach_first and not cfg.train.rows and state.is_main_process:
        teach(cfg)
    state.wait_for_everyone()
    if cfg.teacher.dry_run:  # the estimate is all that was asked for
        return {"dry_run": True}

    # data: the teacher's valid labels (and rationales) less what train.clean leaves out, or the rows given
    cleaning = None
    if cfg.train.rows:
        rows, trained_on = given_rows(Path(cfg.train.rows), task), f"the labeled rows of {cfg.train.rows}"
    else:
        rows, trained_on = teacher_labels(run, task), "the teacher"
        if not rows:
            raise DataError(f"{run.teacher('seed')} has no valid teacher labels to train on "
                            f"({len(read_jsonl(run.teacher('seed')))} rows, all with errors)")
        rows, cleaning = cleaned(cfg, task, rows, run, state)
    return fit(cfg, rows, run.student, trained_on, cleaning=cleaning)


def fit(cfg, rows: list[dict], student_dir: Path, trained_on: str, cleaning: dict | None = None) -> dict:
    """Train a student on `rows` (id, text, label, and a task's input fields such as `tokens`),
    calibrate it and export it to `student_dir`, resuming from its last checkpoint of these same
    rows and settings; `trained_on` names where the labels came from in student.json and the model
    card. A dev split of the rows, never of gold, serves evaluation each epoch, the best checkpoint,
    early stopping and calibration. Returns student.json. Grow, refine and the collapse audit call
    this for their students, and so can a script."""
    # rank 0 exports and calibrates alone at the end while the others wait at a collective
    state = PartialState(cpu=not torch.cuda.is_available(), timeout=timedelta(seconds=PROCESS_GROUP_TIMEOUT))
    student_dir, files = Path(student_dir), StudentDir(student_dir)
    task = build_task(cfg.task)
    check_method(cfg.student)
    if not rows:
        raise DataError(f"{student_dir}: no rows to train on ({trained_on} gave no valid labels"
                        + (f", or train.clean.method={cleaning['method']} left them all out)" if cleaning else ")"))
    rows = [{"rationale": None, **r} for r in rows]
    prepare_data(cfg)
    gold = load_split(cfg, "gold", task, labels=True)
    check_held_out(gold["text"], [r["text"] for r in rows], "training data")
    # the teacher writes rows as replies arrive: fix the order first
    rows.sort(key=lambda r: (r["id"], json.dumps(r["label"])))
    data_hashes = {"rows": rows_hash(rows)}
    random.Random(cfg.seed).shuffle(rows)
    # every copy of a row on one side (the collapse audit trains on a row labeled by several generations)
    dev_ids = {r["id"] for r in rows[: int(len(rows) * cfg.train.dev_fraction)]}
    dev_rows, train_rows = [r for r in rows if r["id"] in dev_ids], [r for r in rows if r["id"] not in dev_ids]
    data_hashes.update(train=rows_hash(train_rows), dev=rows_hash(dev_rows),
                       gold=rows_hash([{"id": i, "label": lab} for i, lab in zip(gold["id"], gold["label"])]))
    # minority classes: loss weights or repeated rows from the training rows' class counts
    n_train = len(train_rows)
    train_rows, balance = balanced(task, train_rows, cfg.train.class_balance, cfg.seed)

    # model: base (hub, local or tiny random), with LoRA / QLoRA unless student.method=full; the
    # trainer's arguments first, so that DeepSpeed ZeRO-3 shards the weights as they load
    cls = student_class(cfg.student)
    checkpoints = files.checkpoints
    train_cfg = with_min_steps(cfg.train, len(train_rows), state.num_processes)
    args = cls.training_args(cfg.student, train_cfg, checkpoints, has_dev=bool(dev_rows))
    student = cls.create(cfg.student, task, cfg.seed, texts=[r["text"] for r in train_rows])

    # train, resuming from the last complete checkpoint of this same configuration and data
    resume = resume_point(cfg, checkpoints, data_hashes, state)
    trainer = student.trainer(train_rows, dev_rows, train_cfg, checkpoints, args=args)
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)

    # save: every process takes part (DeepSpeed ZeRO-3 and FSDP gather the sharded weights)
    if trainer.is_fsdp_enabled:
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(str(student.weights_dir(student_dir)))
    seen = gather_object([first_epoch_rows(trainer)])
    record = {"train_loss": final_loss(trainer) or result.training_loss, "steps": trainer.state.global_step,
              "best_checkpoint": trainer.state.best_model_checkpoint, "best_dev_loss": trainer.state.best_metric,
              # the starting weights (a probe head) agreed with dev better than any checkpoint, and were kept
              "kept_start": any(e.get("kept_start") for e in trainer.state.log_history)}
    release(trainer, student)  # calibration loads the saved model: the trained copy must not stay beside it

    # export, calibrate and describe on the main process, from the files just saved
    if state.is_main_process:
        exported = student.export(student_dir)
        calibration = cls.load(cfg.student, task, student_dir).calibrate(dev_rows, cfg.label.batch_size,
                                                                          cfg.train.calibration)
        files.calibration.write_text(json.dumps(calibration, indent=2))
        meta = {
            "kind": cfg.student.kind, "name": student.name, "base_model": student.name,
            "method": cfg.student.method, "merged": exported["merged"],
            "adapter_hash": weights_hash(student.weights_dir(student_dir)),
            **record, "resumed_from": checkpoint_step(resume) if resume else None,
            "dev_agreement": calibration.get("dev_agreement"),
            "temperature": calibration["temperature"], "calibration_target": calibration.get("target"),
            "train_rows": n_train, "dev_rows": len(dev_rows), "epochs": train_cfg.epochs, "class_balance": balance,
            "rationale_rows": sum(r["rationale"] is not None for r in train_rows) if task.rationale else None,
            "teacher": cfg.teacher.model, "simulated_teacher": bool(cfg.teacher.simulated), "trained_on": trained_on,
            "cleaning": cleaning,
            "world_size": state.num_processes,
            # data parallelism shards the rows: what each process saw in its first epoch of this run
            # (the last batches are padded with repeated rows when the rows do not divide evenly)
            "rows_per_process": [len(s) for s in seen], "rows_seen": len(set().union(*seen)),
            "rows_on_several_processes": len(set.intersection(*map(set, seen))) if len(seen) > 1 else 0,
            "data_hashes": data_hashes,
        }
        files.record.write_text(json.dumps(meta, indent=2))
        write_card(cfg, RunDir(cfg.run_dir), student_dir)
        if cfg.train.push_to_hub:
            push_to_hub(cfg, student_dir)
        print(f"student saved to {student_dir} ({cfg.student.method}, weights {meta['adapter_hash']}): "
              f"{meta['steps']} steps, loss {meta['train_loss']:.4f}, agreement with {trained_on} on "
              f"{len(dev_rows)} dev rows {meta['dev_agreement'] or float('nan'):.3f}, temperature "
              f"{meta['temperature']} (dev ECE {calibration.get('ece_before', float('nan')):.3f} -> "
              f"{calibration.get('ece_after', float('nan')):.3f})"
              + ("; its linear-probe start agreed with dev better than any epoch, and was kept" if meta["kept_start"] else ""))
    state.wait_for_everyone()
    return read_json(files.record)


def release(trainer, student) -> None:
    """Drop the trainer's model, optimizer state and gradients, and the student's reference to
    the model, so the memory is free before the saved model is loaded again."""
    trainer.accelerator.free_memory()
    trainer.model = trainer.model_wrapped = trainer.optimizer = trainer.lr_scheduler = None
    handler = trainer.callback_handler
    handler.model = handler.optimizer = handler.lr_scheduler = None
    if hasattr(trainer.data_collator.inner, "model"):
        trainer.data_collator.inner.model = None  # seq2seq's collator holds the model too
    student.model = None
    free_memory()


def cleaned(cfg, task, rows: list[dict], run: RunDir, state) -> tuple[list[dict], dict | None]:
    """The teacher's rows without those `train.clean` finds likely wrong. Rank 0 decides and
    records them in student/cleaning.json; every rank reads that."""
    method = check_clean(cfg, task)
    record = run.student_files.cleaning
    if method is None:
        if state.is_main_process:
            record.unlink(missing_ok=True)  # from an earlier run that cleaned
        return rows, None
    rows = sorted(rows, key=lambda r: r["id"])  # the teacher writes rows as replies arrive: fix the order
    if state.is_main_process:
        # the untrained student's embeddings, for the cleaning probe
        features = student_class(cfg.student).base_embeddings(
            cfg.student, task, cfg.seed, [r["text"] for r in rows], batch_size=cfg.label.batch_size,
            on=state.device)[0] if method == "cleanlab" else None
        write_record(record, method, rows, noisy_rows(cfg, task, rows, features))
    state.wait_for_everyone()
    summary = read_json(record)
    dropped = {d["id"] for d in summary.pop("rows_dropped")}
    kept = [r for r in rows if r["id"] not in dropped]
    if state.is_main_process:
        print(f"train: cleaning ({method}) left out {len(rows) - len(kept)} of {len(rows)} teacher rows -> {record}")
    return kept, summary


AUTO_LARGEST = 3.0  # auto weights the loss when the largest class holds over 3 times an even share of the labels


def balanced(task, rows: list[dict], method: str, seed: int) -> tuple[list[dict], dict | None]:
    """`train.class_balance`: each row counts for the rarest class it holds (a row without one,
    an NER sentence with no entity, is left as it is). `weighted`: a loss weight inversely
    proportional to its class's count (mean weight 1); `oversample`: its class's rows repeated
    until every class has about as many rows as the largest; `auto`: weighted when the largest
    class holds over AUTO_LARGEST times an even share of the labels among the classes the rows
    hold (a rarest-class rule misfires on many classes, where a few rows of a class are chance), else none."""
    if not rows:
        return rows, None
    counts = task.label_counts([r["label"] for r in rows])
    auto = None
    if method == "auto":
        held = counts[counts > 0]
        ratio = float(held.max() * len(held) / held.sum()) if len(held) > 1 else 1.0
        method = "weighted" if ratio > AUTO_LARGEST else "none"
        auto = {"largest_share_of_even": round(ratio, 4), "chose": method}
    if method == "none":
        return rows, ({"method": "none", "auto": auto} if auto else None)
    classes = [task.balance_class(r["label"], counts) for r in rows]
    sizes = Counter(c for c in classes if c is not None)
    if method == "weighted":
        weight = {c: sum(sizes.values()) / (len(sizes) * n) for c, n in sizes.items()}
        raw = [weight[c] if c is not None else 1.0 for c in classes]
        mean = sum(raw) / len(raw)
        out = [{**r, "weight": w / mean} for r, w in zip(rows, raw)]
        factors = {c: round(w / mean, 4) for c, w in weight.items()}
    else:
        rng, top, out = random.Random(seed), max(sizes.values()), []
        factors = {c: round(top / n, 4) for c, n in sizes.items()}
        for r, c in zip(rows, classes):
            f = factors.get(c, 1.0)
            out += [r] * (int(f) + (rng.random() < f - int(f)))
    return out, {"method": method, "class_rows": dict(sizes), "factors": factors, "examples": len(out),
                 **({"auto": auto} if auto else {})}


def with_min_steps(train_cfg, n_rows: int, world_size: int):
    """`train`, its epochs raised so that `n_rows` give at least `train.min_steps` optimizer steps
    (a few dozen rows at 3 epochs leave a fresh head almost untrained)."""
    if train_cfg.min_steps <= 0 or train_cfg.max_steps > 0:
        return train_cfg
    per_epoch = max(1, math.ceil(n_rows / (train_cfg.batch_size * train_cfg.grad_accum * world_size)))
    return OmegaConf.merge(train_cfg, {"epochs": max(train_cfg.epochs, math.ceil(train_cfg.min_steps / per_epoch))})


def teacher_labels(run: RunDir, task) -> list[dict]:
    """The teacher's valid seed labels (with rationales when the task distills them)."""
    return [{**r, "rationale": task.rationale_of(r["raw"]) if task.rationale else None}
            for r in read_jsonl(run.teacher("seed")) if r["label"] is not None]


def given_rows(path: Path, task) -> list[dict]:
    """The labeled rows of `train.rows`, each label checked like a human one."""
    if not path.is_file():
        raise DataError(f"train.rows: file {path} does not exist")
    rows = read_jsonl(path)
    for n, row in enumerate(rows, 1):
        missing = [k for k in ("id", "text", "label", *task.input_fields()) if k not in row]
        if missing:
            raise DataError(f"{path} line {n}: no {', '.join(map(repr, missing))} field (train.rows)")
        row["label"] = task.check_gold(row["label"], f"{path} line {n} field 'label'", row)
    return rows


def rows_hash(rows: list[dict]) -> str:
    data = json.dumps([[r["id"], r["label"]] for r in rows], sort_keys=True)
    return hashlib.sha256(data.encode()).hexdigest()[:16]


def resume_point(cfg, checkpoints: Path, data_hashes: dict, state) -> Path | None:
    """The last complete checkpoint made with this same configuration and data. Checkpoints made
    with another are removed first, so a changed recipe trains afresh instead of resuming."""
    train_cfg = {k: v for k, v in OmegaConf.to_container(cfg.train).items()
                 if k not in ("logging_steps", "report_to", "push_to_hub", "hub_model_id", "save_steps",
                              "save_total_limit")}
    fingerprint = {"student": OmegaConf.to_container(cfg.student), "train": train_cfg,
                   "task": OmegaConf.to_container(cfg.task), "seed": cfg.seed,
                   "data": [data_hashes["train"], data_hashes["dev"]]}
    if state.is_main_process:
        resume(checkpoints, fingerprint, f"train: {checkpoints} holds checkpoints of another configuration or "
                                         "data; starting afresh")
    state.wait_for_everyone()
    last = last_checkpoint(checkpoints)
    if last is not None and state.is_main_process:
        print(f"train: resuming from {last}")
    return last


def push_to_hub(cfg, student_dir: Path) -> str:
    """Upload the trained weights (adapter, or whole model) with the card; the merged model beside them."""
    from huggingface_hub import HfApi

    api = HfApi()
    repo_id = api.create_repo(cfg.train.hub_model_id or f"{cfg.recipe}-student", exist_ok=True,
                              private=True).repo_id
    main = "merged" if cfg.student.method == "full" else "adapter"
    api.upload_folder(repo_id=repo_id, folder_path=student_dir / main, commit_message="distill: trained student")
    if main == "adapter" and (student_dir / "merged").exists():
        api.upload_folder(repo_id=repo_id, folder_path=student_dir / "merged", path_in_repo="merged",
                          commit_message="distill: merged model")
    print(f"student pushed to https://huggingface.co/{repo_id}")
    return repo_id


def main(argv: list[str] | None = None) -> None:
    from distill.runner import run_stage

    run_stage(train, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
