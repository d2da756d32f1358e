"""The update rule (lpsampling.update): one-step moments of every mode against the formulas
of DESIGN.md, gradient quantization and weight decay order, the random numbers each mode
draws, non-finite gradients and bad input.

One-step statistics use one leaf of n = 2**20 identical elements: fixed-point quantization is
elementwise and every element draws its own random numbers, so the elements are n independent
draws of one scalar update. Tolerances are 5 standard errors of the estimate from n draws:
mean se = sqrt(var / n); variance se = sqrt((m4 - var^2) / n), m4 the sample fourth central
moment (exact for any distribution in the large-n limit; 2/n·var^2 for a Gaussian).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import helpers
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lpsampling as lps
from lpsampling.update import Precision, model_weights, update_position

N_DRAWS = 2**20
FX4 = lps.FixedPoint(8, 4)  # Δ = 1/16, range [-8, 7.9375]
DELTA = 1.0 / 16

# The scalar problem: θ on the weight grid, g off the gradient grid.
THETA = 5 / 16
G = 0.7  # Q_G(0.7) on FX4 is 11/16 w.p. 0.8 and 12/16 w.p. 0.2
G_VALUES = np.array([11 / 16, 12 / 16])
G_PROBS = np.array([0.8, 0.2])
LR = 0.2
WD = 0.5
TEMP = 0.5


def _draws(precision, *, num_data, key=0, noise=True, theta=THETA, g=G, wd=WD, lr=LR):
    pos = jnp.full((N_DRAWS,), theta, jnp.float32)
    grads = jnp.full((N_DRAWS,), g, jnp.float32)
    variance = 2.0 * lr * TEMP / num_data if noise else None
    fn = jax.jit(lambda k, p, gr: update_position(
        k, p, gr, learning_rate=lr, noise_variance=variance, precision=precision,
        weight_decay=wd))
    new, finite = fn(jax.random.key(key), pos, grads)
    assert bool(finite)
    return np.asarray(new, np.float64), variance


def _check_moments(x, mean, var):
    """Sample mean and variance of ``x`` within 5 standard errors of ``mean``, ``var``."""
    n = x.size
    m = x.mean()
    c = x - m
    s2 = (c**2).mean()
    m4 = (c**4).mean()
    se_mean = np.sqrt(var / n)
    se_var = np.sqrt(max(m4 - s2**2, 1e-30) / n)
    assert abs(m - mean) < 5 * se_mean, (m, mean, se_mean)
    assert abs(s2 - var) < 5 * se_var, (s2, var, se_var)


def _mu_values(theta=THETA, lr=LR, wd=WD):
    """The two possible μ = θ − η(Q_G(g) + wd·θ) and their probabilities."""
    return theta - lr * (G_VALUES + wd * theta), G_PROBS


def _mixture_mean_var(values, probs, extra_var=0.0):
    mean = float((values * probs).sum())
    var = float((probs * (values - mean) ** 2).sum()) + extra_var
    return mean, var


def _sr_variance_of_gaussian_mixture(centres, probs, sd, delta):
    """E[Δ²·f(1−f)] for x from a mixture of N(centre, sd²), f = frac(x/Δ): the variance that
    stochastic rounding adds to a continuous x (numerical quadrature, 4e5 nodes)."""
    total = 0.0
    for c, p in zip(centres, probs, strict=True):
        x = np.linspace(c - 12 * sd, c + 12 * sd, 400_001)
        w = np.exp(-0.5 * ((x - c) / sd) ** 2)
        w /= w.sum()
        f = x / delta - np.floor(x / delta)
        total += p * float((w * f * (1 - f)).sum()) * delta**2
    return total


# ------------------------------------------------------------------------------------------
# One-step moments against the formulas.


def test_full_precision_sgld_moments():
    num_data = 100
    x, v = _draws(Precision(lps.FULL, lps.FULL), num_data=num_data)
    mu = THETA - LR * (G + WD * THETA)
    assert v == pytest.approx(2 * LR * TEMP / num_data)
    _check_moments(x, mu, v)


def test_sgldlp_f_moments():
    """Accumulator θ' = μ + sqrt(v)ξ with μ random through Q_G: var = v + η²·Var(Q_G(g))."""
    num_data = 100
    x, v = _draws(Precision(FX4, FX4, "full"), num_data=num_data)
    mean, var = _mixture_mean_var(*_mu_values(), extra_var=v)
    # η²·Var(Q_G) = 0.04·0.16/256 = 2.5e-5 is 1.25% of v = 2e-3, about 9 standard errors:
    # the test sees the gradient quantization.
    assert var - v > 9 * v * np.sqrt(2 / N_DRAWS)
    _check_moments(x, mean, var)


def test_naive_low_moments_unbiased():
    """θ' = SR(μ + sqrt(v)ξ): E = μ (stochastic rounding is unbiased); the variance is that of
    the continuous x plus the rounding variance E[Δ²f(1−f)] (quadrature)."""
    num_data = 100
    x, v = _draws(Precision(FX4, FX4, "low"), num_data=num_data)
    centres, probs = _mu_values()
    mean, var_x = _mixture_mean_var(centres, probs, extra_var=v)
    var = var_x + _sr_variance_of_gaussian_mixture(centres, probs, np.sqrt(v), DELTA)
    assert np.all(np.round(x / DELTA) * DELTA == x)
    _check_moments(x, mean, var)


def test_vc_moments_large_variance():
    """v = 2e-3 ≥ Δ²/4 = 9.8e-4: Q_vc has mean μ and variance exactly v."""
    num_data = 100
    x, v = _draws(Precision(FX4, FX4, "vc"), num_data=num_data)
    assert v >= DELTA**2 / 4
    mean, var = _mixture_mean_var(*_mu_values(), extra_var=v)
    assert np.all(np.round(x / DELTA) * DELTA == x)
    _check_moments(x, mean, var)


def test_vc_moments_small_variance():
    """v = 1e-4 < Δ²/4: variance max(v, v_s) with v_s = a(Δ − a) the rounding variance."""
    num_data = 2000
    x, v = _draws(Precision(FX4, FX4, "vc"), num_data=num_data)
    assert v < DELTA**2 / 4
    centres, probs = _mu_values()
    a = centres - DELTA * np.floor(centres / DELTA)
    cond_var = np.maximum(v, a * (DELTA - a))
    mean, var = _mixture_mean_var(centres, probs, extra_var=float((probs * cond_var).sum()))
    _check_moments(x, mean, var)


# ------------------------------------------------------------------------------------------
# SGD modes, gradient quantization, weight decay order.


@pytest.mark.parametrize("weight_format,grad_format,accumulator", [
    (lps.FULL, lps.FULL, "full"),
    (FX4, FX4, "full"),
    (FX4, FX4, "low"),
    (FX4, FX4, "vc"),
])
def test_sgd_modes_are_deterministic_given_rounding(weight_format, grad_format, accumulator):
    """Without noise the only randomness left is stochastic rounding: with g on the gradient
    grid and μ = θ − ηg on the weight grid every key gives exactly μ."""
    precision = Precision(weight_format, grad_format, accumulator)
    theta = jnp.asarray([0.5, -1.25, 3.0], jnp.float32)
    g = jnp.asarray([0.25, 1.0, -0.5], jnp.float32)  # on the 1/16 grid; ηg on it too
    step = jax.jit(lambda k: update_position(
        k, theta, g, learning_rate=0.25, noise_variance=None, precision=precision)[0])
    outs = [step(jax.random.key(k)) for k in range(4)]
    expected = theta - 0.25 * g
    for out in outs:
        np.testing.assert_array_equal(np.asarray(out), np.asarray(expected))


def test_sgd_low_is_stochastic_rounding_of_mu():
    """SGDLP-L: the output is one of the two grid neighbours of μ, with mean μ."""
    x, _ = _draws(Precision(FX4, lps.FULL, "low"), num_data=1, noise=False)
    mu = THETA - LR * (G + WD * THETA)
    lo = np.floor(mu / DELTA) * DELTA
    assert set(np.unique(x)) <= {lo, lo + DELTA}
    frac = (mu - lo) / DELTA
    _check_moments(x, mu, DELTA**2 * frac * (1 - frac))


@pytest.mark.parametrize("accumulator", ["low", "vc"])
def test_zero_noise_on_low_bit_blocks_is_stochastic_rounding(accumulator):
    """4-bit BFP, v = 0: both low-precision accumulators are stochastic rounding of μ, with
    a block maximum in its last gap (above the top code 7Δ, below 2^(e+1) = 8Δ) saturated
    at 7Δ. ("vc" used to carry it into the next exponent, re-rounding its whole block
    onto a grid twice as coarse; VC SGLDLP-L then trained far worse than naive at 3-4
    bits.) θ = 0 and η = 1, so μ = -g exactly; 2000 steps from one state."""
    fmt = lps.BlockFloatingPoint(4, axis=-1)
    mu = np.array(jax.random.normal(jax.random.key(30), (24, 16)) * 0.05, np.float32)
    mu[3, 5] = 1.9  # column 5's maximum: exponent 0, Δ = 1/4, top code 1.75
    mu[7, 9] = -(2.0**-3) * 1.95  # column 9's: exponent -3, in its last gap
    precision = Precision(fmt, lps.FULL, accumulator)
    theta = jnp.zeros_like(mu)
    step = jax.jit(jax.vmap(lambda k: update_position(
        k, theta, jnp.asarray(-mu), learning_rate=1.0, noise_variance=0.0,
        precision=precision)[0]))
    out = np.asarray(step(jax.random.split(jax.random.key(31), 2000)), np.float64)
    helpers.assert_stochastic_rounding(out, mu, fmt)


@pytest.mark.parametrize("accumulator", ["low", "vc"])
def test_small_steps_cross_a_block_top_with_a_carry_format(accumulator):
    """BlockFloatingPoint(8, axis=None, carry=True): a step smaller than one gap moves a
    block maximum just below 2^(e+1) across it in expectation, in both low-precision
    accumulators (the default format holds it at the top code: optax's Rosenbrock problem
    stalled so). θ = 127·2^-6 (the top code of exponent 0, Δ = 2^-6) plus a step of Δ/4:
    E[θ'] = θ + Δ/4 exactly; 4000 steps from one state, v = 0. Tolerance: Var[θ'] ≤
    Δ²/4 + (2Δ)²/4, so 5 sd of the mean is 5·sqrt(5/4)·Δ/sqrt(4000) = 1.4e-3 against the
    saturating bias Δ/4 = 3.9e-3."""
    d = 2.0**-6
    fmt = lps.BlockFloatingPoint(8, axis=None, carry=True)
    theta = jnp.asarray([127 * d, 0.5], jnp.float32)
    g = jnp.asarray([-d / 4, 0.0], jnp.float32)
    precision = Precision(fmt, lps.FULL, accumulator)
    step = jax.jit(jax.vmap(lambda k: update_position(
        k, theta, g, learning_rate=1.0, noise_variance=0.0, precision=precision)[0]))
    out = np.asarray(step(jax.random.split(jax.random.key(32), 4000)), np.float64)
    assert abs(out[:, 0].mean() - (127.25 * d)) <= 5 * np.sqrt(5 / 4) * d / np.sqrt(4000)
    assert set(np.unique(out[:, 0])) == {127 * d, 2.0}  # held, or carried to 2^(e+1)


def test_full_precision_sgd_is_exact():
    theta = jnp.linspace(-2, 2, 11, dtype=jnp.float32)
    g = jnp.linspace(1, -3, 11, dtype=jnp.float32)
    out, _ = jax.jit(lambda k, t, gr: update_position(
        k, t, gr, learning_rate=0.1, noise_variance=None,
        precision=Precision(lps.FULL, lps.FULL), weight_decay=0.01))(
        jax.random.key(0), theta, g)
    # To float32 rounding (XLA may contract the multiply-add): a few ulp of |θ| ≤ 2.
    np.testing.assert_allclose(np.asarray(out), np.asarray(theta - 0.1 * (g + 0.01 * theta)),
                               rtol=0, atol=1e-6)


def test_weight_decay_is_applied_after_gradient_quantization_in_full_precision():
    """g = 0.5 is on the gradient grid (Q_G(g) = g exactly) but g + wd·θ = 0.51 is not: the
    result θ − η(0.5 + 0.01θ) proves the decay term was added after Q_G, unquantized. Were
    it quantized (before or after adding), the step would be a multiple of η·Δ_G."""
    theta = jnp.full((4096,), 1.0, jnp.float32)
    g = jnp.full((4096,), 0.5, jnp.float32)
    precision = Precision(lps.FULL, lps.FixedPoint(8, 3))
    out, _ = jax.jit(lambda k, t, gr: update_position(
        k, t, gr, learning_rate=0.5, noise_variance=None, precision=precision,
        weight_decay=0.01))(jax.random.key(3), theta, g)
    expected = 1.0 - 0.5 * (0.5 + 0.01)  # 0.745; a quantized step would give 0.75 or 0.6875
    np.testing.assert_allclose(np.asarray(out), np.full((4096,), expected), rtol=0, atol=1e-6)


@pytest.mark.parametrize("noise_variance", [None, 0.0])
def test_gradient_quantization_is_applied(noise_variance):
    """With a huge step (η = 1024) and no noise, θ' − θ = −η·Q_G(g) is a multiple of η·Δ_G
    and both neighbours of g occur."""
    grad_format = lps.FixedPoint(8, 3)
    g = jax.random.uniform(jax.random.key(1), (4096,), minval=-3, maxval=3)
    theta = jnp.zeros((4096,), jnp.float32)
    out, _ = jax.jit(lambda k, t, gr: update_position(
        k, t, gr, learning_rate=1024.0, noise_variance=noise_variance,
        precision=Precision(lps.FULL, grad_format)))(jax.random.key(2), theta, g)
    steps = -np.asarray(out) / (1024.0 * grad_format.gap)
    np.testing.assert_array_equal(steps, np.round(steps))
    assert np.all(np.abs(steps - np.asarray(g) / grad_format.gap) < 1)
    assert np.mean(steps > np.asarray(g) / grad_format.gap) > 0.3  # rounded up often


# ------------------------------------------------------------------------------------------
# Random numbers: a mode draws only what it needs (counted in the jaxpr).


_count_primitives = helpers.count_primitives


def _tree():
    return {"a": jnp.ones((3, 4)), "b": jnp.ones((5,)), "c": jnp.ones(())}


BFP8 = lps.BlockFloatingPoint(8)


# (weight, grad, accumulator, noise) -> (random_bits calls, Gaussian draws) for 3 leaves.
# Per leaf: the Gaussian 1; each stochastic rounding 1; VC: Gaussian + uniform choice (+ the
# final rounding back onto the format for formats other than fixed point: for block floating
# point two roundings, on the block's grid and then past a block-top carry, issue 14; both
# sit in a branch that runs only when an output is off the grid).
RANDOM_COUNTS = [
    ((lps.FULL, lps.FULL, "full", False), (0, 0)),
    ((lps.FULL, lps.FULL, "full", True), (3, 3)),
    ((lps.FULL, FX4, "full", False), (3, 0)),
    ((FX4, lps.FULL, "full", True), (3, 3)),
    ((FX4, FX4, "full", True), (6, 3)),
    ((FX4, FX4, "full", False), (3, 0)),
    ((FX4, FX4, "low", True), (9, 3)),
    ((FX4, lps.FULL, "low", True), (6, 3)),
    ((FX4, FX4, "low", False), (6, 0)),
    ((FX4, lps.FULL, "low", False), (3, 0)),
    ((FX4, FX4, "vc", True), (9, 3)),
    ((FX4, lps.FULL, "vc", True), (6, 3)),
    ((FX4, FX4, "vc", False), (6, 0)),
    ((BFP8, BFP8, "vc", True), (15, 3)),
]


@pytest.mark.parametrize("config,expected", RANDOM_COUNTS,
                         ids=[f"{c[0]!r}-{c[1]!r}-{c[2]}-{'sgld' if c[3] else 'sgd'}"
                              for c, _ in RANDOM_COUNTS])
def test_update_draws_only_needed_random_numbers(config, expected):
    weight_format, grad_format, accumulator, noise = config
    precision = Precision(weight_format, grad_format, accumulator)
    tree = _tree()
    jaxpr = jax.make_jaxpr(lambda k, p, g: update_position(
        k, p, g, learning_rate=0.1, noise_variance=0.01 if noise else None,
        precision=precision))(jax.random.key(0), tree, tree)
    counts = _count_primitives(jaxpr, ["random_bits", "erf_inv"])
    assert (counts["random_bits"], counts["erf_inv"]) == expected


@pytest.mark.parametrize("factory,kwargs,expected_bits", [
    (lps.sgd, {}, 0),
    (lps.sgld, {"num_data": 10}, 3),                                   # one Gaussian per leaf
    (lps.sgld, {"num_data": 10, "weight_format": FX4}, 6),              # + Q_W for the model
    (lps.sgld, {"num_data": 10, "weight_format": FX4, "grad_format": FX4}, 9),
    (lps.sgd, {"weight_format": FX4}, 3),                              # only the model's Q_W
    (lps.sgld, {"num_data": 10, "weight_format": FX4, "accumulator": "low"}, 6),
])
def test_optax_face_draws_only_needed_random_numbers(factory, kwargs, expected_bits):
    opt = factory(0.1, key=jax.random.key(0), **kwargs)
    tree = _tree()
    state = opt.init(tree)
    jaxpr = jax.make_jaxpr(opt.update)(tree, state, tree)
    assert _count_primitives(jaxpr, ["random_bits"])["random_bits"] == expected_bits


# ------------------------------------------------------------------------------------------
# Non-finite gradients, dtypes, model weights.


@pytest.mark.parametrize("weight_format,grad_format,accumulator", [
    (lps.FULL, lps.FULL, "full"), (FX4, FX4, "full"), (FX4, FX4, "low"), (FX4, FX4, "vc"),
    (BFP8, BFP8, "vc"),
])
def test_nonfinite_gradients_skip_the_step(weight_format, grad_format, accumulator):
    """SGD and SGLD: NaN/±inf gradients leave the position as it was and report it."""
    precision = Precision(weight_format, grad_format, accumulator)
    theta = {"a": jnp.asarray([0.5, -0.25]), "b": jnp.asarray([[1.0]])}
    step = jax.jit(lambda g: [update_position(
        jax.random.key(0), theta, g, learning_rate=0.1, noise_variance=noise_variance,
        precision=precision) for noise_variance in (None, 0.01)])
    for bad in (np.nan, np.inf, -np.inf):
        for new, finite in step({"a": jnp.asarray([0.1, bad]), "b": jnp.asarray([[0.2]])}):
            assert not bool(finite)
            jax.tree.map(np.testing.assert_array_equal, new, theta)
    for new, finite in step({"a": jnp.asarray([0.1, 0.3]), "b": jnp.asarray([[0.2]])}):
        assert bool(finite)
        assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(new))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
@pytest.mark.parametrize("accumulator", ["full", "low", "vc"])
def test_update_keeps_leaf_dtypes(dtype, accumulator):
    precision = Precision(lps.FixedPoint(8, 3), lps.FixedPoint(8, 3), accumulator)
    theta = {"a": jnp.ones((4,), dtype), "b": jnp.zeros((2, 2), dtype)}
    grads = jax.tree.map(lambda x: jnp.full(x.shape, 0.3, x.dtype), theta)
    new, _ = jax.eval_shape(lambda k, t, g: update_position(
        k, t, g, learning_rate=0.1, noise_variance=0.01, precision=precision),
        jax.random.key(0), theta, grads)
    assert jax.tree.map(lambda x: x.dtype, new) == jax.tree.map(lambda x: x.dtype, theta)


def test_model_weights():
    theta = {"a": jnp.linspace(-1, 1, 101), "b": jnp.asarray(0.3)}
    key = jax.random.key(0)
    # FULL weights, and the low-precision accumulators: the chain itself.
    assert model_weights(key, theta, Precision(lps.FULL, FX4)) is theta
    assert model_weights(key, theta, Precision(FX4, FX4, "vc")) is theta
    # SGLDLP-F: stochastic rounding of θ onto the weight grid, in the dtype of ``like``.
    like = jax.tree.map(lambda x: x.astype(jnp.bfloat16), theta)
    w = jax.jit(lambda k, t, lk: model_weights(k, t, Precision(FX4, FX4, "full"), like=lk))(
        key, theta, like)
    for q, t in zip(jax.tree.leaves(w), jax.tree.leaves(theta), strict=True):
        assert q.dtype == jnp.bfloat16
        q = np.asarray(q, np.float32)
        np.testing.assert_array_equal(q, np.round(q / DELTA) * DELTA)
        assert np.all(np.abs(q - np.asarray(t)) < DELTA)


# ------------------------------------------------------------------------------------------
# Bad input.


def test_precision_rejects_unknown_accumulator():
    with pytest.raises(ValueError, match="accumulator"):
        Precision(FX4, FX4, "bogus")


@pytest.mark.parametrize("accumulator", ["low", "vc"])
def test_precision_rejects_low_accumulator_with_full_weights(accumulator):
    with pytest.raises(ValueError, match="accumulator.*weight_format"):
        Precision(lps.FULL, FX4, accumulator)


def test_precision_rejects_non_formats():
    with pytest.raises(TypeError, match="weight_format"):
        Precision("fixed8", FX4)
    with pytest.raises(TypeError, match="grad_format"):
        Precision(FX4, 8)


def test_update_rejects_mismatched_pytrees():
    precision = Precision(lps.FULL, lps.FULL)
    theta = {"a": jnp.ones(3), "b": jnp.ones(2)}
    kw = dict(learning_rate=0.1, noise_variance=0.01, precision=precision)
    with pytest.raises(ValueError, match="grads.*structure"):
        update_position(jax.random.key(0), theta, {"a": jnp.ones(3)}, **kw)
    with pytest.raises(ValueError, match="grads.*shape"):
        update_position(jax.random.key(0), theta, {"a": jnp.ones(3), "b": jnp.ones(3)}, **kw)


def test_precision_names():
    assert Precision(lps.FULL, lps.FULL).name == "FP"
    assert Precision(FX4, FX4).name == "LP-F"
    assert Precision(FX4, FX4, "low").name == "LP-L"
    assert Precision(FX4, FX4, "vc").name == "VC LP-L"
    assert Precision(FX4, lps.FULL).has_accumulator
    assert not Precision(lps.FULL, FX4).has_accumulator
    assert not Precision(FX4, FX4, "vc").has_accumulator


# ------------------------------------------------------------------------------------------
# Issue 10: hyperparameters from schedules are checked inside the step; float64 stays float64.


@pytest.mark.parametrize("bad", [{"learning_rate": jnp.inf}, {"learning_rate": jnp.nan},
                                 {"learning_rate": -0.1}, {"noise_variance": jnp.inf},
                                 {"noise_variance": -1e-3}, {"noise_variance": jnp.nan},
                                 {"weight_decay": jnp.inf}])
@pytest.mark.parametrize("accumulator", ["full", "low", "vc"])
def test_invalid_traced_hyperparameters_skip_the_step(bad, accumulator):
    precision = Precision(FX4 if accumulator != "full" else lps.FULL, lps.FULL, accumulator)
    theta = {"w": jnp.asarray([0.5, -0.25, 0.125])}
    kwargs = {"learning_rate": 0.1, "noise_variance": 1e-3, "weight_decay": 0.01, **bad}
    step = jax.jit(lambda kw: update_position(jax.random.key(0), theta, theta, precision=precision,
                                              **kw))
    new, finite = step({k: jnp.float32(v) for k, v in kwargs.items()})
    assert not bool(finite)
    np.testing.assert_array_equal(np.asarray(new["w"]), np.asarray(theta["w"]))


def test_optax_schedule_with_inf_is_skipped_and_counted():
    sched = lambda count: jnp.where(count == 1, jnp.inf, 0.1)  # noqa: E731
    opt = lps.sgld(sched, num_data=10, key=jax.random.key(0))
    params = {"w": jnp.ones(3)}
    state = opt.init(params)
    for _ in range(3):
        updates, state = opt.update({"w": jnp.ones(3)}, state, params)
        params = optax.apply_updates(params, updates)
        assert np.all(np.isfinite(np.asarray(params["w"])))
    assert int(state.nonfinite_count) >= 1


def test_float64_params_keep_float64_arithmetic():
    """x64 on: a full-precision accumulator moves exactly as float64 SGD would."""
    code = textwrap.dedent("""
        import jax, jax.numpy as jnp, numpy as np, optax
        jax.config.update("jax_enable_x64", True)
        import lpsampling as lps
        p = {"w": jnp.asarray([0.1, 1.0 / 3.0], jnp.float64)}
        g = {"w": jnp.asarray([0.0, 1e-3], jnp.float64)}
        for opt in [lps.sgd(0.1, key=jax.random.key(0)),
                    lps.sgd(0.1, weight_format=lps.FixedPoint(8, 4), key=jax.random.key(0))]:
            st = opt.init(p)
            u, st = opt.update(g, st, p)
            acc = st.accumulator if st.accumulator is not None else optax.apply_updates(p, u)
            assert acc["w"].dtype == jnp.float64, acc["w"].dtype
            # the step size is held in float32 in the sampler state (η·(1 + 1.5e-8))
            want = np.asarray(p["w"]) - float(np.float32(0.1)) * np.asarray(g["w"])
            got = np.asarray(acc["w"])
            # zero gradient: 0.1 stays 0.1 exactly (float32 arithmetic moved it by 1.5e-9)
            assert got[0] == 0.1 and abs(got[1] - want[1]) < 1e-15, (got, want)
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr
