"""Paired comparisons: Δ, bootstrap CIs, paired tests and verdicts on known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from raft.analysis import stats

SEEDS = [2022, 202206, 20220602, 2259, 5309]


def _pair(bert_vals, diffs):
    bert = dict(zip(SEEDS, bert_vals))
    raft = {s: v + d for (s, v), d in zip(bert.items(), diffs)}
    return bert, raft


def test_constant_gain_gives_collapsed_ci_and_raft_better():
    bert, raft = _pair([0.5, 0.6, 0.7, 0.55, 0.65], [1.0] * 5)
    c = stats.compare_paired(bert, raft)
    assert c.n_paired == 5
    assert c.delta == pytest.approx(1.0)
    assert (c.ci_low, c.ci_high) == pytest.approx((1.0, 1.0))
    assert c.p_ttest == 0.0
    assert c.verdict == stats.RAFT_BETTER


def test_constant_loss_gives_bert_better():
    bert, raft = _pair([0.5, 0.6, 0.7, 0.55, 0.65], [-0.02] * 5)
    c = stats.compare_paired(bert, raft)
    assert c.delta == pytest.approx(-0.02)
    assert c.ci_high == pytest.approx(-0.02)
    assert c.verdict == stats.BERT_BETTER


def test_mixed_signs_no_detectable_difference():
    bert, raft = _pair([0.5, 0.6, 0.7, 0.55, 0.65], [0.03, -0.02, 0.01, -0.03, 0.005])
    c = stats.compare_paired(bert, raft)
    assert c.ci_low < 0 < c.ci_high
    assert c.p_ttest > 0.05
    assert c.verdict == stats.NO_DIFFERENCE


def test_all_equal_is_no_difference_with_p_one():
    bert, raft = _pair([0.5, 0.6, 0.7, 0.55, 0.65], [0.0] * 5)
    c = stats.compare_paired(bert, raft)
    assert (c.delta, c.ci_low, c.ci_high) == (0.0, 0.0, 0.0)
    assert c.p_ttest == 1.0 and c.p_wilcoxon == 1.0
    assert c.verdict == stats.NO_DIFFERENCE


@pytest.mark.parametrize("bert, raft", [({1: 0.5}, {1: 0.7}), ({1: 0.5}, {2: 0.7})],
                         ids=["one-pair", "no-shared-seed"])
def test_too_few_seeds(bert, raft):
    c = stats.compare_paired(bert, raft)
    assert c.verdict == stats.TOO_FEW
    assert math.isnan(c.ci_low) and math.isnan(c.p_ttest) and math.isnan(c.p_wilcoxon)


def test_one_variant_missing():
    c = stats.compare_paired({}, {1: 0.5, 2: 0.6})
    assert c.verdict == stats.ONE_VARIANT and c.n_paired == 0


def test_pairs_only_shared_seeds():
    bert = {1: 0.5, 2: 0.6, 3: 0.7}
    raft = {2: 0.7, 3: 0.8, 4: 5.0}
    c = stats.compare_paired(bert, raft)
    assert c.n_paired == 2
    assert c.delta == pytest.approx(0.1)


def test_pvalues_match_scipy_and_ci_is_deterministic():
    rng = np.random.default_rng(7)
    b = rng.normal(0.6, 0.05, 8)
    r = b + rng.normal(0.01, 0.02, 8)
    bert, raft = dict(enumerate(b)), dict(enumerate(r))
    c1, c2 = stats.compare_paired(bert, raft), stats.compare_paired(bert, raft)
    assert c1 == c2
    assert c1.p_ttest == pytest.approx(sps.ttest_rel(r, b).pvalue)
    assert c1.p_wilcoxon == pytest.approx(sps.wilcoxon(r - b).pvalue)
    assert c1.ci_low < c1.delta < c1.ci_high
    # the CI is of the mean difference: its width shrinks roughly like 1/sqrt(n)
    assert c1.ci_high - c1.ci_low < 4 * np.std(r - b)


def test_verdict_requires_test_and_ci_to_agree():
    # CI excludes 0 but t-test does not reject -> no detectable difference
    assert stats.verdict(0.1, (0.01, 0.2), 0.2, 3) == stats.NO_DIFFERENCE
    assert stats.verdict(0.1, (0.01, 0.2), 0.01, 3) == stats.RAFT_BETTER
    assert stats.verdict(-0.1, (-0.2, -0.01), 0.01, 3) == stats.BERT_BETTER
    assert stats.verdict(0.1, (-0.01, 0.2), 0.01, 3) == stats.NO_DIFFERENCE
    assert stats.verdict(0.1, (0.1, 0.1), 0.0, 1) == stats.TOO_FEW


def test_mean_std():
    assert stats.mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0, 3)
    m, s, n = stats.mean_std([4.0])
    assert (m, n) == (4.0, 1) and math.isnan(s)
    m, s, n = stats.mean_std([])
    assert n == 0 and math.isnan(m)
