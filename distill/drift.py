"""From evidence (the student on gold, a baseline on the same rows, the label mix of the bulk
labels, embeddings) to tests and alerts. Plain arrays in, plain dicts out: `distill monitor` and
`scripts/bench_monitor.py` run exactly this code.

Each test gives a one-sided or homogeneity p-value at its own level; an alert needs the test to
survive Holm's correction across all tests that ran (so one monitor run raises a false alarm at
most alpha of the time) and, for the label mix, an effect large enough to act on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from distill import stats

RETRAIN = ("relabel a fresh sample with the teacher and retrain on teacher plus human labels, keeping at least "
           "10% human or teacher data in every retraining set (Shumailov et al., Nature 2024)")
ACCUMULATE = ("accumulate rather than replace training data across generations (Gerstgrasser et al. 2024) and "
              "check the shifted classes against the teacher on a fresh sample")
MITIGATION = {
    "accuracy": RETRAIN,
    "f1": RETRAIN,
    "macro_f1": RETRAIN,
    "class_collapse": "the student no longer labels this class: do not ship these labels; retrain from the last good "
                      "training set plus fresh teacher labels of the class's likely rows, and route them meanwhile",
    "class_recall": "rebalance the minority classes (oversample or reweight them in the next training set) and "
                    "send their low-confidence rows to the teacher with distill route label.threshold=... (CReST, Wei et al. 2021)",
    "vanished": "rebalance the minority classes and relabel that class's likely rows with the teacher; "
                "accumulate training data across generations rather than replacing it (Gerstgrasser et al. 2024)",
    "label_mix_gold": ACCUMULATE,
    "label_mix_seed": ACCUMULATE,
    "overconfidence": "recalibrate (distill train refits the temperature) and rerun distill cascade before "
                      "trusting confidence-based routing; relabel low-confidence rows with the teacher",
    "calibration": "recalibrate on human or teacher labels (distill train refits the temperature) and rerun "
                   "distill cascade before trusting label.threshold",
    "cardinality": "the student gives more or fewer labels (entities) per row than gold has: retrain on fresh teacher "
                   "or human labels (distill train retunes multi-label thresholds on them) and check the rarest labels "
                   "against the teacher",
    "input": "gold no longer represents the corpus: add human gold drawn from the current corpus batch and "
             "relabel a sample of it with the teacher",
    "cusum": "a sustained decline across audits: retrain from teacher labels, accumulating data and keeping "
             "at least 10% human or teacher data (Gerstgrasser et al. 2024; Shumailov et al. 2024)",
}
VS_TEACHER = "_vs_teacher"  # suffix of the tests against the teacher beside a previous student
SEVERITY = {"info": 0, "warning": 1, "critical": 2}


@dataclass
class Evidence:
    classes: list[str]
    f1_key: str                              # the F1 headline: macro_f1 (classification) or f1 (NER, micro)
    counts: np.ndarray                       # [n, C, 3] the student on gold: tp, predicted, gold
    correct: np.ndarray                      # [n] row entirely right
    confidence: np.ndarray | None = None     # [n] calibrated confidence on gold rows
    baseline: str | None = None              # who the baseline is (teacher, a previous student)
    base_counts: np.ndarray | None = None
    base_correct: np.ndarray | None = None
    base_confidence: np.ndarray | None = None
    mix: dict[str, np.ndarray] = field(default_factory=dict)  # label counts [C]: corpus, gold, seed
    emb_gold: np.ndarray | None = None
    emb_corpus: np.ndarray | None = None
    cardinality: dict[str, np.ndarray] = field(default_factory=dict)  # units per label (labels, entities): corpus, gold
    accuracy_name: str = "accuracy"          # what the share of rows entirely right is called (NER: sentence exact match)
    teacher_counts: np.ndarray | None = None  # the teacher on gold, when the baseline is a previous student:
    teacher_correct: np.ndarray | None = None  # the student is tested against it too, so a loop cannot lower the bar


def run_tests(ev: Evidence, cfg) -> dict:
    """Every test the evidence allows, each with its p-value and the effect behind it."""
    alpha, n_perm, seed = float(cfg.alpha), int(cfg.n_perm), int(cfg.seed)
    tests: dict[str, dict] = {}
    paired = ev.base_counts is not None
    if paired:
        tests.update(_paired(ev, ev.base_counts, ev.base_correct, ev.baseline, cfg))
    if ev.teacher_counts is not None:
        tests.update({f"{k}{VS_TEACHER}": t for k, t in
                      _paired(ev, ev.teacher_counts, ev.teacher_correct, "teacher", cfg).items()})
    if paired and ev.confidence is not None and ev.base_confidence is not None:
        gap_b = ev.base_confidence - ev.base_correct
        gap_n = ev.confidence - ev.correct
        tests["overconfidence"] = {
            "p": stats.signflip_p(gap_n - gap_b, n_perm, seed),
            "confidence": [float(ev.base_confidence.mean()), float(ev.confidence.mean())],
            "accuracy": [float(ev.base_correct.mean()), float(ev.correct.mean())]}
    if ev.confidence is not None:
        tests["calibration"] = {**stats.ece_test(ev.confidence, ev.correct, n_sim=n_perm, seed=seed),
                                "mean_confidence": float(ev.confidence.mean()), "accuracy": float(ev.correct.mean())}
    corpus = ev.mix.get("corpus")
    if corpus is not None and corpus.sum():
        for ref in ("gold", "seed"):
            if ev.mix.get(ref) is not None and ev.mix[ref].sum():
                tests[f"label_mix_{ref}"] = _label_mix(corpus, ev.mix[ref], ev.classes, cfg)
        pooled = sum(ev.mix[r] for r in ("gold", "seed") if ev.mix.get(r) is not None)
        if not np.isscalar(pooled) and pooled.sum():
            ref_share = pooled / pooled.sum()
            # a class present in the references with no bulk label at all: Bonferroni over classes
            gone = {c: stats.vanished_p(0, int(corpus.sum()), float(ref_share[k]))
                    for k, c in enumerate(ev.classes) if corpus[k] == 0 and ref_share[k] > 0}
            tests["vanished"] = {"p": min(1.0, min(gone.values(), default=1.0) * len(ev.classes)),
                                 "classes": list(gone)}
    sizes = [ev.cardinality.get(k) for k in ("corpus", "gold")]
    if all(s is not None and len(s) for s in sizes) and len(np.unique(np.concatenate(sizes))) > 1:
        tests["cardinality"] = _cardinality(*sizes, cfg)
    if ev.emb_gold is not None and ev.emb_corpus is not None and len(ev.emb_gold) > 1 and len(ev.emb_corpus) > 1:
        tests["input"] = stats.mmd_test(ev.emb_corpus, ev.emb_gold, n_perm, seed=seed)
    adjusted = stats.holm({k: t["p"] for k, t in tests.items() if not k.startswith("class_collapse")})
    for k, t in tests.items():
        t["p_holm"] = adjusted.get(k, t["p"])  # a collapse p is Bonferroni already
        # a collapse is judged on its own rule (near zero from a real F1, and its class's own test)
        t["significant"] = bool(t["classes"]) if k.startswith("class_collapse") else adjusted[k] < alpha
    return tests


def _paired(ev: Evidence, base_counts: np.ndarray, base_correct: np.ndarray, who: str | None, cfg) -> dict:
    """The student against one system on the same gold rows: accuracy (McNemar), the F1 headline and
    macro-F1 (paired permutation), each class's recall, and classes that collapsed."""
    n_perm, seed = int(cfg.n_perm), int(cfg.seed)
    b = int((base_correct & ~ev.correct).sum())
    c = int((~base_correct & ev.correct).sum())
    acc_b, acc_n = float(base_correct.mean()), float(ev.correct.mean())
    tests = {"accuracy": {"p": stats.mcnemar_midp(b, c), "metric": ev.accuracy_name, "baseline": acc_b,
                          "current": acc_n, "against": who,
                          "drop": acc_b - acc_n, "baseline_only_right": b, "current_only_right": c,
                          "error_persistence": stats.persistence(base_correct, ev.correct)}}
    # the headline F1, and macro-F1 where the headline is micro (NER): a rare type lost moves only macro
    for name, key in (("f1", ev.f1_key), ("macro_f1", "macro_f1")):
        if name == "macro_f1" and ev.f1_key == "macro_f1":
            continue
        f1 = stats.F1[key]
        fb, fn = float(f1(base_counts.sum(0))), float(f1(ev.counts.sum(0)))
        tests[name] = {"p": stats.paired_permutation(base_counts, ev.counts, f1, n_perm, seed),
                       "metric": key, "baseline": fb, "current": fn, "drop": fb - fn, "against": who}
    tests["class_recall"] = _class_recall(ev, base_counts, cfg)
    tests["class_collapse"] = _class_collapse(ev, base_counts, tests["class_recall"], cfg)
    return tests


def _class_recall(ev: Evidence, base_counts: np.ndarray, cfg) -> dict:
    """Per class (entity type), a one-sided paired test of a recall drop, Holm across classes; the
    worst is the class with the largest drop among those significant after Holm, else the smallest p
    (the largest drop among equal p-values)."""
    per, raw = {}, {}
    tp_b, tp_n, gold = base_counts[..., 0], ev.counts[..., 0], ev.counts[..., 2]
    for k, c in enumerate(ev.classes):
        support = int(gold[:, k].sum())
        if not support:
            continue
        raw[c] = stats.signflip_p(tp_b[:, k] - tp_n[:, k], int(cfg.n_perm), int(cfg.seed) + k)
        rb, rn = tp_b[:, k].sum() / support, tp_n[:, k].sum() / support
        per[c] = {"baseline": float(rb), "current": float(rn), "support": support, "p": raw[c],
                  "insufficient_support": support < int(cfg.min_support)}
    adjusted = stats.holm(raw) if raw else {}
    for c in per:
        per[c]["p_holm"] = adjusted[c]
    drop = lambda c: per[c]["baseline"] - per[c]["current"]  # noqa: E731
    fell = [c for c in per if adjusted[c] < float(cfg.alpha)]
    worst = max(fell, key=drop) if fell else min(per, key=lambda c: (adjusted[c], -drop(c))) if per else None
    return {"p": min(adjusted.values(), default=1.0), "worst": worst, "per_class": per,
            "significant_classes": sorted(fell, key=drop, reverse=True)}


def _class_collapse(ev: Evidence, base_counts: np.ndarray, recall: dict, cfg) -> dict:
    """Classes whose gold F1 or recall fell to `collapse_f1` or below from `collapse_from` or above,
    with a one-sided recall-drop p under alpha: a lost class, whether or not the bulk labels still
    name it. Its p is the smallest such class's, Bonferroni over the classes."""
    floor, start = float(cfg.get("collapse_f1", 0.05)), float(cfg.get("collapse_from", 0.2))
    _, rb, fb = stats.prf_arrays(base_counts.sum(0))
    _, rn, fn = stats.prf_arrays(ev.counts.sum(0))
    lost = {}
    for k, c in enumerate(ev.classes):
        t = recall["per_class"].get(c)
        fell = (fb[k] >= start and fn[k] <= floor) or (rb[k] >= start and rn[k] <= floor)
        if t and fell and t["p"] < float(cfg.alpha):
            lost[c] = {"f1": [float(fb[k]), float(fn[k])], "recall": [float(rb[k]), float(rn[k])],
                       "support": t["support"], "p": t["p"]}
    p = min(1.0, min((v["p"] for v in lost.values()), default=1.0) * max(1, len(ev.classes)))
    return {"p": p, "classes": lost}


def _label_mix(corpus: np.ndarray, ref: np.ndarray, classes: list[str], cfg) -> dict:
    chi2, p, dof = stats.chi2_homogeneity(corpus, ref)
    cs, rs = corpus / corpus.sum(), ref / ref.sum()
    ratio = {c: (float(cs[k] / rs[k]) if rs[k] else None) for k, c in enumerate(classes)}
    tail = stats.tail_classes(ref)
    shifted = [c for k, c in enumerate(classes) if rs[k] >= 0.02 and ratio[c] is not None
               and not 1 / float(cfg.material_ratio) < ratio[c] < float(cfg.material_ratio)]
    value_psi = stats.psi(corpus, ref)
    return {"p": p, "chi2": chi2, "dof": dof, "psi": value_psi, "js_distance": stats.js_distance(corpus, ref),
            "prevalence_ratio": ratio, "shifted": shifted,
            "material": bool(shifted) or value_psi >= float(cfg.material_psi),
            "entropy_bits": [stats.entropy_bits(ref), stats.entropy_bits(corpus)],
            "tail": [classes[k] for k in tail],
            "tail_mass": [float(rs[tail].sum()), float(cs[tail].sum())], "rows": [int(ref.sum()), int(corpus.sum())]}


def _cardinality(corpus: np.ndarray, gold: np.ndarray, cfg) -> dict:
    """Units per label (labels per text, entities per sentence): chi-square homogeneity of the
    counts (5 and more pooled), material when the mean moves by `material_cardinality` or more."""
    top = int(min(5, max(corpus.max(), gold.max())))
    hist = lambda x: np.bincount(np.minimum(x, top), minlength=top + 1)  # noqa: E731
    chi2, p, dof = stats.chi2_homogeneity(hist(corpus), hist(gold))
    mean = [float(gold.mean()), float(corpus.mean())]
    change = (mean[1] - mean[0]) / mean[0] if mean[0] else None
    return {"p": p, "chi2": chi2, "dof": dof, "mean": mean, "relative_change": change,
            "material": change is None or abs(change) >= float(cfg.get("material_cardinality", 0.2)),
            "rows": [len(gold), len(corpus)]}


def fmt_p(p: float) -> str:
    """A p-value for people: permutation p-values below 0.001 are shown as a bound."""
    return "<0.001" if p < 0.001 else f"{p:.2g}"


def alerts(tests: dict, cfg, baseline: str | None = None) -> list[dict]:
    """One alert per significant (Holm-adjusted) test whose effect is worth acting on: severity,
    a one-line reason with the numbers, and a mitigation."""
    out = []
    crit = float(cfg.critical_drop)

    def add(test, severity, reason):
        out.append({"test": test, "severity": severity, "reason": reason, "p": tests[test]["p"],
                    "p_holm": tests[test]["p_holm"], "mitigation": MITIGATION[test.removesuffix(VS_TEACHER)]})

    for name, t in tests.items():
        if not t["significant"]:
            continue
        kind = name.removesuffix(VS_TEACHER)
        who = "the teacher" if name.endswith(VS_TEACHER) else baseline
        if kind in ("accuracy", "f1", "macro_f1"):
            label = t.get("metric", kind)
            add(name, "critical" if t["drop"] >= crit else "warning",
                f"{label} {_fell(who, t['baseline'], t['current'])} on the same gold rows "
                f"(p={fmt_p(t['p'])}, Holm {fmt_p(t['p_holm'])})")
        elif kind == "class_recall":
            c = t["per_class"][t["worst"]]
            rel = 1 - c["current"] / c["baseline"] if c["baseline"] else 0.0
            add(name, "critical" if rel >= 0.5 else "warning",
                f"recall of {t['worst']!r} {_fell(who, c['baseline'], c['current'])} "
                f"on {c['support']} gold items (p={fmt_p(c['p'])}, Holm {fmt_p(t['p_holm'])})")
        elif kind == "class_collapse":
            lost = ", ".join(f"{c!r} F1 {v['f1'][0]:.3f} -> {v['f1'][1]:.3f}, recall {v['recall'][0]:.3f} -> "
                             f"{v['recall'][1]:.3f} ({v['support']} gold items, p={fmt_p(v['p'])})"
                             for c, v in t["classes"].items())
            add(name, "critical", f"class(es) lost on gold against {who}: {lost}")
        elif name == "overconfidence" and t["confidence"][1] >= t["confidence"][0] - 0.01:
            # the gap grew while confidence held or rose; a gap grown with confidence falling is an accuracy alert
            add(name, "warning",
                f"mean confidence {t['confidence'][0]:.3f} -> {t['confidence'][1]:.3f} while gold accuracy "
                f"{t['accuracy'][0]:.3f} -> {t['accuracy'][1]:.3f} (p={fmt_p(t['p'])})")
        elif name == "calibration":
            # overconfidence misleads the cascade into trusting wrong labels; underconfidence only costs teacher calls
            over = t["mean_confidence"] > t["accuracy"]
            add(name, "warning" if over else "info",
                f"ECE {t['ece']:.3f} is above its noise floor {t['noise_floor']:.3f} at this gold size "
                f"(p={fmt_p(t['p'])}); {'over' if over else 'under'}confident: mean confidence "
                f"{t['mean_confidence']:.3f}, accuracy {t['accuracy']:.3f}")
        elif name.startswith("label_mix") and t["material"]:
            ref = name.removeprefix("label_mix_")
            what = ", ".join(f"{c} x{t['prevalence_ratio'][c]:.2f}" for c in t["shifted"]) or "no single class"
            add(name, "warning", f"bulk label mix differs from {ref} labels: PSI {t['psi']:.3f}, JS "
                                 f"{t['js_distance']:.3f}, prevalence ratios {what} (p={fmt_p(t['p'])})")
        elif name == "vanished" and t["classes"]:
            add(name, "critical", f"class(es) {', '.join(t['classes'])} vanished from the bulk labels "
                                  f"(p={fmt_p(t['p'])})")
        elif name == "cardinality" and t["material"]:
            add(name, "warning", f"labels (or entities) per row: {t['mean'][0]:.2f} in gold, {t['mean'][1]:.2f} in the "
                                 f"bulk labels (p={fmt_p(t['p'])})")
        elif name == "input":
            add(name, "warning", f"corpus inputs differ from gold inputs: MMD^2 {t['mmd2']:.4f} on "
                                 f"{t['rows'][0]} corpus and {t['rows'][1]} gold rows (p={fmt_p(t['p'])})")
    return out


def _fell(who: str | None, base: float, now: float) -> str:
    if who == "the teacher":
        return f"is {now:.3f}, below the teacher's {base:.3f},"
    return f"fell from {base:.3f} ({who}) to {now:.3f}"


def fails(alert_list: list[dict], fail_on: str) -> bool:
    """Whether alerts this severe should end `distill monitor` with a non-zero exit status."""
    if fail_on == "never":
        return False
    return any(SEVERITY[a["severity"]] >= SEVERITY[fail_on] for a in alert_list)
