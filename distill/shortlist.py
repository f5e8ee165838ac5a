"""Shortlists for large label sets: the teacher reads each row's K likeliest labels, not all of them.

    distill shortlist recipe=NAME [task.shortlist_target=0.95]

With `task.shortlist=K`, each row the teacher labels offers only its K likeliest labels (and
their definitions), which cuts the prompt of a 77-label taxonomy several times over; a row whose
true label is not among them cannot be labeled right. Labels are ranked by the trained student
when the run directory has one, else by the cosine similarity between the row and each label's
description (name and definition), both embedded by the student's base model.

`distill shortlist` chooses K: it ranks the labels of the gold texts, takes the smallest K whose
shortlists hold the gold label on at least `task.shortlist_target` of one half of gold (the dev
half), and reports how often they do on the other half, so the promise is checked on rows it was
not chosen on. Writes shortlist/shortlist.json and shortlist/shortlist.png.
"""

from __future__ import annotations

if __name__ == "__main__":
    import pathlib
    import sys

    if not __package__:  # run as a file: import the installed package, not its modules as top-level names
        sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])
    from distill.runner import before_imports

    before_imports("shortlist", sys.argv[1:])  # help, or quiet libraries, before torch and tqdm are imported

import json
import sys
from pathlib import Path

import numpy as np

from distill.config import save_config
from distill.data import content_id, load_split, prepare_data
from distill.schema import check_shortlist
from distill.rundir import RunDir, StudentDir
from distill.students import student_class
from distill.students.base import free_memory
from distill.tasks import build_task

SIZES = (1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 60, 80, 100, 150, 200, 300, 500)


def size(cfg, task) -> int | None:
    """task.shortlist as a number of labels (None: every label); the schema checked it."""
    k = cfg.task.get("shortlist")
    return None if k is None else min(k, len(task.labels))


def label_scores(cfg, task, rows: list[dict]) -> tuple[np.ndarray, str]:
    """[rows, labels] scores, higher for likelier labels, and where they came from."""
    cls, student_dir = student_class(cfg.student), RunDir(cfg.run_dir).student
    if StudentDir(student_dir).record.is_file():
        student = cls.load(cfg.student, task, student_dir)
        scores = student.class_scores(rows, cfg.label.batch_size, progress=True)
        del student
        free_memory()
        return scores, "student"
    definitions = task.definitions()
    described = [f"{label.replace('_', ' ')}: {definitions.get(label, '')}".strip(": ") for label in task.labels]
    texts, labels = cls.base_embeddings(cfg.student, task, cfg.seed, [r["text"] for r in rows], described,
                                        batch_size=cfg.label.batch_size)
    texts /= np.linalg.norm(texts, axis=1, keepdims=True).clip(1e-9)
    labels /= np.linalg.norm(labels, axis=1, keepdims=True).clip(1e-9)
    return texts @ labels.T, "embeddings"


def with_shortlists(cfg, task, rows: list[dict], k: int, path: Path) -> list[dict]:
    """The rows, each with `shortlist`: its k likeliest labels, likeliest first. Each row's
    shortlist is kept in `path` once made, so a rerun offers the same labels whatever ranks them
    then, and finds the replies it paid for in the cache."""
    from distill.data import read_jsonl

    kept = {r["id"]: r["shortlist"] for r in read_jsonl(path) if len(r["shortlist"]) == k}
    todo = [r for r in rows if r["id"] not in kept]
    if todo:
        scores, source = label_scores(cfg, task, todo)
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        made = {r["id"]: [task.labels[j] for j in t] for r, t in zip(todo, top)}
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.writelines(json.dumps({"id": i, "shortlist": s, "source": source}) + "\n" for i, s in made.items())
        kept.update(made)
    return [{**r, "shortlist": kept[r["id"]]} for r in rows]


def dev_half(ids: list[str]) -> np.ndarray:
    """Which gold rows choose K (the rest check it): half of them, by a hash of their id."""
    return np.array([int(content_id(f"shortlist\x00{i}"), 16) % 2 == 0 for i in ids])


def shortlist(cfg) -> dict:
    task = build_task(cfg.task)
    check_shortlist(task)
    target = float(cfg.task.get("shortlist_target", 0.95))
    run = RunDir(cfg.run_dir)
    save_config(cfg, run.root)
    prepare_data(cfg)
    gold = list(load_split(cfg, "gold", task, labels=True))
    scores, source = label_scores(cfg, task, gold)
    truth = np.array([task.labels.index(r["label"]) for r in gold])
    rank = (scores > scores[np.arange(len(gold)), truth][:, None]).sum(1)  # 0: the gold label ranks first
    dev = dev_half([r["id"] for r in gold])
    table = []
    for k in [s for s in SIZES if s < len(task.labels)] + [len(task.labels)]:
        prompt = task.system_prompt(shortlist=task.labels[:k] if k < len(task.labels) else None)
        table.append({"k": k, "dev_recall": round(float((rank[dev] < k).mean()), 4),
                      "held_out_recall": round(float((rank[~dev] < k).mean()), 4),
                      "prompt_tokens": len(prompt) // 4})
    chosen = next(t for t in table if t["dev_recall"] >= target)
    result = {"source": source, "target": target, "k": chosen["k"], "promised": chosen["dev_recall"],
              "held_out": chosen["held_out_recall"], "dev_rows": int(dev.sum()), "held_out_rows": int((~dev).sum()),
              "prompt_tokens": {"all_labels": table[-1]["prompt_tokens"], "shortlist": chosen["prompt_tokens"]},
              "table": table}
    run.shortlist.parent.mkdir(parents=True, exist_ok=True)
    run.shortlist.write_text(json.dumps(result, indent=2))
    plot(result, len(task.labels), run.shortlist_plot)
    print(f"shortlist ({source}): K={result['k']} holds the gold label on {result['promised']:.1%} of "
          f"{result['dev_rows']} dev gold rows (target {target:.0%}) and {result['held_out']:.1%} of "
          f"{result['held_out_rows']} held-out ones; the system prompt shrinks from about "
          f"{result['prompt_tokens']['all_labels']} to {result['prompt_tokens']['shortlist']} tokens.\n"
          f"shortlist: set task.shortlist={result['k']}  ({run.shortlist}, {run.shortlist_plot})")
    return result


def plot(result: dict, n_labels: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = [t["k"] for t in result["table"]]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(ks, [t["dev_recall"] for t in result["table"]], "o-", label="dev half (chooses K)")
    ax.plot(ks, [t["held_out_recall"] for t in result["table"]], "s--", label="held-out half")
    ax.axhline(result["target"], color="grey", lw=0.8, ls=":")
    ax.axvline(result["k"], color="tab:red", lw=0.8, label=f"K = {result['k']}")
    ax.set_xscale("log")
    ax.set_xlabel(f"labels offered per row (of {n_labels})")
    ax.set_ylabel("gold label in the shortlist")
    ax.set_title(f"Shortlist recall on gold ({result['source']})")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    from distill.runner import run_stage

    run_stage(shortlist, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
