"""Tests for lpsampling.experiments.stats: the tests behind every verdict."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from lpsampling.experiments.stats import (
    OUTCOMES,
    bootstrap,
    compare_samples,
    mean_se,
    paired_t,
    sign_flip,
    verdict,
    welch_t,
)

A = [1.0, 2.0, 3.0, 4.5, 5.0]
B = [0.5, 1.0, 2.5, 3.0, 4.0]


def test_mean_se():
    m, se = mean_se(A)
    assert m == pytest.approx(3.1)
    assert se == pytest.approx(np.std(A, ddof=1) / math.sqrt(5))
    assert mean_se([2.0]) == (2.0, 0.0)
    with pytest.raises(ValueError, match="non-empty"):
        mean_se([])
    with pytest.raises(ValueError, match="non-finite"):
        mean_se([1.0, float("nan")])


def test_paired_and_welch_match_scipy():
    d, se, p = paired_t(A, B)
    ref = sps.ttest_rel(A, B)
    assert d == pytest.approx(np.mean(np.subtract(A, B)))
    assert p == pytest.approx(ref.pvalue, rel=1e-10)
    d, se, p = welch_t(A, B)
    ref = sps.ttest_ind(A, B, equal_var=False)
    assert d == pytest.approx(np.mean(A) - np.mean(B))
    assert se == pytest.approx(math.hypot(mean_se(A)[1], mean_se(B)[1]))
    assert p == pytest.approx(ref.pvalue, rel=1e-10)


def test_degenerate_cases():
    # identical runs: no difference; a constant nonzero gap: a deterministic difference
    assert paired_t(A, A)[2] == 1.0
    assert paired_t([2.0, 3.0], [1.0, 2.0])[2] == 0.0
    assert math.isnan(paired_t([1.0], [2.0])[2])
    assert math.isnan(welch_t([1.0], [2.0, 3.0])[2])
    with pytest.raises(ValueError, match="equal lengths"):
        paired_t([1.0, 2.0], [1.0])
    c = compare_samples([1.0], [2.0], paired=True)
    assert c.test == "none" and c.outcome == "no detectable difference"


def test_sign_flip_exact_and_floor():
    # all 5 differences positive: the observed pattern and its mirror are the only two
    # of 2**5 reaching |mean|, so p = 2/32; 5 seeds can never reject at 0.05
    assert sign_flip(A, B)[2] == pytest.approx(2 / 32)
    # the Monte-Carlo branch agrees with the exact one within its sampling error
    # (20000 draws: sd of a p near 0.06 is sqrt(.06*.94/20000) = 0.0017; 5 sd)
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=18), rng.normal(size=18) + 0.3
    exact = sign_flip(a, b, max_exact=18)[2]
    mc = sign_flip(a, b, max_exact=10)[2]
    assert abs(exact - mc) < 5 * math.sqrt(exact * (1 - exact) / 20000) + 1e-4


def test_bootstrap_paired_close_to_t():
    rng = np.random.default_rng(1)
    a = rng.normal(1.0, 1.0, 30)
    b = a - 0.8 + rng.normal(0, 0.3, 30)
    d, se, p = bootstrap(a, b, paired=True)
    # 30 pairs: the bootstrap SE is the SE of the mean difference up to ~(1 - 1/n)^½ and
    # its Monte-Carlo error (20000 draws: relative sd ~0.5%); 5% slack
    assert se == pytest.approx(paired_t(a, b)[1], rel=0.05)
    assert p < 1e-3 and d == pytest.approx(0.8, abs=0.2)


def test_verdict_three_outcomes_and_direction():
    assert verdict(-1.0, 0.01) == "better"
    assert verdict(1.0, 0.01) == "worse"
    assert verdict(1.0, 0.01, lower_is_better=False) == "better"
    assert verdict(-1.0, 0.2) == "no detectable difference"
    assert verdict(-1.0, float("nan")) == "no detectable difference"
    assert set(OUTCOMES) == {"better", "worse", "no detectable difference"}
    with pytest.raises(ValueError, match="alpha"):
        verdict(1.0, 0.01, alpha=1.5)


def test_compare_samples_detects_a_gap_only_beyond_its_se():
    rng = np.random.default_rng(2)
    base = rng.normal(10.0, 1.0, 8)  # seed-to-seed spread shared by both methods
    better = base - 0.5 + rng.normal(0, 0.05, 8)
    same = base + rng.normal(0, 0.05, 8)
    c = compare_samples(better, base, paired=True, metric="error")
    assert c.outcome == "better" and c.test == "paired t" and c.p_value < 1e-4
    # unpaired, the shared spread (sd 1) hides the 0.5 gap: Welch finds nothing
    assert compare_samples(better, base, paired=False).outcome == "no detectable difference"
    assert compare_samples(same, base, paired=True).outcome == "no detectable difference"
    assert "paired t, n=8" in c.describe(100, unit=" pp")
    with pytest.raises(ValueError, match="needs paired runs"):
        compare_samples(A, B, paired=False, test="paired t")
    with pytest.raises(ValueError, match="test must be one of"):
        compare_samples(A, B, paired=True, test="z")
