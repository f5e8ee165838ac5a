"""Teach stage: the teacher labels the seed pool (training data) and the gold texts (for scoring).

    distill teach recipe=NAME
"""

from __future__ import annotations

if __name__ == "__main__":
    import pathlib
    import sys

    if not __package__:  # run as a file: import the installed package, not its modules as top-level names
        sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])
    from distill.runner import before_imports

    before_imports("teach", sys.argv[1:])  # help, or quiet libraries, before torch and tqdm are imported

import json
import sys
from functools import partial

from distill.config import save_config
from distill.data import check_held_out, load_split, prepare_data, read_jsonl
from distill.rundir import RunDir
from distill.schema import check_labels
from distill.shortlist import size as shortlist_size
from distill.shortlist import with_shortlists
from distill.tasks import build_task
from distill.teacher import Teacher, open_teacher
from distill.teacher.batch import label_batch
from distill.teacher.cache import spent as cache_spent
from distill.teacher.client import finished, label_summary


def teach(cfg) -> dict:
    run = RunDir(cfg.run_dir)
    save_config(cfg, run.root)
    task = build_task(cfg.task)
    prepare_data(cfg)

    # data: the seed pool is what the student learns from; gold must be held out from it
    seed = load_split(cfg, "seed", task)
    gold = load_split(cfg, "gold", task, labels=True)
    check_held_out(gold["text"], seed["text"], "seed pool")

    # label: the seed pool, and the gold texts so the monitor can score the teacher too;
    # the teacher is only contacted when some row is still unlabeled
    jobs = {"seed": (seed, "teacher: seed pool")}
    if cfg.monitor.score_teacher:
        jobs["gold"] = (gold, "teacher: gold texts")
    paths = {name: run.teacher(name) for name in jobs}
    records = {name: read_jsonl(path) for name, path in paths.items()}
    done = {name: {r["id"] for r in records[name] if finished(r)} for name in jobs}
    pending = {name: [r for r in rows if r["id"] not in done[name]] for name, (rows, _) in jobs.items()}
    if pending["seed"] and not cfg.teacher.dry_run:  # a simulated teacher answers seed rows from their labels
        check_labels(cfg, "seed")
    if (k := shortlist_size(cfg, task)) and any(pending.values()):
        # task.shortlist: each row offers the teacher only its k likeliest labels
        listed = iter(with_shortlists(cfg, task, [r for rows in pending.values() for r in rows], k,
                                      run.teacher_shortlists))
        pending = {name: [next(listed) for _ in rows] for name, rows in pending.items()}
    stats = dict.fromkeys(jobs)
    stopped = None
    if cfg.teacher.dry_run:
        return dry_run(cfg, task, pending)
    if any(pending.values()):
        sim_rows = {"gold": gold, "seed": seed} if cfg.teacher.simulated else []
        # the budget covers every request billed into the teacher's cache, across reruns and stages
        with open_teacher(cfg.teacher, task, sim_rows) as teacher:
            labeler = partial(label_batch, teacher) if cfg.teacher.mode == "batch" else teacher.label
            for name in [n for n in jobs if pending[n]]:
                stats[name] = labeler(pending[name], paths[name], jobs[name][1])
                records[name] = read_jsonl(paths[name])
                if stats[name]["stopped"]:
                    stopped = stats[name]["stopped"]
                    break

    # provenance comes from the rows: labels made earlier by a simulated teacher stay marked so
    simulated = any(r["simulated"] for rows in records.values() for r in rows)
    summary = {"model": cfg.teacher.model, "simulated": simulated, "stopped": stopped,
               "spent_usd": round(cache_spent(cfg.teacher.cache), 6),
               **{name: {**label_summary(rows), "rows_expected": len(jobs[name][0]), "this_run": stats[name]}
                  for name, rows in records.items()}}
    if simulated:
        summary["sim"] = {k: cfg.teacher.sim.get(k) for k in ("accuracy", "noise", "auroc", "hardness")}
    run.teacher_summary.write_text(json.dumps(summary, indent=2))
    print(format_summary(summary, cfg))
    return summary


def dry_run(cfg, task, pending: dict) -> dict:
    """Rows, estimated tokens and estimated USD for what is still unlabeled; no request is made."""
    teacher = Teacher(cfg.teacher, task, simulated=cfg.teacher.simulated, need_key=False)
    estimates = {name: teacher.estimate(rows) for name, rows in pending.items()}
    total = {k: sum(e[k] or 0 for e in estimates.values()) for k in next(iter(estimates.values()))}
    lines = [f"dry run: teacher {cfg.teacher.model} ({cfg.teacher.mode} mode), nothing was sent",
             f"{'split':<6} {'rows':>7} {'cached':>7} {'prompt tok':>11} {'answer tok':>11} {'online $':>10} {'batch $':>10}"]
    for name, e in {**estimates, "total": total}.items():
        money = (f"{e['cost_usd']:>10.4f} {e['batch_cost_usd']:>10.4f}" if teacher.price is not None
                 else f"{'no price':>10} {'':>10}")
        lines.append(f"{name:<6} {e['rows']:>7} {e['cached']:>7} {e['prompt_tokens']:>11} {e['completion_tokens']:>11} {money}")
    lines.append("(tokens estimated at 4 characters each; cached rows cost nothing)")
    print("\n".join(lines))
    return {"dry_run": True, "model": cfg.teacher.model, **estimates}


def format_summary(summary: dict, cfg) -> str:
    lines = []
    for name in ("seed", "gold"):
        if name not in summary:
            continue
        s, run = summary[name], summary[name]["this_run"]
        line = (f"teacher {summary['model']}{' (simulated)' if summary['simulated'] else ''}, {name}: "
                f"{s['labeled']}/{s['rows_expected']} rows labeled"
                + (f", {s['invalid']} answers invalid (asked again on the next run)" if s["invalid"] else "")
                + f", errors {s['errors'] or 'none'}")
        if run:
            line += (f"; this run: {run['billed']} billed requests, {run['cache_hits']} cache hits, "
                     f"{run['retries']} retries, {run['reasks']} re-asks, "
                     f"{run['prompt_tokens'] + run['completion_tokens']} tokens, ${run['cost_usd']:.4f}")
        lines.append(line)
    lines.append(f"teacher: ${summary['spent_usd']:.4f} spent in all (every request billed into {cfg.teacher.cache})")
    if summary["stopped"] == "budget":
        lines.append(f"teacher: stopped at the budget (teacher.budget_usd={cfg.teacher.budget_usd}); "
                     f"every finished row is kept. Raise teacher.budget_usd and rerun to label the rest.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from distill.runner import run_stage

    run_stage(teach, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
