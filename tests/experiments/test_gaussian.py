"""Tests for lpsampling.experiments.gaussian (the paper's Figure 1)."""

from __future__ import annotations

import json
import math

import jax
import numpy as np
import pytest

from lpsampling.experiments.gaussian import (
    default_num_steps,
    gaussian_experiment,
    naive_variance_law,
    plot_gaussian,
)
from lpsampling.formats import FixedPoint


def test_law_and_default_steps():
    assert naive_variance_law(1e-3) == pytest.approx(2.23, abs=0.01)
    assert naive_variance_law(1e-4) == pytest.approx(7.05, abs=0.01)
    assert default_num_steps(1e-3) == 20000 and default_num_steps(1e-4) == 100000


@pytest.fixture(scope="module")
def small():
    # alpha = 2e-3: sqrt(2 alpha) = 0.063 < Delta = 1/8, the regime of Theorem 2.
    # 8000 steps = 16 relaxation times 1/alpha; the second half is kept.
    return gaussian_experiment(alphas=(2e-3,), num_chains=64, num_steps=8000,
                               key=jax.random.key(1), max_samples_per_chain=100)


def test_structure(small, tmp_path):
    assert [r.method for r in small.runs] == ["low", "vc", "full"]
    r = small.get("vc", 2e-3)
    assert r.samples.shape == (64, 100) and r.thin == 40 and r.kept_steps == 4000
    assert r.chain_variances.shape == (64,)
    assert r.label == "VC SGLDLP-L" and small.get("low", 2e-3).label == "naive SGLDLP-L"
    # samples live on the Delta = 1/8 grid
    for run in small.runs:
        np.testing.assert_array_equal(run.samples * 8, np.round(run.samples * 8))
    d = json.loads(json.dumps(small.to_dict()))
    assert d["runs"][0]["law_naive_variance"] == pytest.approx(naive_variance_law(2e-3))
    path = plot_gaussian(small, tmp_path / "g.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "naive SGLDLP-L" in small.table()


def test_variances(small):
    """VC and F sample N(0, 1); naive is inflated. Tolerances: 5 standard errors of the
    chain-level estimates (64 independent chains) plus the O(alpha) discretisation bias
    (Euler: 2/(2 - alpha) - 1 ~ alpha/2) and the grid's Delta^2/6 for the reported Q(theta)."""
    delta = 1 / 8
    for method in ("vc", "full"):
        r = small.get(method, 2e-3)
        tol = 5 * r.variance_se + 2e-3 + delta**2 / 6
        assert abs(r.variance - 1.0) < tol, (method, r.variance, tol)
        assert abs(r.mean) < 5 * r.mean_se + 0.01
        assert 0.01 < r.variance_se < 0.2  # the tolerance is meaningful
    naive, vc = small.get("low", 2e-3), small.get("vc", 2e-3)
    gap = naive.variance - vc.variance
    assert gap > 5 * math.hypot(naive.variance_se, vc.variance_se)


def test_bad_arguments():
    with pytest.raises(ValueError, match="valid methods"):
        gaussian_experiment(methods=("naive",), num_steps=10, num_chains=2)
    with pytest.raises(ValueError, match="alphas"):
        gaussian_experiment(alphas=(0.0,), num_steps=10, num_chains=2)
    assert naive_variance_law(1e-3, FixedPoint(8, 4)) == pytest.approx(
        naive_variance_law(1e-3) / 2)
