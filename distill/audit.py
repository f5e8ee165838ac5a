"""Audit stage: do students collapse when each learns from the previous one's labels, and which
retraining policy prevents it?

    distill audit recipe=NAME [audit.generations=5] [audit.strategies=[replace,accumulate,anchor]] [audit.anchor_fraction=0.1]

Generation 0 learns from the teacher's seed labels. Generation k learns from the labels generation
k-1 gave the corpus (`replace`), from the teacher's labels and every earlier generation's corpus
labels (`accumulate`), or from generation k-1's corpus labels plus a fixed share of the
teacher-labeled seed rows (`anchor`). Every generation labels the corpus and gold, and the monitor
scores it on the same gold rows, paired against generation 0. A verdict per strategy (degrades,
stable, improves) compares the last generation with generation 0.

Each generation is a run directory of its own under {run_dir}/audit, finished when its
generation.json is written: a killed audit resumes at the next unfinished generation (and within
it, from the last training checkpoint). Writes audit/audit.json and audit/audit.html.
"""

if __name__ == "__main__":
    import pathlib
    import sys

    if not __package__:  # run as a file: import the installed package, not its modules as top-level names
        sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])
    from distill.runner import before_imports

    before_imports("audit", sys.argv[1:])  # help, or quiet libraries, before torch and tqdm are imported

import contextlib
import copy
import html
import json
import os
import random
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf, open_dict

from distill import stats
from distill.api import fit
from distill.config import save_config
from distill.data import file_stamp, load_split, read_json, read_parquet, write_atomic
from distill.drift import fmt_p
from distill.errors import DataError
from distill.schema import check_audit
from distill.schema import strategies as chosen
from distill.label import label
from distill.monitor import monitor
from distill.report import html_table, png_tag
from distill.rundir import Audit, Generation, RunDir, finish, resume
from distill.students.base import free_memory
from distill.tasks import build_task
from distill.teach import teach
from distill.train import rows_hash, teacher_labels

LEARNS = {"replace": "replace: learns from the previous generation's corpus labels",
          "accumulate": "accumulate: from the teacher's and every earlier generation's labels",
          "anchor": "anchor: from the previous generation's corpus labels plus {} fixed teacher rows"}
SOURCES = {"replace": "generation {} (replace)", "accumulate": "the teacher and generations 0 to {} (accumulate)",
           "anchor": "generation {} and the teacher (anchor)"}  # who labeled what a generation learns from
COLLAPSE_TESTS = ("accuracy", "f1", "macro_f1", "class_recall", "class_collapse")  # alerts: the labels got worse


def audit(cfg) -> dict:
    check_audit(cfg)
    run = RunDir(cfg.run_dir)
    out = run.audit
    task = build_task(cfg.task)
    strategies, generations, fraction = chosen(cfg), cfg.audit.generations, float(cfg.audit.anchor_fraction)

    # the teacher labels the seed pool (and gold, to be scored too) once, in the recipe's run directory
    taught = teach(cfg)
    if taught.get("dry_run") or taught.get("stopped"):
        return taught
    seed = [{**r, "source": "teacher"} for r in teacher_labels(run, task)]
    anchor = anchor_rows(seed, fraction, int(cfg.seed))
    gold = load_split(cfg, "gold", task, labels=True)
    ids, truth = list(gold["id"]), list(gold["label"])

    # generation 0, shared by every strategy; then generation by generation, each strategy in turn
    total = 1 + generations * len(strategies)
    gen0 = generation(cfg, task, out, "gen0", seed, "the teacher", "teacher", f"[1/{total}] generation 0")
    chains = {s: [gen0] for s in strategies}
    for k in range(1, generations + 1):
        for j, s in enumerate(strategies):
            rows = training_rows(s, seed, [g["corpus_labels"] for g in chains[s]], anchor)
            step = f"[{1 + (k - 1) * len(strategies) + j + 1}/{total}] {s} generation {k}"
            chains[s].append(generation(cfg, task, out, f"{s}/gen{k}", rows, SOURCES[s].format(k - 1),
                                        str(out.generation("gen0").root), step))

    # scores on gold from each generation's labels, and a verdict per strategy
    counts = {g["dir"]: gold_counts(out.generation(g["dir"]), task, ids, truth) for c in chains.values() for g in c}
    support = counts["gen0"][0][..., 2].sum(0)
    minority = int(np.argmin(np.where(support > 0, support, np.inf)))  # the rarest class in gold
    setup = describe(cfg, task, minority, len(ids), len(seed), len(anchor),
                     read_json(out.generation("gen0").metrics), support)
    result = {s: {"generations": [scored(g, *counts[g["dir"]], task, minority, cfg) for g in chain]}
              for s, chain in chains.items()}
    verdicts(result, counts, chains, minority, setup, cfg)
    for v in result.values():
        v["setup"] = setup
    out.summary.write_text(json.dumps(result, indent=2))
    page = write_html(result, setup, out.page)
    print(format_audit(result, setup))
    print(f"audit: {out.summary}\naudit: {page}")
    return result


# -- what each generation learns from ------------------------------------------------------------

def keep(row: dict) -> dict:
    return {k: row[k] for k in ("id", "text", "tokens", "label") if k in row}


def anchor_rows(seed: list[dict], fraction: float, rng_seed: int) -> list[dict]:
    """A fixed random share of the teacher's seed rows (the same rows in every generation)."""
    ordered = sorted(seed, key=lambda r: r["id"])
    return random.Random(rng_seed).sample(ordered, max(1, round(fraction * len(ordered)))) if ordered else []


def training_rows(strategy: str, seed: list[dict], corpus_labels: list[list[dict]], anchor: list[dict]) -> list[dict]:
    """The rows the next generation trains on, given the corpus labels of every generation so far
    (generation 0 first)."""
    if strategy == "replace":
        return corpus_labels[-1]
    if strategy == "accumulate":
        return seed + [r for labels in corpus_labels for r in labels]
    if strategy == "anchor":
        return corpus_labels[-1] + anchor
    raise ValueError(f"unknown strategy {strategy!r}")  # the schema allows only the three above


# -- one generation: train, label, monitor --------------------------------------------------------

def generation(cfg, task, out: Audit, key: str, rows: list[dict], trained_on: str, baseline: str, step: str) -> dict:
    """Train a student on `rows` in its own run directory out/key, let it label corpus and gold,
    and run the monitor against `baseline`; skipped when generation.json says it was done on
    these same rows and settings."""
    gen, number = out.generation(key), int(key.rpartition("gen")[2])
    gen_dir = gen.root
    gcfg = generation_config(cfg, gen_dir, baseline)
    files = {split: file_stamp(cfg.data[split].path) for split in ("seed", "corpus", "gold")}
    fingerprint = {"rows": rows_hash(rows), "seed": int(cfg.seed), "files": files,
                   **{k: OmegaConf.to_container(gcfg[k]) for k in ("task", "student", "train", "data", "monitor")}}
    done = resume(gen_dir, fingerprint, f"audit {step}: {gen_dir} was made from other rows or settings; redoing it",
                  record=gen.record)
    if done:
        print(f"audit {step}: already done ({gen_dir})")
        return {**done, "corpus_labels": corpus_labels(read_parquet(gen.labels("corpus")), number)}

    sources = Counter(r["source"] for r in rows)
    print(f"audit {step}: training on {len(rows)} rows ("
          + ", ".join(f"{n} from {s}" for s, n in sources.items()) + f") in {gen_dir}")
    # the monitor reads the teacher's files (its gold labels, its seed label mix) from the run directory
    if not gen.teacher_dir.exists():
        gen.teacher_dir.symlink_to(os.path.relpath(RunDir(cfg.run_dir).teacher_dir, gen_dir))
    save_config(gcfg, gen_dir)
    # what the generation learned from, on disk beside it
    rows = [keep(r) | {"source": r["source"]} for r in rows]
    write_atomic(gen.train_rows, "".join(json.dumps(r) + "\n" for r in rows))
    fit(gcfg, rows, gen.student, trained_on)
    label(gcfg)
    gen.history.parent.mkdir(parents=True, exist_ok=True)
    gen.history.unlink(missing_ok=True)  # a redone generation is a new audit
    with open(gen.monitor_log, "w") as f, contextlib.redirect_stdout(f):
        report = monitor(gcfg)  # printed to monitor/summary.txt: the audit prints one line per generation
    free_memory()  # the generation's models are gone: the next one starts with the device empty

    corpus = read_parquet(gen.labels("corpus"))
    conf = [r["student_confidence"] for r in corpus if r["student_confidence"] is not None]
    record = {
        "generation": number, "dir": key,
        "student": report["student"], "train_rows": len(rows), "train_sources": dict(sources),
        "entropy": stats.entropy_bits(task.label_counts([r["label"] for r in corpus])),
        "mean_confidence": float(np.mean(conf)) if conf else None,
        "label_mix": report["label_mix"]["student_corpus"], "corpus_invalid": report["corpus_invalid"],
        "error_persistence": report["tests"].get("accuracy", {}).get("error_persistence") if number else None,
        "alerts": [{k: a[k] for k in ("test", "severity", "reason")} for a in report["alerts"]],
        "monitor_report": str(gen.report),
    }
    finish(gen.record, record)
    return {**record, "corpus_labels": corpus_labels(corpus, number)}


def generation_config(cfg, gen_dir: Path, baseline: str):
    gcfg = copy.deepcopy(cfg)  # data paths were resolved against the recipe's own run directory
    with open_dict(gcfg):
        gcfg.run_dir = str(gen_dir)
        gcfg.label.threshold = None  # every corpus row keeps the student's label: that is what is audited
        gcfg.label.splits = ["corpus", "gold"]
        gcfg.monitor.baseline = baseline
        gcfg.monitor.history = None
        gcfg.monitor.embed_rows = 0  # the inputs are the same in every generation: nothing to test
        gcfg.train.push_to_hub = False
    return gcfg


def corpus_labels(rows: list[dict], number: int) -> list[dict]:
    """A generation's valid corpus labels as training rows for the next one."""
    return [{**keep(r), "source": f"gen{number}", "rationale": None} for r in rows if r["label"] is not None]


# -- scoring and verdicts ---------------------------------------------------------------------------

def gold_counts(gen: Generation, task, ids: list[str], truth: list) -> tuple[np.ndarray, np.ndarray]:
    """Per-row counts and rightness of a generation's gold labels."""
    labels = {r["id"]: r["label"] for r in read_parquet(gen.labels("gold"), columns=["id", "label"])}
    if any(i not in labels for i in ids):
        raise DataError(f"{gen.labels('gold')} lacks {sum(i not in labels for i in ids)} of the "
                        f"{len(ids)} gold rows: remove {gen.root} and run the audit again")
    pred = [labels[i] for i in ids]
    return task.counts(truth, pred), task.correct(truth, pred)


def scored(g: dict, counts: np.ndarray, correct: np.ndarray, task, minority: int, cfg) -> dict:
    m = stats.scores(counts, correct, task.labels)
    ci = stats.bootstrap_ci(counts, correct, "macro_f1", int(cfg.monitor.n_boot), int(cfg.monitor.seed))
    main = {"accuracy": m["accuracy"], "accuracy_ci": ci["accuracy"], "macro_f1": m["macro_f1"],
            "macro_f1_ci": ci["macro_f1"], "minority_recall": float(stats.prf_arrays(counts.sum(0))[1][minority]),
            "minority_recall_ci": ci["recall"][minority]}
    main[task.f1_key] = m[task.f1_key]  # the task's F1 headline (entity-level micro F1 for NER)
    return {**main, **{k: v for k, v in g.items() if k not in ("corpus_labels", "fingerprint")}}


def recall_of(k: int):
    return lambda sums: stats.prf_arrays(sums)[1][..., k]


def verdicts(result: dict, counts: dict, chains: dict, minority: int, setup: dict, cfg) -> None:
    """The last generation of each strategy against generation 0 on the same gold rows: paired
    permutation tests of macro-F1 (either way) and a sign-flip test of a minority-recall drop,
    Holm across every strategy's tests. Degrades: a drop survives; improves: a macro-F1 gain
    survives and nothing dropped; stable otherwise."""
    n_perm, seed, alpha = int(cfg.monitor.n_perm), int(cfg.monitor.seed), float(cfg.monitor.alpha)
    base, base_correct = counts["gen0"]
    raw, ev = {}, {}
    for s, chain in chains.items():
        last, last_correct = counts[chain[-1]["dir"]]
        gens = result[s]["generations"]
        f1s = [g["macro_f1"] for g in gens]
        ev[s] = {
            "compared": f"generation {chain[-1]['generation']} vs generation 0 on {len(base)} gold rows",
            "macro_f1": [f1s[0], f1s[-1]],
            "macro_f1_change_ci": stats.paired_bootstrap_diff(base, last, stats.macro_f1, int(cfg.monitor.n_boot), seed),
            "minority_recall": [gens[0]["minority_recall"], gens[-1]["minority_recall"]],
            "minority_recall_change_ci": stats.paired_bootstrap_diff(base, last, recall_of(minority),
                                                                     int(cfg.monitor.n_boot), seed),
            "accuracy": [gens[0]["accuracy"], gens[-1]["accuracy"]],
            "mcnemar": [int((base_correct & ~last_correct).sum()), int((~base_correct & last_correct).sum())],
            "macro_f1_slope_per_generation": float(np.polyfit(range(len(f1s)), f1s, 1)[0]),
            "entropy": [gens[0]["entropy"], gens[-1]["entropy"]],
            "first_alert": next((g["generation"] for g in gens[1:]
                                 if any(a["test"] in COLLAPSE_TESTS and a["severity"] != "info" for a in g["alerts"])),
                                None),
        }
        raw[f"{s}:macro_f1_drop"] = stats.paired_permutation(base, last, stats.macro_f1, n_perm, seed)
        raw[f"{s}:macro_f1_gain"] = stats.paired_permutation(last, base, stats.macro_f1, n_perm, seed)
        raw[f"{s}:minority_recall_drop"] = stats.signflip_p(base[:, minority, 0] - last[:, minority, 0], n_perm, seed)
    adjusted = stats.holm(raw)
    for s in chains:
        p = {t: {"p": raw[f"{s}:{t}"], "p_holm": adjusted[f"{s}:{t}"]}
             for t in ("macro_f1_drop", "macro_f1_gain", "minority_recall_drop")}
        sig = {t: v["p_holm"] < alpha for t, v in p.items()}
        verdict = ("degrades" if sig["macro_f1_drop"] or sig["minority_recall_drop"]
                   else "improves" if sig["macro_f1_gain"] else "stable")
        e = ev[s]
        thin = ", insufficient support" if setup["minority_support"] < int(cfg.monitor.min_support) else ""
        lo, hi = e["macro_f1_change_ci"]
        rlo, rhi = e["minority_recall_change_ci"]
        why = (f"macro-F1 {e['macro_f1'][0]:.3f} -> {e['macro_f1'][1]:.3f} (change, unadjusted 95% CI "
               f"[{lo:+.3f}, {hi:+.3f}]; "
               f"p drop {fmt_p(p['macro_f1_drop']['p_holm'])}, p gain {fmt_p(p['macro_f1_gain']['p_holm'])}, Holm), "
               f"recall of {setup['minority_class']} ({setup['minority_support']} gold rows{thin}) "
               f"{e['minority_recall'][0]:.3f} -> {e['minority_recall'][1]:.3f} "
               f"([{rlo:+.3f}, {rhi:+.3f}]; p drop {fmt_p(p['minority_recall_drop']['p_holm'])}), "
               f"{e['compared']}")
        result[s].update(verdict=verdict, reason=why, evidence={**e, "tests": p, "alpha": alpha})


def describe(cfg, task, minority: int, gold_rows: int, seed_rows: int, anchored: int, gen0_report: dict,
             gold_support: np.ndarray) -> dict:
    teacher = read_json(RunDir(cfg.run_dir).teacher_summary)
    on_gold = gen0_report.get("systems", {}).get("teacher")
    return {"recipe": cfg.recipe, "task": task.kind, "student": cfg.student.kind, "gold_rows": gold_rows,
            "minority_class": task.labels[minority], "minority_support": int(gold_support[minority]),
            "teacher": teacher.get("model"),
            "simulated_teacher": teacher.get("simulated"), "teacher_seed_rows": seed_rows,
            "teacher_on_gold": {k: on_gold[k] for k in ("accuracy", "macro_f1")} if on_gold else None,
            "gold_entropy": stats.entropy_bits(gold_support),
            "anchor_rows": anchored if "anchor" in chosen(cfg) else None,
            "generations": int(cfg.audit.generations), "strategies": chosen(cfg)}


# -- output ------------------------------------------------------------------------------------------

def format_audit(result: dict, m: dict) -> str:
    lines = [f"distill audit · recipe {m['recipe']} · {m['gold_rows']} human gold rows · minority class "
             f"{m['minority_class']} · generation 0 trained on {m['teacher_seed_rows']} teacher labels",
             f"{'strategy':<11}{'gen':>4}{'rows':>7}{'accuracy':>10}{'macro-F1':>10}{'minority':>10}"
             f"{'entropy':>9}{'conf':>7}{'persist':>9}  alerts"]
    for s, v in result.items():
        for g in v["generations"]:
            alerts = ", ".join(f"{a['test']} ({a['severity']})" for a in g["alerts"]) or "-"
            persist = f"{g['error_persistence']:.2f}" if g["error_persistence"] is not None else "-"
            conf = f"{g['mean_confidence']:.3f}" if g["mean_confidence"] is not None else "-"
            lines.append(f"{s:<11}{g['generation']:>4}{g['train_rows']:>7}{g['accuracy']:>10.3f}{g['macro_f1']:>10.3f}"
                         f"{g['minority_recall']:>10.3f}{g['entropy']:>9.3f}{conf:>7}{persist:>9}  {alerts}")
    lines.append("")
    lines += [f"verdict {s}: {v['verdict'].upper()}: {v['reason']}" for s, v in result.items()]
    return "\n".join(lines)


def plot(result: dict, m: dict):
    """One figure, a panel per quantity, a line per strategy across generations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("macro_f1", "macro-F1 on gold (95% CI)"), ("minority_recall", f"recall of {m['minority_class']} (minority)"),
              ("entropy", "label-mix entropy of corpus labels (bits)"), ("mean_confidence", "mean confidence on corpus"),
              ("error_persistence", "share of generation 0's gold errors repeated"), ("accuracy", "accuracy on gold (95% CI)")]
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.6))
    for ax, (key, title) in zip(axes.flat, panels):
        for j, (s, v) in enumerate(result.items()):
            gens = [g for g in v["generations"] if g[key] is not None]
            xs = [g["generation"] + (j - (len(result) - 1) / 2) * 0.06 for g in gens]  # side by side where they overlap
            ys = [g[key] for g in gens]
            ci = [g.get(f"{key}_ci") for g in gens]
            if all(ci):
                err = [[y - c[0] for y, c in zip(ys, ci)], [c[1] - y for y, c in zip(ys, ci)]]
                ax.errorbar(xs, ys, yerr=err, marker="o", capsize=2, label=f"{s} ({v['verdict']})")
            else:
                ax.plot(xs, ys, marker="o", label=f"{s} ({v['verdict']})")
        if key in ("macro_f1", "accuracy") and m["teacher_on_gold"]:
            ax.axhline(m["teacher_on_gold"][key], color="grey", linestyle=":", label="teacher")
        if key == "entropy":
            ax.axhline(m["gold_entropy"], color="grey", linestyle="--", label="human gold")
        if key in ("accuracy", "entropy"):  # the strategies are named in the first panel
            ax.legend(*zip(*[(h, lab) for h, lab in zip(*ax.get_legend_handles_labels())
                             if lab in ("teacher", "human gold")]), fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("generation", fontsize=8)
        ax.set_xticks(range(m["generations"] + 1))
        ax.tick_params(labelsize=8)
    axes.flat[0].legend(fontsize=8)
    teacher = f"{m['teacher']} (simulated)" if m["simulated_teacher"] else m["teacher"]
    fig.suptitle(f"collapse audit · {m['recipe']} · {m['student']} students · teacher {teacher} · "
                 f"{m['gold_rows']} gold rows", fontsize=10)
    fig.tight_layout()
    return fig


def write_html(result: dict, m: dict, path: Path) -> Path:
    fig = plot(result, m)
    fig.savefig(path.with_suffix(".png"), dpi=100)  # beside the page, for slides and READMEs
    image = png_tag(fig)
    verdict = html_table(["strategy", "verdict", "statistics"], [[s, v["verdict"], v["reason"]] for s, v in result.items()])
    tables = ""
    for s, v in result.items():
        rows = [[g["generation"], g["train_rows"], g["accuracy"], g["macro_f1"],
                 "[{:.3f}, {:.3f}]".format(*g["macro_f1_ci"]), g["minority_recall"], g["entropy"], g["mean_confidence"],
                 "-" if g["error_persistence"] is None else g["error_persistence"],
                 ", ".join(f"{a['severity']} {a['test']}" for a in g["alerts"]) or "-"]
                for g in v["generations"]]
        links = " · ".join(f'<a href="{html.escape(os.path.relpath(g["monitor_report"], path.parent))}">'
                           f'gen {g["generation"]}</a>' for g in v["generations"])
        tables += (f"<h3>{html.escape(s)}</h3>" + html_table(
            ["gen", "train rows", "accuracy", "macro-F1", "macro-F1 95% CI", f"recall {m['minority_class']}",
             "entropy", "mean conf.", "error persistence", "monitor alerts"], rows)
            + f"<p><small>each alert's reason and numbers are in the generation's monitor report: {links}</small></p>")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>distill audit · {html.escape(m['recipe'])}</title>
<style>
body {{ font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1300px; color: #222; }}
table {{ border-collapse: collapse; margin: 8px 0 16px; }} td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
th {{ background: #f3f3f3; }} td:first-child, th:first-child, td:last-child {{ text-align: left; }}
img {{ max-width: 100%; }} small {{ color: #555; }}
</style></head><body>
<h1>distill collapse audit · {html.escape(m['recipe'])}</h1>
<p>{m['gold_rows']} human gold rows · generation 0 learns from {m['teacher_seed_rows']} labels of teacher
{html.escape(str(m['teacher']))}{' (simulated)' if m['simulated_teacher'] else ''}; each later generation
{html.escape('; '.join(LEARNS[s].format(m['anchor_rows']) for s in result))}. Every generation is scored on the
same gold rows, paired against generation 0. A stable verdict means no significant change at this gold size.</p>
<h2>Verdicts</h2><p><small>Last generation against generation 0: paired permutation tests of macro-F1 (either
way) and a sign-flip test of a drop in the recall of {html.escape(m['minority_class'])}, Holm across all strategies'
tests at alpha {next(iter(result.values()))['evidence']['alpha']}.</small></p>{verdict}
{image}
<h2>Generations</h2>{tables}
</body></html>
"""
    path.write_text(page)
    return path


def main(argv: list[str] | None = None) -> None:
    from distill.runner import run_stage

    run_stage(audit, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
