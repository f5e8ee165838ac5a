"""Monitor stage: is the student still labeling well, and would we know if it were not?

    distill monitor recipe=NAME [monitor.baseline=auto|previous|teacher|none|RUN_DIR] [monitor.power=true]

Scores the student (and the teacher) on held-out human gold with bootstrap CIs; tests it against
a baseline on the same gold rows (the previous student in the history, else the teacher); tests
the bulk labels' class mix against gold and the teacher's seed labels, and the corpus inputs
against the gold inputs in the student's own embedding space; checks calibration against its
noise floor; estimates bulk accuracy without labels; records the run in SQLite and runs a CUSUM
over the audits there. Writes monitor/metrics.json and monitor/report.html, prints a summary,
and exits 1 when an alert at `monitor.fail_on` or worse fires (for cron and CI gating).
A gold row a system left unlabeled or labeled invalidly counts as wrong for that system.
"""

from __future__ import annotations

if __name__ == "__main__":
    import pathlib
    import sys

    if not __package__:  # run as a file: import the installed package, not its modules as top-level names
        sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])
    from distill.runner import before_imports

    before_imports("monitor", sys.argv[1:])  # help, or quiet libraries, before torch and tqdm are imported

import hashlib
import json
import sys
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from distill import drift, history, stats
from distill.card import write_card
from distill.data import load_split, prepare_data, read_json, read_jsonl, read_parquet
from distill.drift import fmt_p
from distill.errors import ConfigError, DataError
from distill.report import LABEL_FREE_WITHIN, effect, label_free_lines, write_html
from distill.rundir import RunDir
from distill.tasks import build_task

CBPE_CAVEAT = ("both read the student's confidence on the bulk labels: right only while this batch looks like "
               "gold to the student; neither can see concept drift")


def monitor(cfg) -> dict:
    run, mcfg = RunDir(cfg.run_dir), cfg.monitor
    task = build_task(cfg.task)
    prepare_data(cfg)
    gold = load_split(cfg, "gold", task, labels=True)
    ids, truth = list(gold["id"]), list(gold["label"])
    gold_key = _digest(json.dumps([ids, truth]))

    # -- the systems on the same gold rows, with bootstrap CIs --------------------------------------
    student_rows = {r["id"]: r for r in read_parquet(run.labels("gold"))}
    student_name = next(iter(student_rows.values()))["student"] if student_rows else None
    pred, conf, missing = _aligned(student_rows, ids)
    systems = {"majority baseline": task.metrics(truth, task.majority(truth))}
    teacher_summary = read_json(run.teacher_summary)
    teacher_rows = {r["id"]: r for r in read_jsonl(run.teacher("gold"))}
    teacher = None
    if teacher_rows:
        t_pred, t_conf, t_missing = _aligned(teacher_rows, ids)
        has_conf = all(r.get("confidence") is not None for r in teacher_rows.values())
        teacher = (t_pred, t_conf if has_conf else None)
        systems["teacher"], _, _ = _scored(task, truth, t_pred, mcfg, t_missing)
    systems["student"], counts, correct = _scored(task, truth, pred, mcfg, missing)
    shipping = _shipping(run, pred, conf, teacher[0] if teacher else None)
    if shipping:
        systems["shipped labels"], _, _ = _scored(task, truth, shipping.pop("labels"), mcfg, 0)

    # -- the bulk labels and the teacher's seed labels ---------------------------------------------
    corpus_path = run.labels("corpus")
    audited = run.audit_slice if run.audit_slice.exists() else None  # compared by id with the student's labels
    corpus = read_parquet(corpus_path, columns=["label", "route", "student_confidence",
                                                *(["id", "student_label"] if audited else [])])
    corpus_labels = [r["label"] for r in corpus]
    seed_labels = [r["label"] for r in read_jsonl(run.teacher("seed")) if r.get("label") is not None]
    mix = {"corpus": task.label_counts(corpus_labels), "gold": task.label_counts(truth),
           "seed": task.label_counts(seed_labels) if seed_labels else None}
    corpus_conf = np.array([r["student_confidence"] for r in corpus if r["student_confidence"] is not None])
    if shipping is not None:
        shipping["corpus"] = {"rows": len(corpus), **Counter(r["route"] for r in corpus)}
    corpus_scored = _corpus_truth(cfg, task, run, mcfg)

    # -- baseline, embeddings, tests -----------------------------------------------------------------
    history_path = Path(mcfg.history or run.history)
    past = history.runs(history_path, cfg.recipe)
    baseline, base_pred, base_conf = _baseline(mcfg.baseline, past, student_name, gold_key, ids, teacher)
    emb_gold, emb_corpus = _embeddings(cfg, task, gold, run) if int(mcfg.embed_rows) > 0 else (None, None)
    ev = drift.Evidence(
        classes=task.labels, f1_key=task.f1_key, accuracy_name=task.accuracy_name, counts=counts, correct=correct,
        confidence=conf, baseline=baseline,
        base_counts=task.counts(truth, base_pred) if base_pred is not None else None,
        base_correct=task.correct(truth, base_pred) if base_pred is not None else None,
        base_confidence=base_conf, mix=mix, emb_gold=emb_gold, emb_corpus=emb_corpus,
        cardinality={"corpus": task.cardinality(corpus_labels), "gold": task.cardinality(truth)})
    if teacher and baseline not in ("teacher", None):  # beside a previous student, the teacher stays the bar
        ev.teacher_counts, ev.teacher_correct = task.counts(truth, teacher[0]), task.correct(truth, teacher[0])
    tests = drift.run_tests(ev, mcfg)
    alerts = drift.alerts(tests, mcfg, baseline)
    label_free = {**stats.label_free_estimates(conf, correct, corpus_conf, seed=int(mcfg.seed)),
                  "gold_accuracy": systems["student"]["accuracy"], "shown_within": LABEL_FREE_WITHIN,
                  "caveat": CBPE_CAVEAT}
    audit = _audit(task, audited, mcfg, corpus, truth, pred, teacher[0] if teacher else None) if audited else None
    warnings = [_audit_warning(audited)] if audited and audit is None else []

    # -- history and the CUSUM over gold audits -----------------------------------------------------
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    corpus_key = f"{len(corpus)} rows sha256:{_file_digest(corpus_path)}"
    record = {"time": now, "recipe": cfg.recipe, "student": student_name, "baseline": baseline,
              "corpus_batch": corpus_key, "gold": gold_key, "gold_rows": len(ids),
              "metrics": {**systems["student"], "mean_confidence": float(conf.mean()), "label_free": label_free,
                          "shipped": _brief(systems.get("shipped labels")),
                          "label_mix": task.summarize(corpus_labels),
                          "audit": {k: audit[k] for k in ("agreement", "rows", "estimate")} if audit else None},
              "tests": tests, "alerts": alerts,
              "predictions": {i: [p, c] for i, p, c in zip(ids, pred, conf.tolist())}}
    if audit and (fell := _audit_fell(audit, past, corpus_key, float(mcfg.alpha))):
        alerts.append(fell)
    run_id = history.record(history_path, record)
    past = history.runs(history_path, cfg.recipe)
    key = task.main_metric
    trend = stats.cusum([r["metrics"][key] for r in past], [r["gold_rows"] for r in past],
                        past[0]["metrics"][key], float(mcfg.cusum.k), float(mcfg.cusum.h))
    if trend["signal"]:
        alerts.append({"test": "cusum", "severity": "warning", "p": None, "p_holm": None,
                       "reason": f"CUSUM of {key} shortfalls over {len(past)} gold audits is {trend['statistic']:.2f} "
                                 f"> h={trend['h']} (reference {past[0]['metrics'][key]:.3f}, now "
                                 f"{systems['student'][key]:.3f})", "mitigation": drift.MITIGATION["cusum"]})
        history.record(history_path, {**record, "alerts": alerts})

    report = {
        "recipe": cfg.recipe, "task": task.kind, "time": now, "gold_rows": len(truth), "headline": list(task.headline),
        "main_metric": key, "f1_key": task.f1_key, "accuracy_name": task.accuracy_name,
        "teacher": {"model": teacher_summary.get("model", cfg.teacher.model),
                    "simulated": teacher_summary.get("simulated", bool(cfg.teacher.simulated)),
                    "sim_accuracy": teacher_summary.get("sim", {}).get("accuracy"),
                    "sim_noise": teacher_summary.get("sim", {}).get("noise") or "uniform"},
        "student": student_name, "baseline": baseline, "systems": systems, "shipping": shipping,
        "corpus_scored": corpus_scored,
        "label_mix": {"gold": task.summarize(truth), "seed": task.summarize(seed_labels) if seed_labels else None,
                      "student_corpus": task.summarize(corpus_labels)},
        "corpus_rows": len(corpus), "corpus_invalid": sum(lab is None for lab in corpus_labels),
        "corpus_routes": dict(Counter(r["route"] for r in corpus)),
        "teacher_usage": teacher_summary.get("seed"),
        "label_free": label_free, "audit": audit, "reliability": stats.reliability(conf, ev.correct),
        "tests": tests, "alerts": alerts, "warnings": warnings, "cusum": {**trend, "metric": key},
        "power": _power(task, truth, ev, tests, mcfg) if mcfg.power else None,
        "history": {"path": str(history_path), "run_id": run_id, "runs": len(past),
                    "run": 1 + [r["id"] for r in past].index(run_id) if run_id in [r["id"] for r in past] else len(past)},
    }
    report["exit_status"] = 1 if drift.fails(alerts, mcfg.fail_on) else 0

    run.metrics.parent.mkdir(parents=True, exist_ok=True)
    run.metrics.write_text(json.dumps(report, indent=2))
    report["report_html"] = str(write_html(report, past, run.report))
    if run.student_files.record.exists():
        write_card(cfg, run)
    print(format_report(report))
    return report




def _shipping(run: RunDir, pred: list, conf: np.ndarray, teacher_gold: list | None) -> dict | None:
    """The labels users ship, replayed on gold: when `distill route` sent corpus rows to the teacher,
    the gold rows under the same threshold (and invalid ones) take the teacher's gold answer, as
    the corpus rows took theirs; None when nothing was routed to the teacher."""
    summary = read_json(run.labels_summary)
    threshold = summary.get("threshold")
    routed = (summary.get("corpus") or {}).get("routes", {}).get("teacher", 0)
    if threshold is None or summary.get("route") != "teacher" or not routed or teacher_gold is None:
        return None
    sent = [k for k, (p, c) in enumerate(zip(pred, conf)) if p is None or c < threshold]
    labels = list(pred)
    for k in sent:
        if teacher_gold[k] is not None:  # a failed answer leaves the row to review: the student's label stays
            labels[k] = teacher_gold[k]
    cascade = (summary.get("corpus") or {}).get("cascade") or {}
    return {"threshold": float(threshold), "gold_rows_routed": len(sent), "gold_share": len(sent) / max(1, len(pred)),
            "corpus_left_unanswered": int(cascade.get("review_rows", 0)) + int(cascade.get("not_asked", 0)),
            "labels": labels}


def _audit_warning(audited: Path) -> str:
    answered = [r["id"] for r in read_jsonl(audited) if r.get("label") is not None]
    if answered:
        return (f"the audit slice ({audited}) answers {len(answered)} rows, none of them in this corpus batch: "
                "rerun distill route for this batch")
    return (f"the audit slice ({audited}) has no usable teacher answer, so the student is not checked against the "
            "teacher on this batch: see the errors in that file")


def _corpus_truth(cfg, task, run: RunDir, mcfg) -> dict | None:
    """With human labels on the corpus split (data.corpus.label_column), the corpus labels as
    shipped and as the student gave them, scored on them (no CIs: the corpus may be millions of
    rows). None when the corpus has no such labels, or not on every row."""
    if not cfg.data.corpus.get("label_column"):
        return None
    try:
        human = load_split(cfg, "corpus", task, labels=True)
    except DataError as e:
        print(f"monitor: the corpus labels are not scored on data.corpus.label_column: {e}", file=sys.stderr)
        return None
    rows = {r["id"]: r for r in read_parquet(run.labels("corpus"), columns=["id", "label", "student_label"])}
    keep = [k for k, i in enumerate(human["id"]) if i in rows]
    truth = [human["label"][k] for k in keep]
    ids = [human["id"][k] for k in keep]
    return {"scored_on_human_labels": len(keep),
            "student": _brief(task.metrics(truth, [rows[i]["student_label"] for i in ids])),
            "shipped": _brief(task.metrics(truth, [rows[i]["label"] for i in ids]))}


def _brief(m: dict | None) -> dict | None:
    """A system's headline figures and their CIs, without the per-class table."""
    return {k: v for k, v in m.items() if k != "per_class"} if m else None


AUDIT_MITIGATION = ("the student agrees less with the teacher on this batch's random audit slice than on the last: "
                    "check the corpus for new kinds of input, route more rows (label.route_fraction) and retrain "
                    "on the teacher's answers (distill refine)")


def _audit(task, answers_path: Path, mcfg, corpus: list[dict], truth: list, pred: list,
           teacher_gold: list | None) -> dict | None:
    """The student against the teacher on the batch's audit slice (labels/teacher/audit.jsonl, a random
    sample whatever the confidence): agreement with a CI, per class, and the batch's accuracy estimated
    from it (stats.accuracy_from_agreement, with the student's and teacher's gold labels)."""
    answers = {r["id"]: r["label"] for r in read_jsonl(answers_path) if r.get("label") is not None}
    pairs = [(answers[r["id"]], r["student_label"]) for r in corpus if r["id"] in answers]
    if not pairs:
        return None
    ref, got = (list(x) for x in zip(*pairs))
    m, _, agree = _scored(task, ref, got, mcfg, 0)  # the teacher's answers as the reference
    out = {"rows": len(pairs), "agreement": m["accuracy"], "ci": m["ci"]["accuracy"],
           "per_class": {c: {"recall": v["recall"], "recall_ci": v["recall_ci"], "support": v["support"]}
                         for c, v in m["per_class"].items()},
           "estimate": None, "estimate_ci": None, "gold_accuracy": float(task.correct(truth, pred).mean())}
    answered = [k for k, t in enumerate(teacher_gold or []) if t is not None]
    if answered:
        keep = lambda xs: [xs[k] for k in answered]  # noqa: E731
        estimate = stats.accuracy_from_agreement(task.correct(keep(teacher_gold), keep(pred)),
                                                 task.correct(keep(truth), keep(pred)))
        if estimate:
            out.update(estimate=estimate.at(out["agreement"]), estimate_ci=sorted(map(estimate.at, out["ci"])),
                       right_when_agreeing=estimate.right_when_agreeing,
                       right_when_disagreeing=estimate.right_when_disagreeing)
    return out


def _audit_fell(audit: dict, past: list[dict], corpus_key: str, alpha: float) -> dict | None:
    """An alert when agreement on this batch's audit slice is below the last earlier batch's
    (one-sided two-proportion z-test)."""
    from scipy.stats import norm

    earlier = [r for r in past if r["corpus_batch"] != corpus_key and (r["metrics"] or {}).get("audit")]
    if not earlier:
        return None
    prev = earlier[-1]["metrics"]["audit"]
    a, b, n, m = audit["agreement"], prev["agreement"], audit["rows"], prev["rows"]
    pooled = (a * n + b * m) / (n + m)
    se = (pooled * (1 - pooled) * (1 / n + 1 / m)) ** 0.5
    p = float(norm.cdf((a - b) / se)) if se > 0 else (0.0 if a < b else 1.0)
    audit["previous"] = {"agreement": b, "rows": m, "p": p}
    if p >= alpha:
        return None
    return {"test": "audit_agreement", "severity": "warning", "p": p, "p_holm": None,
            "reason": f"agreement with the teacher on the audit slice fell from {b:.3f} ({m} rows, run "
                      f"{earlier[-1]['id']}) to {a:.3f} ({n} rows), p={fmt_p(p)}", "mitigation": AUDIT_MITIGATION}


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


def _aligned(rows: dict, ids: list[str]) -> tuple[list, np.ndarray, int]:
    """Labels and confidences in gold order; a missing row is unlabeled with confidence 0."""
    pred = [rows[i]["label"] if i in rows else None for i in ids]
    conf = np.array([float(rows[i].get("confidence") or 0.0) if i in rows else 0.0 for i in ids])
    return pred, conf, sum(i not in rows for i in ids)


def _scored(task, truth: list, pred: list, mcfg, missing: int) -> tuple[dict, np.ndarray, np.ndarray]:
    """Metrics with bootstrap CIs, and the per-row counts and rightness they came from."""
    m = {**task.metrics(truth, pred), "missing": missing}
    counts, correct = task.counts(truth, pred), task.correct(truth, pred)
    ci = stats.bootstrap_ci(counts, correct, task.f1_key, int(mcfg.n_boot), int(mcfg.seed))
    m["ci"] = {key: ci[key] for key in ("accuracy", *stats.F1)}
    for k, (label, pc) in enumerate(m["per_class"].items()):
        pc.update(recall_ci=ci["recall"][k], f1_ci=ci["f1_per_class"][k],
                  insufficient_support=pc["support"] < int(mcfg.min_support))
    return m, counts, correct


def _baseline(choice: str, past: list[dict], student: str | None, gold_key: str, ids: list[str],
              teacher: tuple | None) -> tuple[str | None, list | None, np.ndarray | None]:
    """(name, gold labels, confidences) of the system the student is paired against; `teacher` is
    the teacher's aligned (labels, confidences or None) when it labeled gold."""
    if choice not in ("auto", "previous", "teacher", "none"):
        gold_labels = RunDir(choice).labels("gold")
        if not gold_labels.exists():
            raise ConfigError(f"monitor.baseline {choice!r} is unknown; choose auto, previous, teacher, none or "
                              "a run directory whose student labeled gold (it has labels/gold.parquet)")
        rows = {r["id"]: r for r in read_parquet(gold_labels, columns=["id", "label", "confidence", "student"])}
        if any(i not in rows for i in ids):
            raise ConfigError(f"monitor.baseline: {gold_labels} lacks {sum(i not in rows for i in ids)} of the "
                              f"{len(ids)} gold rows: its student labeled another gold set")
        pred, conf, _ = _aligned(rows, ids)
        return f"student {next(iter(rows.values()))['student']} of {choice}", pred, conf
    if choice in ("auto", "previous"):
        earlier = [r for r in past if r["student"] != student and r["gold"] == gold_key and r["predictions"]]
        if earlier:
            prev = earlier[-1]
            pred, conf, _ = _aligned({i: {"label": p, "confidence": c} for i, (p, c) in prev["predictions"].items()},
                                     ids)
            return f"previous student {prev['student']} (run {prev['id']})", pred, conf
    if choice in ("auto", "teacher") and teacher:
        return "teacher", *teacher
    return None, None, None


def _embeddings(cfg, task, gold, run: RunDir) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The student's encoder embeddings of up to monitor.embed_rows gold and corpus inputs."""
    if not run.student_files.record.exists():
        return None, None
    from distill.students import student_class

    rows, rng = int(cfg.monitor.embed_rows), np.random.default_rng(int(cfg.monitor.seed))
    corpus = load_split(cfg, "corpus", task, labels=False)
    pick = lambda n: sorted(rng.choice(n, size=min(n, rows), replace=False).tolist())  # noqa: E731
    student = student_class(cfg.student).load(cfg.student, task, run.student)
    return (student.embed(gold.select(pick(len(gold)))["text"], int(cfg.label.batch_size)),
            student.embed(corpus.select(pick(len(corpus)))["text"], int(cfg.label.batch_size), progress=True))


def _power(task, truth: list, ev: drift.Evidence, tests: dict, mcfg) -> dict:
    """Smallest drops an alert catches with 80% power at this gold size: the accuracy test and each
    class's recall test at the Bonferroni share of alpha (Holm's first step; a bound, not exact)."""
    m = max(1, len(tests))
    alpha, n = float(mcfg.alpha), len(truth)
    observed = "accuracy" in tests
    if observed:
        t = tests["accuracy"]
        disc = (t["baseline_only_right"] + t["current_only_right"]) / n
    else:
        disc = float(mcfg.assumed_discordance)
    gold_counts = ev.counts[..., 2].sum(0)
    per_class = {}
    for k, label in enumerate(task.labels):
        support = int(gold_counts[k])
        d = disc
        if ev.base_counts is not None and support:
            d = float(np.abs(ev.base_counts[:, k, 0] - ev.counts[:, k, 0]).sum() / support)
        drop = stats.detectable_drop(support, max(d, 1e-3), alpha / (m * len(task.labels)))
        per_class[label] = {"support": support, "recall_drop": drop, "discordance": d}
    return {"alpha_per_test": alpha / m, "gold_rows": n, "discordance": disc,
            "discordance_source": "observed against the baseline" if observed else "monitor.assumed_discordance",
            "accuracy_drop": stats.detectable_drop(n, max(disc, 1e-3), alpha / m), "per_class": per_class}


def format_report(report: dict) -> str:
    t = report["teacher"]
    teacher = (f"{t['model']} (SIMULATED, target accuracy {t['sim_accuracy']}, {t.get('sim_noise', 'uniform')} noise)"
               if t["simulated"] else t["model"])
    cols = [*report["headline"], "invalid"]
    width = {c: max(11, len(c) + 2) for c in cols}
    lines = [f"distill monitor · recipe {report['recipe']} · {report['gold_rows']} human gold rows",
             f"teacher: {teacher}", f"student: {report['student']}", f"baseline: {report['baseline'] or 'none'}", "",
             f"{'system':<20}" + "".join(f"{c:>{width[c]}}" for c in cols) + f"{'95% CI ' + report['main_metric']:>22}"]
    for name, m in report["systems"].items():
        ci = m.get("ci", {}).get(report["main_metric"])
        lines.append(f"{name:<20}" + "".join(f"{m[c]:>{width[c]}.3f}" if isinstance(m[c], float) else f"{m[c]:>{width[c]}}"
                                             for c in cols) + (f"{f'[{ci[0]:.3f}, {ci[1]:.3f}]':>22}" if ci else ""))
    if s := report.get("shipping"):
        lines += ["", f"shipped labels: as `distill route` sent corpus rows under confidence {s['threshold']:.4f} to the "
                      f"teacher, so {s['gold_rows_routed']} of {report['gold_rows']} gold rows ({s['gold_share']:.1%}) "
                      f"take the teacher's answer here; corpus rows: " + ", ".join(
                          f"{n} {k}" for k, n in s["corpus"].items() if k != "rows")]
    if s and s.get("corpus_left_unanswered"):
        lines.append(f"  {s['corpus_left_unanswered']} corpus rows under the threshold got no teacher answer (review, "
                     "or not asked yet): the replay gives every routed gold row one, so it overstates what ships")
    if c := report.get("corpus_scored"):
        fig = lambda m: ", ".join(f"{k} {m[k]:.3f}" for k in report["headline"])  # noqa: E731
        lines += ["", f"corpus labels on the corpus's own human labels ({c['scored_on_human_labels']} rows): "
                      f"{fig(c['shipped'])} as shipped; {fig(c['student'])} from the student alone"]
    names = [n for n in report["systems"] if n != "majority baseline"]
    mix = report["label_mix"]
    first = max(20, *(len(label) + 2 for label in report["systems"]["student"]["per_class"]))
    lines += ["", f"{'per-class F1':<{first}}" + "".join(f"{n:>11}" for n in names) + f"{'support':>11}"
              + f"{'gold mix':>11}{'corpus mix':>11}"]
    for label, m in report["systems"]["student"]["per_class"].items():
        flag = " (insufficient support)" if m["insufficient_support"] else ""
        lines.append(f"{label:<{first}}" + "".join(f"{report['systems'][n]['per_class'][label]['f1']:>11.3f}" for n in names)
                     + f"{m['support']:>11}{mix['gold'][label]:>11.2f}{mix['student_corpus'][label]:>11.2f}{flag}")
    lines += ["", f"{'test':<26}{'p':>10}{'Holm p':>10}  effect"]
    acc = report.get("accuracy_name", "accuracy")
    for name, test in report["tests"].items():
        shown = name.replace("accuracy", acc.replace(" ", "_"))  # NER: sentence_exact_match
        lines.append(f"{shown:<26}{fmt_p(test['p']):>10}{fmt_p(test['p_holm']):>10}  {effect(name, test)}")
    lines += ["", *label_free_lines(report["label_free"], acc)]
    if a := report.get("audit"):
        est = (f"; estimated {acc} {a['estimate']:.3f} [{a['estimate_ci'][0]:.3f}, {a['estimate_ci'][1]:.3f}]"
               if a["estimate"] is not None else "")
        lines += ["", f"audit slice: the student agrees with the teacher on {a['agreement']:.3f} "
                      f"[{a['ci'][0]:.3f}, {a['ci'][1]:.3f}] of {a['rows']} random corpus rows{est} (gold: "
                      f"{a['gold_accuracy']:.3f})"]
    if report["power"]:
        p = report["power"]
        acc = f"{p['accuracy_drop']:.3f}" if p["accuracy_drop"] is not None else "none detectable"
        lines += ["", f"power (80%) at {p['gold_rows']} gold rows, discordance {p['discordance']:.3f} "
                      f"({p['discordance_source']}): smallest accuracy drop {acc}"]
        for label, c in p["per_class"].items():
            drop = f"{c['recall_drop']:.3f}" if c["recall_drop"] is not None else "none detectable"
            lines.append(f"  {label:<18} support {c['support']:>6}  smallest recall drop {drop}")
    lines += [f"warning: {w}" for w in report.get("warnings", [])]
    lines += [""] + ([f"ALERT [{a['severity']}] {a['test']}: {a['reason']}\n    mitigation: {a['mitigation']}"
                      for a in report["alerts"]] or ["no alerts"])
    h = report["history"]
    lines.append(f"report: {report.get('report_html', '')} · history: {h['path']} "
                 f"(run {h.get('run', h['run_id'])} of {h['runs']} for recipe {report['recipe']})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from distill.runner import run_stage

    run_stage(monitor, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
