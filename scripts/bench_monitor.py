"""Does the monitor keep its false-alarm rate, and what does it catch? By simulation.

    python scripts/bench_monitor.py [--out bench_monitor.json] [--reps 1000]

Each replicate builds the evidence `distill monitor` sees and runs the monitor's own tests and
alert rule (`distill.drift`) on it:
- four classes with prevalence 55 / 25 / 12 / 8 %, so the last is the minority class;
- a baseline student at 90% accuracy whose errors keep the class mix, with calibrated confidence;
- the current student: the baseline's prediction on each row, except on a random 30% of rows
  where it is drawn afresh from the same model (two students of one pipeline disagree in
  correctness on about 5% of rows);
- gold of 200 / 500 / 1,000 / 2,000 rows, a bulk batch of 5,000 labels, 1,000 teacher seed labels
  at 88%, the teacher at 88% on gold (the student is tested against it too), and 16-dimensional embeddings of up to 1,000 gold and 1,000 corpus inputs.
Scenarios change only the current student (on gold and corpus alike), or the corpus inputs:
null, drop3 (3 points of accuracy lost evenly across classes), minority_cut (half of the
minority class's predictions go elsewhere), minority_lost (the minority class is never predicted
where it is right, while wrong rows still name it), majority_flip (3% of rows flipped to the majority
class), input_shift (corpus embeddings moved by 0.2 standard deviations along one direction).

false_alarm_rate: for each test, the share of all null replicates (every gold size) where its own
p < 0.05 (by size under false_alarm_by_size), plus "monitor": an alert at
monitor.fail_on (warning) or worse, after Holm across the tests.
power: the share of replicates where the monitor raises such an alert (its exit status would be 1);
power_by_test: each test's own rate of p < 0.05.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from distill import drift

ROOT = Path(__file__).resolve().parents[1]
PI = np.array([0.55, 0.25, 0.12, 0.08])
CLASSES = ["c0", "c1", "c2", "minority"]
ACC, TEACHER_ACC, CHURN, CONF_K = 0.90, 0.88, 0.30, 10.0
CORPUS, SEED_ROWS, EMB_DIM, EMB_ROWS, SHIFT = 5000, 1000, 16, 1000, 0.2
SIZES = (200, 500, 1000, 2000)
SCENARIOS = ("null", "drop3", "minority_cut", "minority_lost", "majority_flip", "input_shift")
ALPHA = 0.05


def labeler(gold: np.ndarray, acc: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """Predictions at accuracy `acc` whose errors keep the class mix (a wrong label is drawn from
    the prevalence), and calibrated confidence: Beta draws with P(right | confidence) = confidence."""
    a = (acc - (PI ** 2).sum()) / (1 - (PI ** 2).sum())
    pred = np.where(rng.random(len(gold)) < a, gold, rng.choice(len(PI), size=len(gold), p=PI))
    right = pred == gold
    al, be = acc * CONF_K, (1 - acc) * CONF_K
    conf = np.where(right, rng.beta(al + 1, be, len(gold)), rng.beta(al, be + 1, len(gold)))
    return pred, conf


def redraw_except(excluded: np.ndarray, rng) -> np.ndarray:
    """A label from the prevalence, never the excluded one (one per row)."""
    out = rng.choice(len(PI), size=len(excluded), p=PI)
    bad = out == excluded
    while bad.any():
        out[bad] = rng.choice(len(PI), size=int(bad.sum()), p=PI)
        bad = out == excluded
    return out


def change(scenario: str, gold: np.ndarray, pred: np.ndarray, rng) -> np.ndarray:
    pred = pred.copy()
    if scenario == "drop3":
        right = np.flatnonzero(pred == gold)
        flip = right[rng.random(len(right)) < 0.03 / ACC]
        pred[flip] = redraw_except(gold[flip], rng)
    elif scenario == "minority_cut":
        minority = np.flatnonzero(pred == len(PI) - 1)
        cut = minority[rng.random(len(minority)) < 0.5]
        pred[cut] = redraw_except(pred[cut], rng)
    elif scenario == "minority_lost":  # the minority class is never right; wrong rows still name it
        lost = np.flatnonzero((pred == len(PI) - 1) & (gold == len(PI) - 1))
        pred[lost] = redraw_except(pred[lost], rng)
    elif scenario == "majority_flip":
        other = np.flatnonzero(pred != 0)
        pred[other[rng.random(len(other)) < 0.03 * len(pred) / max(1, len(other))]] = 0
    return pred


def counts(gold: np.ndarray, pred: np.ndarray) -> np.ndarray:
    eye = np.eye(len(PI), dtype=np.int64)
    g, p = eye[gold], eye[pred]
    return np.stack([g * p, p, g], -1)


def replicate(scenario: str, n: int, rng, cfg) -> dict:
    gold = rng.choice(len(PI), size=n, p=PI)
    base, base_conf = labeler(gold, ACC, rng)
    fresh, fresh_conf = labeler(gold, ACC, rng)
    keep = rng.random(n) >= CHURN
    cur, cur_conf = np.where(keep, base, fresh), np.where(keep, base_conf, fresh_conf)
    cur = change(scenario, gold, cur, rng)
    corpus_gold = rng.choice(len(PI), size=CORPUS, p=PI)
    corpus_pred = change(scenario, corpus_gold, labeler(corpus_gold, ACC, rng)[0], rng)
    teacher = labeler(gold, TEACHER_ACC, rng)[0]
    seed_gold = rng.choice(len(PI), size=SEED_ROWS, p=PI)
    seed_pred = labeler(seed_gold, TEACHER_ACC, rng)[0]
    emb_gold = rng.normal(size=(min(n, EMB_ROWS), EMB_DIM))
    emb_corpus = rng.normal(size=(EMB_ROWS, EMB_DIM))
    if scenario == "input_shift":
        emb_corpus[:, 0] += SHIFT
    ev = drift.Evidence(
        classes=CLASSES, f1_key="macro_f1", counts=counts(gold, cur), correct=cur == gold, confidence=cur_conf,
        baseline="previous student", base_counts=counts(gold, base), base_correct=base == gold,
        base_confidence=base_conf,
        mix={"corpus": np.bincount(corpus_pred, minlength=len(PI)), "gold": np.bincount(gold, minlength=len(PI)),
             "seed": np.bincount(seed_pred, minlength=len(PI))},
        emb_gold=emb_gold, emb_corpus=emb_corpus, teacher_counts=counts(gold, teacher), teacher_correct=teacher == gold)
    cfg.seed = int(rng.integers(2**31))  # fresh permutations per replicate, as in separate monitor runs
    tests = drift.run_tests(ev, cfg)
    # a collapse fires on its own rule (a class near zero from a real F1), not on one p-value
    fired = {k: t["significant"] if k.startswith("class_collapse") else t["p"] < ALPHA for k, t in tests.items()}
    fired["monitor"] = drift.fails(drift.alerts(tests, cfg, "previous student"), cfg.fail_on)
    return fired


def work(job: tuple) -> tuple:
    scenario, n, reps, seed, cfg = job
    rng = np.random.default_rng([seed, SIZES.index(n), SCENARIOS.index(scenario)])
    cfg = OmegaConf.create(cfg)
    rows = [replicate(scenario, n, rng, cfg) for _ in range(reps)]
    return scenario, n, {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench_monitor.json")
    parser.add_argument("--reps", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "distill" / "configs" / "monitor" / "default.yaml"))
    start = time.perf_counter()
    jobs = [(s, n, args.reps, args.seed, cfg) for s in SCENARIOS for n in SIZES]
    with Pool(args.workers) as pool:
        results = pool.map(work, jobs, chunksize=1)
    rates = {(s, n): r for s, n, r in results}

    null = {n: rates["null", n] for n in SIZES}
    result = {
        "false_alarm_rate": {k: float(np.mean([null[n][k] for n in SIZES])) for k in null[SIZES[0]]},
        "power": {s: {str(n): rates[s, n]["monitor"] for n in SIZES} for s in SCENARIOS if s != "null"},
        "false_alarm_by_size": {k: {str(n): null[n][k] for n in SIZES} for k in null[SIZES[0]]},
        "power_by_test": {s: {k: {str(n): rates[s, n][k] for n in SIZES} for k in rates[s, SIZES[0]]}
                          for s in SCENARIOS if s != "null"},
        "setup": {"replicates": args.reps, "alpha": ALPHA, "prevalence": PI.tolist(), "accuracy": ACC,
                  "teacher_accuracy": TEACHER_ACC, "churn": CHURN, "corpus_rows": CORPUS, "seed_rows": SEED_ROWS,
                  "embedding_dim": EMB_DIM, "embedded_rows": EMB_ROWS, "shift_sd": SHIFT,
                  "n_perm": cfg["n_perm"], "seconds": round(time.perf_counter() - start, 1)},
    }
    Path(args.out).write_text(json.dumps(result, indent=2))

    print(f"false-alarm rate at alpha={ALPHA} ({args.reps} null replicates per gold size)")
    print(f"{'test':<28}" + "".join(f"{n:>8}" for n in SIZES) + f"{'all':>8}")
    for k, by in result["false_alarm_by_size"].items():
        print(f"{k:<28}" + "".join(f"{by[str(n)]:>8.3f}" for n in SIZES) + f"{result['false_alarm_rate'][k]:>8.3f}")
    print("\npower: share of replicates where the monitor alerts")
    print(f"{'scenario':<18}" + "".join(f"{n:>8}" for n in SIZES))
    for s, by in result["power"].items():
        print(f"{s:<18}" + "".join(f"{by[str(n)]:>8.3f}" for n in SIZES))
    print(f"\nwrote {args.out} in {result['setup']['seconds']} s")


if __name__ == "__main__":
    main()
