"""Tests for lpsampling.experiments.logreg: the NUTS reference, the samplers' runner and
the sample-based distances, against closed forms."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lpsampling as lps
from lpsampling.experiments import logreg as L


def _tiny_problem(n: int = 12, seed: int = 0) -> L.LogRegProblem:
    rng = np.random.default_rng(seed)
    x = np.hstack([np.ones((n, 1)), rng.standard_normal((n, 1))])
    y = (rng.random(n) < 1 / (1 + np.exp(-(0.5 + 1.5 * x[:, 1])))).astype(float)
    return L.LogRegProblem(x, y, prior_std=1.5, name="tiny")


def _quadrature_moments(problem: L.LogRegProblem, half_width=7.0, n=601):
    """Posterior mean and sd of a 2-D problem by quadrature on a fine grid (float64)."""
    g = np.linspace(-half_width, half_width, n)
    t = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    z = t @ problem.x.T
    u = (np.logaddexp(0, z) - problem.y * z).sum(1) + 0.5 * (t**2).sum(1) / problem.prior_std**2
    w = np.exp(-(u - u.min()))
    w /= w.sum()
    mean = w @ t
    return mean, np.sqrt(w @ (t - mean) ** 2)


@pytest.fixture(scope="module")
def tiny_nuts():
    problem = _tiny_problem()
    return problem, L.nuts_reference(problem, key=jax.random.key(0), num_chains=2,
                                     num_warmup=300, num_samples=1000)


def test_nuts_reference_matches_quadrature(tiny_nuts):
    problem, ref = tiny_nuts
    assert ref.samples.shape == (2, 1000, 2) and ref.samples.dtype == np.float64
    assert ref.rhat.max() < 1.05 and ref.num_divergent.sum() == 0
    mean, sd = _quadrature_moments(problem)
    # Monte-Carlo SE of a posterior mean is sd/sqrt(ESS); of an sd about sd/sqrt(2 ESS)
    # (Gaussian approximation): 4 SE each
    ess = ref.ess_bulk
    np.testing.assert_array_less(np.abs(ref.mean - mean), 4 * sd / np.sqrt(ess))
    np.testing.assert_array_less(np.abs(ref.std - sd), 4 * sd / np.sqrt(2 * ess))


def test_nuts_reference_float64_does_not_leak(tiny_nuts):
    assert jnp.ones(2).dtype == jnp.float32
    assert not jax.config.jax_enable_x64


def test_map_estimate_is_stationary():
    problem = L.breast_cancer_problem()
    assert (problem.num_data, problem.dim) == (569, 31)
    theta = L.map_estimate(problem)
    with jax.enable_x64(True):
        g = np.asarray(jax.grad(problem.potential)(jnp.asarray(theta)))
    assert np.max(np.abs(g)) < 1e-8
    np.testing.assert_allclose(problem.x[:, 1:].mean(0), 0, atol=1e-12)


def test_problem_validation():
    with pytest.raises(ValueError, match="y must"):
        L.LogRegProblem(np.ones((3, 2)), np.array([0.0, 2.0, 1.0]))
    with pytest.raises(ValueError, match="prior_std"):
        L.LogRegProblem(np.ones((3, 2)), np.array([0.0, 1.0, 1.0]), prior_std=0.0)


def test_run_chains_shapes_grid_and_shared_noise():
    problem = _tiny_problem()
    kw = dict(key=jax.random.key(3), learning_rate=0.05, num_chains=4, num_burn=20,
              num_kept=5, thin=2)
    fp = L.run_chains(problem, "sgld", **kw)
    assert fp.shape == (4, 5, 2) and fp.dtype == np.float32
    fmt = lps.FixedPoint(8, 5)
    naive = L.run_chains(problem, "sgld_naive", weight_format=fmt, **kw)
    assert np.all(naive * 32 == np.round(naive * 32))  # on the grid Δ = 1/32
    # a very fine grid: SGLDLP-F shares the full-precision chain's noise draws, so the
    # two trajectories stay within a few grid gaps of each other (independent noise
    # would put them ~ one posterior sd apart)
    fine = L.run_chains(problem, "sgld_f", weight_format=lps.FixedPoint(24, 18), **kw)
    assert np.max(np.abs(fine - fp)) < 1e-3
    with pytest.raises(ValueError, match="method"):
        L.run_chains(problem, "hmc", **kw)
    with pytest.raises(ValueError, match="weight_format"):
        L.run_chains(problem, "sgld_vc", **kw)
    with pytest.raises(ValueError, match="init"):
        L.run_chains(problem, "sgld", init=np.zeros((3, 2)), **kw)


def test_sliced_wasserstein_shift_closed_form():
    # y = x + c: every projection is a pure shift, W2(u·X, u·X + u·c) = |u·c| exactly,
    # so SW2² = mean_u (u·c)², whose expectation is |c|²/d. (u·c)²/|c|² ~ Beta(1/2, 3/2)
    # for d = 4: sd 0.25; with L = 4000 projections the SE of the mean is 0.25/sqrt(L)
    d, proj = 4, 4000
    x = jax.random.normal(jax.random.key(0), (500, d))
    c = jnp.array([1.0, -2.0, 0.5, 2.0])
    sw = float(L.sliced_wasserstein(x, x + c, key=jax.random.key(1), num_projections=proj))
    expect = float(jnp.sum(c**2)) / d
    assert abs(sw**2 - expect) < 4 * 0.25 * float(jnp.sum(c**2)) / math.sqrt(proj)
    one = L.sliced_wasserstein(x[:, :1], x[:, :1] + 0.7, key=jax.random.key(2),
                               num_projections=3)
    assert float(one) == pytest.approx(0.7, rel=1e-5)


def test_sliced_wasserstein_gaussians_unequal_sizes():
    # independent samples of N(0, I) and N(μ, I), n ≠ m: SW2² = |μ|²/d plus a
    # finite-sample term of order 1/sqrt(n) per projection (W2² of two empirical samples
    # of one law); |μ|² = 9, d = 3 -> 3, with 5% tolerance
    d = 3
    mu = jnp.array([2.0, 2.0, 1.0])
    x = jax.random.normal(jax.random.key(4), (3000, d))
    y = jax.random.normal(jax.random.key(5), (5000, d)) + mu
    sw = float(L.sliced_wasserstein(x, y, key=jax.random.key(6), num_projections=2000))
    assert sw**2 == pytest.approx(9.0 / d, rel=0.05)
    with pytest.raises(ValueError, match="x and y"):
        L.sliced_wasserstein(x, y[:, :2], key=jax.random.key(0))


def test_mmd_squared_gaussian_closed_form():
    # MMD² between N(μ1, s²I) and N(μ2, s²I), Gaussian kernel of bandwidth h:
    # 2c(1 − exp(−|Δμ|²/(2(h² + 2s²)))), c = (h²/(h² + 2s²))^(d/2). The unbiased
    # estimator's SE is measured from R = 8 independent repetitions: 4 SE tolerance
    d, s, h, n = 2, 1.0, 1.0, 1500
    dmu = jnp.array([1.0, 0.5])
    c = (h**2 / (h**2 + 2 * s**2)) ** (d / 2)
    truth = 2 * c * (1 - math.exp(-float(jnp.sum(dmu**2)) / (2 * (h**2 + 2 * s**2))))
    vals = []
    for r in range(8):
        kx, ky = jax.random.split(jax.random.key(10 + r))
        x = s * jax.random.normal(kx, (n, d))
        y = s * jax.random.normal(ky, (n, d)) + dmu
        vals.append(float(L.mmd_squared(x, y, bandwidth=h)))
    se = np.std(vals, ddof=1) / math.sqrt(len(vals))
    assert abs(np.mean(vals) - truth) < 4 * se + 1e-4
    # V-statistic = U-statistic + (1 − E_U k(X,X'))/n + (1 − E_U k(Y,Y'))/m, exactly
    xs, ys = x[:300], y[:200]
    u = float(L.mmd_squared(xs, ys, bandwidth=h))
    v = float(L.mmd_squared(xs, ys, bandwidth=h, unbiased=False))
    k = lambda a: jnp.exp(-L._sq_dists(a, a) / (2 * h**2))  # noqa: E731
    kxx, kyy = k(xs), k(ys)
    exx_u = (float(jnp.sum(kxx)) - 300) / (300 * 299)
    eyy_u = (float(jnp.sum(kyy)) - 200) / (200 * 199)
    assert v == pytest.approx(u + (1 - exx_u) / 300 + (1 - eyy_u) / 200, abs=2e-5)
    with pytest.raises(ValueError, match="bandwidth"):
        L.mmd_squared(xs, ys, bandwidth=-1.0)


def test_jackknife_of_a_mean_is_the_group_se():
    rng = np.random.default_rng(0)
    groups = [rng.standard_normal(50) + i for i in range(6)]
    value, se = L.jackknife_se(np.mean, groups)
    means = np.array([g.mean() for g in groups])
    assert value == pytest.approx(means.mean())
    assert se == pytest.approx(means.std(ddof=1) / math.sqrt(6))
    with pytest.raises(ValueError, match="two groups"):
        L.jackknife_se(np.mean, groups[:1])


def test_posterior_errors_of_the_reference_itself(tiny_nuts):
    _, ref = tiny_nuts
    chains = ref.samples.reshape(8, -1, 2)
    err = L.posterior_errors(chains, ref, key=jax.random.key(0), num_points=100,
                             num_reference_points=200, num_projections=16, paired=chains)
    assert err["mean"][0] < 1e-10 and err["std"][0] < 1e-10
    assert err["mean_vs_paired"] == (0.0, 0.0) and err["std_vs_paired"] == (0.0, 0.0)
    # both distances: finite-sample floors only (100 vs 200 points, 2-D)
    assert 0 < err["sw"][0] < 0.5 and 0 < err["mmd"][0] < 0.5
    shifted = L.posterior_errors(chains + ref.std, ref, key=jax.random.key(0),
                                 num_points=100, num_reference_points=200,
                                 num_projections=16)
    assert shifted["mean"][0] == pytest.approx(1.0)
    assert shifted["sw"][0] > 2 * err["sw"][0]


def test_point_error():
    pts = np.array([[1.0, 0.0], [0.0, 2.0]])
    value, se = L.point_error(pts, np.zeros(2), np.array([1.0, 2.0]))
    assert value == pytest.approx(math.sqrt(0.5)) and se == pytest.approx(0.0)
