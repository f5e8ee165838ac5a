"""Collapse-audit benchmark: `distill audit` on the demo recipe (three draws) and on SMS spam
(when ../shared/data/sms_spam is there), 5 generations x 3 strategies each on CPU, timed; writes
JSON and prints the figures behind each verdict.

    python scripts/bench_audit.py --out bench_audit.json [--data ../shared/data] [--plots docs]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# the demo as shipped, drawn three times (the seed draws its data, the teacher's noise and the
# training); spam on a 1,000-row seed pool and a 1,000-row corpus
AUDITS = {
    "demo": ["recipe=demo"],
    "demo_seed1": ["recipe=demo", "seed=1"],
    "demo_seed2": ["recipe=demo", "seed=2"],
    "spam": ["recipe=spam", "teacher=simulated", "student=tiny_t5", "train=tiny", "train.epochs=5",
             "data.seed.limit=1000", "data.corpus.limit=1000", "data.file={data}/sms_spam/SMSSpamCollection"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench_audit.json")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--generations", type=int, default=5)
    ap.add_argument("--plots", default=None, help="copy each audit's plot here as audit_<name>.png")
    ap.add_argument("--work", default=None, help="run directories here (default: a temporary folder)")
    args = ap.parse_args()

    work = Path(args.work or tempfile.mkdtemp(prefix="bench_audit_"))
    results = {"machine": machine(), "generations": args.generations}
    for name, overrides in AUDITS.items():
        if name == "spam" and not (Path(args.data) / "sms_spam").is_dir():
            print(f"skipping {name}: {args.data}/sms_spam is absent")
            continue
        run_dir = work / name
        cmd = ["distill", "audit", *[o.format(data=args.data) for o in overrides], f"run_dir={run_dir}",
               f"audit.generations={args.generations}"]
        began = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        seconds = time.perf_counter() - began
        if proc.returncode:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
        audit = json.loads((run_dir / "audit" / "audit.json").read_text())
        results[name] = {"command": " ".join(c for c in cmd if not c.startswith("run_dir=")), "seconds": round(seconds, 1),
                         "setup": next(iter(audit.values()))["setup"], "strategies": {}}
        for strategy, v in audit.items():
            first, last = v["generations"][0], v["generations"][-1]
            results[name]["strategies"][strategy] = {
                "verdict": v["verdict"], "reason": v["reason"],
                **{k: [first[k], last[k]] for k in ("accuracy", "macro_f1", "minority_recall", "entropy", "mean_confidence")},
                "macro_f1_by_generation": [g["macro_f1"] for g in v["generations"]],
                "macro_f1_change_ci": v["evidence"]["macro_f1_change_ci"],
                "error_persistence_last": last["error_persistence"], "first_alert": v["evidence"]["first_alert"],
                "train_rows_last": last["train_rows"]}
        if args.plots:
            Path(args.plots).mkdir(parents=True, exist_ok=True)
            shutil.copy(run_dir / "audit" / "audit.png", Path(args.plots) / f"audit_{name}.png")
    Path(args.out).write_text(json.dumps(results, indent=2))

    print(f"collapse audit, {args.generations} generations after generation 0, on {results['machine']}")
    print(f"{'recipe':<6} {'strategy':<11} {'verdict':<9} {'macro-F1 gen0 -> last':>22} {'minority recall':>16} "
          f"{'entropy':>13} {'confidence':>13} {'1st alert':>9}")
    for name in AUDITS:
        if name not in results:
            continue
        for s, r in results[name]["strategies"].items():
            print(f"{name:<6} {s:<11} {r['verdict']:<9} {r['macro_f1'][0]:>11.3f} -> {r['macro_f1'][1]:.3f} "
                  f"{r['minority_recall'][0]:>7.3f} -> {r['minority_recall'][1]:.3f} {r['entropy'][0]:>5.2f} -> "
                  f"{r['entropy'][1]:.2f} {r['mean_confidence'][0]:>5.3f} -> {r['mean_confidence'][1]:.3f} "
                  f"{r['first_alert'] if r['first_alert'] is not None else '-':>9}")
        print(f"{name:<6} wall time {results[name]['seconds'] / 60:.1f} min")
    print(f"-> {args.out}")


def machine() -> str:
    """The CPU model and how many CPUs this process may use."""
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in (cpuinfo.read_text().splitlines() if cpuinfo.exists() else [])
             if line.startswith("model name")]
    return f"{names[0] if names else platform.machine()}, {len(os.sched_getaffinity(0))} CPUs"


if __name__ == "__main__":
    main()
