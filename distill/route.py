"""Route stage: the corpus rows the student is unsure of go to the teacher, or to people for review.

    distill route recipe=NAME label.threshold=0.8 [label.route=teacher|review]
    distill route recipe=NAME label.threshold=auto    # the threshold `distill cascade` picked on gold

Runs after `distill label`. Corpus rows labeled under the threshold, and invalid ones, are sent to
the teacher (cached, within `teacher.budget_usd`, resumable: a rerun asks only what is still
unanswered); its answers go to labels/teacher/corpus.jsonl and the merge writes them into
labels/corpus.parquet. Rows the teacher fails on, and every unsure row under `label.route=review`,
go to review files for Label Studio and Argilla. After `teach`, this is the only stage that calls
(and pays) the teacher.
"""

if __name__ == "__main__" and not __package__:
    # run as a file: import the installed package rather than its modules as top-level names
    import pathlib
    import sys

    sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])

import json
import sys
from pathlib import Path

from distill.cascade import resolve_threshold, teacher_answers_path, unsure_rows
from distill.errors import ConfigError, DataError
from distill.label import label_files, merge
from distill.tasks import build_task
from distill.teacher import Teacher, open_teacher
from distill.teacher.simulator import sim_rows


def check_route(cfg, task) -> float:
    """The threshold, and for a real teacher its API key, before anything is read or sent."""
    threshold = resolve_threshold(cfg)
    if threshold is None:
        raise ConfigError("distill route needs label.threshold: a confidence in [0, 1], or auto to use the "
                          f"one `distill cascade recipe={cfg.recipe}` picked on gold")
    if cfg.label.route == "teacher" and not cfg.teacher.simulated:
        Teacher(cfg.teacher, task, cache_path=":memory:")  # raises with the variable to export
    return threshold


def route(cfg) -> dict:
    run_dir = Path(cfg.run_dir)
    task = build_task(cfg.task)
    threshold = check_route(cfg, task)

    files = label_files(run_dir / "labels" / "corpus")
    if not files:
        raise DataError(f"{run_dir / 'labels' / 'corpus'} has no labels to route: run distill label "
                        f"recipe={cfg.recipe} first")

    # the teacher answers the unsure rows of the label files `distill label` wrote (review needs no answers)
    stats, asked = None, None
    if cfg.label.route == "teacher":
        asked = unsure_rows(task, files, threshold)
        if asked:
            with open_teacher(cfg.teacher, task, sim_rows(cfg, task) if cfg.teacher.simulated else ()) as teacher:
                stats = teacher.label(asked, teacher_answers_path(run_dir), "teacher: low-confidence rows")

    # the merge writes the answers into labels/corpus.parquet; rows without one go to review files
    summary = merge(cfg, threshold=threshold, asked=asked)
    summary["corpus"]["cascade"]["teacher"] = stats
    (run_dir / "labels" / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None) -> None:
    from distill.runner import run_stage

    run_stage(route, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
