"""How well the student learns from a seed set: training settings against the probe, on a dev set.

The simulated teacher (realistic noise) labels N seed rows of a dataset under --data, as in
scripts/bench_cascade.py; each variant (a name and config overrides) fits a student on those
labels with `distill.api.fit`, and labels a human-labeled dev set that is neither seed, corpus nor
the cascade benchmark's gold (BANKING77: train.csv's last tenth; SMS spam: the [0.3, 0.5] slice). Beside
them, on the same labels and backbone: `probe` (frozen embeddings, a logistic regression with C=10
on every teacher label) and, with --setfit, the setfit library. The defaults in
distill/configs/train/default.yaml were chosen with it (docs/students.md).

    python scripts/bench_student.py --dataset banking77 --seed-rows 1000 --out bench_student.json \\
        --variant default= --variant random_head_lr=train.head_init=random,train.head_lr=3e-3
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench_audit import machine  # scripts/ is on the path when run as a script
from bench_cascade import COMMON, DATASETS, ROOT, ROWS, commit, setfit_labels
from bench_quality import default_student

# human-labeled rows no benchmark trains on or scores: BANKING77 train.csv's last tenth, SMS spam [0.3, 0.5]
DEV = {"banking77": "data.gold.slice=[0.9,1.0]", "sms_spam": "data.gold.slice=[0.3,0.5]"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="banking77", choices=list(DEV))
    ap.add_argument("--seed-rows", type=int, default=1000)
    ap.add_argument("--variant", action="append", default=[],
                    help="NAME=key=value,key=value (overrides on the dataset's settings); repeatable")
    ap.add_argument("--setfit", action="store_true")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--work", default="/tmp/bench_student")
    ap.add_argument("--out", default="bench_student.json")
    args = ap.parse_args()

    from distill.api import fit, predict, score
    from distill.config import load_config
    from distill.data import load_split, read_jsonl
    from distill.tasks import build_task
    from distill.teach import teach

    recipe, _, extra, (epochs, lr) = DATASETS[args.dataset]
    work = Path(args.work) / f"{args.dataset}-{args.seed_rows}"
    overrides = [o.format(data=args.data, work=work, model=default_student(), epochs=epochs, lr=lr,
                          n=args.seed_rows, share=round(args.seed_rows / ROWS[args.dataset], 4))
                 for o in [f"recipe={recipe}", *extra, *COMMON]]
    cfg = load_config([*overrides, f"run_dir={work / 'run'}"])
    task = build_task(cfg.task)
    teach(cfg)
    pool = {r["id"]: r for r in load_split(cfg, "seed", task, labels=False)}
    rows = [{**pool[r["id"]], "label": r["label"]} for r in read_jsonl(work / "run" / "teacher" / "seed.jsonl")
            if r.get("label") is not None]
    dev = load_split(load_config([*overrides, f"run_dir={work / 'run'}", DEV[args.dataset]]), "gold", task,
                     labels=True).to_list()
    unlabeled = [{k: v for k, v in r.items() if k != "label"} for r in dev]
    results = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
    key = f"{args.dataset}-{args.seed_rows}"
    cell = results.setdefault(key, {"teacher_rows": len(rows), "dev_rows": len(dev), "machine": machine(),
                                    "overrides": overrides, "variants": {}})

    def keep(name: str, scores: dict, began: float, **more) -> None:
        cell["variants"][name] = {"accuracy": round(scores["accuracy"], 4), "macro_f1": round(scores["macro_f1"], 4),
                                  "seconds": round(time.perf_counter() - began), "commit": commit(), **more}
        Path(args.out).write_text(json.dumps(results, indent=1))

    for spec in args.variant:
        name, _, sets = spec.partition("=")
        began = time.perf_counter()
        vcfg = load_config([*overrides, f"run_dir={work / name}", *filter(None, sets.split(","))])
        meta = fit(vcfg, rows, work / name / "student", trained_on="the teacher")
        keep(name, score(task, dev, predict(vcfg, task, work / name / "student", unlabeled)), began,
             overrides=[o for o in sets.split(",") if o], steps=meta["steps"], kept_start=meta.get("kept_start"))

    began = time.perf_counter()
    from sklearn.linear_model import LogisticRegression

    from distill.students import student_class

    x, x_dev = student_class(cfg.student).base_embeddings(cfg.student, task, cfg.seed, [r["text"] for r in rows],
                                                          [r["text"] for r in dev])
    probe = LogisticRegression(C=10, max_iter=2000).fit(x, [r["label"] for r in rows])
    keep("probe", score(task, dev, {r["id"]: {"label": p} for r, p in zip(dev, probe.predict(x_dev))}), began)

    if args.setfit:
        began = time.perf_counter()
        pred = setfit_labels(cfg.student.model, rows, [r["text"] for r in dev], work / "setfit", cfg.seed)
        keep("setfit", score(task, dev, {r["id"]: {"label": p} for r, p in zip(dev, pred)}), began)

    print(f"{key}: {len(rows)} teacher rows, {len(dev)} human-labeled dev rows")
    print(f"{'variant':<28}{'accuracy':>10}{'macro-F1':>10}{'seconds':>9}  overrides")
    for name, v in cell["variants"].items():
        print(f"{name:<28}{v['accuracy']:>10.3f}{v['macro_f1']:>10.3f}{v['seconds']:>9}  {' '.join(v.get('overrides', []))}")


if __name__ == "__main__":
    main()
