"""Cyclical SGLD: the schedule, the sampling stage, and that cycling actually finds modes.

References are the formulas of DESIGN.md evaluated in float64 NumPy:
``η_k = η₀/2·(cos(π·(k mod L)/L) + 1)`` and sampling iff ``(k mod L)/L ≥ β``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lpsampling as lps
from lpsampling.schedules import (
    cycle_length,
    cyclical_schedule,
    is_sampling_step,
    paper_decay_schedule,
)

# ------------------------------------------------------------------------------------------
# The schedule.


@pytest.mark.parametrize("length", [1, 2, 3, 10, 391, 1000])
def test_cyclical_schedule_matches_formula_everywhere(length):
    init = 0.1
    k = np.arange(4 * length + 1)
    ref = init / 2 * (np.cos(np.pi * (k % length) / length) + 1)
    sched = cyclical_schedule(init, length)
    for fn in (sched, jax.jit(sched)):
        got = np.asarray(fn(jnp.asarray(k)), np.float64)
        # float32: the phase and the cosine each carry a few ulp; 1e-6·η₀ is ~8 ulp of η₀.
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6 * init)
        # Cycle boundaries k = mL restart at exactly η₀.
        np.testing.assert_array_equal(got[::length], np.float32(init))
    # Scalar counts, as optax passes them, including the boundaries.
    for kk in (0, length - 1, length, length + 1, 3 * length):
        ref_k = init / 2 * (np.cos(np.pi * (kk % length) / length) + 1)
        assert float(jax.jit(sched)(jnp.int32(kk))) == pytest.approx(ref_k, abs=1e-6 * init)


def _size_of(fn, *args):
    jaxpr = jax.make_jaxpr(fn)(*args)
    hlo = jax.jit(fn).lower(*args).as_text()
    return len(jaxpr.jaxpr.eqns), len(hlo.splitlines())


def test_schedule_program_size_does_not_grow_with_cycles():
    """One closed form: the same jaxpr and HLO size for 1, 10 and 10 000 cycles."""
    total = 100_000
    sizes = {m: _size_of(cyclical_schedule(0.1, cycle_length(total, m)), jnp.int32(5))
             for m in (1, 10, 10_000)}
    assert len(set(sizes.values())) == 1, sizes
    # And the whole optax transformation's update.
    params = jnp.zeros((3,))

    def update_size(m):
        opt = lps.cyclical_sgld(0.1, num_data=10, num_cycles=m, total_steps=total,
                                exploration_ratio=0.3, key=jax.random.key(0))
        return _size_of(opt.update, params, opt.init(params), params)

    assert update_size(1) == update_size(10_000)


BETAS = [0.0, 0.1, 0.2, 0.25, 0.3, 1 / 3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.99]


@pytest.mark.parametrize("length", [1, 3, 7, 10, 100, 1000])
def test_is_sampling_step_matches_formula_at_boundaries(length):
    """Exactly (k mod L)/L ≥ β, eager and under jit (XLA computes k/L as k·(1/L), which
    rounds e.g. 10/100 below 0.1: the predicate must not depend on that)."""
    k = np.arange(3 * length + 1)
    for beta in BETAS:
        ref = (k % length) / length >= beta
        eager = np.asarray(is_sampling_step(jnp.asarray(k), length, beta))
        jitted = np.asarray(jax.jit(lambda c, b=beta: is_sampling_step(c, length, b))(k))
        np.testing.assert_array_equal(eager, ref, err_msg=f"beta={beta}")
        np.testing.assert_array_equal(jitted, ref, err_msg=f"beta={beta}")


def test_cycle_length_and_checks():
    assert cycle_length(10, 3) == 4
    assert cycle_length(9, 3) == 3
    assert cycle_length(5, 5) == 1
    with pytest.raises(ValueError, match="total_steps.*num_cycles"):
        cycle_length(3, 4)
    with pytest.raises(ValueError, match="num_cycles"):
        cycle_length(10, 0)
    with pytest.raises(ValueError, match="total_steps"):
        cycle_length(10.0, 2)
    with pytest.raises(ValueError, match="cycle_length"):
        cyclical_schedule(0.1, 0)


def test_paper_decay_schedule():
    sched = paper_decay_schedule(0.5, 1000, final_fraction=0.01)
    k = jnp.asarray([0, 499, 500, 700, 900, 950, 1000])
    ref = [0.5, 0.5, 0.5, 0.5 * (1 - 0.5 * 0.99), 0.005, 0.005, 0.005]
    np.testing.assert_allclose(np.asarray(sched(k)), ref, rtol=1e-6)
    with pytest.raises(ValueError, match="decay_start"):
        paper_decay_schedule(0.5, 1000, decay_start=0.9, decay_end=0.5)


# ------------------------------------------------------------------------------------------
# The optax face: step sizes, sampling flags, no noise in exploration.


@pytest.mark.parametrize("weight_format", [lps.FULL, lps.FixedPoint(8, 3)])
def test_cyclical_sgld_flags_step_sizes_and_noise_free_exploration(weight_format):
    """state.sampling after update k is (k mod L)/L ≥ β, state.step_size is η_k, and
    exploration updates are deterministic given the gradients: the full-precision chain
    (params for FULL weights, the accumulator for SGLDLP-F) moves to exactly θ − η_k·g
    there, and by θ − η_k·g plus noise in sampling steps."""
    total, cycles, beta, lr0 = 40, 4, 0.45, 0.05
    length = cycle_length(total, cycles)
    params = jnp.linspace(-1.0, 1.0, 16)

    def run(seed):
        opt = lps.cyclical_sgld(lr0, num_data=100, num_cycles=cycles, total_steps=total,
                                exploration_ratio=beta, weight_format=weight_format,
                                key=jax.random.key(seed))

        def body(carry, _):
            p, st = carry
            chain = p if st.accumulator is None else st.accumulator
            g = 0.5 * p + 0.1  # a gradient of the (grid) weights the model runs on
            u, st = opt.update(g, st, p)
            p = optax.apply_updates(p, u)
            new_chain = p if st.accumulator is None else st.accumulator
            return (p, st), (chain, new_chain, g, st.sampling, st.step_size)

        p0 = lps.init_weights(params, weight_format, key=jax.random.key(99))
        _, out = jax.lax.scan(body, (p0, opt.init(params)), None, length=total)
        return out

    run = jax.jit(run)
    chain_a, new_a, g_a, sampling, lr = run(0)
    _, new_b, _, sampling_b, _ = run(1)
    k = np.arange(total)
    np.testing.assert_array_equal(np.asarray(sampling), (k % length) / length >= beta)
    np.testing.assert_array_equal(np.asarray(sampling_b), np.asarray(sampling))
    ref_lr = lr0 / 2 * (np.cos(np.pi * (k % length) / length) + 1)
    np.testing.assert_allclose(np.asarray(lr), ref_lr, rtol=0, atol=1e-6 * lr0)
    explore = ~np.asarray(sampling)
    assert explore.sum() == cycles * 5 and (~explore).sum() == cycles * 5
    # θ' − (θ − η_k·g): zero to float32 rounding (a few ulp of |θ| ≤ 2) in exploration
    # steps, Gaussian noise of sd sqrt(2η_k/N) ≥ 5e-3 in sampling steps.
    expected = np.asarray(chain_a) - np.asarray(lr)[:, None] * np.asarray(g_a)
    dev = np.abs(np.asarray(new_a) - expected).max(axis=1)
    assert np.all(dev[explore] <= 1e-6), dev
    assert np.all(dev[~explore] > 1e-4), dev
    # The first step starts from the same state with both keys: identical, as it explores.
    np.testing.assert_array_equal(np.asarray(new_a)[0], np.asarray(new_b)[0])


# ------------------------------------------------------------------------------------------
# Cycling earns its name: more modes than plain SGLD for the same gradient evaluations.

N_MODES, RADIUS, SD = 8, 4.0, 0.25
_ANGLES = 2 * np.pi * np.arange(N_MODES) / N_MODES
CENTRES = np.stack([RADIUS * np.cos(_ANGLES), RADIUS * np.sin(_ANGLES)], axis=1)


def _energy(x):
    """−log of an equal mixture of 8 N(c_i, 0.25²·I) on a circle of radius 4: neighbours
    are 3.06 apart (12 sd); the barrier between them is ~19 nats."""
    d2 = jnp.sum((x - jnp.asarray(CENTRES, jnp.float32)) ** 2, axis=-1)
    return -jax.scipy.special.logsumexp(-d2 / (2 * SD**2))


def _modes_visited(make_opt, num_steps, seeds):
    """Per chain: the number of modes within 3 sd of which it spent ≥ 10 sampling steps.
    All chains start at the same point (the first mode's centre)."""
    grad = jax.grad(_energy)
    centres = jnp.asarray(CENTRES, jnp.float32)

    def chain(key):
        opt = make_opt(key)
        x = centres[0]

        def body(carry, _):
            x, st = carry
            u, st = opt.update(grad(x), st, x)
            x = optax.apply_updates(x, u)
            near = jnp.linalg.norm(x - centres, axis=-1) < 3 * SD
            return (x, st), near & lps.is_sampling(st)

        _, near = jax.lax.scan(body, (x, opt.init(x)), None, length=num_steps)
        return jnp.sum(jnp.sum(near, axis=0) >= 10)

    keys = jax.random.split(jax.random.key(seeds), 8)
    return np.asarray(jax.jit(jax.vmap(chain))(keys))


def test_cyclical_sgld_finds_more_modes_than_sgld():
    """η₀ = 0.11 (below the stability limit 2·sd² = 0.125): near each cycle's start the
    chain spreads over several modes, then settles into one as η shrinks. Plain SGLD with
    the schedule's mean step η₀/2 and the same 4000 gradient evaluations stays in its
    starting mode (escaping needs a ~4.5 sd jump). 8 seeds; a run found 5–8 modes per
    cyclical chain and 1 per SGLD chain."""
    steps, lr0 = 4000, 0.11
    cyclical = _modes_visited(
        lambda k: lps.cyclical_sgld(lr0, num_data=1, num_cycles=8, total_steps=steps,
                                    key=k), steps, seeds=0)
    plain = _modes_visited(lambda k: lps.sgld(lr0 / 2, num_data=1, key=k), steps, seeds=0)
    assert np.all(plain >= 1) and np.all(cyclical >= 1)
    assert np.all(cyclical >= plain), (cyclical, plain)
    assert cyclical.sum() >= 3 * plain.sum(), (cyclical, plain)
