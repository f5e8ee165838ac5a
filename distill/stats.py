"""The monitor's statistics, on plain arrays so the benchmark can check them by simulation.

Per-row counts are the common currency: `counts[i, c] = (tp, predicted, gold)` for class (or
entity type) c in row (document) i. Summing rows gives any P/R/F1; resampling rows resamples
whole documents; swapping rows between two systems is the paired permutation. Every p-value
here is one-sided toward "worse" where a direction exists, and exact (mid-p) or Monte Carlo
((1 + k) / (B + 1), never 0), so that it keeps its false-alarm rate on small gold sets (see
scripts/bench_monitor.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as st
from scipy.spatial.distance import jensenshannon


# -- P/R/F1 from summed counts ---------------------------------------------------------------------
def prf_arrays(sums: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall, F1 from summed counts [..., C, 3]; 0 where undefined."""
    tp, pred, gold = sums[..., 0], sums[..., 1], sums[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(pred > 0, tp / np.maximum(pred, 1), 0.0)
        r = np.where(gold > 0, tp / np.maximum(gold, 1), 0.0)
        f = np.where(p + r > 0, 2 * p * r / np.where(p + r > 0, p + r, 1), 0.0)
    return p, r, f


def macro_f1(sums: np.ndarray) -> np.ndarray:
    """Mean F1 over the classes that occur in gold or in the predictions."""
    _, _, f = prf_arrays(sums)
    present = (sums[..., 1] + sums[..., 2]) > 0
    return (f * present).sum(-1) / np.maximum(present.sum(-1), 1)


def micro_f1(sums: np.ndarray) -> np.ndarray:
    tot = sums.sum(-2)
    _, _, f = prf_arrays(tot[..., None, :])
    return f[..., 0]


F1 = {"macro_f1": macro_f1, "f1": micro_f1}


def scores(counts: np.ndarray, correct: np.ndarray, classes: list[str]) -> dict:
    """accuracy (rows entirely right), micro and macro F1, per-class P/R/F1 and support."""
    sums = counts.sum(0)
    p, r, f = prf_arrays(sums)
    tot = sums.sum(0)
    mp, mr, mf = (x[0] for x in prf_arrays(tot[None]))
    return {
        "n": int(len(counts)), "accuracy": float(correct.mean()) if len(correct) else 0.0,
        "precision": float(mp), "recall": float(mr), "f1": float(mf), "macro_f1": float(macro_f1(sums)),
        "per_class": {c: {"precision": float(p[k]), "recall": float(r[k]), "f1": float(f[k]),
                          "support": int(sums[k, 2])} for k, c in enumerate(classes)},
    }


def _resamples(n: int, n_boot: int, seed: int):
    """Bootstrap row weights, 100 resamples at a time: memory stays flat for large gold sets."""
    rng = np.random.default_rng(seed)
    for start in range(0, n_boot, 100):
        yield rng.multinomial(n, np.full(n, 1 / n), size=min(100, n_boot - start)).astype(np.float64)


def bootstrap_ci(counts: np.ndarray, correct: np.ndarray, f1_key: str, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95) -> dict:
    """Percentile CIs from resampling rows (whole documents): accuracy, micro (`f1`) and macro F1
    (`f1_key` is always among them), and per-class recall and F1."""
    n = len(counts)
    flat, sums, accs = counts.reshape(n, -1).astype(np.float64), [], []
    for w in _resamples(n, n_boot, seed):
        sums.append(w @ flat)
        accs.append(w @ correct / n)
    sums = np.concatenate(sums).reshape(n_boot, *counts.shape[1:])
    _, r, f = prf_arrays(sums)
    q = [(1 - level) / 2, (1 + level) / 2]
    ci = lambda x: [float(v) for v in np.quantile(x, q, axis=0)]  # noqa: E731
    return {"accuracy": ci(np.concatenate(accs)), **{key: ci(f1(sums)) for key, f1 in F1.items()},
            "recall": np.quantile(r, q, axis=0).T.tolist(), "f1_per_class": np.quantile(f, q, axis=0).T.tolist()}


def paired_bootstrap_diff(base: np.ndarray, new: np.ndarray, stat, n_boot: int = 1000, seed: int = 0,
                          level: float = 0.95) -> list[float]:
    """Percentile CI of stat(new sums) - stat(base sums), resampling rows of both systems together."""
    n = len(base)
    fb, fn = base.reshape(n, -1).astype(np.float64), new.reshape(n, -1).astype(np.float64)
    diffs = [stat((w @ fn).reshape(-1, *new.shape[1:])) - stat((w @ fb).reshape(-1, *base.shape[1:]))
             for w in _resamples(n, n_boot, seed)]
    return [float(v) for v in np.quantile(np.concatenate(diffs), [(1 - level) / 2, (1 + level) / 2])]


# -- paired tests against a baseline on the same gold rows -----------------------------------------
def mcnemar_midp(b: int, c: int) -> float:
    """One-sided exact mid-p McNemar: b rows the baseline got right and the new model wrong, c
    the reverse; small p means the new model is worse. Under no change b ~ Binomial(b + c, 1/2)."""
    n = b + c
    return float(st.binom.sf(b, n, 0.5) + 0.5 * st.binom.pmf(b, n, 0.5))


def signflip_p(d: np.ndarray, n_perm: int = 1000, seed: int = 0) -> float:
    """One-sided paired test that mean(d) > 0, where d is baseline-minus-new per row. Differences
    in {-1, 0, 1} give the exact McNemar mid-p; others a Monte Carlo sign-flip p."""
    d = np.asarray(d, dtype=np.float64)
    if np.all(np.isin(d, (-1.0, 0.0, 1.0))):
        return mcnemar_midp(int((d > 0).sum()), int((d < 0).sum()))
    d = d[d != 0]
    if not len(d):
        return 0.5
    rng = np.random.default_rng(seed)
    signs = rng.integers(0, 2, size=(n_perm, len(d))) * 2 - 1
    null, obs = signs @ d, d.sum()
    return _mc_p(null, obs, 1e-9 * max(1.0, abs(obs)))


def paired_permutation(base: np.ndarray, new: np.ndarray, stat, n_perm: int = 1000, seed: int = 0) -> float:
    """One-sided paired permutation test that stat(base sums) - stat(new sums) > 0: each row's two
    systems are swapped at random (Monte Carlo)."""
    n = len(base)
    b2, n2 = base.reshape(n, -1).astype(np.float64), new.reshape(n, -1).astype(np.float64)
    sb, sn, diff = b2.sum(0), n2.sum(0), b2 - n2
    shape = base.shape[1:]
    obs = float(stat(sb.reshape(shape)) - stat(sn.reshape(shape)))
    mask = np.random.default_rng(seed).integers(0, 2, size=(n_perm, n)).astype(np.float64)
    moved = mask @ diff  # what the swapped rows carry from base to new
    null = stat((sb - moved).reshape(n_perm, *shape)) - stat((sn + moved).reshape(n_perm, *shape))
    return _mc_p(null, obs, 1e-12)


def _mc_p(null: np.ndarray, obs: float, tol: float) -> float:
    """Monte Carlo p (1 + k) / (B + 1), k the null statistics at or above the observed one (ties
    within tol): the observed statistic counts as one draw, so p is never 0 and stays valid."""
    return float((1 + (null >= obs - tol).sum()) / (len(null) + 1))


def holm(pvalues: dict[str, float]) -> dict[str, float]:
    """Holm-adjusted p-values (family-wise error control under any dependence)."""
    items = sorted(pvalues.items(), key=lambda kv: kv[1])
    m, out, running = len(items), {}, 0.0
    for i, (key, p) in enumerate(items):
        running = max(running, min(1.0, (m - i) * p))
        out[key] = running
    return out


def persistence(base_correct: np.ndarray, new_correct: np.ndarray) -> float | None:
    """Share of the baseline's gold errors the new model repeats."""
    errs = ~base_correct.astype(bool)
    return float((~new_correct.astype(bool))[errs].mean()) if errs.any() else None


# -- label mix -------------------------------------------------------------------------------------
def shares(counts: np.ndarray, floor: float = 1e-4) -> np.ndarray:
    p = np.asarray(counts, dtype=np.float64) / max(1.0, float(np.sum(counts)))
    return np.maximum(p, floor)


def chi2_homogeneity(a: np.ndarray, b: np.ndarray) -> tuple[float, float, int]:
    """Chi-square test that two samples of labels share one distribution: (statistic, p, dof)."""
    table = np.stack([a, b]).astype(np.float64)
    table = table[:, table.sum(0) > 0]
    if table.shape[1] < 2 or (table.sum(1) == 0).any():
        return 0.0, 1.0, 0
    res = st.chi2_contingency(table, correction=False)
    return float(res.statistic), float(res.pvalue), int(res.dof)


def psi(actual: np.ndarray, expected: np.ndarray) -> float:
    """Population stability index: sum (a - e) ln(a / e) over classes (shares floored at 1e-4)."""
    a, e = shares(actual), shares(expected)
    return float(((a - e) * np.log(a / e)).sum())


def js_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Jensen-Shannon distance in bits, 0 (same mix) to 1 (disjoint)."""
    return float(jensenshannon(np.asarray(a, float), np.asarray(b, float), base=2))


def entropy_bits(counts: np.ndarray) -> float:
    p = np.asarray(counts, dtype=np.float64)
    p = p[p > 0] / p.sum() if p.sum() else p[:0]
    return float(-(p * np.log2(p)).sum()) + 0.0  # no -0.0 for a single class


def tail_classes(reference: np.ndarray, share: float = 0.2) -> list[int]:
    """The rarest classes of the reference that together hold at most `share` of it (at least one)."""
    p = np.asarray(reference, float) / max(1.0, float(np.sum(reference)))
    order, out, total = np.argsort(p, kind="stable"), [], 0.0
    for k in order:
        if out and total + p[k] > share:
            break
        out.append(int(k))
        total += p[k]
    return out


def vanished_p(count: int, rows: int, reference_share: float) -> float:
    """Chance of seeing `count` or fewer of a class in `rows` labels if it kept its reference share."""
    return float(st.binom.cdf(count, rows, reference_share)) if rows else 1.0


# -- calibration -----------------------------------------------------------------------------------
def _bin(conf: np.ndarray, bins: int) -> np.ndarray:
    """Equal-width confidence bin of each row; confidence 1.0 falls in the top bin."""
    return np.minimum((conf * bins).astype(int), bins - 1)


def ece(conf: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error over equal-width confidence bins. Works row-wise or batched
    ([B, n] correctness for the same confidences)."""
    conf = np.asarray(conf, np.float64)
    correct = np.asarray(correct, np.float64)
    onehot = np.eye(bins)[_bin(conf, bins)]  # [n, bins]
    gap = correct @ onehot - conf @ onehot  # [..., bins]: sum(correct) - sum(conf) per bin
    return np.abs(gap).sum(-1) / max(1, len(conf))


def ece_test(conf: np.ndarray, correct: np.ndarray, bins: int = 10, n_sim: int = 1000,
             seed: int = 0) -> dict:
    """ECE against its noise floor at this gold size: redraw correctness as Bernoulli(confidence)
    (a perfectly calibrated model) n_sim times; p is the share of those ECEs at or above the
    observed one (counting the observed one), the floor their 95th percentile."""
    conf = np.asarray(conf, np.float64)
    rng = np.random.default_rng(seed)
    null = ece(conf, rng.random((n_sim, len(conf))) < conf, bins)
    obs = float(ece(conf, correct, bins))
    return {"ece": obs, "noise_floor": float(np.quantile(null, 0.95)),
            "p": _mc_p(null, obs, 0.0)}


def reliability(conf: np.ndarray, correct: np.ndarray, bins: int = 10) -> list[dict]:
    conf, correct = np.asarray(conf, float), np.asarray(correct, float)
    idx = _bin(conf, bins)
    return [{"bin": [k / bins, (k + 1) / bins], "n": int((idx == k).sum()),
             "confidence": float(conf[idx == k].mean()), "accuracy": float(correct[idx == k].mean())}
            for k in range(bins) if (idx == k).any()]


@dataclass
class AgreementEstimate:
    """A batch's accuracy from the student's agreement with the teacher on it: how often the
    student is right on gold when it agrees with the teacher and when it does not, weighted by the
    batch's agreement."""
    right_when_agreeing: float
    right_when_disagreeing: float

    def at(self, agreement: float) -> float:
        return agreement * self.right_when_agreeing + (1 - agreement) * self.right_when_disagreeing


def accuracy_from_agreement(agrees: np.ndarray, right: np.ndarray) -> AgreementEstimate | None:
    """`agrees`, `right`: per gold row, the student agrees with the teacher, the student is right.
    None when gold holds no row of one kind."""
    agrees, right = np.asarray(agrees, bool), np.asarray(right, bool)
    if not agrees.any() or agrees.all():
        return None
    return AgreementEstimate(float(right[agrees].mean()), float(right[~agrees].mean()))


def label_free_accuracy(conf: np.ndarray) -> dict:
    """CBPE-style estimate: with calibrated confidences the expected share of right labels is their
    mean; the interval covers the Bernoulli noise only, not a calibration that broke on this batch."""
    conf = np.asarray(conf, np.float64)
    if not len(conf):
        return {"estimate": None, "ci": None, "rows": 0}
    mean, se = float(conf.mean()), float(np.sqrt((conf * (1 - conf)).sum()) / len(conf))
    return {"estimate": mean, "ci": [max(0.0, mean - 1.96 * se), min(1.0, mean + 1.96 * se)], "rows": len(conf)}


def atc_fit(conf: np.ndarray, correct: np.ndarray) -> tuple[float, float]:
    """Average thresholded confidence (Garg et al., ICLR 2022): the threshold t above which the
    labeled rows' share equals their accuracy, and the weight of rows exactly at t that makes it
    exact when confidences tie."""
    conf, acc = np.asarray(conf, np.float64), float(np.mean(correct))
    t = float(np.quantile(conf, 1 - acc))
    above, at = float(np.mean(conf > t)), float(np.mean(conf == t))
    return t, (min(1.0, max(0.0, (acc - above) / at)) if at else 0.0)


def atc_estimate(conf: np.ndarray, fit: tuple[float, float]) -> float:
    """The share of rows above the fitted threshold: the estimated accuracy of unlabeled rows."""
    conf, (t, w) = np.asarray(conf, np.float64), fit
    return float(np.mean(conf > t) + w * np.mean(conf == t))


def label_free_estimates(gold_conf: np.ndarray, gold_correct: np.ndarray, corpus_conf: np.ndarray,
                         splits: int = 20, seed: int = 0) -> dict:
    """Two estimates of the accuracy of unlabeled rows, each with its error measured on gold: the mean
    confidence (error: mean confidence minus accuracy on gold) and ATC fitted on gold (error: the mean
    absolute miss when fitted on one half of gold and checked on the other, both ways, over `splits`
    random halvings; it includes the halves' own sampling noise, so it errs on the large side)."""
    gold_conf, gold_correct = np.asarray(gold_conf, np.float64), np.asarray(gold_correct, bool)
    out = {"rows": len(corpus_conf), "gold_rows": len(gold_conf)}
    if not len(corpus_conf) or len(gold_conf) < 4:
        return {**out, "mean_confidence": None, "atc": None}
    mean = label_free_accuracy(corpus_conf)
    out["mean_confidence"] = {**mean, "gold_error": float(gold_conf.mean() - gold_correct.mean())}
    rng, misses = np.random.default_rng(seed), []
    for _ in range(splits):
        half = rng.permutation(len(gold_conf)) % 2 == 0
        for fit, check in ((half, ~half), (~half, half)):
            misses.append(atc_estimate(gold_conf[check], atc_fit(gold_conf[fit], gold_correct[fit]))
                          - float(gold_correct[check].mean()))
    fit = atc_fit(gold_conf, gold_correct)
    out["atc"] = {"estimate": atc_estimate(corpus_conf, fit), "gold_error": float(np.mean(np.abs(misses))),
                  "threshold": fit[0]}
    return out


# -- input drift -----------------------------------------------------------------------------------
def mmd_test(x: np.ndarray, y: np.ndarray, n_perm: int = 1000, features: int = 256, seed: int = 0) -> dict:
    """Permutation test of maximum mean discrepancy between two embedding samples, Gaussian kernel
    (median-distance bandwidth) approximated by random Fourier features."""
    rng = np.random.default_rng(seed)
    z = np.concatenate([x, y]).astype(np.float64)
    z = (z - z.mean(0)) / (z.std(0) + 1e-8)
    sub = z[rng.choice(len(z), size=min(len(z), 500), replace=False)]
    sq = (sub ** 2).sum(1)
    d2 = sq[:, None] + sq[None, :] - 2 * sub @ sub.T
    d2 = d2[np.triu_indices(len(sub), 1)]
    bandwidth = math.sqrt(float(np.median(d2)) / 2) if len(d2) and np.median(d2) > 0 else 1.0
    w = rng.normal(size=(z.shape[1], features)) / bandwidth
    phi = np.sqrt(2 / features) * np.cos(z @ w + rng.uniform(0, 2 * np.pi, features))
    n = len(x)
    obs = float(((phi[:n].mean(0) - phi[n:].mean(0)) ** 2).sum())
    picks = np.argpartition(rng.random((n_perm, len(z))), n - 1, axis=1)[:, :n]  # a random n per permutation
    m = np.zeros((n_perm, len(z)), np.float32)
    np.put_along_axis(m, picks, 1.0, axis=1)
    mean_x = (m @ phi.astype(np.float32)).astype(np.float64) / n
    mean_y = (phi.sum(0) - mean_x * n) / (len(z) - n)
    null = ((mean_x - mean_y) ** 2).sum(1)
    return {"mmd2": obs, "p": _mc_p(null, obs, 0.0), "rows": [len(x), len(y)]}


# -- sequential: CUSUM over gold audits ------------------------------------------------------------
def cusum(values: list[float], sizes: list[int], reference: float, k: float = 0.5, h: float = 4.0) -> dict:
    """One-sided CUSUM of standardized shortfalls (reference - value) / se: S_t = max(0, S_t-1 + z_t - k);
    it signals when S_t > h (k = 0.5, h = 4: about 170 audits between false signals of a normal stream)."""
    s, path = 0.0, []
    for v, n in zip(values, sizes):
        se = math.sqrt(max(reference * (1 - reference), 1e-6) / max(n, 1))
        s = max(0.0, s + (reference - v) / se - k)
        path.append(s)
    return {"path": path, "statistic": path[-1] if path else 0.0, "h": h, "signal": bool(path and path[-1] > h)}


# -- power -----------------------------------------------------------------------------------------
def mcnemar_power(n: int, discordance: float, drop: float, alpha: float = 0.05) -> float:
    """Power of the one-sided mid-p McNemar test on n paired rows when the rows split as: each
    discordant direction discordance/2 under no change, plus `drop` more rows the new model loses."""
    q = discordance / 2
    pd_, pb = min(1.0, 2 * q + drop), (q + drop) / max(2 * q + drop, 1e-12)
    total = 0.0
    dd = np.arange(n + 1)
    weights = st.binom.pmf(dd, n, pd_)
    for d in dd[weights > 1e-10]:
        b = np.arange(d + 1)
        p = st.binom.sf(b, d, 0.5) + 0.5 * st.binom.pmf(b, d, 0.5)
        total += weights[d] * st.binom.pmf(b, d, pb)[p < alpha].sum()
    return float(total)


def detectable_drop(n: int, discordance: float, alpha: float = 0.05, power: float = 0.8,
                    ceiling: float = 1.0) -> float | None:
    """Smallest drop (share of rows) the McNemar test detects with the given power; None past ceiling."""
    if n <= 0 or mcnemar_power(n, discordance, ceiling, alpha) < power:
        return None
    lo, hi = 0.0, ceiling
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if mcnemar_power(n, discordance, mid, alpha) >= power else (mid, hi)
        if hi - lo < 5e-4:
            break
    return hi
