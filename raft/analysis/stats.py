"""Paired comparisons of RAFT against BERT across seeds.

Each seed fine-tunes both variants on the same sampled data, so the two scores of one seed
form a pair. For the differences d_i = raft_i - bert_i we report

- ``delta``: the mean difference;
- a paired bootstrap percentile CI of the mean difference (seeds resampled with
  replacement, pairs kept together; fixed generator seed, so the result is deterministic);
- a paired t-test and a Wilcoxon signed-rank test (two-sided);
- a verdict in words at the 95 % level: "RAFT better" / "BERT better" only when the paired
  t-test rejects *and* the bootstrap CI excludes 0, otherwise "no detectable difference";
  "too few seeds" with fewer than two pairs.

The Wilcoxon test is reported as a robustness check but does not enter the verdict: with
five seeds its smallest attainable two-sided p-value is 0.0625, so it could never reject.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as _sps

ALPHA = 0.05
N_BOOTSTRAP = 10_000
BOOTSTRAP_SEED = 20230502

RAFT_BETTER = "RAFT better"
BERT_BETTER = "BERT better"
NO_DIFFERENCE = "no detectable difference"
TOO_FEW = "too few seeds"
ONE_VARIANT = "only one variant"


@dataclass(frozen=True)
class PairedComparison:
    n_paired: int
    delta: float
    ci_low: float
    ci_high: float
    p_ttest: float
    p_wilcoxon: float
    verdict: str

    def as_dict(self) -> dict:
        return asdict(self)


def paired_bootstrap_ci(diffs, *, confidence: float = 1 - ALPHA, n_boot: int = N_BOOTSTRAP,
                        seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of paired differences (seeds resampled)."""
    d = np.asarray(diffs, dtype=np.float64)
    if d.size == 0:
        return (math.nan, math.nan)
    if _constant(d):
        m = float(d.mean())
        return (m, m)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, d.size, size=(n_boot, d.size))
    means = d[idx].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - confidence) / 2, 1 - (1 - confidence) / 2])
    return (float(lo), float(hi))


def paired_ttest_p(diffs) -> float:
    """Two-sided paired t-test p-value on the differences; NaN below two pairs.

    Constant differences have zero variance: p = 1 when they are all zero, p = 0 otherwise
    (the limit of the t statistic)."""
    d = np.asarray(diffs, dtype=np.float64)
    if d.size < 2:
        return math.nan
    if _constant(d):
        return 1.0 if np.all(d == 0) else 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = _sps.ttest_1samp(d, 0.0).pvalue
    return float(p)


def _constant(d: np.ndarray) -> bool:
    """All differences equal up to floating-point rounding (e.g. raft = bert + 1 per seed)."""
    return bool(np.ptp(d) <= 1e-12 * max(1.0, float(np.max(np.abs(d)))))


def wilcoxon_p(diffs) -> float:
    """Two-sided Wilcoxon signed-rank p-value (exact when possible); NaN below two pairs,
    1 when every difference is zero."""
    d = np.asarray(diffs, dtype=np.float64)
    if d.size < 2:
        return math.nan
    if np.all(d == 0):
        return 1.0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p = _sps.wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue
    except ValueError:
        return math.nan
    return float(p)


def verdict(delta: float, ci: tuple[float, float], p_ttest: float, n_paired: int,
            alpha: float = ALPHA) -> str:
    if n_paired < 2:
        return TOO_FEW
    lo, hi = ci
    if not (math.isnan(p_ttest) or math.isnan(lo)) and p_ttest < alpha:
        if lo > 0 and delta > 0:
            return RAFT_BETTER
        if hi < 0 and delta < 0:
            return BERT_BETTER
    return NO_DIFFERENCE


def compare_paired(bert: dict, raft: dict, *, seed: int = BOOTSTRAP_SEED,
                   n_boot: int = N_BOOTSTRAP) -> PairedComparison:
    """Compare two ``{seed: value}`` mappings on the seeds they share."""
    common = sorted(set(bert) & set(raft), key=_seed_key)
    if not bert or not raft:
        return PairedComparison(0, math.nan, math.nan, math.nan, math.nan, math.nan, ONE_VARIANT)
    d = np.array([float(raft[s]) - float(bert[s]) for s in common], dtype=np.float64)
    d = d[~np.isnan(d)]
    n = int(d.size)
    if n == 0:
        return PairedComparison(0, math.nan, math.nan, math.nan, math.nan, math.nan, TOO_FEW)
    delta = float(d.mean())
    if n < 2:
        return PairedComparison(n, delta, math.nan, math.nan, math.nan, math.nan, TOO_FEW)
    ci = paired_bootstrap_ci(d, seed=seed, n_boot=n_boot)
    p_t = paired_ttest_p(d)
    p_w = wilcoxon_p(d)
    return PairedComparison(n, delta, ci[0], ci[1], p_t, p_w, verdict(delta, ci, p_t, n))


def mean_std(values) -> tuple[float, float, int]:
    """Mean, sample standard deviation (ddof=1; NaN for one value) and count, NaNs dropped."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return (math.nan, math.nan, 0)
    std = float(v.std(ddof=1)) if v.size > 1 else math.nan
    return (float(v.mean()), std, int(v.size))


def _seed_key(s):
    try:
        return (0, int(s), "")
    except (TypeError, ValueError):
        return (1, 0, str(s))
