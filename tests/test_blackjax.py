"""The blackjax face: a drop-in for ``blackjax.sgld`` (same signatures, same trajectory with
FULL formats), every low-precision mode under ``jit`` + ``scan``, grid weights seen by the
gradient estimator, cyclical step sizes and flags, and a Gaussian sampled with VC."""

from __future__ import annotations

import inspect
import math

import blackjax
import helpers
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

import lpsampling as lps

FX = lps.FixedPoint(8, 4)
BFP = lps.BlockFloatingPoint(8, axis=0)

# A Gaussian posterior over a pytree with leaves of different shapes; the minibatch scales
# the pull towards the centre, so the data really flows through the estimator.
CENTRE = {"a": jnp.asarray([0.5, -1.0, 2.0]), "b": jnp.linspace(-1, 1, 8).reshape(2, 4),
          "c": jnp.asarray(0.25)}


def grad_estimator(position, minibatch):
    """∇ log p for log p = −Σ_j minibatch_j/2 · |θ − centre|²."""
    return jax.tree.map(lambda p, c: -jnp.sum(minibatch) * (p - c), position, CENTRE)


def _position0():
    return jax.tree.map(jnp.zeros_like, CENTRE)


def test_signatures_match_blackjax():
    ours = lps.blackjax.sgld(grad_estimator)
    theirs = blackjax.sgld(grad_estimator)
    for name in ("init", "step"):
        a = inspect.signature(getattr(ours, name)).parameters
        b = inspect.signature(getattr(theirs, name)).parameters
        assert list(a) == list(b), name
        assert [p.default for p in a.values()] == [p.default for p in b.values()], name
    assert list(inspect.signature(ours.step).parameters) == [
        "rng_key", "state", "minibatch", "step_size", "temperature"]
    position = _position0()
    assert ours.init(position) is position
    assert ours.init(position, jax.random.key(0)) is position


def test_full_formats_reproduce_blackjax_trajectory():
    """200 steps, the same keys, a temperature that changes along the way: the trajectories
    agree to float32 rounding (currently they are bit-identical)."""
    ours = lps.blackjax.sgld(grad_estimator)
    theirs = blackjax.sgld(grad_estimator)
    minibatch = jnp.asarray([0.5, 1.0, 1.5])
    keys = jax.random.split(jax.random.key(42), 200)
    temps = jnp.where(jnp.arange(200) < 100, 1.0, 0.3)

    def trajectory(alg):
        def body(state, xs):
            key, temp = xs
            state = alg.step(key, state, minibatch, 1e-2, temp)
            return state, state
        return jax.lax.scan(body, alg.init(_position0()), (keys, temps))[1]

    a = jax.jit(lambda: trajectory(ours))()
    b = jax.jit(lambda: trajectory(theirs))()
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert x.shape == y.shape and x.dtype == y.dtype
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-6, atol=2e-6)
    # The chain moved: the check is not vacuous.
    assert float(jnp.abs(a["a"][-1] - CENTRE["a"]).max()) < 1.0
    # Without jit too (blackjax users may step eagerly).
    s_ours = ours.step(keys[0], _position0(), minibatch, 1e-2)
    s_theirs = theirs.step(keys[0], _position0(), minibatch, 1e-2)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=2e-6, atol=2e-6),
                 s_ours, s_theirs)


def test_full_formats_draw_one_gaussian_vector_like_blackjax():
    ours = lps.blackjax.sgld(grad_estimator)
    jaxpr = jax.make_jaxpr(ours.step)(jax.random.key(0), _position0(), jnp.ones(2), 0.1)
    counts = helpers.count_primitives(jaxpr, ["random_bits"])
    assert counts["random_bits"] == 1


@pytest.mark.parametrize("fmt", [FX, BFP], ids=["fixed", "bfp"])
def test_low_precision_modes_under_jit_and_scan(fmt):
    """All three accumulators, 100 steps each in one jitted scan. The gradient estimator
    checks that the weights it is given are on the grid (for SGLDLP-F they are Q_W of the
    full-precision state, for low/vc the state itself) and reports through a debug callback;
    the low/vc state is on the grid after every step."""
    reports = []

    def record(mode, on_grid):
        reports.append((int(mode), bool(on_grid)))

    def checking_estimator(mode):
        def estimator(position, minibatch):
            on_grid = jnp.all(jnp.stack([
                jnp.all(lps.quantize(x, fmt, rounding="nearest") == x)
                for x in jax.tree.leaves(position)]))
            jax.debug.callback(record, mode, on_grid)
            return grad_estimator(position, minibatch)
        return estimator

    accumulators = ("full", "low", "vc")
    algs = [lps.blackjax.sgld(checking_estimator(i), weight_format=fmt, grad_format=fmt,
                              accumulator=acc) for i, acc in enumerate(accumulators)]
    minibatch = jnp.asarray([1.0, 1.0])

    @jax.jit
    def run(position):
        def body(states, key):
            keys = jax.random.split(key, len(algs))
            states = [alg.step(k, s, minibatch, 5e-3) for alg, k, s in
                      zip(algs, keys, states, strict=True)]
            on_grid = jnp.stack([jnp.all(jnp.stack([
                jnp.all(lps.quantize(x, fmt, rounding="nearest") == x)
                for x in jax.tree.leaves(s)])) for s in states])
            return states, on_grid
        init = [alg.init(position) for alg in algs]
        return jax.lax.scan(body, init, jax.random.split(jax.random.key(0), 100))

    start = lps.init_weights(jax.tree.map(lambda c: c + 0.3, CENTRE), fmt,
                             key=jax.random.key(1))
    states, state_on_grid = run(start)
    jax.effects_barrier()
    state_on_grid = np.asarray(state_on_grid)
    assert state_on_grid[:, 1].all() and state_on_grid[:, 2].all()  # low, vc
    # The SGLDLP-F state is the full-precision accumulator: off the grid (the check bites).
    assert not state_on_grid[:, 0].all()
    assert len(reports) == 3 * 100
    assert all(ok for _, ok in reports), [r for r in reports if not r[1]][:5]
    # The weights to predict with, for the SGLDLP-F state.
    w = lps.blackjax.weights(states[0], rng_key=jax.random.key(2), weight_format=fmt)
    for x in jax.tree.leaves(w):
        np.testing.assert_array_equal(lps.quantize(x, fmt, rounding="nearest"), x)


def test_cyclical_step_sizes_and_sampling_flags():
    total, cycles, beta, alpha0 = 30, 3, 0.3, 1e-2
    length = 10
    alg = lps.blackjax.cyclical_sgld(grad_estimator, init_step_size=alpha0, num_cycles=cycles,
                                     total_steps=total, exploration_ratio=beta)
    minibatch = jnp.ones(2)

    @jax.jit
    def run():
        def body(state, key):
            state = alg.step(key, state, minibatch)
            return state, (state.step_size, state.sampling, state.position)
        return jax.lax.scan(body, alg.init(_position0()), jax.random.split(jax.random.key(0),
                                                                           total))

    state, (step_sizes, sampling, positions) = run()
    k = np.arange(total)
    ref = alpha0 / 2 * (np.cos(np.pi * (k % length) / length) + 1)
    np.testing.assert_allclose(np.asarray(step_sizes), ref, rtol=0, atol=1e-6 * alpha0)
    np.testing.assert_array_equal(np.asarray(sampling), (k % length) / length >= beta)
    assert int(state.count) == total
    # Exploration steps are noise-free: the first step from θ₀ = 0 is exactly α₀·∇log p.
    first = jax.tree.map(lambda x: x[0], positions)
    expected = jax.tree.map(lambda g: alpha0 * g, grad_estimator(_position0(), minibatch))
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6), first, expected)


def test_vc_gaussian_variance_through_blackjax_face():
    """N(0, 1) (∇log p = −θ), α = 1e-3, FixedPoint(8, 3) (Δ = 1/8, so plain SR would inflate
    the variance to ~2.2), VC. 1024 chains as the elements of one leaf (elementwise format,
    independent draws per element), θ₀ = 0, 5000 burn-in steps (variance deficit e^{-10}),
    15000 kept. se(v̂)/v = sqrt(2τ₂/(C·S)) with τ₂ ≈ 1/α: 0.011. Coarse check: 10%
    (9 se); the mean within 0.05 (se = sqrt(τ₁/(CS)) = 0.011, τ₁ = 2/α)."""
    fmt = lps.FixedPoint(8, 3)
    alg = lps.blackjax.sgld(lambda p, _: -p, weight_format=fmt, grad_format=fmt,
                            accumulator="vc")
    n_chains, burn, keep, alpha = 1024, 5_000, 15_000, 1e-3

    @jax.jit
    def run(key):
        def body(carry, key):
            p, s1, s2, w = carry
            p = alg.step(key, p, None, alpha)
            return (p, s1 + w * p, s2 + w * p * p, w), None

        zeros = jnp.zeros((n_chains,))
        carry = (zeros, zeros, zeros, 0.0)
        k1, k2 = jax.random.split(key)
        carry, _ = jax.lax.scan(body, carry, jax.random.split(k1, burn))
        carry, _ = jax.lax.scan(body, carry[:3] + (1.0,), jax.random.split(k2, keep))
        return carry[1] / keep, carry[2] / keep

    m1, m2 = run(jax.random.key(0, impl="philox4x32"))
    mean = float(jnp.mean(m1))
    var = float(jnp.mean(m2)) - mean**2
    se = math.sqrt(2 / (alpha * n_chains * keep))
    assert abs(var - 1.0) < max(0.10, 5 * se), var
    assert abs(mean) < 0.05, mean


@pytest.mark.parametrize("make,match,error", [
    (lambda: lps.blackjax.sgld(grad_estimator, accumulator="medium"), "accumulator",
     ValueError),
    (lambda: lps.blackjax.sgld(grad_estimator, accumulator="vc"), "weight_format", ValueError),
    (lambda: lps.blackjax.sgld(grad_estimator, weight_format="int8"), "weight_format",
     TypeError),
    (lambda: lps.blackjax.cyclical_sgld(grad_estimator, init_step_size=0.0, num_cycles=2,
                                        total_steps=10), "init_step_size", ValueError),
    (lambda: lps.blackjax.cyclical_sgld(grad_estimator, init_step_size=0.1, num_cycles=2,
                                        total_steps=10, exploration_ratio=1.0),
     "exploration_ratio", ValueError),
    (lambda: lps.blackjax.cyclical_sgld(grad_estimator, init_step_size=0.1, num_cycles=20,
                                        total_steps=10), "total_steps", ValueError),
])
def test_bad_arguments(make, match, error):
    with pytest.raises(error, match=match):
        make()


def test_mismatched_estimator_output():
    alg = lps.blackjax.sgld(lambda p, _: {"a": p["a"]})
    with pytest.raises(ValueError, match="grads.*structure"):
        alg.step(jax.random.key(0), _position0(), None, 1e-3)


# --- SGHMC: a drop-in for blackjax.sghmc -------------------------------------------------


def test_sghmc_signatures_match_blackjax():
    ours = lps.blackjax.sghmc(grad_estimator)
    theirs = blackjax.sghmc(grad_estimator)
    for name in ("init", "step"):
        a = inspect.signature(getattr(ours, name)).parameters
        b = inspect.signature(getattr(theirs, name)).parameters
        assert list(a) == list(b), name
        assert [p.default for p in a.values()] == [p.default for p in b.values()], name
    top_ours = inspect.signature(lps.blackjax.sghmc).parameters
    top_theirs = inspect.signature(blackjax.sgmcmc.sghmc.as_top_level_api).parameters
    assert list(top_theirs) == list(top_ours)[:len(top_theirs)]
    for name in top_theirs:
        assert top_ours[name].default == top_theirs[name].default, name
    kernel_ours = inspect.signature(lps.blackjax.sghmc.build_kernel()).parameters
    kernel_theirs = inspect.signature(blackjax.sghmc.build_kernel()).parameters
    assert list(kernel_ours) == list(kernel_theirs)


@pytest.mark.parametrize("jit", [True, False], ids=["jit", "eager"])
def test_sghmc_full_formats_reproduce_blackjax_trajectory(jit):
    """40 steps of 5 integration steps, the same keys, α = 0.1, β = 0.05, a temperature that
    changes along the way: the trajectories agree to float32 rounding (XLA may fuse the
    multiply-adds differently in the two programs: observed differences are ≤ 1 ulp)."""
    ours = lps.blackjax.sghmc(grad_estimator, 5, alpha=0.1, beta=0.05)
    theirs = blackjax.sghmc(grad_estimator, 5, alpha=0.1, beta=0.05)
    minibatch = jnp.asarray([0.5, 1.0, 1.5])
    keys = jax.random.split(jax.random.key(42), 40)
    temps = jnp.where(jnp.arange(40) < 20, 1.0, 0.3)

    def trajectory(alg):
        def body(state, xs):
            key, temp = xs
            state = alg.step(key, state, minibatch, 1e-2, temp)
            return state, state
        return jax.lax.scan(body, alg.init(_position0()), (keys, temps))[1]

    if jit:
        a, b = jax.jit(lambda: trajectory(ours))(), jax.jit(lambda: trajectory(theirs))()
    else:
        a = ours.step(keys[0], _position0(), minibatch, 1e-2, 0.5)
        b = theirs.step(keys[0], _position0(), minibatch, 1e-2, 0.5)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert x.shape == y.shape and x.dtype == y.dtype
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-6, atol=2e-6)
    assert float(jnp.abs(jax.tree.leaves(a)[0] - jax.tree.leaves(_position0())[0]).max()) > 0


@pytest.mark.parametrize("position", [1.0, np.asarray([1.0, -2.0]),
                                      {"a": 0.5, "b": np.float32(2.0)}],
                         ids=["python-float", "numpy", "mixed-tree"])
def test_sghmc_accepts_array_like_positions_like_blackjax(position):
    def est(p, _):
        return jax.tree.map(jnp.negative, p)

    ours, theirs = lps.blackjax.sghmc(est, 3), blackjax.sghmc(est, 3)
    a = ours.step(jax.random.key(0), ours.init(position), None, 0.05)
    b = theirs.step(jax.random.key(0), theirs.init(position), None, 0.05)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert jnp.asarray(x).dtype == jnp.asarray(y).dtype
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("accumulator", ["full", "low", "vc"])
def test_sghmc_low_precision_modes(accumulator):
    """Under jit: low/vc positions stay on the grid; full moves off it (the accumulator)
    while the estimator always sees grid weights; a NaN gradient leaves the position as
    it was."""
    seen = []

    def est(p, _):
        jax.debug.callback(lambda ok: seen.append(bool(ok)),
                           jnp.all(jnp.stack([helpers._on_grid(x, FX).all()
                                              for x in jax.tree.leaves(p)])))
        return grad_estimator(p, jnp.ones(2))

    alg = lps.blackjax.sghmc(est, 4, alpha=0.5, weight_format=FX, grad_format=FX,
                             accumulator=accumulator)
    state = alg.init(lps.init_weights(_position0(), FX, key=jax.random.key(1)))
    step = jax.jit(alg.step)
    for k in jax.random.split(jax.random.key(2), 5):
        state = step(k, state, None, 0.05)
    jax.effects_barrier()
    assert seen and all(seen)
    if accumulator != "full":
        assert all(helpers.on_grid(x, FX) for x in jax.tree.leaves(state))
    nan_alg = lps.blackjax.sghmc(
        lambda p, _: jax.tree.map(lambda x: x * jnp.nan, p), 2,
        weight_format=FX, grad_format=FX, accumulator=accumulator)
    after = nan_alg.step(jax.random.key(3), state, None, 0.05)
    jax.tree.map(np.testing.assert_array_equal, after, state)


def test_sghmc_bad_arguments():
    with pytest.raises(ValueError, match="num_integration_steps"):
        lps.blackjax.sghmc(grad_estimator, 0)
    with pytest.raises(ValueError, match="alpha"):
        lps.blackjax.sghmc(grad_estimator, 2, alpha=float("nan"))
    with pytest.raises(ValueError, match="step_size"):
        lps.blackjax.sghmc(grad_estimator, 2).step(jax.random.key(0), _position0(), None,
                                                   -0.1)
    with pytest.raises(ValueError, match="weight_format"):
        lps.blackjax.sghmc(grad_estimator, accumulator="vc")
