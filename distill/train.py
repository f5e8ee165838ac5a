"""Train stage: LoRA-fine-tune the student on the teacher's seed labels.

    accelerate launch distill/train.py recipe=NAME [key=value ...]
    distill train recipe=NAME

Runs the teacher first (rank 0 only) for any seed rows it has not labeled yet.
"""

if __name__ == "__main__" and not __package__:
    # run as a file: import the installed package rather than its modules as top-level names
    import pathlib
    import sys

    sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])

import random
import sys
from pathlib import Path

import torch
from accelerate import PartialState

from distill.card import write_card
from distill.data import check_held_out, load_split, read_jsonl
from distill.errors import DataError
from distill.students import student_class
from distill.tasks import build_task
from distill.teach import prepare_data, teach


def train(cfg, teach_first: bool = True) -> dict:
    state = PartialState(cpu=not torch.cuda.is_available())
    run_dir = Path(cfg.run_dir)
    task = build_task(cfg.task)

    # teacher labels: rank 0 fills in what is missing while the other ranks wait
    if teach_first and state.is_main_process:
        teach(cfg)
    state.wait_for_everyone()
    if cfg.teacher.dry_run:  # the estimate is all that was asked for
        return {"dry_run": True}

    # data: the teacher's valid labels, a slice held back to measure agreement with the teacher
    labeled = read_jsonl(run_dir / "teacher" / "seed.jsonl")
    rows = [r for r in labeled if r["label"] is not None]
    if not rows:
        raise DataError(f"{run_dir}/teacher/seed.jsonl has no valid teacher labels to train on "
                        f"({len(labeled)} rows, all with errors)")
    prepare_data(cfg)
    gold = load_split(cfg, "gold", task, labels=True)
    check_held_out(gold["text"], [r["text"] for r in rows], "training data")
    random.Random(cfg.seed).shuffle(rows)
    n_val = int(len(rows) * cfg.train.val_fraction)
    val_rows, train_rows = rows[:n_val], rows[n_val:]

    # model: base (hub, local or tiny random) wrapped with LoRA
    student = student_class(cfg.student).create(cfg.student, task, cfg.seed)

    # train
    metrics = student.fit(train_rows, cfg.train, run_dir / "student" / "checkpoints")

    # save: adapter, tokenizer, metadata and model card, on the main process
    if state.is_main_process:
        if val_rows:
            preds = student.predict(val_rows, cfg.label.batch_size, progress=False)
            scores = task.metrics([r["label"] for r in val_rows], [p["label"] for p in preds])
            metrics["val_agreement"] = scores[task.main_metric]
        metrics.update(train_rows=len(train_rows), val_rows=len(val_rows),
                       teacher=cfg.teacher.model, simulated_teacher=bool(cfg.teacher.simulated),
                       world_size=state.num_processes)
        meta = student.save(run_dir / "student", metrics)
        write_card(cfg, run_dir)
        print(f"student saved to {run_dir / 'student'} (adapter {meta['adapter_hash']}): "
              f"loss {metrics['train_loss']:.4f}, agreement with teacher {metrics.get('val_agreement', float('nan')):.3f}")
        metrics = meta
    state.wait_for_everyone()
    return metrics


def main(argv: list[str] | None = None) -> None:
    from distill.cli import run_stage

    run_stage(train, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
