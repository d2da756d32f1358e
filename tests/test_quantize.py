"""Tests for lpsampling.quantize: QPyTorch agreement, statistical properties of stochastic
rounding, special values, transformations (jit/vmap/grad) and input validation.

Statistical tolerances: every check on a frequency uses the binomial standard deviation
``sd = sqrt(p(1-p)/n)`` of the element's *exact* round-up probability ``p`` over ``n`` draws
and allows ``5 sd + 3/n`` (the ``3/n`` term covers the Poisson tail where ``n·p`` is small and
the Gaussian approximation is poor). All keys are fixed, so the tests are deterministic; the
tolerances say how unlikely a failure of a correct implementation would be (a 5 sd excursion
has probability below 6e-7 per element).
"""

from __future__ import annotations

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import Z, binom_tol

import lpsampling as lps

ROUNDINGS = ("nearest", "stochastic")


def same(a, b):
    """Elementwise ``a == b`` with NaN == NaN (signed zeros compare equal)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return (a == b) | (np.isnan(a) & np.isnan(b))


# jitted once per (format, rounding, shape): eager dispatch of the many small ops is slow
Q = jax.jit(lps.quantize, static_argnames=("fmt", "rounding"))
G = jax.jit(lps.grid_gap, static_argnums=1)


nearest = helpers.nearest


def draws(x, fmt, n, seed=0):
    """n independent stochastic roundings of x, as an array of shape (n, *x.shape)."""
    keys = jax.random.split(jax.random.key(seed), n)
    f = jax.jit(jax.vmap(lambda k: lps.quantize(x, fmt, key=k)))
    return np.asarray(f(keys))


# ----------------------------------------------------------------------------------------
# An exact float64 reference for nearest rounding with ties to even (our documented rule).


def gap_exponent_ref(x, fmt, blockexp=None):
    """The gap exponent k (grid = multiples of 2**k) per element, exactly, in NumPy."""
    x = np.asarray(x, np.float64)
    if isinstance(fmt, lps.FixedPoint):
        return np.full(x.shape, -fmt.fl, np.int64)
    if isinstance(fmt, lps.BlockFloatingPoint):
        return np.asarray(blockexp, np.int64) + 2 - fmt.wl
    # floats: the exponent of x's binade (frexp is exact in float64), at least min_exp
    e = np.frexp(np.where(np.isfinite(x) & (x != 0), x, 1.0))[1].astype(np.int64) - 1
    return np.maximum(e, fmt.min_exp) - fmt.man


def bounds_ref(fmt, k):
    if isinstance(fmt, lps.FixedPoint):
        return fmt.min_value, fmt.max_value
    if isinstance(fmt, lps.BlockFloatingPoint):
        hi = fmt.max_code * np.exp2(k.astype(np.float64))
        return -hi, hi
    if fmt.exp >= 8:
        return -np.inf, np.inf
    return -fmt.max_value, fmt.max_value


def nearest_even_ref(x, fmt, blockexp=None):
    """Round-half-to-even onto the format, then saturate; float64 arithmetic is exact here."""
    x64 = np.asarray(x, np.float64)
    k = gap_exponent_ref(x64, fmt, blockexp)
    gap = np.exp2(k.astype(np.float64))
    lo, hi = bounds_ref(fmt, k)
    with np.errstate(invalid="ignore"):
        out = np.clip(np.round(x64 / gap) * gap, lo, hi)
    return out.astype(np.float32), gap, lo, hi


# ----------------------------------------------------------------------------------------
# QPyTorch agreement (reference vectors in ../shared/testdata, see its README).

FIXED_CASES = [(8, 8), (8, 6), (8, 3), (4, 2), (16, 12), (6, 5)]
FLOAT_CASES = [(4, 3), (5, 2), (8, 7), (5, 10), (3, 2)]
BFP_LAYOUTS = ["2d", "4d", "1d", "all"]


def _fixed(wl, fl):
    return f"fixed_wl{wl}_fl{fl}", lps.FixedPoint(wl, fl)


def _float(e, m):
    return f"float_e{e}_m{m}", lps.FloatingPoint(e, m)


def _bfp(wl, layout):
    return f"bfp_wl{wl}_{layout}", lps.BlockFloatingPoint(wl, axis=None if layout == "all" else 0)


def test_reference_file_lists_the_formats_we_test(qref):
    assert sorted(map(tuple, qref["fixed_formats"].tolist())) == sorted(FIXED_CASES)
    assert sorted(map(tuple, qref["float_formats"].tolist())) == sorted(FLOAT_CASES)
    assert sorted(qref["bfp_wls"].tolist()) == [4, 6, 8]


@pytest.mark.parametrize(
    "name, fmt", [_fixed(*c) for c in FIXED_CASES] + [_float(*c) for c in FLOAT_CASES]
)
def test_nearest_matches_qtorch_fixed_and_float(qref, name, fmt):
    x = qref["x"]
    out = np.asarray(nearest(x, fmt))
    tie, dbl = qref[name + "_tie"], qref[name + "_dblround"]
    care = ~tie & ~dbl
    bad = care & ~same(out, qref[name + "_out"])
    assert not bad.any(), (name, x[bad][:8], out[bad][:8], qref[name + "_out"][bad][:8])
    # Our tie rule: half to even. The output is one of the two neighbours (after saturation)
    # and, unless saturated, has an even integer code out / gap.
    ref, gap, lo, hi = nearest_even_ref(x, fmt)
    xt, ot, gt = x[tie].astype(np.float64), out[tie].astype(np.float64), gap[tie]
    down = np.clip(np.floor(xt / gt) * gt, lo, hi)
    up = np.clip(np.ceil(xt / gt) * gt, lo, hi)
    assert np.all((ot == down) | (ot == up)), name
    inside = (down == np.floor(xt / gt) * gt) & (up == np.ceil(xt / gt) * gt)
    assert np.all(np.mod(ot[inside] / gt[inside], 2) == 0), name
    assert np.array_equal(out[tie], ref[tie]), name
    assert tie.sum() > 40  # the file does exercise ties


@pytest.mark.parametrize(
    "name, fmt", [_fixed(*c) for c in FIXED_CASES] + [_float(*c) for c in FLOAT_CASES]
)
def test_specials_match_qtorch_except_nan(qref, name, fmt):
    sx = qref["specials_x"]
    out = np.asarray(nearest(sx, fmt))
    ref = qref[name + "_specials_out"].copy()
    # Deliberate difference (DESIGN.md): QPyTorch maps NaN to ±max for floats with exp < 8;
    # we keep NaN as NaN in every format.
    ref[np.isnan(sx)] = np.nan
    assert np.all(same(out, ref)), (name, sx, out, ref)


@pytest.mark.parametrize("wl", [8, 4, 6])
@pytest.mark.parametrize("layout", BFP_LAYOUTS)
def test_nearest_matches_qtorch_bfp(qref, wl, layout):
    name, fmt = _bfp(wl, layout)
    x = qref["bfp_x_" + layout]
    out = np.asarray(nearest(x, fmt))
    assert out.shape == x.shape
    # don't care: blocks whose maximum is a float32 subnormal (kind 12), which QPyTorch
    # rounds on a fixed grid of its own; ours quantize to zero.
    dont_care = qref["bfp_x_" + layout + "_kind"] == 12
    tie, dbl = qref[name + "_tie"], qref[name + "_dblround"]
    care = ~tie & ~dbl & ~dont_care
    bad = care & ~same(out, qref[name + "_out"])
    assert not bad.any(), (name, x[bad][:8], out[bad][:8], qref[name + "_out"][bad][:8])
    assert np.all(out[dont_care] == 0)
    # ties: half to even within the block grid, one of the two (saturated) neighbours
    blockexp = qref["bfp_x_" + layout + "_blockexp"]
    ref, gap, lo, hi = nearest_even_ref(x, fmt, blockexp)
    lo, hi = np.broadcast_to(lo, x.shape)[tie], np.broadcast_to(hi, x.shape)[tie]
    xt, ot, gt = x[tie].astype(np.float64), out[tie].astype(np.float64), gap[tie]
    down = np.clip(np.floor(xt / gt) * gt, lo, hi)
    up = np.clip(np.ceil(xt / gt) * gt, lo, hi)
    assert np.all((ot == down) | (ot == up)), name
    inside = (down == np.floor(xt / gt) * gt) & (up == np.ceil(xt / gt) * gt)
    assert np.all(np.mod(ot[inside] / gt[inside], 2) == 0), name
    assert np.array_equal(out[tie], ref[tie]), name
    # and our block exponents are QPyTorch's (via the gap): e + 2 - wl
    care_gap = ~dont_care & (blockexp > -127)
    ours = np.asarray(jnp.broadcast_to(G(x, fmt), x.shape))
    assert np.array_equal(ours[care_gap], gap[care_gap])


SR_FORMATS = {
    "fixed_wl8_fl6": lps.FixedPoint(8, 6),
    "fixed_wl8_fl3": lps.FixedPoint(8, 3),
    "bfp_wl8_2d": lps.BlockFloatingPoint(8, axis=0),
    "float_e4_m3": lps.FloatingPoint(4, 3),
}


@pytest.mark.parametrize("case", sorted(SR_FORMATS))
def test_stochastic_matches_qtorch(qref, case):
    n_ours = 20000  # many draws so that p = 0.001 elements show both neighbours (P(miss) < 3e-9)
    n_qt = int(qref["sr_n_draws"])  # 2000
    assert set(qref["sr_names"].tolist()) == set(SR_FORMATS)
    g = lambda s: qref[f"sr_{case}_{s}"]
    x, lo, hi = g("x"), g("lo"), g("hi")
    out = draws(jnp.asarray(x), SR_FORMATS[case], n_ours, seed=1)
    values = g("values")
    n_seen = (~np.isnan(values)).sum(-1)
    single = lo == hi
    both = (n_seen == 2) & ~single
    # support: {lo, hi} exactly where QPyTorch saw both, the single value where lo == hi,
    # and never anything else
    assert np.all((out == lo) | (out == hi))
    saw_lo, saw_hi = (out == lo).any(0), (out == hi).any(0)
    assert np.all(saw_lo[both] & saw_hi[both])
    assert np.all(out[:, single] == lo[single])
    np.testing.assert_array_equal(lo[single], g("nearest")[single])
    np.testing.assert_array_equal(values[single][:, 0], lo[single])
    # round-up frequency vs QPyTorch's (two-sample binomial): sd = sqrt(p(1-p)(1/n1 + 1/n2))
    # with p = p_ideal, i.e. sd <= 0.5*sqrt(1/20000 + 1/2000) = 0.0117; allow 5 sd + 3/n_qt.
    p = g("p_ideal")[~single].astype(np.float64)
    ours = (out[:, ~single] == hi[~single]).mean(0)
    two_sample = Z * np.sqrt(p * (1 - p) * (1 / n_ours + 1 / n_qt)) + 3.0 / n_qt
    assert np.all(np.abs(ours - g("p_up")[~single]) <= two_sample)
    # and vs the exact probability: sd = sqrt(p(1-p)/20000) <= 0.0035
    assert np.all(np.abs(ours - p) <= binom_tol(p, n_ours))


# ----------------------------------------------------------------------------------------
# Property inputs: values with known gap Δ and known fractional position f in the gap.


def make_inputs(fmt, seed=0, shape=(16, 64)):
    """(x, gap): float32 x off the grid (away from saturation) and its exact grid gap."""
    rng = np.random.default_rng(seed)
    f = rng.uniform(0.0, 1.0, shape)
    sign = rng.choice([-1.0, 1.0], shape)
    if isinstance(fmt, lps.FixedPoint):
        gap = np.full(shape, 2.0**-fmt.fl)
        code = rng.integers(-(2 ** (fmt.wl - 1)) + 1, 2 ** (fmt.wl - 1) - 1, shape)
        x = (code + f) * gap
    elif isinstance(fmt, lps.BlockFloatingPoint):
        # one exponent per block; the block's first element is the anchor 1.5 * 2**e (a grid
        # point, the block maximum); the others have |code + f| < 0.75 * 2**(wl-1).
        e = rng.integers(-4, 4, shape)
        if fmt.block_size is not None:
            idx = np.arange(shape[-1]) // fmt.block_size
            e = np.broadcast_to(e[:, :1] + idx % 3 - 1, shape)
            anchor = (np.arange(shape[-1]) % fmt.block_size == 0)[None, :]
        elif fmt.axis is None:
            e = np.full(shape, 1)
            anchor = np.zeros(shape, bool)
            anchor[0, 0] = True
        else:  # axis = 0: one block per row
            e = np.broadcast_to(e[:, :1], shape)
            anchor = np.zeros(shape, bool)
            anchor[:, 0] = True
        gap = np.exp2(e + 2.0 - fmt.wl)
        top = 3 * 2 ** (fmt.wl - 3)  # 1.5 * 2**e in units of the gap
        code = rng.integers(-top + 1, top - 1, shape)
        x = np.where(anchor, top * gap, (code + f) * gap)
    else:
        # floats: binade exponents inside the normal range, plus subnormals where the format
        # has them above float32's normal range.
        e = rng.integers(fmt.min_exp, min(fmt.max_exp, 20), shape)
        m = rng.integers(0, 2**fmt.man, shape)
        gap = np.exp2(e - fmt.man + 0.0)
        x = (2.0**fmt.man + m + f) * gap
        if fmt.min_exp - fmt.man > -126:
            sub = rng.uniform(size=shape) < 0.2
            gap = np.where(sub, 2.0 ** (fmt.min_exp - fmt.man), gap)
            x = np.where(sub, (rng.integers(0, 2**fmt.man, shape) + f) * gap, x)
    x = (sign * x).astype(np.float32)
    return x, gap


PROPERTY_FORMATS = [
    lps.FixedPoint(8, 3),
    lps.FixedPoint(16, 12),
    lps.BlockFloatingPoint(8, axis=0),
    lps.BlockFloatingPoint(8, axis=None),
    lps.BlockFloatingPoint(6, block_size=8),
    lps.FloatingPoint(4, 3),
    lps.FloatingPoint(8, 7),
]


@pytest.mark.parametrize("fmt", PROPERTY_FORMATS, ids=repr)
def test_stochastic_rounding_statistics(fmt):
    x, gap = make_inputs(fmt)
    x64 = x.astype(np.float64)
    np.testing.assert_array_equal(np.asarray(jnp.broadcast_to(G(x, fmt), x.shape)), gap)
    lo = np.floor(x64 / gap) * gap
    p = x64 / gap - np.floor(x64 / gap)  # exact fractional position (float64 holds it)
    n = 2000
    out = draws(jnp.asarray(x), fmt, n, seed=2).astype(np.float64)
    # every draw is one of the two neighbours, hence on the grid ...
    up = out == lo + gap
    assert np.all((out == lo) | up)
    # ... and nearest rounding of an output returns it unchanged
    for d in out[:3]:
        np.testing.assert_array_equal(np.asarray(nearest(jnp.asarray(d, jnp.float32), fmt)), d)
    # per element P(round up) = f (binomial, n = 2000: sd = sqrt(f(1-f)/n) <= 0.0112)
    freq = up.mean(0)
    assert np.all(np.abs(freq - p) <= binom_tol(p, n))
    # unbiased per element: |mean - x| <= Δ (5 sd + 3/n), sd as above
    assert np.all(np.abs(out.mean(0) - x64) <= gap * binom_tol(p, n))
    # unbiased on average over all M elements, in units of Δ: sd = sqrt(Σ f(1-f)/n)/M
    M = x.size
    bias = np.mean((out.mean(0) - x64) / gap)
    assert abs(bias) <= Z * np.sqrt(np.sum(p * (1 - p)) / n) / M
    # variance = Δ² f(1-f): the sample variance of a Bernoulli is p̂(1-p̂)·n/(n-1), and
    # |p̂(1-p̂) - f(1-f)| <= |p̂ - f| (|1-2f| + |p̂ - f|) <= the frequency tolerance (+ its square)
    var = out.var(0, ddof=1) / gap**2
    tol = binom_tol(p, n)
    assert np.all(np.abs(var - p * (1 - p)) <= tol + tol**2 + 1.0 / n)


@pytest.mark.parametrize("fmt", PROPERTY_FORMATS, ids=repr)
def test_nearest_properties(fmt):
    x, gap = make_inputs(fmt, seed=3)
    out = np.asarray(nearest(x, fmt)).astype(np.float64)
    ref = nearest_even_ref(x, fmt, None if not isinstance(fmt, lps.BlockFloatingPoint)
                           else np.log2(gap) - 2 + fmt.wl)[0]
    np.testing.assert_array_equal(out, ref)
    assert np.all(np.abs(out - x) <= gap / 2)
    np.testing.assert_array_equal(np.asarray(nearest(out.astype(np.float32), fmt)), out)


def test_small_updates_move_in_expectation_only_with_stochastic_rounding():
    """The SGLD case: an update of 0.01 Δ applied T times moves the weight by 0.01 Δ T on
    average with stochastic rounding, and not at all with nearest rounding."""
    chains, steps = 2000, 1000
    cases = []  # (format, x0, Δ at x0); for BFP the chain lives in element 0 of a block whose
    # maximum is the fixed anchor 3.0 (e = 1, Δ = 2^-5), so the block grid never changes
    for fmt in [lps.FixedPoint(8, 3), lps.FloatingPoint(4, 3), lps.FloatingPoint(8, 7)]:
        x0 = jnp.array([1.0], jnp.float32)
        cases.append((fmt, x0, float(jnp.ravel(lps.grid_gap(x0, fmt))[0])))
    cases.append((lps.BlockFloatingPoint(8, axis=None), jnp.array([0.5, 3.0]), 2.0**-5))

    def walks(key, rounding):
        finals = []
        for fmt, x0, gap in cases:
            u = jnp.zeros_like(x0).at[0].set(0.01 * gap)

            def step(x, k, fmt=fmt, u=u):
                return lps.quantize(x + u, fmt, key=k, rounding=rounding), None

            finals.append(jax.lax.scan(step, x0, jax.random.split(key, steps))[0])
        return finals

    keys = jax.random.split(jax.random.key(4), chains)
    finals = jax.jit(jax.vmap(lambda k: walks(k, "stochastic")))(keys)
    finals_n = jax.jit(lambda k: walks(k, "nearest"))(jax.random.key(5))
    for (fmt, x0, gap), final, final_n in zip(cases, finals, finals_n, strict=True):
        final = np.asarray(final)
        moved = final[:, 0] - float(x0[0])
        # E[moved] = steps·u exactly (each rounding is unbiased). Each step adds variance
        # Δ_i² p_i(1-p_i) <= Δ_i² p_i = Δ_i u <= Δ_max u, with Δ_max <= 2Δ (a float walk may
        # cross one binade edge), so Var[moved] <= steps·2Δ·u and the mean over the chains has
        # sd <= sqrt(steps·2Δ·u / chains) = 0.1 Δ (expected move: 10 Δ); allow 5 sd.
        expected = steps * 0.01 * gap
        sd = np.sqrt(steps * 2 * gap * 0.01 * gap / chains)
        assert abs(moved.mean() - expected) <= Z * sd, (fmt, moved.mean(), expected, sd)
        np.testing.assert_array_equal(final[:, 1:], np.broadcast_to(x0[1:], final[:, 1:].shape))
        # nearest rounding never moves it
        np.testing.assert_array_equal(np.asarray(final_n), np.asarray(x0))


# ----------------------------------------------------------------------------------------
# Exponents, zero blocks, saturation, special values.

def test_bfp_exponents_exact_at_powers_of_two():
    below4 = np.nextafter(np.float32(4.0), np.float32(0.0))
    fmt = lps.BlockFloatingPoint(8)  # 1-D, axis 0: one block per element
    x = jnp.array([4.0, below4], jnp.float32)
    np.testing.assert_array_equal(np.asarray(G(x, fmt)), [2.0**-4, 2.0**-5])  # e = 2, e = 1
    # just below a power of two stays on its own block's largest value (never rounds up)
    np.testing.assert_array_equal(np.asarray(nearest(x, fmt)), [4.0, 127 * 2.0**-5])
    ks = np.arange(-20, 21)
    p2 = np.exp2(ks).astype(np.float32)
    below = np.nextafter(p2, np.float32(0.0))
    xs = np.concatenate([p2, below, -p2, -below])
    es = np.concatenate([ks, ks - 1, ks, ks - 1])
    np.testing.assert_array_equal(np.asarray(G(xs, fmt)), np.exp2(es + 2.0 - 8))
    # the same per row of a 2-D tensor (axis=0): the rows' maxima are 4.0 and just below it
    x2 = jnp.array([[4.0, 1.0, -0.3], [below4, 1.0, -0.3]], jnp.float32)
    np.testing.assert_array_equal(np.asarray(G(x2, fmt)).ravel(), [2.0**-4, 2.0**-5])
    # floats: the gap of x's own binade, also where it is a float32 subnormal
    np.testing.assert_array_equal(np.asarray(G(x, lps.FloatingPoint(8, 7))), [2.0**-5, 2.0**-6])
    tiny = jnp.array([2.0**-126, 2.0**-120], jnp.float32)
    np.testing.assert_array_equal(np.asarray(G(tiny, lps.FloatingPoint(8, 7))),
                                  [2.0**-133, 2.0**-127])


def test_zero_blocks_stay_zero():
    key = jax.random.key(6)
    x = jax.random.normal(key, (4, 8)).at[2].set(0.0)
    fmts = [lps.BlockFloatingPoint(8, axis=0), lps.BlockFloatingPoint(8, block_size=4)]

    @jax.jit
    def run(x, key):
        outs = [lps.quantize(x, f, key=key, rounding=r) for f in fmts for r in ROUNDINGS]
        zeros = [lps.quantize(jnp.zeros((4, 8)), lps.BlockFloatingPoint(8, axis=None), key=key,
                              rounding=r) for r in ROUNDINGS]
        # a block of float32 subnormals is flushed to zero (documented)
        subs = [lps.quantize(jnp.full((4, 8), 1e-40), lps.BlockFloatingPoint(8), key=key,
                             rounding=r) for r in ROUNDINGS]
        return outs, zeros + subs

    outs, zeros = run(x, key)
    for out in map(np.asarray, outs):
        np.testing.assert_array_equal(out[2], 0.0)
        assert np.all(np.any(out[[0, 1, 3]] != 0, axis=1))
    for z in zeros:
        np.testing.assert_array_equal(np.asarray(z), 0.0)


@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_saturation(rounding):
    inf = np.inf
    d = 2.0**-6  # BFP(8) gap of a block whose maximum is in [1, 2)
    f32max = np.finfo(np.float32).max
    cases = [  # (format, input, expected output)
        # fixed point: [min, max]
        (lps.FixedPoint(8, 3), [100.0, -100.0, 16.0, -16.2, inf, -inf],
         [15.875, -16.0, 15.875, -16.0, 15.875, -16.0]),
        (lps.FixedPoint(8, 8), [1.0, -1.0], [0.49609375, -0.5]),
        (lps.FixedPoint(8, 3, symmetric=True), [-100.0, -16.0], [-15.875, -15.875]),
        # block floating point: ±(2^(wl-1) - 1) Δ, never -2^(wl-1) Δ; rows with a maximum in
        # [1, 2) (e = 0): 127.75 Δ in either sign is in the top half step; ±127.5 Δ are ties
        (lps.BlockFloatingPoint(8), [[127.75 * d, 0.1], [-127.75 * d, 0.1], [-127.5 * d, 0.1],
                                     [127.5 * d, 0.1]],
         [[127 * d, 0.09375], [-127 * d, 0.09375], [-127 * d, 0.09375], [127 * d, 0.09375]]),
        (lps.BlockFloatingPoint(8), np.full((64, 64), -127.9 * d), np.full((64, 64), -127 * d)),
        # ±inf count as float32 max in the block maximum and saturate to the block's extremes
        (lps.BlockFloatingPoint(8), [[inf, 1.0, -inf]],
         [[127 * 2.0**121, 0.0, -127 * 2.0**121]]),
        # floats: ±max (inf too); exp = 8 keeps ±inf like float32
        (lps.FloatingPoint(4, 3), [1000.0, -1e30, inf, -inf], [480.0, -480.0, 480.0, -480.0]),
        (lps.FloatingPoint(3, 2), [29.0, -inf], [28.0, -28.0]),
        (lps.FloatingPoint(5, 10), [2e5, -inf], [131008.0, -131008.0]),
        (lps.FloatingPoint(8, 7), [inf, -inf], [inf, -inf]),
    ]
    if rounding == "nearest":  # float32 max rounds up to the next binade: inf for exp = 8
        cases.append((lps.FloatingPoint(8, 7), [f32max, -f32max], [inf, -inf]))
    xs = [jnp.asarray(x, jnp.float32) for _, x, _ in cases]
    fmts = [f for f, _, _ in cases]
    outs = jax.jit(lambda xs, key: [
        lps.quantize(x, f, key=jax.random.fold_in(key, i), rounding=rounding)
        for i, (f, x) in enumerate(zip(fmts, xs, strict=True))])(xs, jax.random.key(7))
    for (fmt, x, want), out in zip(cases, outs, strict=True):
        if rounding == "stochastic" and fmt == lps.BlockFloatingPoint(8) and np.size(x) == 8:
            want = np.asarray(want)  # the small second column may round either way
            out = np.asarray(out)
            np.testing.assert_array_equal(out[:, 0], want[:, 0], err_msg=repr(fmt))
            assert np.all((out[:, 1] == 0.09375) | (out[:, 1] == 0.109375))
            continue
        np.testing.assert_array_equal(np.asarray(out), np.asarray(want, np.float32),
                                      err_msg=repr(fmt))


# ----------------------------------------------------------------------------------------
# The top of a block with carry=True: stochastic rounding carries instead of saturating.
#
# BlockFloatingPoint(4, axis=0): a row of exponent 0 has Δ = 1/4 and top code 7Δ = 1.75, so
# its last gap (1.75, 2) holds values beyond the range. Saturating stochastic rounding
# (carry=False, tested above and against QPyTorch) holds a row maximum 1.75 + fΔ at 1.75, a
# bias of fΔ; carry=True rounds it up to 2 with probability f and re-rounds that row onto
# the grid 2Δ. Tolerance of the means: each element is rounded at most twice (onto Δ, then
# onto 2Δ), so Var[q] ≤ Δ²/4 + (2Δ)²/4 = 5Δ²/4 and |m̂ − x| ≤ Z·sqrt(5/4)·Δ/sqrt(n)
# (0.0099 at Δ = 1/4, n = 20000), far below the saturating bias fΔ ≥ 0.083 of the row
# maxima (f ≥ 1/3).

CARRY_N = 20000
_REST = [0.3, -0.55, 0.05, 1.0, 0.9, -0.1]
CARRY_ROWS = np.asarray([
    [1.75 + 0.25 / 3] + _REST,   # f = 1/3
    [-(1.75 + 0.5 * 0.25)] + _REST,  # f = 1/2, negative maximum
    [1.75 + 0.9 * 0.25] + _REST,  # f = 0.9
    [1.5 + 0.3 * 0.25] + _REST,  # maximum below the top code: no carry possible
    [x / 4 for x in [1.75 + 0.5 * 0.25] + _REST],  # exponent -2, f = 1/2
    [0.0] * 7,  # all zero
], np.float32)
CARRY_F = np.array([1 / 3, 0.5, 0.9, 0.0, 0.5, 0.0])  # round-up probability of each maximum
CARRY_GAP = np.array([0.25, 0.25, 0.25, 0.25, 0.0625, 0.0])


def test_carry_makes_stochastic_rounding_mean_exact_at_the_block_top():
    fmt = lps.BlockFloatingPoint(4, axis=0, carry=True)
    x = jnp.asarray(CARRY_ROWS)
    out = draws(x, fmt, CARRY_N, seed=40).astype(np.float64)
    # every draw is a value of the format (nearest rounding of each draw is the identity)
    renearest = jax.jit(jax.vmap(lambda o: lps.quantize(o, fmt, rounding="nearest")))
    np.testing.assert_array_equal(np.asarray(renearest(jnp.asarray(out, jnp.float32))), out)
    # mean exact everywhere, the row maxima included (saturation would miss them by fΔ)
    tol = Z * np.sqrt(5 / 4) * CARRY_GAP[:, None] / np.sqrt(CARRY_N) + 1e-12
    err = np.abs(out.mean(0) - CARRY_ROWS)
    assert np.all(err <= tol), (err, tol)
    # the maximum carries to ±2^(e+1) with probability f; its row is then on the grid 2Δ
    top = 8 * CARRY_GAP * np.sign(CARRY_ROWS[:, 0])
    carried = (out[:, :, 0] == top) & (top != 0)  # the zero row has no maximum
    assert np.all(np.abs(carried.mean(0) - CARRY_F) <= binom_tol(CARRY_F, CARRY_N))
    for i in range(3):
        rows = out[carried[:, i], i]
        assert np.all(np.mod(rows, 2 * CARRY_GAP[i]) == 0), i


def test_carry_changes_nothing_where_nothing_carries():
    """The carry kernel is the saturating kernel plus a second rounding that runs only
    where a block carried: with the same key, rows that cannot carry (no maximum in the
    last gap) are bit for bit the saturating result, in every draw; the rows that can
    differ from it in some draws."""
    keys = jax.random.split(jax.random.key(41), 200)
    x = jnp.asarray(CARRY_ROWS)
    both = jax.jit(jax.vmap(lambda k: [lps.quantize(x, lps.BlockFloatingPoint(4, carry=c),
                                                    key=k) for c in (False, True)]))
    sat, car = (np.asarray(a) for a in both(keys))
    np.testing.assert_array_equal(car[:, [3, 5]], sat[:, [3, 5]])
    assert np.all(np.any(car[:, [0, 1, 2, 4]] != sat[:, [0, 1, 2, 4]], axis=(0, 2)))
    assert np.all(sat[:, :3, 0] == np.sign(CARRY_ROWS[:3, 0]) * 1.75)  # saturated
    # nearest rounding is the same (saturating) kernel in both settings
    np.testing.assert_array_equal(
        nearest(x, lps.BlockFloatingPoint(4, carry=True)), nearest(x, lps.BlockFloatingPoint(4)))


def test_carry_under_jit_vmap_and_at_the_range_end():
    fmt = lps.BlockFloatingPoint(4, axis=0, carry=True)
    x = jnp.asarray(CARRY_ROWS)
    keys = jax.random.split(jax.random.key(42), 3)
    batched = jax.jit(jax.vmap(lambda k: lps.quantize(x, fmt, key=k)))(keys)
    assert np.any(np.asarray(batched)[:, 2, 0] == 2.0)  # a carry (probability 0.9 per draw)
    for i in range(3):
        eager = lps.quantize(x, fmt, key=keys[i])
        np.testing.assert_array_equal(batched[i], eager)
        np.testing.assert_array_equal(Q(x, fmt, key=keys[i]), eager)
    # vmap over rows: each row is its own tensor (1-D, axis=0: one block per element)
    rows = jax.jit(jax.vmap(lambda r: lps.quantize(r, fmt, key=keys[0])))(x)
    for i in range(3):
        np.testing.assert_array_equal(rows[i], Q(x[i], fmt, key=keys[0]))
    # a carry past exponent 127 would be 2^128 = inf: it saturates at the top code instead
    big = jnp.asarray([[np.finfo(np.float32).max, 1.0]], jnp.float32)
    outs = np.asarray(draws(big, fmt, 64, seed=43))
    assert np.all(outs[:, 0, 0] == 1.75 * 2.0**127)


NAN_FORMATS = PROPERTY_FORMATS + [lps.FloatingPoint(5, 10), lps.FixedPoint(8, 8)]


@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_nan_propagates(rounding):
    x = jnp.array([[np.nan, 1.3, -0.7, 0.0, 0.1, -3.0, 7.0, 0.01],
                   [0.25, np.nan, 2.5, -1.0, 0.2, 0.3, -0.4, 0.5]], jnp.float32)
    key = jax.random.key(8)
    run = jax.jit(lambda x: [(lps.quantize(x, f, key=key, rounding=rounding),
                              lps.quantize(jnp.nan_to_num(x), f, key=key, rounding=rounding))
                             for f in NAN_FORMATS])
    finite = ~np.isnan(np.asarray(x))
    for fmt, (out, ref) in zip(NAN_FORMATS, run(x), strict=True):
        out = np.asarray(out)
        np.testing.assert_array_equal(np.isnan(out), ~finite, err_msg=repr(fmt))
        # the NaN does not disturb its neighbours: they equal the rounding of the NaN-free
        # input (same key, same shape, so the same random bits)
        np.testing.assert_array_equal(out[finite], np.asarray(ref)[finite], err_msg=repr(fmt))


@pytest.mark.parametrize(
    "fmt", [lps.BlockFloatingPoint(8, axis=0), lps.BlockFloatingPoint(8, axis=None),
            lps.BlockFloatingPoint(8, axis=1), lps.BlockFloatingPoint(8, block_size=64)],
    ids=repr,
)
def test_bfp_block_max_on_large_arrays_with_nan_and_inf(fmt):
    """Block exponents on arrays large enough for XLA's fast reductions, with and without NaN
    (ignored) and ±inf (counts as float32 max): the exact NumPy block maximum decides."""
    rng = np.random.default_rng(16)
    x = (rng.standard_normal((512, 512)) * np.exp2(rng.integers(-8, 8, (512, 1)))).astype(
        np.float32)
    with_nan = x.copy()
    with_nan[rng.integers(0, 512, 40), rng.integers(0, 512, 40)] = np.nan
    with_nan[3, 7], with_nan[9, 100] = np.inf, -np.inf
    for arr in (x, with_nan):
        a = np.where(np.isnan(arr), 0.0, np.minimum(np.abs(arr), np.finfo(np.float32).max))
        if fmt.block_size is not None:
            m = a.reshape(512, -1, fmt.block_size).max(-1, keepdims=True)
            m = np.broadcast_to(m, (512, 512 // fmt.block_size, fmt.block_size)).reshape(a.shape)
        else:
            other = None if fmt.axis is None else (1 - fmt.axis,)
            m = np.broadcast_to(a.max(axis=other, keepdims=True), a.shape)
        e = np.frexp(m)[1] - 1  # exact floor(log2 m) (no zero blocks here)
        out = np.asarray(nearest(jnp.asarray(arr), fmt))
        np.testing.assert_array_equal(np.asarray(jnp.broadcast_to(G(arr, fmt), arr.shape)),
                                      np.exp2(e + 2.0 - 8))
        np.testing.assert_array_equal(out, nearest_even_ref(arr, fmt, e)[0])


# ----------------------------------------------------------------------------------------
# Keys and independence.

KEYS = {
    "threefry2x32": lambda: jax.random.key(0),
    "threefry4x32": lambda: jax.random.key(0, impl="threefry4x32"),
    "philox2x32": lambda: jax.random.key(0, impl="philox2x32"),
    "philox4x32": lambda: jax.random.key(0, impl="philox4x32"),
    "rbg": lambda: jax.random.key(0, impl="rbg"),
    "unsafe_rbg": lambda: jax.random.key(0, impl="unsafe_rbg"),
    "raw_PRNGKey": lambda: jax.random.PRNGKey(0),
}


@pytest.mark.parametrize("impl", sorted(KEYS))
def test_every_key_kind_works(impl):
    key = KEYS[impl]()
    # a constant at a quarter of the gap: P(up) = 1/4 for every element
    # (the formats other than FloatingPoint(8, m) share FixedPoint's random-number path)
    cases = [(lps.FixedPoint(8, 3), 1.0 + 2.0**-5, 2.0**-3),
             (lps.FloatingPoint(8, 7), 1.0 + 2.0**-9, 2.0**-7)]
    shape = (256, 256)
    outs = jax.jit(lambda k: [lps.quantize(jnp.full(shape, c, jnp.float32), f, key=k)
                              for f, c, _ in cases])(key)
    outs.append(lps.quantize(jnp.full(shape, cases[0][1], jnp.float32), cases[0][0], key=key))
    for (fmt, c, gap), out in zip(cases + cases[:1], outs, strict=True):
        out = np.asarray(out)
        lo = c - 0.25 * gap
        assert np.all((out == lo) | (out == lo + gap)), (impl, fmt)
        # binomial over n = 65536 elements: sd = sqrt(3/16/n) = 0.0017; 5 sd + 3/n
        assert abs((out == lo + gap).mean() - 0.25) <= binom_tol(0.25, out.size), (impl, fmt)


def test_independent_noise_per_element():
    """A constant array at the midpoint of a gap: every element is an independent fair coin,
    so rows differ from rows and columns from columns (no noise shared along an axis)."""
    cases = [(lps.FixedPoint(8, 3), 1.0 + 2.0**-4),
             (lps.BlockFloatingPoint(8, axis=0), 1.5 + 2.0**-7),
             (lps.BlockFloatingPoint(8, axis=1), 1.5 + 2.0**-7),
             (lps.BlockFloatingPoint(8, axis=None), 1.5 + 2.0**-7),
             (lps.BlockFloatingPoint(8, block_size=16), 1.5 + 2.0**-7),
             (lps.FloatingPoint(4, 3), 1.0 + 2.0**-4), (lps.FloatingPoint(8, 7), 1.0 + 2.0**-8)]
    outs = jax.jit(lambda k: [lps.quantize(jnp.full((64, 64), c, jnp.float32), f, key=k)
                              for f, c in cases])(jax.random.key(9))
    for (fmt, c), out in zip(cases, outs, strict=True):
        out = np.asarray(out)
        up = out > c
        assert np.all(out != c), fmt
        # P(up) = 1/2 over n = 4096 elements: sd = 0.0078
        assert abs(up.mean() - 0.5) <= binom_tol(0.5, up.size), fmt
        # neighbouring rows / columns disagree with probability 1/2: n = 64*63 pairs,
        # sd = 0.0079 (the XORs of independent fair coins along a line are pairwise
        # independent, so the variance of their mean is the binomial one)
        for a, b in [(up[1:], up[:-1]), (up[:, 1:], up[:, :-1])]:
            assert abs((a != b).mean() - 0.5) <= binom_tol(0.5, a.size), fmt


def test_vmap_over_keys_equals_separate_calls():
    x = jnp.asarray(make_inputs(lps.FixedPoint(8, 3))[0])
    keys = jax.random.split(jax.random.key(10), 4)
    fmts = [lps.FixedPoint(8, 3), lps.BlockFloatingPoint(8), lps.FloatingPoint(4, 3)]
    batched = jax.jit(jax.vmap(lambda k: [lps.quantize(x, f, key=k) for f in fmts]))(keys)
    for fmt, b in zip(fmts, batched, strict=True):
        for i in range(4):
            np.testing.assert_array_equal(b[i], Q(x, fmt, key=keys[i]))
        assert not np.array_equal(b[0], b[1])


JIT_FORMATS = [lps.FixedPoint(8, 3), lps.BlockFloatingPoint(8, axis=0),
               lps.BlockFloatingPoint(8, axis=None), lps.FloatingPoint(4, 3),
               lps.FloatingPoint(8, 7)]


def test_jit_equals_eager():
    x = jnp.asarray(make_inputs(lps.FloatingPoint(4, 3), seed=11)[0])
    key = jax.random.key(11)
    for fmt, rounding in [(lps.FixedPoint(8, 3), "stochastic"), (lps.FixedPoint(8, 3), "nearest"),
                          (lps.BlockFloatingPoint(8), "nearest")]:
        eager = lps.quantize(x, fmt, key=key, rounding=rounding)
        np.testing.assert_array_equal(Q(x, fmt, key=key, rounding=rounding), eager)


def test_vmap_over_x():
    # vmap over rows quantizes each row as its own tensor (a row is 1-D: for BFP with axis=0
    # each element is then its own block)
    x = jnp.asarray(make_inputs(lps.FloatingPoint(4, 3), seed=12, shape=(3, 8))[0])
    keys = jax.random.split(jax.random.key(12), 3)

    fmts = JIT_FORMATS[:4]

    def both(x, f):
        return (jax.vmap(lambda r: lps.quantize(r, f, rounding="nearest"))(x),
                jax.vmap(lambda r, k: lps.quantize(r, f, key=k))(x, keys))

    batched = jax.jit(lambda x: [both(x, f) for f in fmts])(x)
    for fmt, (a, b) in zip(fmts, batched, strict=True):
        for i in range(3):
            np.testing.assert_array_equal(a[i], nearest(x[i], fmt), err_msg=repr(fmt))
            np.testing.assert_array_equal(b[i], Q(x[i], fmt, key=keys[i]), err_msg=repr(fmt))


# ----------------------------------------------------------------------------------------
# Gradients and the quantizer op.


def test_grad_of_quantize_is_straight_through():
    x = jnp.linspace(-3.0, 3.0, 24).reshape(4, 6)
    fmts = [lps.FixedPoint(8, 3), lps.BlockFloatingPoint(8), lps.FloatingPoint(4, 3),
            lps.FloatingPoint(8, 7), lps.FULL]
    key = jax.random.key(0)
    grads = jax.jit(lambda x: [
        jax.grad(lambda x, f=f, r=r: jnp.sum(2.0 * lps.quantize(x, f, key=key, rounding=r)))(x)
        for f in fmts for r in ROUNDINGS])(x)
    for g in grads:
        np.testing.assert_array_equal(np.asarray(g), 2.0)
    # and eagerly
    g = jax.grad(lambda x: jnp.sum(lps.quantize(x, fmts[0], key=key)))(x)
    np.testing.assert_array_equal(np.asarray(g), 1.0)


@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_quantizer_forward_and_backward_grids(rounding):
    fwd, bwd = lps.FixedPoint(8, 3), lps.BlockFloatingPoint(8)
    q = lps.quantizer(fwd, bwd, rounding=rounding)
    key = jax.random.key(12)
    kx, kw = jax.random.split(key)
    x = jax.random.normal(kx, (6, 5))
    w = jax.random.normal(kw, (6, 5)) * 0.37

    @jax.jit
    def run(x, w, key):
        y, vjp = jax.vjp(lambda x: q(x, key), x)
        g = jax.grad(lambda x: jnp.sum(q(x, key) * w))(x)
        return y, g, vjp(w)[0], jax.vmap(q, in_axes=(0, None))(x, key)

    y, g, g_vjp, yv = run(x, w, key)
    np.testing.assert_array_equal(nearest(y, fwd), y)  # forward output on the forward grid
    assert float(jnp.max(jnp.abs(y - x))) <= 2.0**-3
    assert g.shape == x.shape and g.dtype == x.dtype
    np.testing.assert_array_equal(g, g_vjp)
    np.testing.assert_array_equal(nearest(g, bwd), g)  # cotangent on the backward format's grid
    assert not np.array_equal(np.asarray(g), np.asarray(w))  # ... not the raw cotangent
    assert np.all(np.abs(g - w) <= G(w, bwd))  # ... but one of its two neighbours
    assert yv.shape == x.shape
    if rounding == "nearest":
        np.testing.assert_array_equal(g, nearest(w, bwd))
        np.testing.assert_array_equal(jax.jit(q)(x), nearest(x, fwd))  # no key needed
    else:
        # the backward rounding is stochastic: another key gives another cotangent
        g2 = run(x, w, jax.random.key(13))[1]
        assert not np.array_equal(np.asarray(g), np.asarray(g2))
    # FULL in both directions needs no key and is the identity
    ident = lps.quantizer(lps.FULL, lps.FULL)
    np.testing.assert_array_equal(jax.grad(lambda x: jnp.sum(ident(x) * w))(x), w)


# ----------------------------------------------------------------------------------------
# dtypes, trees.

DTYPE_FORMATS = [lps.FixedPoint(8, 3), lps.BlockFloatingPoint(8), lps.FloatingPoint(4, 3),
                 lps.FloatingPoint(8, 7), lps.FULL]


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_dtype_and_shape_preserved(dtype):
    x = (jax.random.normal(jax.random.key(13), (3, 4, 5)) * 3).astype(dtype)
    key = jax.random.key(14)
    # stochastic rounding for two formats is enough: the kernel is the same for every dtype
    cases = [(f, "nearest") for f in DTYPE_FORMATS] + [
        (lps.FixedPoint(8, 3), "stochastic"), (lps.FloatingPoint(8, 7), "stochastic")]
    run = jax.jit(lambda x: [lps.quantize(x, f, key=key, rounding=r) for f, r in cases])
    outs, refs = run(x), run(x.astype(jnp.float32))
    for (fmt, rounding), out, ref in zip(cases, outs, refs, strict=True):
        assert out.dtype == dtype and out.shape == x.shape, (fmt, rounding)
        # these grids are exactly representable in all three dtypes at these magnitudes, so
        # the result equals the float32 computation on the same input
        np.testing.assert_array_equal(np.asarray(out, np.float32), np.asarray(ref),
                                      err_msg=f"{fmt} {rounding}")
        if dtype == jnp.bfloat16 and fmt == lps.FloatingPoint(8, 7):  # bfloat16's own grid
            np.testing.assert_array_equal(np.asarray(out, np.float32), np.asarray(x, np.float32))


def test_quantize_tree():
    x = jnp.full((1000,), 1.0 + 2.0**-4)  # midpoint of FixedPoint(8, 3)'s gap
    tree = {"a": x, "b": [x, x.astype(jnp.bfloat16)], "c": ()}
    fmt = lps.FixedPoint(8, 3)
    out = jax.jit(lambda t, k: lps.quantize_tree(t, fmt, key=k))(tree, jax.random.key(15))
    assert jax.tree_util.tree_structure(out) == jax.tree_util.tree_structure(tree)
    a, (b, c) = out["a"], out["b"]
    assert c.dtype == jnp.bfloat16
    # independent draws per leaf: identical leaves round differently (P(equal) = 2^-1000)
    assert not np.array_equal(a, b) and not np.array_equal(a, np.asarray(c, np.float32))
    for leaf in (a, b, c):
        np.testing.assert_array_equal(nearest(leaf, fmt), leaf)
    near = lps.quantize_tree(tree, fmt, rounding="nearest")
    np.testing.assert_array_equal(near["a"], nearest(x, fmt))
    np.testing.assert_array_equal(lps.quantize_tree(tree, lps.FULL)["a"], x)
    with pytest.raises(ValueError, match="key"):
        lps.quantize_tree(tree, fmt)


# ----------------------------------------------------------------------------------------
# Bad input.


@pytest.mark.parametrize(
    "make, param",
    [
        (lambda: lps.FixedPoint(1, 0), "wl"),
        (lambda: lps.FixedPoint(33, 3), "wl"),
        (lambda: lps.FixedPoint(8.0, 3), "wl"),
        (lambda: lps.FixedPoint(8, "3"), "fl"),
        (lambda: lps.BlockFloatingPoint(1), "wl"),
        (lambda: lps.BlockFloatingPoint(33), "wl"),
        (lambda: lps.BlockFloatingPoint(8, block_size=0), "block_size"),
        (lambda: lps.BlockFloatingPoint(8, block_size=-4), "block_size"),
        (lambda: lps.BlockFloatingPoint(8, axis="0"), "axis"),
        (lambda: lps.BlockFloatingPoint(8, axis=1.0), "axis"),
        (lambda: lps.BlockFloatingPoint(8, axis=(0, 1)), "axis"),
        (lambda: lps.BlockFloatingPoint(8, axis=1, block_size=4), "axis"),
        (lambda: lps.FloatingPoint(-1, 3), "exp"),
        (lambda: lps.FloatingPoint(0, 3), "exp"),
        (lambda: lps.FloatingPoint(9, 3), "exp"),
        (lambda: lps.FloatingPoint(4, -1), "man"),
        (lambda: lps.FloatingPoint(4, 24), "man"),
    ],
)
def test_bad_format_parameters(make, param):
    with pytest.raises(ValueError, match=param):
        make()


def test_bad_calls():
    x = jnp.ones((4, 6))
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="block_size"):
        lps.quantize(x, lps.BlockFloatingPoint(8, block_size=4), key=key)
    with pytest.raises(ValueError, match="block_size"):
        jax.jit(lambda x: lps.quantize(x, lps.BlockFloatingPoint(8, block_size=4),
                                       rounding="nearest"))(x)
    for axis in (2, -3):
        with pytest.raises(ValueError, match="axis"):
            lps.quantize(x, lps.BlockFloatingPoint(8, axis=axis), key=key)
    # negative in-range axes work
    np.testing.assert_array_equal(
        lps.quantize(x, lps.BlockFloatingPoint(8, axis=-1), rounding="nearest"), x)
    with pytest.raises(ValueError, match="key"):
        lps.quantize(x, lps.FixedPoint(8, 3))
    with pytest.raises(ValueError, match="key"):
        lps.quantizer(lps.FixedPoint(8, 3), lps.FULL)(x)
    for bad in (jnp.ones(3, jnp.int32), np.arange(3), jnp.ones(3, jnp.complex64), [1, 2]):
        with pytest.raises(TypeError, match="float"):
            lps.quantize(bad, lps.FixedPoint(8, 3), rounding="nearest")
    with pytest.raises(ValueError, match="stochastic.*nearest"):
        lps.quantize(x, lps.FixedPoint(8, 3), key=key, rounding="up")
    with pytest.raises(ValueError, match="stochastic.*nearest"):
        lps.quantizer(lps.FixedPoint(8, 3), lps.FULL, rounding="floor")
    for bad_fmt in ("fixed", 8, None, lps.FixedPoint):
        with pytest.raises(TypeError, match="FixedPoint"):
            lps.quantize(x, bad_fmt, key=key)
    with pytest.raises(TypeError):
        lps.quantizer(lps.FixedPoint(8, 3), "fp8")


def test_quantizer_backward_rounding_independent_of_forward():
    """Nearest activations with stochastic errors (QPyTorch sets the two separately)."""
    fwd, bwd = lps.FixedPoint(8, 6), lps.FixedPoint(8, 3)
    q = lps.quantizer(fwd, bwd, "nearest", backward_rounding="stochastic")
    x = jnp.linspace(-1.0, 1.0, 101)
    y = q(x, jax.random.key(0))
    np.testing.assert_array_equal(y, lps.quantize(x, fwd, rounding="nearest"))
    # cotangent 0.3 lies between 0.25 and 0.375 on the 1/8 grid: stochastic rounding gives both
    grads = jax.vmap(
        lambda k: jax.grad(lambda v: jnp.sum(q(v, k) * 0.3))(x)
    )(jax.random.split(jax.random.key(1), 64))
    assert set(np.unique(np.asarray(grads)).tolist()) == {0.25, 0.375}
    with pytest.raises(ValueError, match="PRNG key"):
        q(x)
    with pytest.raises(ValueError, match="rounding"):
        lps.quantizer(fwd, bwd, backward_rounding="up")


def test_bad_keys_and_empty_blocks_give_clear_errors_or_results():
    """Issue 10 item 10: quantize(key=0) / key="abc" raised deep JAX errors; a zero-length
    non-block axis with block floating point raised a reduction error."""
    x = jnp.ones((3, 4))
    for key in (0, "abc", 1.5):
        with pytest.raises(TypeError, match="key must be a JAX PRNG key"):
            lps.quantize(x, lps.FixedPoint(8, 4), key=key)
        with pytest.raises(TypeError, match="key must be a JAX PRNG key"):
            lps.vc_quantize(x, 0.1, lps.FixedPoint(8, 4), key=key)
    empty = jnp.ones((0, 4))
    fmt = lps.BlockFloatingPoint(8, axis=1)
    assert lps.quantize(empty, fmt, key=jax.random.key(0)).shape == (0, 4)
    assert lps.vc_quantize(empty, 0.1, fmt, key=jax.random.key(0)).shape == (0, 4)
    assert lps.unpack(lps.pack(empty, fmt)).shape == (0, 4)


def test_unpack_without_exponents_is_a_clear_error():
    p = lps.pack(jnp.ones((3, 4)), lps.BlockFloatingPoint(8))
    broken = lps.storage.Packed(p.codes, None, p.fmt, p.shape, p.dtype)
    with pytest.raises(ValueError, match="packed.exponents is None"):
        lps.unpack(broken)
