"""The cascade: corpus rows the student is unsure of go to the teacher, or to people for review.

    distill cascade recipe=NAME [label.target=0.95] [label.target_metric=main|macro_f1|worst_recall]
    distill route recipe=NAME label.threshold=auto      # send the unsure corpus rows (distill/route.py)
    distill route recipe=NAME label.route_fraction=0.1  # or the batch's least sure 10%, no gold needed

`distill cascade` replays the choice on gold: for each threshold, rows under it take the teacher's
gold-text label and the rest keep the student's. It picks the threshold that reaches
`label.target` on `label.target_metric` (the task's main metric: accuracy, entity F1 for NER,
micro F1 for multi-label; or macro-F1, or the worst class's recall) with the fewest teacher calls,
checks that choice on the half of gold it was not picked on, writes cascade/threshold.json (read
by `label.threshold=auto`) and cascade/curve.json with all three metrics at every threshold, and
plots coverage, quality and teacher cost in cascade/curve.png.
"""

from __future__ import annotations

if __name__ == "__main__":
    import pathlib
    import sys

    if not __package__:  # run as a file: import the installed package, not its modules as top-level names
        sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])
    from distill.runner import before_imports

    before_imports("cascade", sys.argv[1:])  # help, or quiet libraries, before torch and tqdm are imported

import hashlib
import json
import math
import shlex
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from distill.data import load_split, read_json, read_jsonl, read_parquet
from distill.errors import ConfigError, DataError
from distill.schema import ROUTING
from distill.rundir import RunDir
from distill.stats import scores
from distill.students.base import student_identity
from distill.tasks import Task, build_task
from distill.tasks.base import Metrics
from distill.teacher.client import prices, usd

def check_routing(cfg) -> None:
    """A threshold given as auto has its file, before any row is labeled (the schema checked the rest)."""
    resolve_threshold(cfg)


def routes_any(cfg) -> bool:
    """Whether corpus rows leave the student at all (a threshold, a fraction or a budget is set)."""
    return any(cfg.label.get(k) is not None for k in ROUTING)


def resolve_threshold(cfg, files: list[Path] | None = None) -> float | None:
    """The confidence under which corpus rows leave the student: `label.threshold` (a number, or
    auto for cascade/threshold.json), or one set from the batch's own confidences, without gold:
    `label.route_fraction` (that share of the rows, least sure first) or `label.route_budget_usd`
    (as many as that buys at the teacher's cost per seed row). None: no routing."""
    fraction, budget = cfg.label.get("route_fraction"), cfg.label.get("route_budget_usd")
    if fraction is not None or budget is not None:
        if files is None:
            return None  # known once the corpus is labeled
        conf = student_confidences(files)
        if budget is not None:
            per_row = seed_cost_per_row(cfg)
            if per_row is None:
                raise ConfigError(f"label.route_budget_usd needs the teacher's cost per row, measured on the billed "
                                  f"rows of {RunDir(cfg.run_dir).teacher('seed')}; it has none: give "
                                  "label.route_fraction instead")
            fraction = min(1.0, math.floor(float(budget) / per_row) / max(1, len(conf)))
        return fraction_threshold(conf, float(fraction))
    value = cfg.label.threshold
    if value is None:
        return None
    if value == "auto":
        path = RunDir(cfg.run_dir).cascade_threshold
        if not path.exists():
            raise ConfigError(f"label.threshold=auto reads {path}, which `distill cascade recipe={cfg.recipe}` "
                              "writes: run that first, or give a number")
        picked = json.loads(path.read_text())
        meta = read_json(RunDir(cfg.run_dir).student_files.record)
        if meta and picked.get("student") and picked["student"] != student_identity(meta):
            print(f"label: warning: {path} was picked for student {picked['student']}, not the current one; "
                  f"rerun distill cascade recipe={cfg.recipe} to pick it for this student", file=sys.stderr)
        return float(picked["threshold"])
    return float(value)


def student_confidences(files: list[Path]) -> np.ndarray:
    """Each corpus row's confidence as the student labeled it (-1 for an invalid label: routed first)."""
    conf, seen = [], set()
    for f in files:
        table = pq.read_table(f, columns=["id", "student_label", "student_confidence"]).to_pydict()
        for i, lab, c in zip(table["id"], table["student_label"], table["student_confidence"]):
            if i not in seen:
                seen.add(i)
                conf.append(-1.0 if lab is None or c is None else float(c))
    return np.array(conf)


def fraction_threshold(conf: np.ndarray, fraction: float) -> float:
    """The threshold that sends the `fraction` least sure rows (ties at the boundary stay)."""
    k = round(fraction * len(conf))
    if k <= 0:
        return 0.0
    if k >= len(conf):
        return math.nextafter(1.0, 2.0)
    return float(max(np.partition(conf, k)[k], 0.0))


def cost_per_row(cfg, records: list[dict]) -> float | None:
    """The teacher's mean billed USD per row of `records` at the configured price (None: no price or
    no billed row)."""
    price = prices(cfg.teacher.model, cfg.teacher.get("price"))
    billed = [r for r in records if r.get("prompt_tokens")]
    if not price or not billed:
        return None
    return sum(usd(price, r["prompt_tokens"], r["completion_tokens"]) for r in billed) / len(billed)


def seed_cost_per_row(cfg) -> float | None:
    return cost_per_row(cfg, read_jsonl(RunDir(cfg.run_dir).teacher("seed")))


# -- picking the threshold on gold ------------------------------------------------------------

def target_metric(cfg, task: Task) -> str:
    """`label.target_metric`: main (the task's main metric), macro_f1 or worst_recall (the lowest
    per-class recall among the classes gold holds)."""
    name = cfg.label.get("target_metric", "main")
    return task.main_metric if name == "main" else name


def quality(task: Metrics, counts: np.ndarray, right: np.ndarray) -> dict:
    """The main metric, macro-F1 and the worst per-class recall of one set of labels."""
    s = scores(counts, right, task.labels)
    recalls = [c["recall"] for c in s["per_class"].values() if c["support"] > 0]
    return {task.main_metric: s[task.main_metric], "macro_f1": s["macro_f1"],
            "worst_recall": min(recalls) if recalls else 0.0}


def replay(task: Metrics, truth: list, student: list, confidence: list, teacher: list):
    """The cascade on labeled rows: each row's confidence (invalid: -1, always sent), and a
    function of a threshold giving which rows it sends and the quality of the mixed labels."""
    conf = np.array([c if lab is not None else -1.0 for lab, c in zip(student, confidence)])
    # per-row counts once; each threshold picks, row by row, the teacher's or the student's
    counts_s, counts_t = task.counts(truth, student), task.counts(truth, teacher)
    right_s, right_t = task.correct(truth, student), task.correct(truth, teacher)

    def at(threshold: float) -> tuple[np.ndarray, dict]:
        sent = conf < threshold
        return sent, quality(task, np.where(sent[:, None, None], counts_t, counts_s), np.where(sent, right_t, right_s))

    return conf, at


def curve(task: Metrics, truth: list, student: list, confidence: list, teacher: list,
          cost_per_row: float | None, points: int = 201, metric: str | None = None) -> list[dict]:
    """Quality (main metric, macro-F1, worst-class recall), coverage and teacher cost of the cascade
    at each threshold, replayed on gold; `quality` is `metric`'s value (default: the main metric)."""
    metric = metric or task.main_metric
    conf, at = replay(task, truth, student, confidence, teacher)
    values = sorted({float(c) for c in conf if c >= 0})
    if len(values) > points:  # quantiles keep the table small on a large gold set
        values = sorted({values[round(i * (len(values) - 1) / (points - 1))] for i in range(points)})
    out = []
    for t in [0.0, *values, math.nextafter(1.0, 2.0)]:
        sent, q = at(t)
        share = int(sent.sum()) / len(truth)
        out.append({"threshold": t, "coverage": 1 - share, "teacher_share": share, "quality": q[metric], **q,
                    "teacher_cost_per_1k_rows": cost_per_row * 1000 * share if cost_per_row is not None else None})
    return out


def pick(points: list[dict], target: float) -> tuple[dict, bool]:
    """The cheapest point reaching the target; the best one when none does."""
    good = [p for p in points if p["quality"] >= target]
    if good:
        return min(good, key=lambda p: (p["teacher_share"], p["threshold"])), True
    return max(points, key=lambda p: (p["quality"], -p["teacher_share"])), False


def in_first_half(row_id: str) -> bool:
    return int(hashlib.sha256(f"cascade-half:{row_id}".encode()).hexdigest()[:8], 16) % 2 == 0


def held_out_check(task: Metrics, ids: list[str], truth: list, student: list, confidence: list, teacher: list,
                   target: float, metric: str) -> dict:
    """Pick the threshold on one half of gold (by a hash of each id) and score it on the other:
    what the target promises on rows the choice never saw."""
    half = np.array([in_first_half(i) for i in ids])
    take = lambda xs, m: [x for x, keep in zip(xs, m) if keep]  # noqa: E731
    first = [take(xs, half) for xs in (truth, student, confidence, teacher)]
    chosen, reached = pick(curve(task, *first, None, metric=metric), target)
    sent, check = replay(task, *(take(xs, ~half) for xs in (truth, student, confidence, teacher)))[1](chosen["threshold"])
    return {"threshold": chosen["threshold"], "reached_on_first_half": reached, "rows": [int(half.sum()), int((~half).sum())],
            "teacher_share": float(sent.mean()) if len(sent) else 0.0, **check, "met": check[metric] >= target}


def cascade(cfg) -> dict:
    run = RunDir(cfg.run_dir)
    task = build_task(cfg.task)
    metric = target_metric(cfg, task)
    gold = load_split(cfg, "gold", task, labels=True)
    student = {r["id"]: r for r in read_parquet(run.labels("gold"))}
    teacher_path = run.teacher("gold")
    if not teacher_path.exists():
        raise DataError(f"{teacher_path} does not exist: the cascade replays the teacher's answers on the gold "
                        f"texts; run distill teach recipe={cfg.recipe} monitor.score_teacher=true first")
    teacher = {r["id"]: r for r in read_jsonl(teacher_path)}
    ids, truth = gold["id"], gold["label"]
    missing = [i for i in ids if i not in student]
    if missing:
        raise DataError(f"{len(missing)} gold rows have no student label: run distill label recipe={cfg.recipe}")

    per_row = cost_per_row(cfg, list(teacher.values()))
    labels = [student[i]["label"] for i in ids]
    confidence = [student[i]["confidence"] for i in ids]
    answers = [teacher.get(i, {}).get("label") for i in ids]
    points = curve(task, truth, labels, confidence, answers, per_row, metric=metric)
    target = float(cfg.label.target)
    chosen, reached = pick(points, target)
    result = {"threshold": chosen["threshold"], "target": target, "student": next(iter(student.values()))["student"],
              "metric": metric, "main_metric": task.main_metric, "reached": reached,
              "gold_rows": len(ids), "expected": chosen, "student_only": points[0], "teacher_only": points[-1],
              "held_out": held_out_check(task, ids, truth, labels, confidence, answers, target, metric),
              "teacher_cost_per_row_usd": per_row, "teacher_model": cfg.teacher.model}
    run.cascade_curve.parent.mkdir(parents=True, exist_ok=True)
    run.cascade_curve.write_text(json.dumps(points, indent=1))
    run.cascade_threshold.write_text(json.dumps(result, indent=2))
    plot(points, chosen, target, metric, run.cascade_plot)
    print(format_result(result, points, run.cascade_plot, next_step(cfg)))
    return result


def next_step(cfg) -> str:
    """The route command that uses the threshold just saved (run_dir named unless the recipe's own)."""
    run_dir = "" if str(cfg.run_dir) == f"runs/{cfg.recipe}" else f" run_dir={shlex.quote(str(cfg.run_dir))}"
    return f"distill route recipe={cfg.recipe} label.threshold=auto{run_dir}"


def apart(value: float, other: float, digits: int = 3) -> str:
    """`value` with `digits` decimals, or more (up to 6) where fewer would print it like `other`:
    a best of 0.8940 against a target of 0.8943 must not read 0.894."""
    for d in range(digits, 7):
        if value == other or f"{value:.{d}f}" != f"{other:.{d}f}":
            return f"{value:.{d}f}"
    return f"{value:.6f}"


def format_result(result: dict, points: list[dict], plotted: Path, command: str) -> str:
    """The table and verdict; the last line is `command`, the next one to run, with the threshold."""
    metric, main = result["metric"], result["main_metric"]
    columns = [main, *(m for m in ("macro_f1", "worst_recall") if m != main)]
    priced = result["teacher_cost_per_row_usd"] is not None
    lines = [f"cascade on {result['gold_rows']} gold rows: rows under the threshold take the teacher's label "
             f"(target: {metric} >= {result['target']})",
             f"{'threshold':>10} {'coverage':>9} {'teacher':>8}" + "".join(f" {c:>12}" for c in columns)
             + (f" {'$ / 1k rows':>12}" if priced else "")]
    shown = {0, len(points) - 1, points.index(result["expected"])}
    shown |= {min(range(len(points)), key=lambda i: abs(points[i]["teacher_share"] - s)) for s in (0.1, 0.2, 0.3, 0.5)}
    for i in sorted(shown):
        p = points[i]
        mark = "  <- chosen" if p is result["expected"] else ""
        lines.append(f"{min(p['threshold'], 1.0):>10.4f} {p['coverage']:>9.1%} {p['teacher_share']:>8.1%}"
                     + "".join(f" {p[c]:>12.3f}" for c in columns)
                     + (f" {p['teacher_cost_per_1k_rows']:>12.4f}" if priced else "") + mark)
    if result["reached"]:
        lines.append(f"label.threshold={result['threshold']:.4f} reaches {metric} >= {result['target']} with the "
                     f"teacher on {result['expected']['teacher_share']:.1%} of rows")
    else:
        target = result["target"]
        lines.append(f"no threshold reaches {metric} {target} on gold (best {apart(result['expected']['quality'], target)}, "
                     f"teacher alone {apart(result['teacher_only']['quality'], target)}); saved the best threshold instead")
    h = result["held_out"]
    lines.append(f"picked on half of gold ({h['rows'][0]} rows) and scored on the other ({h['rows'][1]}): {metric} "
                 f"{apart(h[metric], result['target'])} with the teacher on {h['teacher_share']:.1%} ({'meets' if h['met'] else 'misses'} "
                 "the target)")
    lines.append(f"curve: {plotted}; send the corpus rows under the threshold to the teacher with:")
    lines.append(f"{command}   # label.threshold={result['threshold']:.6g}, from cascade/threshold.json")
    return "\n".join(lines)


def plot(points: list[dict], chosen: dict, target: float, metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    ts = [min(p["threshold"], 1.0) for p in points]
    left.plot(ts, [p["quality"] for p in points], label=metric)
    left.plot(ts, [p["coverage"] for p in points], label="coverage (student keeps)")
    left.axhline(target, color="grey", linestyle=":", label=f"target {target}")
    left.axvline(min(chosen["threshold"], 1.0), color="red", linestyle="--", label="chosen threshold")
    left.set(xlabel="confidence threshold", ylim=(0, 1.02), title="coverage and quality on gold")
    left.legend(loc="lower left", fontsize=8)
    priced = points[0]["teacher_cost_per_1k_rows"] is not None
    xs = [p["teacher_cost_per_1k_rows"] if priced else 100 * p["teacher_share"] for p in points]
    right.plot(xs, [p["quality"] for p in points], marker=".", markersize=3)
    right.axhline(target, color="grey", linestyle=":")
    right.scatter([chosen["teacher_cost_per_1k_rows"] if priced else 100 * chosen["teacher_share"]],
                  [chosen["quality"]], color="red", zorder=3)
    right.set(xlabel="teacher cost, USD per 1,000 rows" if priced else "rows sent to the teacher (%)",
              ylabel=metric, title="quality against teacher cost")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    from distill.runner import run_stage

    run_stage(cascade, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
