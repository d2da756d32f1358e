"""Tests for lpsampling.vc: the variance-corrected quantizer Q_vc.

Monte-Carlo tolerances (n draws per element, all keys fixed):
* mean: |m̂ - μ| <= 5 sd with sd = sqrt(target variance / n);
* variance: |ŝ² - target| <= 5 se + 25 target/n with se = sqrt((m̂4 - ŝ⁴) / n), the
  first-order standard error of a sample variance estimated from the sample's own fourth
  central moment (valid for the discrete, non-Gaussian output distributions here; for a
  Gaussian it is sqrt(2/n)·v). The second term, (5 sd of the mean)², covers the second-order
  part, which dominates where the first order vanishes (a fair two-point distribution).
"""

from __future__ import annotations

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import lpsampling as lps
from lpsampling.vc import vc_quantize

Z = 5.0
N = 20000  # draws per element


VC = jax.jit(vc_quantize, static_argnames="fmt")
QN = jax.jit(lambda x, fmt: lps.quantize(x, fmt, rounding="nearest"), static_argnums=1)


def vc_draws(mean, variance, fmt, n=N, seed=0):
    """n independent draws of vc_quantize(mean, variance) as float64, shape (n, *mean.shape)."""
    keys = jax.random.split(jax.random.key(seed), n)
    f = jax.jit(jax.vmap(lambda k: vc_quantize(mean, variance, fmt, key=k)))
    return np.asarray(f(keys)).astype(np.float64)


def renearest(out, fmt):
    """Nearest rounding of every draw on its own (blocks are per draw)."""
    f = jax.jit(jax.vmap(lambda o: lps.quantize(o, fmt, rounding="nearest")))
    return np.asarray(f(jnp.asarray(out, jnp.float32))).astype(np.float64)


def check_moments(out, mu, target, what=""):
    n = out.shape[0]
    mean, var = out.mean(0), out.var(0, ddof=1)
    m4 = np.mean((out - mean) ** 4, axis=0)
    se = np.sqrt(np.maximum(m4 - var**2, 0.0) / n)
    sd_mean = np.sqrt(target / n)
    assert np.all(np.abs(mean - mu) <= Z * sd_mean + 1e-12), (what, mean - mu, sd_mean)
    tol = Z * se + Z**2 * target / n + 1e-12
    assert np.all(np.abs(var - target) <= tol), (what, var, target, tol)


# ----------------------------------------------------------------------------------------
# Moments in every branch. Means sit at fractional positions a of a gap Δ inside one binade
# / block range, far enough from its edges that no re-rounding occurs.

A = np.array([0.0, 0.1, 0.3, 0.5, 0.9])
# (v in units of Δ², label): v > v0 = Δ²/4; v0 > v > v_s; v < v_s; v = 0
V_UNITS = [(1.0, "v > v0"), (0.3, "v slightly > v0"), (0.2, "v < v0"), (0.05, "v < v0"),
           (0.0, "v = 0")]


def branch_case(gap, base):
    """Float32 means base + aΔ for every a × v (base on the grid); float64 (mu, v, target)."""
    mu = np.asarray(np.float32(base + np.tile(A, len(V_UNITS)) * gap), np.float64)
    a = mu - base  # the exact fractional position of the float32 mean
    vu = np.repeat([v for v, _ in V_UNITS], len(A))
    v = vu * gap**2
    vs = a * (gap - a)  # variance of plain stochastic rounding
    target = np.where(vu > 0.25, v, np.maximum(v, vs))
    return mu, v, target


@pytest.mark.parametrize(
    "fmt, gap",
    [(lps.FixedPoint(8, 3), 2.0**-3), (lps.BlockFloatingPoint(8), 2.0**-6),
     (lps.FloatingPoint(4, 3), 2.0**-3), (lps.FloatingPoint(8, 7), 2.0**-7)],
    ids=repr,
)
def test_moments_in_every_branch(fmt, gap):
    # base 1 + 3Δ: binade [1, 2) for floats, block exponent 0 for BFP (1-D: one block per
    # element), on the grid of FixedPoint(8, 3); 1 + 4Δ + 5 sd stays below 2 - Δ/2
    base = 1.0 + 3 * gap
    mu, v, target = branch_case(gap, base)
    out = vc_draws(jnp.asarray(mu, jnp.float32), jnp.asarray(v, jnp.float32), fmt, seed=1)
    assert np.all(np.isfinite(out))  # the paper's code NaNs in the v < v0 branch for BFP
    np.testing.assert_array_equal(renearest(out[:50], fmt), out[:50])
    check_moments(out, mu, target, repr(fmt))
    # v = 0 on the grid is exact
    exact = (v == 0) & (mu == base)
    assert exact.any() and np.all(out[:, exact] == mu[exact])


def test_moments_bfp_shared_blocks():
    """BlockFloatingPoint(8, axis=0) on 2-D means: Δ is the row's (block's), not the element's."""
    fmt = lps.BlockFloatingPoint(8, axis=0)
    rows = []
    for e, sign in [(0, 1.0), (-2, -1.0)]:
        gap = 2.0 ** (e + 2 - 8)
        mu, v, target = branch_case(gap, 13 * gap)  # small values on the block's coarse grid
        # the block maximum: ±1.5·2^e (a grid point) with v = 0, so the exponent never changes
        rows.append((np.concatenate([[sign * 1.5 * 2.0**e], mu]),
                     np.concatenate([[0.0], v]), np.concatenate([[0.0], target])))
    mu, v, target = (np.stack([r[i] for r in rows]) for i in range(3))
    out = vc_draws(jnp.asarray(mu, jnp.float32), jnp.asarray(v, jnp.float32), fmt, seed=2)
    np.testing.assert_array_equal(renearest(out[:50], fmt), out[:50])
    check_moments(out, mu, target, "bfp rows")


# ----------------------------------------------------------------------------------------
# Staying on the format at block-range / binade edges and at saturation.


@pytest.mark.parametrize(
    "fmt, mu, v_units, gap",
    [
        # mean just below 2^(e+1) with a large variance: draws cross into the next binade /
        # block exponent, where the grid is twice as coarse
        (lps.BlockFloatingPoint(8), [1.99, -1.99, 1.0 - 2.0**-20], 100.0, 2.0**-6),
        (lps.BlockFloatingPoint(8, axis=None), [[1.99, 0.3], [-0.7, 1.2]], 100.0, 2.0**-6),
        (lps.BlockFloatingPoint(8, axis=0), [[1.99, 0.3], [-0.7, 1.2]], 100.0, 2.0**-6),
        (lps.FloatingPoint(4, 3), [1.99, -1.99, 0.99], 16.0, 2.0**-3),
        (lps.FloatingPoint(8, 7), [1.99, -1.99, 0.99], 16.0, 2.0**-7),
        (lps.FloatingPoint(4, 3), [2.0**-7, -(2.0**-6)], 16.0, 2.0**-9),  # subnormals
    ],
    ids=repr,
)
def test_edges_stay_on_grid_and_keep_the_mean(fmt, mu, v_units, gap):
    mu32 = jnp.asarray(mu, jnp.float32)
    v = v_units * gap**2
    out = vc_draws(mu32, jnp.float32(v), fmt, seed=3)
    np.testing.assert_array_equal(renearest(out, fmt), out)
    # the mean stays exact; the variance is v plus at most the re-rounding's Δ'²/4 on the
    # coarser grid, with Δ' <= 2Δ here (the draws stay within the next binade / block
    # exponent up, except with negligible probability), so in
    # [v, v + Δ²]; sd of the mean <= sqrt((v + Δ²)/n), se of the variance from the 4th moment
    n = out.shape[0]
    mean, var = out.mean(0), out.var(0, ddof=1)
    assert np.all(np.abs(mean - np.asarray(mu32, np.float64)) <= Z * np.sqrt((v + gap**2) / n))
    se = np.sqrt((np.mean((out - mean) ** 4, axis=0) - var**2) / n)
    assert np.all(var >= v - Z * se) and np.all(var <= v + gap**2 + Z * se), (var / v, se / v)


def test_edges_saturation_stays_on_grid():
    cases = [
        (lps.FixedPoint(8, 3), jnp.array([15.8, -15.95, 0.0]), 1.0),  # range [-16, 15.875]
        (lps.FloatingPoint(4, 3), jnp.array([470.0, -479.0, 1.0]), 400.0),  # max 480
        (lps.FloatingPoint(3, 2), jnp.array([27.0, -27.0]), 9.0),  # max 28
        (lps.BlockFloatingPoint(8), jnp.array([127.9 * 2.0**-6]), 2.0**-12),  # top half step
    ]
    keys = jax.random.split(jax.random.key(4), 2000)
    outs = jax.jit(jax.vmap(lambda k: [vc_quantize(m, v, f, key=k) for f, m, v in cases]))(keys)
    for (fmt, _, _), out in zip(cases, outs, strict=True):
        out = np.asarray(out, np.float64)
        np.testing.assert_array_equal(renearest(out, fmt), out, err_msg=repr(fmt))
        if isinstance(fmt, lps.FixedPoint):
            assert out.min() >= fmt.min_value and out.max() <= fmt.max_value
            assert out.max() == fmt.max_value and out.min() == fmt.min_value  # reached
        elif isinstance(fmt, lps.FloatingPoint):
            assert np.abs(out).max() == fmt.max_value


def test_all_zero_block_with_variance():
    """A block whose mean is all zero has no gap: the output is μ + sqrt(v)ξ rounded onto the
    format, so its mean is 0 and its variance v plus that rounding's variance (<= Δ'²/4)."""
    v = 0.01
    mu = jnp.zeros((3, 8)).at[0].set(jnp.linspace(-1, 1, 8)).at[2].set(0.5)
    for fmt in [lps.BlockFloatingPoint(8, axis=0), lps.BlockFloatingPoint(8, axis=None)]:
        m = mu if fmt.axis == 0 else jnp.zeros((3, 8))
        out = vc_draws(m, jnp.float32(v), fmt, n=N // 4, seed=5)
        np.testing.assert_array_equal(renearest(out[:50], fmt), out[:50])
        zero = out[:, 1] if fmt.axis == 0 else out.reshape(out.shape[0], -1)
        # Δ' of the drawn block: max |x| ~ 4 sd = 0.4, so Δ' <= 2^(-2+2-8) and Δ'²/4 <= 4e-6
        extra = (2.0**-8) ** 2 / 4
        n = zero.shape[0]
        assert np.all(np.abs(zero.mean(0)) <= Z * np.sqrt((v + extra) / n))
        var = zero.var(0, ddof=1)
        # Gaussian-like: se <= sqrt(2/n)·(v + extra)
        assert np.all(np.abs(var - v) <= Z * np.sqrt(2 / n) * (v + extra) + extra), var
        assert np.any(zero != 0)
    # 1-D (one block per element): zero elements alike
    out = vc_draws(jnp.zeros(4), jnp.float32(v), lps.BlockFloatingPoint(8), n=N // 4, seed=6)
    np.testing.assert_array_equal(renearest(out, lps.BlockFloatingPoint(8)), out)
    assert np.all(np.abs(out.mean(0)) <= Z * np.sqrt(v / out.shape[0]) * 1.01)


def test_full_is_mean_plus_gaussian_noise():
    mu = jnp.linspace(-2.0, 2.0, 4)
    keys = jax.random.split(jax.random.key(7), N)
    run = jax.jit(jax.vmap(lambda k: (vc_quantize(mu, 0.25, lps.FULL, key=k),
                                      vc_quantize(mu, 1.0, lps.FULL, key=k))))
    half, one = (np.asarray(o, np.float64) for o in run(keys))
    # the same ξ scaled by sqrt(v): (one - μ) = 2 (half - μ) up to float32 rounding
    np.testing.assert_allclose(one - np.asarray(mu), 2 * (half - np.asarray(mu)), atol=4e-6)
    xi = (one - np.asarray(mu)).ravel()
    # ξ ~ N(0, 1): mean within 5/sqrt(n), variance within 5 sqrt(2/n); Kolmogorov-Smirnov
    # against the standard normal at p > 1e-6 (n = 80000 values)
    n = xi.size
    assert abs(xi.mean()) <= Z / np.sqrt(n)
    assert abs(xi.var() - 1) <= Z * np.sqrt(2 / n)
    assert scipy.stats.kstest(xi, "norm").pvalue > 1e-6


# ----------------------------------------------------------------------------------------
# v = 0 is stochastic rounding, also at low word lengths and at a block's top.
#
# With wl bits a block of exponent e holds codes up to M = 2^(wl-1) - 1 at gap
# Δ = 2^(e+2-wl), so its last gap (MΔ, 2^(e+1)) holds means beyond the range. Stochastic
# rounding (quantize) saturates those at MΔ; Q_vc used to round them up to 2^(e+1) with
# probability equal to their fraction, a carry into the next exponent that re-rounded
# the whole block onto a grid twice as coarse: +14% variance on a 784x100 N(0, 0.05²)
# BlockFloatingPoint(4, axis=0) tensor at v = 0, +24% at 3 bits, and VC SGLDLP-L at
# T = 1e-3 (v ~ 1e-10, far below the rounding variance) trained far worse than naive
# SGLDLP-L (Fashion-MNIST MLP, bfp4: 42-50% error against 22-29%).


def _edge_rows(wl):
    """Rows (axis=0 blocks) of BlockFloatingPoint(wl) at exponent 0, and a negative one:
    maxima inside the last gap (MΔ, 2), exactly at MΔ, just above 2^e = 1; an all-zero
    row; the other elements spread over odd and even codes and fractions."""
    d = 2.0 ** (2 - wl)
    top = 2.0 - d
    rest = [0.3 * d, -1.5 * d, 0.7, -0.45, 2.5 * d, 0.9 * d, -0.05]
    rows = [[top + f * d] + rest for f in (0.05, 1 / 3, 0.5, 0.9)]
    rows += [[-(top + 0.6 * d)] + rest, [top] + rest, [1.0 + 0.3 * d] + rest]
    rows += [[x / 4 for x in rows[1]]]  # exponent -2
    rows += [[0.0] * len(rest + [0])]
    return np.asarray(rows, np.float32)


@pytest.mark.parametrize("wl", [3, 4, 8])
def test_zero_variance_is_stochastic_rounding_bfp(wl):
    n = 2000
    fmt = lps.BlockFloatingPoint(wl, axis=0)
    x = _edge_rows(wl)
    helpers.assert_stochastic_rounding(vc_draws(jnp.asarray(x), 0.0, fmt, n=n, seed=11), x, fmt)
    # a realistic layer, blocks of 32 (axis=0) and of 48 (axis=-1) weights: ~7% of the
    # blocks have their maximum in the last gap at 4 bits
    w = np.asarray(jax.random.normal(jax.random.key(12), (48, 32)) * 0.05, np.float32)
    for axis in (0, -1):
        fmt = lps.BlockFloatingPoint(wl, axis=axis)
        helpers.assert_stochastic_rounding(vc_draws(jnp.asarray(w), 0.0, fmt, n=n, seed=13),
                                      w, fmt)


def test_small_variance_at_a_block_top_saturates_the_mean():
    """v <= Δ²/4 at a block maximum in the last gap: the mean is saturated at the top code
    MΔ (as stochastic rounding does); the ±Δ step (probability v/(2Δ²) each way) may carry
    into the next exponent, re-rounding the rest of the block keeping its means."""
    fmt = lps.BlockFloatingPoint(4, axis=0)
    d = 0.25  # exponent 0: top code 7Δ = 1.75
    mu = np.asarray([[1.9, 0.3, -0.55, 0.05, 1.0]], np.float32)
    v = 0.2 * d**2
    out = vc_draws(jnp.asarray(mu), jnp.float32(v), fmt, seed=14)[:, 0]
    np.testing.assert_array_equal(renearest(out[:50], fmt), out[:50])
    n = out.shape[0]
    top = out[:, 0]
    assert set(np.unique(top)) <= {1.5, 1.75, 2.0}
    # each step has probability v/(2Δ²) = 0.1: binomial tolerance on each frequency
    p = v / (2 * d**2)
    for value in (1.5, 2.0):
        assert abs(np.mean(top == value) - p) <= helpers.binom_tol(p, n), value
    check_moments(top[:, None], np.array([1.75]), np.array([v]), "top")
    # the rest keep their means; their variance is at most v_s + v + P(carry)·Δ² <= Δ²
    rest, m = out[:, 1:], mu[0, 1:].astype(np.float64)
    assert np.all(np.abs(rest.mean(0) - m) <= Z * np.sqrt(d**2 / n)), rest.mean(0) - m
    # and are re-rounded onto the 2Δ grid exactly when the top carried
    carried = top == 2.0
    assert np.all(np.mod(rest[carried], 2 * d) == 0)


@pytest.mark.parametrize("vu", [0.0, 0.2])
def test_carry_format_keeps_the_mean_at_a_block_top(vu):
    """BlockFloatingPoint(carry=True), v = vu·Δ² ≤ Δ²/4: the mean is not saturated, so a
    block maximum in the last gap (1.9 = 7Δ + 0.6Δ, and -1.8 = -(7Δ + 0.2Δ)) keeps its
    mean: it carries to 2^(e+1) = 2 with probability f (plus the ±Δ steps), and the
    re-rounding puts its row on the grid 2Δ. At v = 0 that is the format's stochastic
    rounding (quantize with carry=True) in distribution. Tolerance of the means: Var[q] ≤
    max(v, Δ²/4) + Δ_out²/2 with Δ_out = 2Δ (module docstring), so 5 sd is
    Z·1.5·Δ/sqrt(n) = 0.013, against the saturating rule's bias 0.15 at the maximum."""
    fmt = lps.BlockFloatingPoint(4, axis=0, carry=True)
    d = 0.25
    mu = np.asarray([[1.9, 0.3, -0.55, 0.05, 1.0], [-1.8, 0.3, -0.55, 0.05, 1.0]], np.float32)
    out = vc_draws(jnp.asarray(mu), jnp.float32(vu * d**2), fmt, seed=16)
    n = out.shape[0]
    np.testing.assert_array_equal(renearest(out, fmt), out)  # on the format
    tol = Z * 1.5 * d / np.sqrt(n)
    assert np.all(np.abs(out.mean(0) - mu) <= tol), (out.mean(0) - mu, tol)
    top, f = out[:, :, 0], np.array([0.6, 0.2])
    # a carry is a draw of at least 8Δ = 2 from the mean 7Δ + fΔ: stochastic rounding up
    # (f) plus the ±Δ steps (probability s = max(vu − f(1−f), 0)/2 each way; _vc_units),
    # P = f + s·(1 − 2f); the draw 9Δ (f·s) is re-rounded onto 2 or 2.5
    s = 0.5 * np.maximum(vu - f * (1 - f), 0.0)
    p = f + s * (1 - 2 * f)
    carried = np.abs(top) >= 2.0
    assert np.all(np.abs(carried.mean(0) - p) <= helpers.binom_tol(p, n)), carried.mean(0)
    for i in range(2):
        assert np.all(np.mod(out[carried[:, i], i], 2 * d) == 0), i
    if vu == 0:  # Q_vc(μ, 0) is quantize(μ, carry format) in distribution: same top law
        q = np.asarray(jax.jit(jax.vmap(lambda k: lps.quantize(jnp.asarray(mu), fmt, key=k)))(
            jax.random.split(jax.random.key(17), n)), np.float64)
        assert np.all(np.abs((np.abs(q[:, :, 0]) == 2.0).mean(0) - f)
                      <= helpers.binom_tol(f, n))


@pytest.mark.parametrize("fmt", [lps.BlockFloatingPoint(4, axis=0),
                                 lps.BlockFloatingPoint(4, block_size=2)], ids=repr)
def test_nan_block_stays_nan(fmt):
    """A block holding only NaN and zeros has no grid; its NaN became 0 whenever another
    block's draw left its range (the re-rounding onto the format then runs on the whole
    tensor). NaN propagates in every format. The second block's variance (σ = 1 against a
    gap of 1/4 below a block top of 1.75) makes such a draw near certain in every call."""
    mu = jnp.asarray([[jnp.nan, 0.0], [0.3, 1.7]], jnp.float32)
    for v in (0.0, 1e-3):
        variance = jnp.asarray([[v, v], [1.0, 1.0]], jnp.float32)
        for seed in range(4):
            out = np.asarray(VC(mu, variance, fmt, key=jax.random.key(15 + seed)))
            assert np.isnan(out[0, 0]) and np.all(np.isfinite(out.ravel()[1:])), (v, out)


# ----------------------------------------------------------------------------------------
# jit, vmap, dtypes, errors.


def test_jit_vmap_and_dtypes():
    key = jax.random.key(8)
    mu = jax.random.normal(key, (4, 6))
    fmts = [lps.FixedPoint(8, 3), lps.BlockFloatingPoint(8), lps.FloatingPoint(4, 3),
            lps.FloatingPoint(8, 7)]
    # jit equals eager
    eager = vc_quantize(mu, 0.01, fmts[0], key=key)
    jitted = VC(mu, 0.01, fmts[0], key=key)
    np.testing.assert_array_equal(eager, jitted)
    # vmap over means (each row its own call) equals separate calls
    rows = jax.jit(jax.vmap(lambda m: vc_quantize(m, 0.01, fmts[1], key=key)))(mu)
    for i in range(2):
        np.testing.assert_array_equal(rows[i], VC(mu[i], 0.01, fmts[1], key=key))
    # dtypes preserved, outputs on the grid in that dtype (these grids fit bf16 and f16);
    # the kernel is dtype-independent (float32 inside), so two formats suffice
    some = fmts[:2]
    for dtype in [jnp.float32, jnp.bfloat16, jnp.float16]:
        m = (mu * 2).astype(dtype)
        outs = jax.jit(lambda m: [vc_quantize(m, jnp.float32(0.003), f, key=key)
                                  for f in some])(m)
        for fmt, out in zip(some, outs, strict=True):
            assert out.dtype == dtype and out.shape == m.shape, (fmt, dtype)
            np.testing.assert_array_equal(
                np.asarray(QN(out, fmt), np.float32),
                np.asarray(out, np.float32), err_msg=f"{fmt} {dtype}")
    # per-element variances broadcast
    out = VC(mu, jnp.full((6,), 0.01), fmts[0], key=key)
    assert out.shape == mu.shape


def test_public_name():
    assert lps.vc_quantize is vc_quantize  # DESIGN.md's public contract


def test_bad_input():
    mu = jnp.zeros((4, 5))
    fmt = lps.FixedPoint(8, 3)
    with pytest.raises(ValueError, match="key"):
        vc_quantize(mu, 0.1, fmt)
    with pytest.raises(ValueError, match="key"):
        vc_quantize(mu, 0.1, fmt, key=None)
    for bad in [jnp.ones(3), jnp.ones((4, 5, 1)), jnp.ones((2, 5))]:
        with pytest.raises(ValueError, match="variance"):
            vc_quantize(mu, bad, fmt, key=jax.random.key(0))
    with pytest.raises(TypeError):
        vc_quantize(jnp.zeros(3, jnp.int32), 0.1, fmt, key=jax.random.key(0))
    with pytest.raises(TypeError):
        vc_quantize(mu, 0.1, "fixed", key=jax.random.key(0))


@pytest.mark.parametrize("fmt", [lps.FixedPoint(8, 4), lps.BlockFloatingPoint(8),
                                 lps.FloatingPoint(4, 3), lps.FULL], ids=repr)
def test_invalid_variance_is_refused_or_nan(fmt):
    """Issue 10: NaN variance used to give a biased value (0.3 -> 0.375 on FixedPoint(8, 4));
    a negative one was read as 0 on a grid and gave NaN with FULL."""
    mu = jnp.full((4,), 0.3)
    key = jax.random.key(0)
    assert np.all(np.isnan(np.asarray(vc_quantize(mu, jnp.nan, fmt, key=key))))
    assert np.all(np.isnan(np.asarray(vc_quantize(mu, jnp.inf, fmt, key=key))))
    with pytest.raises(ValueError, match="variance must be >= 0"):
        vc_quantize(mu, -1e-3, fmt, key=key)
    traced = jax.jit(lambda v: vc_quantize(mu, v, fmt, key=key))(-1e-3)
    assert np.all(np.isnan(np.asarray(traced)))
    ok = np.asarray(vc_quantize(mu, jnp.asarray([0.0, -0.0, 1e-3, 0.0]), fmt, key=key))
    assert np.all(np.isfinite(ok))
