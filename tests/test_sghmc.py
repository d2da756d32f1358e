"""SGHMC (Wang, Chen, Song & Zhang 2024) in the one update rule and its optax face: the
coefficients, the three accumulator modes, skipped steps, and the distributions reached.

Statistical tests use fixed keys; each tolerance is derived from the sample size in its
docstring (as in tests/test_posteriors.py: the average over C chains × S steps of a
statistic with integrated autocorrelation time τ has standard error sqrt(Var·τ/(C·S))).
"""

from __future__ import annotations

import functools
import math

import chex
import helpers
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.linalg
from test_posteriors import KEY_IMPL, _regression_problem

import lpsampling as lps
from lpsampling.update import (
    MomentumCoefficients,
    Precision,
    _ou_moments,
    sghmc_coefficients,
    update_momentum,
)

FX83 = lps.FixedPoint(8, 3)


# ------------------------------------------------------------------------------------------
# Coefficients


def test_ou_moments_match_float64_closed_forms():
    # float32 against float64 closed forms (the series below z = 0.5, the closed form above):
    # relative error within a few float32 ulps; the float64 closed form itself loses
    # ~1e-16/z³ relative to cancellation, so z ≥ 1e-3 is where it is the reference.
    z = np.geomspace(1e-3, 20.0, 200)
    drift, var = (np.asarray(a, np.float64) for a in _ou_moments(jnp.asarray(z, jnp.float32)))
    z32 = np.asarray(jnp.asarray(z, jnp.float32), np.float64)
    ref_drift = z32 + np.expm1(-z32)
    ref_var = 2 * z32 + 4 * np.exp(-z32) - np.exp(-2 * z32) - 3
    np.testing.assert_allclose(drift, ref_drift, rtol=3e-6)
    np.testing.assert_allclose(var, ref_var, rtol=3e-6)
    # the small-z limits: γη²/2 and (2/3)(γη)³
    d, v = _ou_moments(jnp.float32(1e-6))
    assert abs(float(d) / 5e-13 - 1) < 1e-5 and abs(float(v) / (2 / 3 * 1e-18) - 1) < 1e-5


def test_sghmc_coefficients_are_the_papers_with_the_exact_sign():
    eta, gamma, u, s = 0.09, 3.0, 2.0, 0.5
    c = sghmc_coefficients(eta, friction=gamma, inverse_mass=u, noise_scale=s)
    e = math.exp(-gamma * eta)
    np.testing.assert_allclose(
        [c.decay, c.v_grad, c.x_velocity, c.x_grad, c.var_v, c.var_x, c.cov],
        [e, -u * (1 - e) / gamma, (1 - e) / gamma,
         -u * (gamma * eta + e - 1) / gamma**2,  # minus: the exact solution's sign
         u * s * (1 - e * e), u * s * (2 * gamma * eta + 4 * e - e * e - 3) / gamma**2,
         u * s * (1 - e) ** 2 / gamma], rtol=2e-6)
    assert bool(c.valid)
    for bad in (dict(learning_rate=-0.1), dict(friction=0.0), dict(inverse_mass=-1.0),
                dict(noise_scale=float("nan")), dict(friction=float("inf"))):
        kw = dict(learning_rate=eta, friction=gamma, inverse_mass=u, noise_scale=s) | bad
        lr = kw.pop("learning_rate")
        assert not bool(sghmc_coefficients(lr, **kw).valid), bad


# ------------------------------------------------------------------------------------------
# The update rule


def _tree():
    return {"w": jnp.linspace(-1.0, 1.0, 12).reshape(3, 4), "b": jnp.asarray([0.5, -0.25])}


def test_deterministic_step_matches_the_equations():
    x, v = _tree(), jax.tree.map(lambda a: 0.3 * a + 0.1, _tree())
    g = jax.tree.map(lambda a: a - 0.2, _tree())
    c = MomentumCoefficients(decay=0.9, v_grad=-0.1, x_velocity=0.5, x_grad=-0.01)
    nx, nv, ok = update_momentum(jax.random.key(0), x, v, g, coefficients=c,
                                 precision=Precision(lps.FULL, lps.FULL), weight_decay=0.1)
    assert bool(ok)
    gw = jax.tree.map(lambda gg, xx: gg + 0.1 * xx, g, x)
    chex.assert_trees_all_close(nv, jax.tree.map(lambda a, b: 0.9 * a - 0.1 * b, v, gw),
                                atol=1e-7)
    chex.assert_trees_all_close(
        nx, jax.tree.map(lambda a, b, c_: a + 0.5 * b - 0.01 * c_, x, v, gw), atol=1e-7)


@pytest.mark.parametrize("accumulator", ["low", "vc"])
def test_low_and_vc_keep_position_and_momentum_on_the_grid(accumulator):
    fmt = lps.FixedPoint(8, 4)
    prec = Precision(fmt, fmt, accumulator)
    x = lps.quantize_tree(_tree(), fmt, rounding="nearest")
    v = jax.tree.map(jnp.zeros_like, x)
    c = sghmc_coefficients(0.1, friction=2.0, inverse_mass=1.0, noise_scale=0.01)
    step = jax.jit(lambda k, x, v: update_momentum(k, x, v, x, coefficients=c,
                                                   precision=prec))
    for k in jax.random.split(jax.random.key(1), 20):
        x, v, ok = step(k, x, v)
        assert bool(ok)
    for leaf in jax.tree.leaves((x, v)):
        assert helpers.on_grid(leaf, fmt)
    assert float(jnp.abs(v["w"]).max()) > 0  # the momentum moved


@pytest.mark.parametrize("accumulator", ["full", "low", "vc"])
def test_nonfinite_gradient_or_overflow_skips_both_updates(accumulator):
    fmt = lps.FixedPoint(8, 4)
    prec = Precision(fmt, fmt, accumulator)
    x = lps.quantize_tree(_tree(), fmt, rounding="nearest")
    v = jax.tree.map(lambda a: a * 0.5, x)
    c = sghmc_coefficients(0.1, friction=2.0, noise_scale=0.01)
    bad = jax.tree.map(jnp.zeros_like, x)
    bad["b"] = bad["b"].at[0].set(jnp.inf)
    nx, nv, ok = update_momentum(jax.random.key(0), x, v, bad, coefficients=c, precision=prec)
    assert not bool(ok)
    chex.assert_trees_all_equal(nx, x)
    chex.assert_trees_all_equal(nv, v)
    # μ overflows float32 (a full-precision gradient: Q_G would saturate it)
    huge = jax.tree.map(lambda a: jnp.full_like(a, 3e38), x)
    nx, nv, ok = update_momentum(jax.random.key(0), x, v, huge,
                                 coefficients=MomentumCoefficients(1.0, -10.0, 1.0, -10.0),
                                 precision=Precision(fmt, lps.FULL, accumulator))
    assert not bool(ok)
    chex.assert_trees_all_equal(nx, x)


# ------------------------------------------------------------------------------------------
# The optax face


def _loss(p):
    return 0.5 * jnp.sum((p["w"] - 0.3) ** 2) + 0.5 * jnp.sum(p["b"] ** 2)


@pytest.mark.parametrize("accumulator", ["full", "low", "vc"])
def test_optax_sghmc_params_on_grid_and_apply_updates_exact(accumulator):
    fmt = lps.FixedPoint(8, 4)
    opt = lps.sghmc(0.1, num_data=100, weight_format=fmt, grad_format=fmt,
                    accumulator=accumulator, key=jax.random.key(0))
    p = lps.init_weights(_tree(), fmt, key=jax.random.key(1))
    s = opt.init(p)
    update = jax.jit(opt.update)
    for _ in range(10):
        u, s = update(jax.grad(_loss)(p), s, p)
        new = optax.apply_updates(p, u)
        for leaf in jax.tree.leaves(new):
            assert helpers.on_grid(leaf, fmt)
        if accumulator != "full":  # the params are the chain: exactly the new state
            chex.assert_trees_all_equal(new, jax.tree.map(lambda a: a, new))
        p = new
    assert int(s.count) == 10 and int(s.nonfinite_count) == 0
    assert s.momentum is not None and (s.accumulator is not None) == (accumulator == "full")
    bad = jax.tree.map(lambda a: jnp.full_like(a, jnp.nan), p)
    u, s2 = update(bad, s, p)
    assert int(s2.nonfinite_count) == 1 and int(s2.count) == 10
    chex.assert_trees_all_equal(s2.momentum, s.momentum)
    chex.assert_trees_all_close(u, jax.tree.map(jnp.zeros_like, p))


def test_optax_cyclical_sghmc_samples_late_in_each_cycle():
    opt = lps.cyclical_sghmc(0.1, num_data=10, num_cycles=2, total_steps=20,
                             exploration_ratio=0.5, key=jax.random.key(0))
    p = _tree()
    s = opt.init(p)
    flags, lrs = [], []
    for _ in range(20):
        u, s = opt.update(jax.grad(_loss)(p), s, p)
        p = optax.apply_updates(p, u)
        flags.append(bool(lps.is_sampling(s)))
        lrs.append(float(lps.current_learning_rate(s)))
    assert flags == ([False] * 5 + [True] * 5) * 2
    assert lrs[0] == pytest.approx(0.1) and lrs[10] == pytest.approx(0.1)


def test_optax_sghmc_rejects_bad_arguments():
    for kw, name in ((dict(friction=0.0), "friction"), (dict(inverse_mass=-1.0),
                                                         "inverse_mass"),
                     (dict(temperature=float("nan")), "temperature")):
        with pytest.raises(ValueError, match=name):
            lps.sghmc(0.1, num_data=10, key=jax.random.key(0), **kw)
    with pytest.raises(ValueError, match="weight_format"):
        lps.sghmc(0.1, num_data=10, accumulator="vc", key=jax.random.key(0))


# ------------------------------------------------------------------------------------------
# N(0, 1) with FixedPoint(8, 3): SGHMC as in the follow-up paper (u = 2, γ = 3).
#
# η = 0.025: VC SGHMCLP-L has two opposite biases on this target — the correlation of ξˣ
# and ξᵛ that Q_vc drops lowers the variance (the exact stationary variance of the
# linear chain without it is 0.95 here), and x's noise variance (3e-5) is far below the
# grid's Δ²/4 = 3.9e-3, so x is stochastically rounded with excess variance; they
# cancel to within 2% near η = 0.025 (1.039 at 0.02, 0.960 at 0.03; README, RESULTS). F's
# own discretisation bias is +0.8% (exact stationary variance of the linear chain).

GAUSS_C, GAUSS_BURN, GAUSS_KEEP, GAUSS_CHUNK = 1024, 2000, 6000, 2000
GAUSS_ETA = 0.025


@functools.cache
def _gaussian_run(kind, accumulator, eta):
    """Per-chain time averages of θ and θ² for C independent chains, the elements of one
    (C,) leaf (quantization, noise and rounding are elementwise)."""

    def run(key):
        k_opt, k_grad = jax.random.split(key)
        common = dict(num_data=1, weight_format=FX83, grad_format=FX83,
                      accumulator=accumulator, key=k_opt)
        opt = (lps.sghmc(eta, friction=3.0, inverse_mass=2.0, **common) if kind == "sghmc"
               else lps.sgld(eta, **common))
        theta = jnp.zeros((GAUSS_C,), jnp.float32)

        def step(carry, k):
            p, st, s1, s2, keep = carry
            u, st = opt.update(p + 0.1 * jax.random.normal(k, p.shape), st, p)
            p = optax.apply_updates(p, u)
            return (p, st, s1 + keep * p, s2 + keep * p * p, keep), None

        def chunk(i, carry):
            keep = (i >= GAUSS_BURN // GAUSS_CHUNK).astype(jnp.float32)
            keys = jax.random.split(jax.random.fold_in(k_grad, i), GAUSS_CHUNK)
            return jax.lax.scan(step, carry[:4] + (keep,), keys)[0]

        zeros = jnp.zeros_like(theta)
        init = (theta, opt.init(theta), zeros, zeros, jnp.float32(0))
        n = (GAUSS_BURN + GAUSS_KEEP) // GAUSS_CHUNK
        _, _, s1, s2, _ = jax.lax.fori_loop(0, n, chunk, init)
        return s1 / GAUSS_KEEP, s2 / GAUSS_KEEP

    m1, m2 = jax.jit(run)(jax.random.key(11, impl=KEY_IMPL))
    m1, m2 = np.asarray(m1, np.float64), np.asarray(m2, np.float64)
    mean = m1.mean()
    var = m2.mean() - mean**2
    se_var = m2.std() / math.sqrt(m2.size)  # from the C independent chains
    return var, se_var, mean


@pytest.mark.parametrize("accumulator", ["full", "vc"])
def test_gaussian_stationary_variance_f_and_vc(accumulator):
    """Within 5% of 1 (the issue's bound; bias ≤ 2% measured, see above). Monte-Carlo
    error: θ relaxes at rate ≈ uη/γ per step, so τ₂ ≲ γ/(uη) = 60 steps and
    se(v̂) ≈ sqrt(2τ₂/(C·S)) = sqrt(120/(1024·6000)) = 0.44%; the empirical se (spread of
    the C chains) is checked below 1%. |mean| < max(0.02, 4 se)."""
    var, se, mean = _gaussian_run("sghmc", accumulator, GAUSS_ETA)
    info = f"{accumulator}: var {var:.4f} ± {se:.4f}, mean {mean:.4f}"
    assert abs(var - 1) < 0.05, info
    assert se < 0.01, info
    assert abs(mean) < max(0.02, 4 * se), info


def test_gaussian_naive_excess_sghmc_vs_sgld():
    """Naive SGHMCLP-L and naive SGLDLP-L at the same step value η = α = 0.025: both have
    an excess variance well above Monte-Carlo error (> 8 se, se ≈ 0.5%); which one is
    larger is *measured*, not asserted: on this strongly log-concave target SGHMC's
    (≈ +10%) exceeds SGLD's (≈ +7%) here (the follow-up paper claims the opposite for
    non-log-concave targets; README, benchmarks/RESULTS_gaussian.md)."""
    v_hmc, se_hmc, _ = _gaussian_run("sghmc", "low", GAUSS_ETA)
    v_sgld, se_sgld, _ = _gaussian_run("sgld", "low", GAUSS_ETA)
    v_vc, _, _ = _gaussian_run("sghmc", "vc", GAUSS_ETA)
    info = f"naive SGHMC {v_hmc:.4f} ± {se_hmc:.4f}, naive SGLD {v_sgld:.4f} ± {se_sgld:.4f}"
    assert v_hmc - 1 > 8 * se_hmc and v_sgld - 1 > 8 * se_sgld, info
    assert v_hmc > v_vc + 8 * se_hmc, info  # VC removes most of naive's excess


# ------------------------------------------------------------------------------------------
# Conjugate Bayesian linear regression (the diabetes problem of tests/test_posteriors.py)

REG_C, REG_BURN, REG_KEEP = 192, 1000, 4000
REG_U = 1.0
FINE = lps.FixedPoint(16, 10)


def _reg_setup(reg):
    h = reg["h"]
    gamma = 2.0 * math.sqrt(REG_U * h.min())  # critical damping of the slowest mode
    eta = 0.05 / math.sqrt(REG_U * h.max())   # ωη ≤ 0.05 for the fastest mode
    return gamma, eta


def _exact_chain_covariance(reg, gamma, eta):
    """The stationary covariance of θ for the FULL chain with exact gradients (linear:
    solved as a discrete Lyapunov equation), to separate the discretisation bias from
    Monte-Carlo error."""
    c = sghmc_coefficients(eta, friction=gamma, inverse_mass=REG_U,
                           noise_scale=1.0 / reg["n"])
    c = {k: float(getattr(c, k)) for k in ("decay", "v_grad", "x_velocity", "x_grad",
                                           "var_v", "var_x", "cov")}
    hess, eye = reg["hess"], np.eye(len(reg["h"]))
    a = np.block([[eye + c["x_grad"] * hess, c["x_velocity"] * eye],
                  [c["v_grad"] * hess, c["decay"] * eye]])
    q = np.block([[c["var_x"] * eye, c["cov"] * eye], [c["cov"] * eye, c["var_v"] * eye]])
    return scipy.linalg.solve_discrete_lyapunov(a, q)[:len(eye), :len(eye)]


@pytest.mark.parametrize("weight_format,accumulator", [(lps.FULL, "full"), (FINE, "full")],
                         ids=["SGHMC", "SGHMCLP-F"])
def test_linear_regression_posterior(weight_format, accumulator):
    """Full-batch gradients; u = 1, γ = 2·sqrt(h_min) (critical damping of the slowest
    mode), η = 0.05/sqrt(h_max); 192 chains, 1000 burn-in steps, 4000 kept.

    Bias: the exact stationary covariance of the linear FULL chain (Lyapunov) differs from
    the posterior by ≈ 1% on the diagonal (asserted < 1.5%); its mean is exact. The grid
    (Δ = 2^-10 = 0.027 sd) adds < 0.1% (test_posteriors.py's bound).
    Monte-Carlo error: the slowest mode is critically damped, decaying as
    e^{−sqrt(u h_min)·η·t} = e^{−0.026 t}, so τ₁ ≲ 2/0.026 ≈ 80 steps and τ₂ ≲ 80;
    se(mean_j) ≤ sd_j·sqrt(80/(C·S)) = 0.010 sd_j, se(v̂_j)/v_j ≤ sqrt(160/(C·S)) = 1.44%.
    Tolerances: |mean − m| < 4 se; |v̂/Σ_jj − 1| < bias + 4 se ≈ 6.8%; the empirical se of
    the means (spread of the chains) must be within 2x of the bound."""
    reg = _regression_problem()
    gamma, eta = _reg_setup(reg)
    exact = np.diag(_exact_chain_covariance(reg, gamma, eta))
    post_var = np.diag(reg["cov"])
    bias = np.abs(exact / post_var - 1)
    assert np.all(bias < 0.015), exact / post_var
    n = reg["n"]
    s_mat = jnp.asarray(reg["s"], jnp.float32)
    b_vec = jnp.asarray(reg["b"], jnp.float32)

    def grad(theta):  # ∇ of the mean loss ℓ of test_posteriors.py, without the prior
        return (s_mat @ theta - b_vec) / 0.5

    def chain(key):
        k_opt, k_init = jax.random.split(key)
        opt = lps.sghmc(eta, num_data=n, friction=gamma, inverse_mass=REG_U,
                        weight_decay=1.0 / n, weight_format=weight_format,
                        grad_format=weight_format, accumulator=accumulator, key=k_opt)
        theta0 = jnp.zeros(len(reg["h"]), jnp.float32)
        params = lps.init_weights(theta0, weight_format, key=k_init)

        def step(carry, _):
            p, st, s1, s2, keep = carry
            u, st = opt.update(grad(p), st, p)
            p = optax.apply_updates(p, u)
            return (p, st, s1 + keep * p, s2 + keep * p * p, keep), None

        zeros = jnp.zeros_like(theta0)
        carry = (params, opt.init(params), zeros, zeros, 0.0)
        carry, _ = jax.lax.scan(step, carry, None, length=REG_BURN)
        carry, _ = jax.lax.scan(step, carry[:4] + (1.0,), None, length=REG_KEEP)
        return carry[2] / REG_KEEP, carry[3] / REG_KEEP

    keys = jax.random.split(jax.random.key(5, impl=KEY_IMPL), REG_C)
    m1, m2 = (np.asarray(a, np.float64) for a in jax.jit(jax.vmap(chain))(keys))
    cs = REG_C * REG_KEEP
    sd = np.sqrt(post_var)
    mean = m1.mean(0)
    var = m2.mean(0) - mean**2
    se_mean = sd * math.sqrt(80 / cs)
    se_var_rel = math.sqrt(160 / cs)
    z_mean = (mean - reg["mean"]) / se_mean
    rel_var = var / post_var - 1
    assert np.all(np.abs(z_mean) < 4), (z_mean, mean, reg["mean"])
    assert np.all(np.abs(rel_var) < bias + 4 * se_var_rel), (rel_var, bias, se_var_rel)
    emp_se_mean = m1.std(0) / math.sqrt(REG_C)
    assert np.all(emp_se_mean < 2 * se_mean), (emp_se_mean, se_mean)
