"""Property-based tests over the whole float32 range: quantize, vc_quantize, pack, update.

Inputs span log-uniform magnitudes from 1e-45 to 3.4e38, zeros of both signs, subnormals,
float32's extremes, blocks of uniformly tiny values and blocks that mix huge and tiny values;
variances span 0 and 1e-40 to 1e4; shapes are random. The checks are the contracts in
DESIGN.md and the module docstrings: outputs finite whenever inputs are (and within the
format's range), on the format's grid (an independent NumPy model, ``format_reference``),
sign-correct for quantize, and, over fixed-seed Monte-Carlo draws, the right mean and
variance (tolerances from the sample size, stated at :func:`check_mean`).

The ``ci`` hypothesis profile (tests/conftest.py) is derandomized with the example database
off, so every run tries the same examples.
"""

from __future__ import annotations

import functools

import format_reference as ref
import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from hypothesis import assume, given
from hypothesis import strategies as st

import lpsampling as lps
from lpsampling.formats import FULL, BlockFloatingPoint, FixedPoint, FloatingPoint
from lpsampling.update import Precision, update_position

Z = 5.0  # z-score of every Monte-Carlo check: two-sided p ≈ 6e-7 per check

# ---------------------------------------------------------------------------------------
# Strategies.

SPECIAL = [0.0, -0.0, 1e-45, -1e-45, 1.1754942e-38, 2.0**-126, -(2.0**-126), 1e-30, 1.0,
           -1.0, 0.5, 2.0**127, -(2.0**127), 3.4028235e38, -3.4028235e38, 1.7e38, 65504.0]


def _f32(v: float) -> float:
    return float(np.float32(np.clip(v, -ref.F32_MAX, ref.F32_MAX)))


def log_uniform(lo: float = -45.0, hi: float = 38.53):
    return st.tuples(st.floats(lo, hi), st.booleans()).map(
        lambda t: _f32((-1.0 if t[1] else 1.0) * 10.0 ** t[0]))


def values():
    """One float32 value anywhere in the finite range (mixed magnitudes)."""
    return st.one_of(
        st.sampled_from(SPECIAL),
        log_uniform(),
        st.floats(width=32, allow_nan=False, allow_infinity=False),
    ).map(_f32)


def clustered(shape):
    """A block of similar magnitude: scale 10**s times values in [-1, 1], some zeros."""
    def build(t):
        s, u = t
        return np.asarray(u, np.float64).reshape(shape) * 10.0**s
    n = int(np.prod(shape, dtype=np.int64))
    unit = st.one_of(st.just(0.0), st.floats(-1.0, 1.0))
    return st.tuples(st.floats(-44.0, 38.0), st.lists(unit, min_size=n, max_size=n)).map(
        lambda t: np.asarray(np.clip(build(t), -ref.F32_MAX, ref.F32_MAX), np.float32))


def arrays(shape):
    mixed = hnp.arrays(np.float32, shape, elements=values())
    return st.one_of(mixed, clustered(shape))


shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=6)

FIXED = st.builds(FixedPoint, st.integers(2, 16), st.one_of(st.integers(-8, 20),
                                                            st.sampled_from([-100, 126])))
BFP_AXIS = st.builds(lambda wl, ax: BlockFloatingPoint(wl, axis=ax), st.integers(2, 12),
                     st.sampled_from([0, -1, 1, None]))
FLOATS = st.one_of(st.builds(FloatingPoint, st.integers(2, 7), st.integers(0, 10)),
                   st.builds(FloatingPoint, st.just(8), st.sampled_from([0, 1, 3, 7, 10, 23])))


@st.composite
def format_and_array(draw, families=("fixed", "bfp", "block", "float")):
    """A format of one family and a float32 array whose shape suits it."""
    family = draw(st.sampled_from(families))
    shape = draw(shapes)
    if family == "fixed":
        fmt = draw(FIXED)
    elif family == "bfp":
        fmt = draw(BFP_AXIS)
        if fmt.axis not in (None, 0, -1) and len(shape) < 2:
            fmt = BlockFloatingPoint(fmt.wl, axis=0)
    elif family == "block":
        b = draw(st.sampled_from([1, 2, 3, 4]))
        shape = shape[:-1] + (b * draw(st.integers(1, 3)),) if shape else (b,)
        fmt = BlockFloatingPoint(draw(st.integers(2, 12)), block_size=b)
    else:
        fmt = draw(FLOATS)
    return fmt, draw(arrays(shape))


variances = st.one_of(st.just(0.0), log_uniform(-40.0, 4.0).map(abs))


@functools.cache
def _quantize_fn(fmt, rounding):
    return jax.jit(lambda x, k: lps.quantize(x, fmt, key=k, rounding=rounding))


@functools.cache
def _vc_fn(fmt):
    return jax.jit(lambda m, v, k: lps.vc_quantize(m, v, fmt, key=k))


def in_range(x: np.ndarray, fmt) -> np.ndarray:
    """Inputs whose rounding cannot overflow: 8-exponent-bit floats round values above
    their largest one to ±inf, as float32 and QPyTorch do (documented); every other format
    saturates."""
    if isinstance(fmt, FloatingPoint) and fmt.exp >= 8:
        return np.abs(np.asarray(x, np.float64)) <= fmt.max_value
    return np.ones(np.shape(x), bool)


# ---------------------------------------------------------------------------------------
# quantize: finite, on the grid, sign-correct, between the neighbours.


@given(format_and_array(), st.sampled_from(["nearest", "stochastic"]), st.integers(0, 2**16))
def test_quantize_is_finite_on_grid_and_sign_correct(case, rounding, seed):
    fmt, x = case
    q = np.asarray(_quantize_fn(fmt, rounding)(jnp.asarray(x), jax.random.key(seed)))
    x64 = x.astype(np.float64)
    inside = in_range(x, fmt)
    assert np.all(np.isfinite(q[inside])), (fmt, x[~np.isfinite(q) & inside])
    ok = ref.on_format(q, fmt) | ~inside
    assert np.all(ok), (fmt, x[~ok], q[~ok])
    q64 = q.astype(np.float64)
    assert np.all(q64 * x64 >= 0), (fmt, x[q64 * x64 < 0], q[q64 * x64 < 0])
    # the result is one of x's two neighbours on its own grid (clipped to the bounds)
    xd = ref.daz(x, fmt)
    d = ref.gap(x, fmt)
    lo_b, hi_b = ref.bounds(x, fmt)
    safe = np.where(d > 0, d, 1.0)
    below = np.where(d > 0, np.clip(np.floor(xd / safe) * safe, lo_b, hi_b), 0.0)
    above = np.where(d > 0, np.clip(np.ceil(xd / safe) * safe, lo_b, hi_b), 0.0)
    hit = (q64 == below) | (q64 == above) | ~inside
    assert np.all(hit), (fmt, x[~hit], q[~hit], below[~hit], above[~hit])
    if rounding == "nearest":
        near = (np.abs(q64 - np.clip(xd, lo_b, hi_b)) <= d / 2) | ~inside
        assert np.all(near), (fmt, x[~near], q[~near])


@given(format_and_array())
def test_pack_unpack_round_trips_nearest_rounding(case):
    fmt, x = case
    assume(np.all(in_range(x, fmt)))
    q = lps.quantize(jnp.asarray(x), fmt, rounding="nearest")
    back = np.asarray(lps.unpack(lps.pack(jnp.asarray(x), fmt)))
    np.testing.assert_array_equal(back, np.asarray(q), err_msg=repr(fmt))
    assert np.all(np.isfinite(back)) and np.all(ref.on_format(back, fmt))


# ---------------------------------------------------------------------------------------
# vc_quantize: finite and on the grid for every finite mean and variance in [0, 1e4].


@given(format_and_array(), variances, st.booleans(), st.integers(0, 2**16))
def test_vc_quantize_is_finite_and_on_grid(case, v, per_element, seed):
    fmt, mu = case
    variance = np.full(mu.shape, v, np.float32) if per_element else np.float32(v)
    # 8-exponent-bit floats overflow to inf above their largest value (documented)
    sigma = np.sqrt(np.float64(v))
    assume(np.all(in_range(np.abs(mu.astype(np.float64)) * 1.01 + 12 * sigma, fmt)))
    q = np.asarray(_vc_fn(fmt)(jnp.asarray(mu), jnp.asarray(variance), jax.random.key(seed)))
    assert np.all(np.isfinite(q)), (fmt, mu, v, q)
    ok = ref.on_format(q, fmt)
    assert np.all(ok), (fmt, mu[~ok], v, q[~ok])


def test_vc_issue_14_reproduction():
    """The reported case: a zero bias whose mean became -2.9e-24, v = 1.7e-5, 4-bit BFP."""
    fmt = BlockFloatingPoint(4, axis=-1)
    mu = jnp.full((64,), -2.9e-24, jnp.float32)
    q = np.asarray(lps.vc_quantize(mu, 1.7e-5, fmt, key=jax.random.key(0)), np.float64)
    assert np.all(np.isfinite(q)) and np.abs(q).max() < 1.0
    assert np.all(ref.on_format(q, fmt))
    for fmt in [BlockFloatingPoint(8, axis=0), BlockFloatingPoint(8, axis=None)]:
        q = np.asarray(lps.vc_quantize(jnp.full((4096,), 1e-20, jnp.float32), 1e-4, fmt,
                                       key=jax.random.key(0)), np.float64)
        # 4096 draws of N(0, 1e-4) plus rounding: |q| < 6σ, mean within 5 sd, var within 5 se
        assert np.abs(q).max() < 0.06
        assert abs(q.mean()) < Z * 0.01 / 64
        assert abs(q.var() - 1e-4) < Z * np.sqrt(2 / 4096) * 1e-4 + 2e-6


# ---------------------------------------------------------------------------------------
# Moments on fixed-seed Monte-Carlo draws.

N_DRAWS = 4000


def check_mean(draws: np.ndarray, target: np.ndarray, var_bound: np.ndarray, what) -> None:
    """|mean of n draws − target| <= Z·sqrt(var_bound / n) (+1e-300 for exact zeros).

    ``var_bound`` is the exact variance or a valid upper bound on it, so this is a Z-sigma
    test of the mean from the sample size alone."""
    n = draws.shape[0]
    err = np.abs(draws.mean(0) - target)
    tol = Z * np.sqrt(var_bound / n) * (1 + 1e-6) + 1e-300 + 1e-6 * np.abs(target) * 2.0**-20
    bad = err > tol
    assert not bad.any(), (what, target[bad], draws.mean(0)[bad], tol[bad])


def sample_variance_tolerance(draws: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Z standard errors of a sample variance (from the draws' own fourth central moment:
    se = sqrt((m4 − s⁴)/n)) plus Z²·scale/n for its second-order part."""
    n = draws.shape[0]
    c = draws - draws.mean(0)
    s2 = np.mean(c**2, 0)
    m4 = np.mean(c**4, 0)
    return Z * np.sqrt(np.maximum(m4 - s2**2, 0.0) / n) + Z**2 * scale / n


MOMENT_FORMATS = [FixedPoint(8, 4), FixedPoint(4, 1), FixedPoint(12, 20),
                  BlockFloatingPoint(8, axis=0), BlockFloatingPoint(4, axis=0),
                  BlockFloatingPoint(4, axis=None), BlockFloatingPoint(6, axis=1),
                  BlockFloatingPoint(3, block_size=2), FloatingPoint(4, 3),
                  FloatingPoint(5, 2), FloatingPoint(8, 3), FloatingPoint(8, 7)]
MOMENT_SHAPES = [(6,), (2, 4)]


@st.composite
def moment_case(draw):
    fmt = draw(st.sampled_from(MOMENT_FORMATS))
    shape = draw(st.sampled_from(MOMENT_SHAPES))
    if isinstance(fmt, BlockFloatingPoint) and fmt.axis == 1:
        shape = (2, 4)
    return fmt, draw(arrays(shape))


def _draws(fn, n, seed):
    keys = jax.random.split(jax.random.key(seed), n)
    return np.asarray(jax.vmap(fn)(keys)).astype(np.float64)


@functools.cache
def _quantize_draws(fmt, shape, n):
    return jax.jit(lambda x, keys: jax.vmap(lambda k: lps.quantize(x, fmt, key=k))(keys))


@functools.cache
def _vc_draws(fmt, shape, n):
    return jax.jit(lambda m, v, keys: jax.vmap(
        lambda k: lps.vc_quantize(m, v, fmt, key=k))(keys))


@given(moment_case(), st.integers(0, 1000))
def test_stochastic_rounding_mean_and_variance(case, seed):
    """Every draw is one of x's two neighbours a < b (clipped to the bounds), and the number
    k of draws at b lies in the central 1 − 1e-7 interval of Binomial(n, p), p the exact
    round-up probability: an exact test of the mean ((1−p)·a + p·b) and so of the variance
    (p(1−p)(b−a)², fixed by the mean for two points). A z-test would be wrong here: for
    means far inside a gap (x = 1e-38 on a 1/16 grid) n·p ≪ 1 and one round-up is 1/n."""
    fmt, x = case
    assume(np.all(in_range(x, fmt)))
    keys = jax.random.split(jax.random.key(seed), N_DRAWS)
    q = np.asarray(_quantize_draws(fmt, x.shape, N_DRAWS)(jnp.asarray(x), keys), np.float64)
    a, b, p = ref.stochastic_rounding_neighbours(x, fmt)
    support = (q == a) | (q == b)
    assert support.all(), (fmt, x, q[~support.all(0, keepdims=True).repeat(N_DRAWS, 0)])
    k = np.sum((q == b) & (a != b), axis=0)
    lo, hi = scipy.stats.binom.interval(1 - 1e-7, N_DRAWS, p)
    two_point = a != b
    bad = two_point & ((k < lo) | (k > hi))
    assert not bad.any(), (fmt, x[bad], k[bad], p[bad] * N_DRAWS)


def _vc_safe(mu: np.ndarray, sigma: float, fmt) -> bool:
    """Means whose draws cannot reach the format's range end (where saturation, the one
    documented exception, would bend the mean)."""
    reach = np.abs(mu) + 8 * sigma + 2 * ref.gap(mu, fmt) + 2 * ref.gap(
        np.abs(mu) + 8 * sigma, fmt)
    if isinstance(fmt, FixedPoint):
        return bool(np.all(reach < fmt.max_value))
    if isinstance(fmt, FloatingPoint):
        return bool(np.all(reach < min(fmt.max_value, 2.0**126)))
    return bool(np.all(reach < 2.0**124))


@given(moment_case(), variances, st.integers(0, 1000))
def test_vc_quantize_mean_and_variance(case, v, seed):
    """E[q] = μ'; max(v, v_s) <= Var[q] <= max(v, Δ_μ²/4) + E[Δ_out²]/2 (vc docstring).

    μ' is μ, except for v <= Δ_μ²/4 (stochastic rounding plus a rare ±Δ step), where it
    is μ saturated onto the range of its own grid as stochastic rounding saturates it
    (for block floating point: a block maximum above the top code). v_s is plain stochastic
    rounding's variance of μ' on μ's own grid and Δ_out the gap of the output's block or
    binade (a final re-rounding onto the format adds at most Δ_out²/4, and a carry into
    the block's next exponent at most as much again)."""
    fmt, mu = case
    mu = ref.daz(mu, fmt).astype(np.float32)  # the kernels read subnormals as zero
    v = float(np.float32(v)) if abs(np.float32(v)) >= ref.F32_MIN_NORMAL else 0.0  # v too
    sigma = float(np.sqrt(v))
    assume(_vc_safe(mu.astype(np.float64), sigma, fmt))
    keys = jax.random.split(jax.random.key(seed), N_DRAWS)
    q = np.asarray(_vc_draws(fmt, mu.shape, N_DRAWS)(jnp.asarray(mu), jnp.float32(v), keys),
                   np.float64)
    mu64 = mu.astype(np.float64)
    d_mu = ref.gap(mu64, fmt)
    blo, bhi = ref.bounds(mu64, fmt)
    small = (np.float64(np.float32(v)) <= d_mu**2 / 4) & (d_mu > 0)
    mu64 = np.where(small, np.clip(mu64, blo, bhi), mu64)
    _, v_s, _ = ref.stochastic_rounding_moments(mu64, fmt)
    d_out = np.stack([ref.gap(row, fmt) for row in q])
    lower = np.maximum(np.float64(np.float32(v)), v_s)
    upper = np.maximum(np.float64(np.float32(v)), d_mu**2 / 4) + np.mean(d_out**2, 0) / 2
    check_mean(q, mu64, upper, (fmt, mu, v))
    got = q.var(0, ddof=1)
    tol = sample_variance_tolerance(q, upper) * (1 + 1e-6) + 1e-300
    assert np.all(got >= lower * (1 - 1e-6) - tol), (fmt, mu, v, got, lower, tol)
    assert np.all(got <= upper * (1 + 1e-6) + tol), (fmt, mu, v, got, upper, tol)


# ---------------------------------------------------------------------------------------
# The update rule: every accumulator keeps finite weights on the grid, or skips the step.


@functools.cache
def _update_fn(precision):
    def step(key, theta, g, lr, v):
        return update_position(key, {"w": theta}, {"w": g}, learning_rate=lr,
                               noise_variance=v, precision=precision)
    return jax.jit(step)


@given(format_and_array(families=("fixed", "bfp", "float")), st.sampled_from(
    ["full", "low", "vc"]), st.floats(1e-6, 1.0), variances, st.integers(0, 2**16),
    st.data())
def test_update_keeps_weights_finite_and_on_grid(case, accumulator, lr, v, seed, data):
    fmt, theta = case
    assume(np.all(in_range(np.abs(theta.astype(np.float64)) * 2 + 1e4, fmt)))
    theta = np.asarray(lps.quantize(jnp.asarray(theta), fmt, rounding="nearest"))
    g = data.draw(arrays(theta.shape))
    precision = Precision(fmt, fmt, accumulator)
    new, finite = _update_fn(precision)(jax.random.key(seed), jnp.asarray(theta),
                                        jnp.asarray(g), jnp.float32(lr), jnp.float32(v))
    new = np.asarray(new["w"])
    assert np.all(np.isfinite(new)), (fmt, accumulator, theta, g, new)
    if not bool(finite):
        # an update that overflows float32 is skipped, like a non-finite gradient
        np.testing.assert_array_equal(new, theta)
        return
    if accumulator in ("low", "vc"):
        assert np.all(ref.on_format(new, fmt)), (fmt, accumulator, theta, g, new)


def test_update_overflow_is_a_skipped_step():
    """θ − η·g beyond float32's range: the step is skipped and flagged, never ±inf."""
    theta = {"w": jnp.asarray([3e38, 1.0], jnp.float32)}
    grads = {"w": jnp.asarray([-3e38, 0.0], jnp.float32)}
    for precision in [Precision(FULL, FULL, "full"),
                      Precision(BlockFloatingPoint(8), FULL, "full"),
                      Precision(BlockFloatingPoint(8), FULL, "low"),
                      Precision(BlockFloatingPoint(8), FULL, "vc")]:
        new, finite = update_position(jax.random.key(0), theta, grads, learning_rate=1.0,
                                      noise_variance=1e-4, precision=precision)
        assert not bool(finite), precision
        np.testing.assert_array_equal(np.asarray(new["w"]), np.asarray(theta["w"]))


@pytest.mark.parametrize("fmt", [BlockFloatingPoint(8, axis=0), FloatingPoint(8, 3),
                                 FixedPoint(8, 4)], ids=repr)
def test_vc_huge_variance_against_a_tiny_block_is_gaussian(fmt):
    """σ 60 binades above μ's gap: the draw follows the noise (mean μ, variance v), not
    the tiny block's range (the issue-14 corner, per element, many draws)."""
    mu = jnp.full((20000,), 1e-20, jnp.float32)
    q = np.asarray(lps.vc_quantize(mu, 1e-4, fmt, key=jax.random.key(3)), np.float64)
    n = q.size
    gap_out = ref.gap(q, fmt)
    upper = 1e-4 + np.mean(gap_out**2) / 2
    assert abs(q.mean() - 1e-20) <= Z * np.sqrt(upper / n)
    tol = sample_variance_tolerance(q[:, None], np.asarray([upper]))[0]
    assert 1e-4 - tol <= q.var() <= upper + tol
