"""The optax face composes with the optax ecosystem and keeps its promises: weights on the grid,
``apply_updates`` exact, dtypes and shardings preserved, no retracing, non-finite gradients
skipped, both key kinds, and clear errors for bad input."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import chex
import helpers
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lpsampling as lps

FX = lps.FixedPoint(8, 4)
BFP = lps.BlockFloatingPoint(8, axis=0)
FP = lps.FloatingPoint(4, 3)

# (weight_format, grad_format, accumulator) for every precision mode.
MODES = {
    "FP": (lps.FULL, lps.FULL, "full"),
    "LP-F": (FX, FX, "full"),
    "LP-L": (FX, FX, "low"),
    "VC": (FX, FX, "vc"),
    "VC-BFP": (BFP, BFP, "vc"),
}


def _params(dtype=jnp.float32):
    return {"w": jnp.linspace(-1.0, 1.0, 32, dtype=dtype).reshape(8, 4),
            "b": jnp.asarray([0.5, -0.25, 0.125, 0.0], dtype)}


def _grads_like(params, scale=1.0):
    return jax.tree.map(lambda p: (scale * (p + 0.3)).astype(p.dtype), params)


def _make(name, *, sgd=False, **kw):
    weight_format, grad_format, accumulator = MODES[name]
    kw.setdefault("key", jax.random.key(0))
    common = dict(weight_format=weight_format, grad_format=grad_format,
                  accumulator=accumulator, **kw)
    if sgd:
        return lps.sgd(0.05, **common)
    return lps.sgld(0.05, num_data=100, **common)


# ------------------------------------------------------------------------------------------
# Composition: chain, clip, apply_if_finite, inject_hyperparams, MultiSteps.


def test_chain_with_clipping_inside_apply_if_finite():
    """apply_if_finite(chain(clip_by_global_norm, sampler)) equals the sampler fed clipped
    gradients (same key: bit-identical), keeps VC weights on the block-floating-point grid,
    and a non-finite gradient is caught by apply_if_finite before it reaches the sampler."""
    name = "VC-BFP"
    weight_format = MODES[name][0]
    opt = optax.apply_if_finite(
        optax.chain(optax.clip_by_global_norm(1.0), _make(name)), max_consecutive_errors=5)
    ref = _make(name)
    clip = optax.clip_by_global_norm(1.0)
    params = lps.init_weights(_params(), weight_format, key=jax.random.key(1))
    grads = _grads_like(params, scale=10.0)
    assert optax.tree.norm(grads) > 1

    @jax.jit
    def both(grads, state, ref_state, params):
        updates, state = opt.update(grads, state, params)
        clipped, _ = clip.update(grads, clip.init(params))
        ref_updates, ref_state = ref.update(clipped, ref_state, params)
        return updates, state, ref_updates, ref_state

    updates, state, ref_updates, ref_state = both(grads, opt.init(params), ref.init(params),
                                                  params)
    jax.tree.map(np.testing.assert_array_equal, updates, ref_updates)
    params = optax.apply_updates(params, updates)
    for p in jax.tree.leaves(params):
        np.testing.assert_array_equal(lps.quantize(p, weight_format, rounding="nearest"), p)
    assert int(lps.optax._find(state, "count")) == 1
    assert bool(lps.is_sampling(state))
    # A non-finite gradient: apply_if_finite skips it before it reaches the sampler.
    bad = jax.tree.map(lambda g: g.at[0].set(jnp.nan), grads)
    updates, new_state, _, _ = both(bad, state, ref_state, params)
    assert all(np.all(np.asarray(u) == 0) for u in jax.tree.leaves(updates))
    assert int(new_state.notfinite_count) == 1
    assert int(lps.optax._find(new_state, "count")) == 1
    np.testing.assert_array_equal(jax.random.key_data(lps.optax._find(new_state, "key")),
                                  jax.random.key_data(lps.optax._find(state, "key")))
    assert float(lps.current_learning_rate(new_state)) == pytest.approx(0.05)


def test_inject_hyperparams_learning_rate_change_takes_effect():
    opt = optax.inject_hyperparams(lps.sgd)(learning_rate=0.1, key=jax.random.key(0))
    params = _params()
    grads = _grads_like(params)
    state = opt.init(params)
    step = jax.jit(opt.update)
    updates, state = step(grads, state, params)
    jax.tree.map(lambda u, g: np.testing.assert_allclose(
        u, -0.1 * g, rtol=1e-6, atol=1e-7), updates, grads)
    assert float(lps.current_learning_rate(state)) == pytest.approx(0.1)
    # optax's way to read an injected hyperparameter finds exactly one ``learning_rate``
    # (the sampler's own record of the step is ``step_size``; optax's own tests check this).
    assert float(optax.tree.get(state, "learning_rate")) == pytest.approx(0.1)
    state = optax.tree.set(state, learning_rate=jnp.asarray(0.02))
    assert float(optax.tree.get(state, "learning_rate")) == pytest.approx(0.02)
    updates, state = step(grads, state, params)
    jax.tree.map(lambda u, g: np.testing.assert_allclose(
        u, -0.02 * g, rtol=1e-6, atol=1e-7), updates, grads)
    assert float(lps.current_learning_rate(state)) == pytest.approx(0.02)


def test_zero_learning_rate_is_a_no_op_and_warmup_from_zero_works():
    """As optax: η = 0 is allowed (a warmup schedule starts there, and inject_hyperparams
    evaluates it eagerly at init, count 0) and leaves grid weights exactly where they are."""
    params = lps.init_weights(_params(), BFP, key=jax.random.key(1))
    grads = _grads_like(params)
    for make in (lambda **kw: lps.sgld(num_data=10, **kw), lps.sgd,
                 lambda **kw: lps.sgd(momentum=0.9, **kw)):
        for acc in ("full", "low", "vc"):
            opt = make(learning_rate=0.0, weight_format=BFP, grad_format=BFP,
                       accumulator=acc, key=jax.random.key(0))
            updates, state = opt.update(grads, opt.init(params), params)
            assert all(np.all(np.asarray(u) == 0) for u in jax.tree.leaves(updates))
            assert int(state.nonfinite_count) == 0
    warmup = optax.inject_hyperparams(lps.sgd)(
        learning_rate=optax.linear_schedule(0.0, 0.1, 10), key=jax.random.key(0))
    state = warmup.init(params)  # eager: the schedule's value at count 0 is a concrete 0.0
    assert float(state.hyperparams["learning_rate"]) == 0.0


def test_inject_hyperparams_with_low_precision_sgld():
    """Every hyperparameter traced (the key too): the weights stay on the grid."""
    opt = optax.inject_hyperparams(lps.sgld)(
        learning_rate=0.05, num_data=100, weight_format=BFP, grad_format=BFP,
        accumulator="vc", key=jax.random.key(0))
    params = lps.init_weights(_params(), BFP, key=jax.random.key(1))
    state = opt.init(params)
    updates, state = jax.jit(opt.update)(_grads_like(params), state, params)
    params = optax.apply_updates(params, updates)
    for p in jax.tree.leaves(params):
        np.testing.assert_array_equal(lps.quantize(p, BFP, rounding="nearest"), p)
    assert bool(lps.is_sampling(state))
    assert float(lps.current_learning_rate(state)) == pytest.approx(0.05)


def test_multisteps_averages_and_emits_every_k():
    """Two mini-steps: the first gives zero updates; the second equals one sampler step on
    the mean gradient with the same key (grads 1 and 3: the mean 2 is exact)."""
    key = jax.random.key(5)
    params = _params()
    g1 = jax.tree.map(jnp.ones_like, params)
    g3 = jax.tree.map(lambda p: 3 * jnp.ones_like(p), params)
    g2 = jax.tree.map(lambda p: 2 * jnp.ones_like(p), params)
    for name in ("VC",):
        multi = optax.MultiSteps(_make(name, key=key), every_k_schedule=2)
        single = _make(name, key=key)
        state = multi.init(params)
        step = jax.jit(multi.update)
        updates, state = step(g1, state, params)
        assert all(np.all(np.asarray(u) == 0) for u in jax.tree.leaves(updates))
        assert not bool(lps.is_sampling(state))
        updates, state = step(g3, state, params)
        expected, _ = jax.jit(single.update)(g2, single.init(params), params)
        jax.tree.map(np.testing.assert_array_equal, updates, expected)
        assert bool(lps.is_sampling(state))
        assert float(lps.current_learning_rate(state)) == pytest.approx(0.05)


def test_state_finders():
    params = _params()
    opt = optax.chain(optax.scale(1.0), lps.cyclical_sgld(
        0.1, num_data=10, num_cycles=2, total_steps=10, exploration_ratio=0.5,
        key=jax.random.key(0)))
    state = opt.init(params)
    _, state = jax.jit(opt.update)(_grads_like(params), state, params)
    assert not bool(lps.is_sampling(state))  # step 0: exploration
    assert float(lps.current_learning_rate(state)) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="sampler state"):
        lps.is_sampling(optax.sgd(0.1).init(params))


# ------------------------------------------------------------------------------------------
# Weights on the grid, apply_updates exact, the params are the chain for FULL weights.

GRID_FORMATS = {"fixed": FX, "bfp": BFP, "float": FP}


def _all(conditions):
    return jnp.all(jnp.stack([jnp.all(c) for c in conditions]))


@pytest.mark.parametrize("fmt_name", list(GRID_FORMATS))
def test_weights_on_grid_and_apply_updates_exact(fmt_name):
    """300 steps of a small noisy quadratic in the low-precision modes (SGLD × full/low/vc
    accumulator, and SGD with a low-precision accumulator), all in one scan. Every step:
    the new weights are on the grid (nearest rounding leaves them unchanged),
    ``apply_updates`` was exact
    (``(p + u) − p == u``), and for SGLDLP-F the weights are a grid neighbour of the
    accumulator."""
    fmt = GRID_FORMATS[fmt_name]
    # SGD's "full" and "low" rows end in the same roundings as SGLD's; its "vc" row does not.
    modes = [(False, "full"), (False, "low"), (False, "vc"), (True, "vc")]
    params0 = {"w": jax.random.normal(jax.random.key(2), (8, 4)),
               "b": jnp.asarray([3.0, -0.01, 0.0, 1e-3])}
    target = jax.tree.map(lambda p: 0.5 * jnp.ones_like(p), params0)

    def make(sgd, acc, i):
        kw = dict(weight_format=fmt, grad_format=fmt, accumulator=acc, key=jax.random.key(i))
        return lps.sgd(0.05, **kw) if sgd else lps.sgld(0.05, num_data=50, **kw)

    opts = [make(sgd, acc, i) for i, (sgd, acc) in enumerate(modes)]

    @jax.jit
    def run():
        ps = [lps.init_weights(params0, fmt, key=jax.random.key(10 + i))
              for i in range(len(opts))]
        sts = [o.init(params0) for o in opts]

        def body(carry, k):
            ps, sts = carry
            checks = []
            new_ps, new_sts = [], []
            for i, (o, p, st) in enumerate(zip(opts, ps, sts, strict=True)):
                k_i = jax.random.fold_in(k, i)
                noise = jax.tree.map(lambda x, k_i=k_i: 0.3 * jax.random.normal(k_i, x.shape), p)
                g = jax.tree.map(lambda x, t, n: x - t + n, p, target, noise)
                u, st = o.update(g, st, p)
                new = optax.apply_updates(p, u)
                on_grid = _all([lps.quantize(x, fmt, rounding="nearest") == x
                                for x in jax.tree.leaves(new)])
                exact = _all([(n - x) == d for n, x, d in zip(
                    jax.tree.leaves(new), jax.tree.leaves(p), jax.tree.leaves(u), strict=True)])
                near = jnp.asarray(True)
                if st.accumulator is not None:
                    near = _all([jnp.abs(n - a) <= lps.grid_gap(a, fmt)
                                 for n, a in zip(jax.tree.leaves(new),
                                                 jax.tree.leaves(st.accumulator), strict=True)])
                checks.append(jnp.stack([on_grid, exact, near]))
                new_ps.append(new)
                new_sts.append(st)
            return (new_ps, new_sts), jnp.stack(checks)

        keys = jax.random.split(jax.random.key(3), 300)
        (ps, _), checks = jax.lax.scan(body, (ps, sts), keys)
        return ps, checks

    ps, checks = run()
    checks = np.asarray(checks)  # (step, mode, check)
    for i, mode in enumerate(modes):
        for j, what in enumerate(["on the grid", "apply_updates exact", "neighbour of θ"]):
            bad = np.nonzero(~checks[:, i, j])[0]
            assert bad.size == 0, f"{mode}: not {what} at steps {bad[:5]}"
    # The chains moved towards the target (the test is not vacuous).
    for p in ps:
        assert abs(float(jnp.mean(p["w"])) - 0.5) < 0.2


def test_full_weights_params_are_the_chain():
    """FULL weights: no accumulator; with T = 0 one step is exactly θ − ηg; with T = 1 the
    deviation from θ − ηg is N(0, 2η/N): sd checked within 5 se (n = 2^16, se = sd/sqrt(2n))."""
    n_el = 2**16
    params = {"x": jnp.linspace(-1, 1, n_el)}
    grads = {"x": jnp.full((n_el,), 0.5)}
    cold = lps.sgld(0.1, num_data=10, temperature=0.0, key=jax.random.key(0))
    state = cold.init(params)
    assert state.accumulator is None
    updates, state = jax.jit(cold.update)(grads, state, params)
    np.testing.assert_array_equal(optax.apply_updates(params, updates)["x"],
                                  params["x"] - jnp.float32(0.1) * 0.5)
    hot = lps.sgld(0.1, num_data=10, key=jax.random.key(0))
    updates, _ = jax.jit(hot.update)(grads, hot.init(params), params)
    dev = np.asarray(optax.apply_updates(params, updates)["x"] - (params["x"] - 0.05), np.float64)
    sd = np.sqrt(2 * 0.1 / 10)
    assert abs(dev.std() / sd - 1) < 5 / np.sqrt(2 * n_el)
    assert abs(dev.mean()) < 5 * sd / np.sqrt(n_el)


def test_init_weights_first_forward_pass():
    params = _params()
    for fmt in (FX, BFP, FP):
        w = lps.init_weights(params, fmt, key=jax.random.key(0))
        for q, p in zip(jax.tree.leaves(w), jax.tree.leaves(params), strict=True):
            np.testing.assert_array_equal(lps.quantize(q, fmt, rounding="nearest"), q)
            assert q.dtype == p.dtype
    assert lps.init_weights(params, lps.FULL, key=jax.random.key(0)) is params


# ------------------------------------------------------------------------------------------
# dtypes, sharding, tracing.


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("name", list(MODES))
def test_dtypes_preserved_accumulator_float32(dtype, name):
    opt = _make(name)
    params = _params(dtype)

    def step(params):
        state = opt.init(params)
        updates, state = opt.update(_grads_like(params), state, params)
        return optax.apply_updates(params, updates), updates, state

    new, updates, state = jax.eval_shape(step, params)
    for tree in (new, updates):
        assert all(x.dtype == dtype for x in jax.tree.leaves(tree))
    if name == "LP-F":
        assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state.accumulator))
    else:
        assert state.accumulator is None


SHARDING_SCRIPT = textwrap.dedent("""
    import jax, jax.numpy as jnp, optax
    import lpsampling as lps
    from jax.sharding import NamedSharding, PartitionSpec as P

    assert jax.device_count() == 8, jax.devices()
    mesh = jax.make_mesh((8,), ("x",))
    shardings = {"w": NamedSharding(mesh, P("x", None)), "b": NamedSharding(mesh, P())}
    params = jax.device_put({"w": jnp.linspace(-1, 1, 64).reshape(16, 4),
                             "b": jnp.asarray([0.5, -0.25, 0.125, 0.0])}, shardings)
    fx, bfp = lps.FixedPoint(8, 4), lps.BlockFloatingPoint(8, axis=0)
    modes = {
        "FP": lps.sgld(0.05, num_data=10, key=jax.random.key(0)),
        "LP-F": lps.sgld(0.05, num_data=10, weight_format=fx, grad_format=fx,
                         key=jax.random.key(0)),
        "VC-BFP": lps.sgld(0.05, num_data=10, weight_format=bfp, grad_format=bfp,
                           accumulator="vc", key=jax.random.key(0)),
    }

    def same(a, b, ndim):
        return a == b or a.is_equivalent_to(b, ndim)

    for name, opt in modes.items():
        fmt = {"FP": lps.FULL, "LP-F": fx, "VC-BFP": bfp}[name]
        p = lps.init_weights(params, fmt, key=jax.random.key(1))
        p = jax.device_put(p, shardings)
        state = jax.jit(opt.init)(p)

        @jax.jit
        def step(p, state):
            updates, state = opt.update(jax.tree.map(lambda x: x + 0.3, p), state, p)
            return optax.apply_updates(p, updates), updates, state

        new, updates, new_state = step(p, state)
        for k in shardings:
            nd = p[k].ndim
            for tree in (new, updates):
                assert same(tree[k].sharding, p[k].sharding, nd), (name, k, tree[k].sharding)
                assert same(jax.typeof(tree[k]).sharding, jax.typeof(p[k]).sharding, nd), (
                    name, k, jax.typeof(tree[k]).sharding)
            if state.accumulator is not None:
                assert same(state.accumulator[k].sharding, p[k].sharding, nd), (name, k)
                assert same(new_state.accumulator[k].sharding, p[k].sharding, nd), (name, k)
        assert new["w"].sharding.spec == P("x", None) or new["w"].sharding.spec == P("x")
        print(name, "ok")
""")


def test_sharding_preserved_on_eight_cpu_devices():
    """Params sharded over a mesh of 8 (fake CPU) devices keep their NamedSharding through
    a jitted update, as do the updates and the SGLDLP-F accumulator. Needs XLA_FLAGS set
    before JAX starts, hence a subprocess."""
    env = helpers.fake_devices_env(8, keep_xla_flags=True)
    result = subprocess.run([sys.executable, "-c", SHARDING_SCRIPT], env=env,
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("ok") == 3, result.stdout


@pytest.mark.parametrize("name", ["VC-BFP", "cyclical-LP-F"])
def test_no_retracing_across_steps(name):
    if name == "cyclical-LP-F":
        opt = lps.cyclical_sgld(0.05, num_data=100, num_cycles=2, total_steps=10,
                                exploration_ratio=0.3, weight_format=FX, grad_format=FX,
                                key=jax.random.key(0))
    else:
        opt = _make(name)

    chex.clear_trace_counter()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(params, state):
        updates, state = opt.update(_grads_like(params), state, params)
        return optax.apply_updates(params, updates), state

    params = _params()
    state = opt.init(params)
    for _ in range(5):
        params, state = step(params, state)
    assert int(state.count) == 5


# ------------------------------------------------------------------------------------------
# Non-finite gradients, keys.


@pytest.mark.parametrize("sgd", [False, True], ids=["sgld", "sgd"])
@pytest.mark.parametrize("name", list(MODES))
def test_nonfinite_gradients_never_corrupt_the_state(name, sgd):
    opt = _make(name, sgd=sgd)
    params = lps.init_weights(_params(), MODES[name][0], key=jax.random.key(1))
    state = opt.init(params)
    step = jax.jit(opt.update)
    # One good step so the accumulator differs from the params.
    updates, state = step(_grads_like(params), state, params)
    params = optax.apply_updates(params, updates)
    for n_bad, bad in enumerate((np.nan, np.inf, -np.inf), start=1):
        grads = _grads_like(params)
        grads["w"] = grads["w"].at[1, 2].set(bad)
        updates, new_state = step(grads, state, params)
        assert all(np.all(np.asarray(u) == 0) for u in jax.tree.leaves(updates))
        assert int(new_state.count) == 1
        assert int(new_state.nonfinite_count) == n_bad
        assert not bool(new_state.sampling)
        assert not np.array_equal(jax.random.key_data(new_state.key),
                                  jax.random.key_data(state.key))  # the key still advances
        if state.accumulator is not None:
            jax.tree.map(np.testing.assert_array_equal, new_state.accumulator,
                         state.accumulator)
        state = new_state
    updates, state = step(_grads_like(params), state, params)
    params = optax.apply_updates(params, updates)
    assert int(state.count) == 2 and int(state.nonfinite_count) == 3
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves((params, state.accumulator)))


@pytest.mark.parametrize("name", ["FP", "VC-BFP"])
def test_typed_and_raw_keys(name):
    """Typed (jax.random.key) and raw (PRNGKey) keys both work and, for the same seed, give
    the same trajectory; the state keeps the key's kind."""
    params = _params()
    outs = []
    for key in (jax.random.key(3), jax.random.PRNGKey(3)):
        opt = _make(name, key=key)
        state = opt.init(params)
        p = params
        step = jax.jit(opt.update)
        for _ in range(3):
            updates, state = step(_grads_like(p), state, p)
            p = optax.apply_updates(p, updates)
        assert jax.dtypes.issubdtype(state.key.dtype, jax.dtypes.prng_key) == \
            jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
        outs.append(p)
    jax.tree.map(np.testing.assert_array_equal, outs[0], outs[1])


# ------------------------------------------------------------------------------------------
# Bad input: ValueError/TypeError naming the argument.

KEY = jax.random.key(0)


@pytest.mark.parametrize("make,match,error", [
    (lambda: lps.sgld(1e-3, num_data=10, accumulator="medium", key=KEY), "accumulator",
     ValueError),
    (lambda: lps.sgd(1e-3, accumulator="lowest", key=KEY), "accumulator", ValueError),
    (lambda: lps.sgld(-1e-3, num_data=10, key=KEY), "learning_rate", ValueError),
    (lambda: lps.sgd(-0.1, key=KEY), "learning_rate", ValueError),  # 0 is allowed (optax)
    (lambda: lps.sgld("fast", num_data=10, key=KEY), "learning_rate", TypeError),
    (lambda: lps.sgld(1e-3, num_data=10, temperature=-1.0, key=KEY), "temperature",
     ValueError),
    (lambda: lps.sgld(1e-3, num_data=0, key=KEY), "num_data", ValueError),
    (lambda: lps.sgld(1e-3, num_data=-5, key=KEY), "num_data", ValueError),
    (lambda: lps.sgld(1e-3, num_data=10, weight_decay=-1.0, key=KEY), "weight_decay",
     ValueError),
    (lambda: lps.cyclical_sgld(0.0, num_data=10, num_cycles=2, total_steps=10, key=KEY),
     "init_lr", ValueError),
    (lambda: lps.cyclical_sgld(0.1, num_data=10, num_cycles=2, total_steps=10,
                               exploration_ratio=1.0, key=KEY), "exploration_ratio",
     ValueError),
    (lambda: lps.cyclical_sgld(0.1, num_data=10, num_cycles=2, total_steps=10,
                               exploration_ratio=-0.1, key=KEY), "exploration_ratio",
     ValueError),
    (lambda: lps.cyclical_sgld(0.1, num_data=10, num_cycles=5, total_steps=4, key=KEY),
     "total_steps", ValueError),
    (lambda: lps.cyclical_sgld(0.1, num_data=0, num_cycles=2, total_steps=10, key=KEY),
     "num_data", ValueError),
    (lambda: lps.sgld(1e-3, num_data=10, accumulator="low", key=KEY), "accumulator",
     ValueError),
    (lambda: lps.sgld(1e-3, num_data=10, accumulator="vc", key=KEY), "weight_format",
     ValueError),
    (lambda: lps.sgd(1e-3, accumulator="vc", key=KEY), "accumulator", ValueError),
    (lambda: lps.sgld(1e-3, num_data=10, weight_format="int8", key=KEY), "weight_format",
     TypeError),
    (lambda: lps.sgld(1e-3, num_data=10, key=None), "key", ValueError),
    (lambda: lps.sgld(1e-3, num_data=10, key=7), "key", TypeError),
    (lambda: lps.sgld(1e-3, num_data=10), "key", TypeError),
    (lambda: lps.sgd(1e-3), "key", TypeError),
])
def test_bad_arguments(make, match, error):
    with pytest.raises(error, match=match):
        make()


def test_bad_update_calls():
    opt = lps.sgld(1e-3, num_data=10, key=KEY)
    params = _params()
    state = opt.init(params)
    with pytest.raises(ValueError, match="params"):
        opt.update(_grads_like(params), state)
    with pytest.raises(ValueError, match="params"):
        opt.update(_grads_like(params), state, None)
    with pytest.raises(ValueError, match="grads.*structure"):
        opt.update({"w": params["w"]}, state, params)
    with pytest.raises(ValueError, match="grads.*shape"):
        opt.update({"w": params["w"], "b": jnp.ones(5)}, state, params)
    lpf = _make("LP-F")
    with pytest.raises(ValueError, match="grads.*structure"):
        lpf.update({"w": params["w"]}, lpf.init(params), params)


# ---------------------------------------------------------------------------------------
# Training-level guard for the issue-14 corner: zero-initialised biases under block floating
# point. A bias at exactly 0 whose gradient is tiny has a mean μ many binades below the
# noise √(2ηT/N); before the fix, vc_quantize saturated such an element to the format's
# largest value (±7·2^125 for 4 bits).


def _digits_mlp_chain(weight_format, accumulator, steps, *, lr=0.5, wd=5e-4, hidden=32):
    """Max |θ| per step of SGLD on digits (a 64-32-10 ReLU MLP, zero biases, batch 64)."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = jnp.asarray(x / 16.0, jnp.float32)
    y = jnp.asarray(y, jnp.int32)
    n = x.shape[0]
    k1, k2 = jax.random.split(jax.random.key(0))
    params = {"W1": jax.random.normal(k1, (64, hidden)) / 8, "b1": jnp.zeros(hidden),
              "W2": jax.random.normal(k2, (hidden, 10)) / np.sqrt(hidden), "b2": jnp.zeros(10)}
    params = lps.quantize_tree(params, weight_format, rounding="nearest")

    def loss(p, xb, yb):
        logits = jax.nn.relu(xb @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    grad_format = lps.FULL if weight_format == lps.FULL else lps.BlockFloatingPoint(8, axis=0)
    opt = lps.sgld(lr, num_data=n, temperature=1.0, weight_decay=wd,
                   weight_format=weight_format, grad_format=grad_format,
                   accumulator=accumulator, key=jax.random.key(1))

    def step(carry, k):
        p, state = carry
        idx = jax.random.randint(k, (64,), 0, n)
        updates, state = opt.update(jax.grad(loss)(p, x[idx], y[idx]), state, p)
        p = optax.apply_updates(p, updates)
        return (p, state), jnp.max(jnp.stack([jnp.max(jnp.abs(v)) for v in p.values()]))

    (p, _), max_abs = jax.jit(lambda c: jax.lax.scan(
        step, c, jax.random.split(jax.random.key(3), steps)))((params, opt.init(params)))
    return np.asarray(max_abs), float(loss(p, x, y))


@pytest.fixture(scope="module")
def float32_sgld_scale():
    max_abs, final_loss = _digits_mlp_chain(lps.FULL, "full", 3000)
    assert np.isfinite(final_loss)
    return float(max_abs.max())


@pytest.mark.parametrize("accumulator", ["vc", "low", "full"])
@pytest.mark.parametrize("wl", [4, 8])
def test_zero_initialised_biases_stay_bounded(float32_sgld_scale, wl, accumulator):
    """3000 steps at lr 0.5, T = 1 (the reported setting; before the fix, 4-bit VC put a
    bias at 3e38 within 2000 steps). Bound from the data: float32 SGLD on the same data,
    prior and keys sets the posterior's scale s (max |θ| over its run, about 4). A 4-bit
    grid with one exponent per row injects rounding variance ~Δ²/6 per step, far above
    2ηT/N, so low-precision chains wander wider (measured up to 7·s for VC): the bound is
    16·s, while a saturated element is 10³⁷ times larger."""
    fmt = lps.BlockFloatingPoint(wl, axis=0)
    max_abs, final_loss = _digits_mlp_chain(fmt, accumulator, 3000)
    assert np.all(np.isfinite(max_abs)) and np.isfinite(final_loss)
    assert max_abs.max() <= 16 * float32_sgld_scale, (max_abs.max(), float32_sgld_scale)


# --- SGD with momentum (optax.sgd's momentum through the momentum update rule) ----------


def _quadratic_loss(p):
    return jnp.sum(p["w"] ** 2 * 0.5) + jnp.sum((p["b"] - 1.0) ** 2)


@pytest.mark.parametrize("lr", [0.05, optax.linear_schedule(0.1, 0.01, 10)])
def test_sgd_momentum_follows_optax_sgd(lr):
    # The same trajectory as optax.sgd(lr, momentum) up to float32 association (1 ulp per
    # step of |θ| ≤ 1, over 25 steps: 1e-6 absolute).
    ref, ours = optax.sgd(lr, momentum=0.9), lps.sgd(lr, 0.9, key=jax.random.key(0))
    p1 = p2 = _params()
    s1, s2 = ref.init(p1), ours.init(p2)
    for _ in range(25):
        u1, s1 = ref.update(jax.grad(_quadratic_loss)(p1), s1, p1)
        u2, s2 = ours.update(jax.grad(_quadratic_loss)(p2), s2, p2)
        p1, p2 = optax.apply_updates(p1, u1), optax.apply_updates(p2, u2)
    chex.assert_trees_all_close(p1, p2, atol=1e-6)
    chex.assert_trees_all_close(s1[0].trace, s2.momentum, atol=1e-6)


def test_sgd_momentum_none_is_plain_sgd():
    plain = lps.sgd(0.1, key=jax.random.key(0))
    assert plain.init(_params()).momentum is None
    with_zero = lps.sgd(0.1, 0.0, key=jax.random.key(0))
    p = _params()
    g = _grads_like(p)
    u1, _ = plain.update(g, plain.init(p), p)
    u2, s2 = with_zero.update(g, with_zero.init(p), p)
    chex.assert_trees_all_close(u1, u2, atol=1e-7)
    chex.assert_trees_all_equal(s2.momentum, jax.tree.map(lambda x: x.astype(jnp.float32), g))


@pytest.mark.parametrize("mode", ["LP-L", "VC"])
def test_sgd_momentum_low_precision_keeps_grids(mode):
    w, gf, acc = MODES[mode]
    opt = lps.sgd(0.05, 0.9, weight_format=w, grad_format=gf, accumulator=acc,
                  key=jax.random.key(3))
    p = lps.init_weights(_params(), w, key=jax.random.key(4))
    s = opt.init(p)
    for _ in range(5):
        u, s = opt.update(jax.grad(_quadratic_loss)(p), s, p)
        p = optax.apply_updates(p, u)
    assert helpers.on_grid(p["w"], w) and helpers.on_grid(s.momentum["w"], gf)


def test_sgd_momentum_skips_nonfinite_and_rejects_bad_beta():
    opt = lps.sgd(0.1, 0.9, key=jax.random.key(0))
    p = _params()
    s = opt.init(p)
    _, s = opt.update(_grads_like(p), s, p)
    bad = jax.tree.map(lambda x: x.at[0].set(jnp.nan), _grads_like(p))
    u, s2 = opt.update(bad, s, p)
    assert int(s2.nonfinite_count) == 1
    chex.assert_trees_all_equal(s2.momentum, s.momentum)
    chex.assert_trees_all_close(u, jax.tree.map(jnp.zeros_like, p))
    for beta in (float("nan"), -0.5):
        with pytest.raises(ValueError, match="momentum"):
            lps.sgd(0.1, beta, key=jax.random.key(0))
