"""`distill STAGE recipe=NAME [key=value ...]` and `distill recipes`."""

from __future__ import annotations

import sys

from distill.runner import STAGE_HELP, before_imports, run_stage

USAGE = """usage: distill STAGE recipe=NAME [key=value ...]

stages:
  teach     the teacher labels the seed pool (and the gold texts, for scoring)
  train     fine-tune the student on the teacher's labels, calibrate and export it
            (teaches first if needed; a rerun resumes from the last checkpoint)
  label     the student labels the corpus and the gold texts (sharded by accelerate launch,
            resumable); never asks the teacher
  merge     join the label shards into labels/{corpus,gold}.parquet (label does it at the end);
            never asks the teacher
  cascade   pick label.threshold on gold for label.target at the least teacher cost, plot it
  route     after label: corpus rows under label.threshold=X (or auto), or the least sure
            label.route_fraction=F of them, go to the teacher (label.route=teacher) or to review
            files (label.route=review); a random label.audit_fraction goes to the teacher too
  monitor   score student and teacher against human gold with CIs, test for drift against a
            baseline, record the run, write monitor/report.html; exits 1 on an alert
  run       teach, train, label, route (when routing or an audit slice is set) and monitor
            (exits 0 on alerts: gate on distill monitor)
  audit     model-collapse audit: students retrained on students' labels for N generations, with
            audit.generations=5 audit.strategies=[replace,accumulate,anchor] audit.anchor_fraction=0.1; writes
            audit/audit.json and audit/audit.html with a verdict per strategy; resumable
  grow      training data from the taxonomy: the teacher writes texts per label, a student trained
            on them finds matching corpus rows, the teacher judges them (yes/no), in grow.rounds=N;
            writes grow/ (ledger, judgments) and the last student to student/; resumable
  refine    rounds that send the least sure corpus rows (and a random slice) to the teacher and
            retrain the student on every answer so far: refine.rounds=2 refine.fraction=0.2;
            writes refine/corpus.parquet, refine/ledger.json and the last student to student/
  shortlist pick task.shortlist=K (labels offered per row) on gold for task.shortlist_target
  simulate  serve the recipe's simulated teacher over HTTP (teacher.sim.port=8000)
  recipes   list the recipes and config options, and the file each comes from

Your own recipes: --recipes DIR (or DISTILL_RECIPES=DIR1:DIR2) is searched before the recipes
that ship with distill; DIR may hold config groups too (DIR/student/NAME.yaml).

Any key=value overrides the recipe, e.g. train.epochs=3 teacher.model=gpt-4o-mini.
distill STAGE --help: what the stage reads and writes, and its main keys; --verbose: the libraries'
own logs and progress bars too (transformers' warnings, the Trainer's loss every logging step).
Multi-process training: accelerate launch [--config_file distill/configs/accelerate/X.yaml] -m distill.train recipe=NAME
Multi-process labeling: accelerate launch --num_processes N -m distill.label recipe=NAME"""


def run_all(cfg) -> dict:
    from distill.label import label
    from distill.monitor import monitor
    from distill.route import check_route, route, route_needed
    from distill.tasks import build_task
    from distill.teach import teach
    from distill.train import train

    if route_needed(cfg):  # what routing needs (a key, corpus labels for the simulator) is said before paying
        check_route(cfg, build_task(cfg.task))
    summary = teach(cfg)
    if summary.get("dry_run") or summary.get("stopped"):
        return summary  # an estimate only, or the budget ran out: nothing more to do
    train(cfg, teach_first=False)
    label(cfg)
    if route_needed(cfg):
        route(cfg)
    # the run itself succeeded: alerts are printed and recorded; gate cron and CI on `distill monitor`
    return {**monitor(cfg), "exit_status": 0}


def fail(message: str) -> None:
    print(f"distill: error: {message}", file=sys.stderr)
    sys.exit(2)


def list_recipes(argv: list[str]) -> None:
    """Every recipe (with its first comment line) and config option, and where each comes from."""
    from distill.config import GROUPS, PACKAGE, available_recipes, group_files
    from distill.errors import ConfigError
    from distill.runner import take_recipes_option

    try:
        rest = take_recipes_option(argv)
    except ConfigError as e:
        fail(str(e))
    if rest:
        fail(f"distill recipes takes --recipes DIR only, not {' '.join(rest)}")
    recipes = available_recipes()
    width = max(map(len, recipes))
    print("recipes (distill STAGE recipe=NAME):")
    for name, path in recipes.items():
        about = path.read_text().partition("\n")[0].lstrip("# ").strip()
        print(f"  {name:<{width}}  {about}\n  {'':<{width}}  {path}")
    print(f"\nconfig groups (GROUP=OPTION); built in unless a folder is named: {PACKAGE / 'configs'}")
    for group in GROUPS:
        options = [n if p.is_relative_to(PACKAGE) else f"{n} ({p})" for n, p in group_files(group).items()]
        print(f"  {group}: {', '.join(options)}")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    stage, rest = argv[0], argv[1:]
    if stage == "recipes":
        if "-h" in rest or "--help" in rest:
            return print("usage: distill recipes [--recipes DIR]\n\nlists the recipes and config options, "
                         "and the file each comes from")
        return list_recipes(rest)
    if stage in STAGE_HELP:
        before_imports(stage, rest)  # help, or quiet libraries, before the stages import torch and tqdm
    from distill.audit import audit
    from distill.cascade import cascade
    from distill.grow import grow
    from distill.label import label, merge
    from distill.monitor import monitor
    from distill.refine import refine
    from distill.route import route
    from distill.shortlist import shortlist
    from distill.teach import teach
    from distill.teacher.simulator import serve
    from distill.train import train

    stages = {"teach": teach, "train": train, "label": label, "merge": merge, "cascade": cascade,
              "route": route, "monitor": monitor, "run": run_all, "audit": audit, "grow": grow,
              "refine": refine, "shortlist": shortlist, "simulate": serve}
    if stage not in stages:
        fail(f"unknown stage {stage!r}; choose one of: {', '.join(stages)}\n\n{USAGE}")
    run_stage(stages[stage], rest)


if __name__ == "__main__":
    main()
