"""The monitor's HTML report: one self-contained page (plots inlined as PNG) with the alerts,
the scores with CIs, the tests, per-class recall over runs, the label mix against gold and the
teacher's seed labels, the reliability diagram, and metric trends across the history."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from distill.drift import fmt_p

SEVERITY_COLOR = {"critical": "#b00020", "warning": "#b26a00", "info": "#345"}


def png_tag(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return f'<img alt="" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def plots(report: dict, runs: list[dict]) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    classes = list(report["systems"]["student"]["per_class"])
    xs = list(range(1, len(runs) + 1))

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for c in classes:
        ax.plot(xs, [r["metrics"]["per_class"][c]["recall"] for r in runs], marker="o", label=c)
    ax.set(xlabel="monitor run", ylabel="recall on gold", ylim=(0, 1.02), title="per-class recall over runs")
    ax.set_xticks(xs)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    out["recall"] = png_tag(fig)

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    mixes = [(k, v) for k, v in (("human gold", report["label_mix"]["gold"]), ("teacher seed", report["label_mix"]["seed"]),
                                 ("student bulk", report["label_mix"]["student_corpus"])) if v]
    width = 0.8 / len(mixes)
    for j, (name, mix) in enumerate(mixes):
        ax.bar([i + j * width for i in range(len(classes))], [mix[c] for c in classes], width, label=name)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(classes))], classes, rotation=20, fontsize=8)
    ax.set(ylabel="share of labels", title="label mix: bulk labels against gold and the seed")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out["mix"] = png_tag(fig)

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    rel = report["reliability"]
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
    ax.bar([b["bin"][0] for b in rel], [b["accuracy"] for b in rel], width=0.1, align="edge", alpha=0.6,
           edgecolor="black", label="accuracy in bin")
    ax.scatter([b["confidence"] for b in rel], [b["accuracy"] for b in rel], s=[8 + b["n"] / 2 for b in rel],
               color="red", zorder=3, label="mean confidence (size: rows)")
    cal = report["tests"].get("calibration")
    title = f"reliability on gold (ECE {cal['ece']:.3f}, noise floor {cal['noise_floor']:.3f})" if cal else "reliability"
    ax.set(xlabel="student confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title=title)
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    out["reliability"] = png_tag(fig)

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    key, f1_key = report["main_metric"], report["f1_key"]
    for metric in dict.fromkeys([key, f1_key]):
        vals = [r["metrics"][metric] for r in runs]
        cis = [r["metrics"].get("ci", {}).get(metric) for r in runs]
        err = [[v - c[0] if c else 0 for v, c in zip(vals, cis)], [c[1] - v if c else 0 for v, c in zip(vals, cis)]]
        ax.errorbar(xs, vals, yerr=err, marker="o", capsize=3, label=f"{metric} (95% CI)")
    ax.plot(xs, [r["metrics"].get("mean_confidence") for r in runs], marker="s", linestyle="--", label="mean confidence")
    ax.plot(xs, [((r["metrics"].get("label_free") or {}).get("atc") or {}).get("estimate") for r in runs], marker="^",
            linestyle=":", label="label-free estimate (ATC, bulk)")
    ax.set(xlabel="monitor run", title="metric trends across monitor runs")
    ax.set_xticks(xs)
    ax.legend(fontsize=7)
    fig.tight_layout()
    out["trends"] = png_tag(fig)
    return out


LABEL_FREE_WITHIN = 0.05  # a label-free estimate is shown only when it missed gold by less than this


def label_free_lines(lf: dict, acc: str = "accuracy") -> list[str]:
    """The label-free estimates of the bulk labels' accuracy, each beside the error it showed on gold;
    one that missed gold by LABEL_FREE_WITHIN or more is named, not shown."""
    out = []
    for key, name in (("atc", "ATC (thresholded confidence, fitted on gold)"), ("mean_confidence", "mean confidence")):
        e = lf.get(key)
        if not e or e.get("estimate") is None:
            continue
        if abs(e["gold_error"]) >= lf.get("shown_within", LABEL_FREE_WITHIN):
            out.append(f"label-free {acc} estimate by {name}: not shown, it missed gold by {abs(e['gold_error']):.3f}")
        else:
            out.append(f"label-free {acc} estimate by {name} for the student's {lf['rows']} bulk labels: {e['estimate']:.3f} "
                       f"(missed gold by {abs(e['gold_error']):.3f}; gold {acc}: {lf['gold_accuracy']:.3f})")
    return out + ([f"  {lf['caveat']}"] if out else [])



def html_table(head: list[str], rows: list[list]) -> str:
    cell = lambda v: f"{v:.3f}" if isinstance(v, float) else html.escape(str(v))  # noqa: E731
    return ("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows) + "</table>")


def write_html(report: dict, runs: list[dict], path: Path) -> Path:
    figs = plots(report, runs)
    t = report["teacher"]
    alerts = "".join(
        f'<div class="alert" style="border-color:{SEVERITY_COLOR[a["severity"]]}"><b style="color:'
        f'{SEVERITY_COLOR[a["severity"]]}">{a["severity"].upper()}</b> <code>{a["test"]}</code>: '
        f'{html.escape(a["reason"])}<br><small>mitigation: {html.escape(a["mitigation"])}</small></div>'
        for a in report["alerts"]) or '<div class="ok">No alerts.</div>'
    key = report["main_metric"]
    systems = html_table(["system", *report["headline"], f"95% CI {key}", "invalid"],
                     [[name, *[m[h] for h in report["headline"]],
                       "[{:.3f}, {:.3f}]".format(*m["ci"][key]) if m.get("ci") else "", m["invalid"]]
                      for name, m in report["systems"].items()])
    per_class = html_table(["class", "support", "precision", "recall", "recall 95% CI", "F1", "gold mix", "bulk mix", "note"],
                       [[c, m["support"], m["precision"], m["recall"], "[{:.2f}, {:.2f}]".format(*m["recall_ci"]),
                         m["f1"], report["label_mix"]["gold"][c], report["label_mix"]["student_corpus"][c],
                         "insufficient support" if m["insufficient_support"] else ""]
                        for c, m in report["systems"]["student"]["per_class"].items()])
    acc = report.get("accuracy_name", "accuracy")
    tests = html_table(["test", "p", "Holm p", "significant", "effect"],
                   [[k.replace("accuracy", acc.replace(" ", "_")), fmt_p(v["p"]), fmt_p(v["p_holm"]),
                     "yes" if v["significant"] else "no", effect(k, v)] for k, v in report["tests"].items()])
    label_free = "".join(f"<p>{html.escape(line)}</p>" for line in label_free_lines(report["label_free"], acc))
    power = ""
    if report.get("power"):
        p = report["power"]
        power = (f"<h2>Power</h2><p>With {p['gold_rows']} gold rows and discordance {p['discordance']:.3f} "
                 f"({html.escape(p['discordance_source'])}), an alert catches with 80% power an accuracy drop of "
                 f"{p['accuracy_drop'] if p['accuracy_drop'] is None else round(p['accuracy_drop'], 3)} and these "
                 "recall drops:</p>" + html_table(["class", "support", "smallest recall drop"],
                                              [[c, v["support"], v["recall_drop"] if v["recall_drop"] is not None
                                                else "none detectable"] for c, v in p["per_class"].items()]))
    teacher = (f"{t['model']} (simulated, target accuracy {t['sim_accuracy']}, {t.get('sim_noise', 'uniform')} noise)"
               if t["simulated"] else t["model"])
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>distill monitor · {html.escape(report['recipe'])}</title>
<style>
body {{ font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; margin: 8px 0 16px; }} td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
th {{ background: #f3f3f3; }} td:first-child, th:first-child {{ text-align: left; }}
.alert {{ border-left: 5px solid; padding: 6px 10px; margin: 6px 0; background: #fafafa; }}
.ok {{ border-left: 5px solid #2e7d32; padding: 6px 10px; background: #f4faf4; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }}
.grid img {{ width: calc(50% - 8px); border: 1px solid #eee; }}
small {{ color: #555; }}
</style></head><body>
<h1>distill monitor · {html.escape(report['recipe'])}</h1>
<p>{report['time']} · {report['gold_rows']} human gold rows · student <code>{html.escape(str(report['student']))}</code>
· baseline {html.escape(str(report['baseline'] or 'none'))} · teacher {html.escape(teacher)} · {report['corpus_rows']} bulk labels
· history run {report['history'].get('run', report['history']['run_id'])} of {report['history']['runs']}</p>
<h2>Alerts</h2>{alerts}
<h2>Scores on human gold</h2>{systems}
<h2>Per class (student)</h2>{per_class}
<h2>Tests</h2><p><small>One-sided toward "worse" where a direction exists; an alert needs Holm's p below
alpha across all tests and, for the label mix, a material effect.</small></p>{tests}
{label_free}{power}
<h2>Plots</h2><div class="grid">{figs['recall']}{figs['mix']}{figs['reliability']}{figs['trends']}</div>
</body></html>
"""
    path.write_text(page)
    return path


def effect(name: str, t: dict) -> str:
    """One line with the numbers behind a test."""
    name = name.removesuffix("_vs_teacher")
    if name == "class_collapse":
        return ", ".join(f"{c}: F1 {v['f1'][0]:.3f} -> {v['f1'][1]:.3f}" for c, v in t["classes"].items()) or "none"
    if name in ("accuracy", "f1", "macro_f1"):
        extra = f", error persistence {t['error_persistence']:.2f}" if t.get("error_persistence") is not None else ""
        return f"{t['baseline']:.3f} -> {t['current']:.3f}{extra}"
    if name == "class_recall":
        c = t["per_class"].get(t["worst"]) if t["worst"] else None
        return f"worst {t['worst']}: {c['baseline']:.3f} -> {c['current']:.3f}" if c else ""
    if name == "overconfidence":
        return f"confidence {t['confidence'][0]:.3f} -> {t['confidence'][1]:.3f}, accuracy " \
               f"{t['accuracy'][0]:.3f} -> {t['accuracy'][1]:.3f}"
    if name == "calibration":
        return f"ECE {t['ece']:.3f}, noise floor {t['noise_floor']:.3f}"
    if name.startswith("label_mix"):
        return f"PSI {t['psi']:.3f}, JS {t['js_distance']:.3f}, entropy {t['entropy_bits'][0]:.2f} -> " \
               f"{t['entropy_bits'][1]:.2f} bits, tail mass {t['tail_mass'][0]:.3f} -> {t['tail_mass'][1]:.3f}"
    if name == "vanished":
        return ", ".join(t["classes"]) or "none"
    if name == "cardinality":
        return f"labels (entities) per row {t['mean'][0]:.2f} (gold) -> {t['mean'][1]:.2f} (bulk)"
    if name == "input":
        return f"MMD^2 {t['mmd2']:.4f} ({t['rows'][0]} corpus vs {t['rows'][1]} gold rows)"
    return ""
