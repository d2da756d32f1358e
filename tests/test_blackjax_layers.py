"""The blackjax face in blackjax's three layers (``init``, ``build_kernel``,
``as_top_level_api``): the layers compose, FULL formats follow ``blackjax.sgld`` from
array-like positions, one ``Precision`` object equals its keyword shortcuts, and bad
combinations raise clear errors."""

from __future__ import annotations

import inspect

import blackjax
import blackjax.sgmcmc.sgld as bj_sgld
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lpsampling as lps
from lpsampling.blackjax import sgmcmc

FX = lps.FixedPoint(8, 4)
BFP = lps.BlockFloatingPoint(8, axis=0)
# One precision per mode: FP, SGLDLP-F, naive SGLDLP-L, VC SGLDLP-L.
PRECISIONS = {
    "FP": lps.Precision(lps.FULL, lps.FULL, "full"),
    "LP-F fixed": lps.Precision(FX, FX, "full"),
    "LP-L bfp": lps.Precision(BFP, BFP, "low"),
    "VC LP-L fixed": lps.Precision(FX, FX, "vc"),
}
ONES2 = jnp.ones(2)
CENTRE = {"a": jnp.asarray([0.5, -1.0, 2.0]), "b": jnp.linspace(-1, 1, 8).reshape(2, 4)}


def grad_estimator(position, minibatch):
    return jax.tree.map(lambda p, c: -jnp.sum(minibatch) * (p - c), position, CENTRE)


def _start():
    return jax.tree.map(lambda c: jnp.zeros_like(c) + 0.25, CENTRE)  # on both grids


def _shortcuts(p: lps.Precision) -> dict:
    return {"weight_format": p.weight_format, "grad_format": p.grad_format,
            "accumulator": p.accumulator}


def _run(step, state, n=20, minibatch=ONES2, *args):
    keys = jax.random.split(jax.random.key(3), n)

    def body(s, k):
        s = step(k, s, minibatch, *args)
        return s, s

    return jax.jit(lambda s: jax.lax.scan(body, s, keys)[1])(state)


def _assert_trees_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(la, lb, strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_the_three_layers_exist_like_blackjax():
    for module in (sgmcmc.sgld, sgmcmc.cyclical_sgld):
        for name in ("init", "build_kernel", "as_top_level_api"):
            assert callable(getattr(module, name)), (module.__name__, name)
    assert set(bj_sgld.__all__) <= set(sgmcmc.sgld.__all__)
    # The top-level names are blackjax's own kind of object over those modules.
    for api, module in ((lps.blackjax.sgld, sgmcmc.sgld),
                        (lps.blackjax.cyclical_sgld, sgmcmc.cyclical_sgld)):
        assert isinstance(api, type(blackjax.sgld))
        assert api.init is module.init and api.build_kernel is module.build_kernel
        assert api.as_top_level_api is module.as_top_level_api
        assert inspect.signature(api) == inspect.signature(module.as_top_level_api)
    assert lps.blackjax.build_kernel is sgmcmc.sgld.build_kernel  # the first release's name
    # The kernel has blackjax's signature.
    ours = inspect.signature(sgmcmc.sgld.build_kernel()).parameters
    theirs = inspect.signature(bj_sgld.build_kernel()).parameters
    assert list(ours) == list(theirs)
    assert [p.default for p in ours.values()] == [p.default for p in theirs.values()]


@pytest.mark.parametrize("name", list(PRECISIONS))
def test_top_level_equals_init_plus_build_kernel(name):
    precision = PRECISIONS[name]
    alg = lps.blackjax.sgld(grad_estimator, precision=precision)
    kernel = lps.blackjax.sgld.build_kernel(precision)

    def by_hand(key, state, minibatch, step_size):
        return kernel(key, state, grad_estimator, minibatch, step_size)

    a = _run(alg.step, alg.init(_start()), 20, jnp.ones(2), 1e-2)
    b = _run(by_hand, lps.blackjax.sgld.init(_start()), 20, jnp.ones(2), 1e-2)
    _assert_trees_equal(a, b)


@pytest.mark.parametrize("name", ["FP", "VC LP-L fixed"])
def test_cyclical_top_level_equals_init_plus_build_kernel(name):
    schedule = {"init_step_size": 1e-2, "num_cycles": 2, "total_steps": 20,
                "exploration_ratio": 0.25}
    precision = PRECISIONS[name]
    alg = lps.blackjax.cyclical_sgld(grad_estimator, precision=precision, **schedule)
    kernel = lps.blackjax.cyclical_sgld.build_kernel(precision=precision, **schedule)

    def by_hand(key, state, minibatch):
        return kernel(key, state, grad_estimator, minibatch)

    a = _run(alg.step, alg.init(_start()))
    b = _run(by_hand, sgmcmc.cyclical_sgld.init(_start()))
    _assert_trees_equal(a, b)
    assert np.asarray(a.sampling).any() and not np.asarray(a.sampling).all()


@pytest.mark.parametrize("position", [
    1.0, np.float32(1.0), np.asarray([1.0, -0.5, 2.0]), [0.5, np.ones(2)], {"w": 1.0}],
    ids=["python-float", "numpy-scalar", "numpy-float64", "list", "dict"])
def test_full_formats_follow_blackjax_from_array_like_positions(position):
    """blackjax accepts any array-like tree (its own tests start at ``1.0``): the same
    trajectory for the same keys, in the same dtypes."""
    def ge(p, minibatch):
        return jax.tree.map(lambda x: minibatch * (2.0 - x), p)

    ours, theirs = lps.blackjax.sgld(ge), blackjax.sgld(ge)
    a = _run(ours.step, ours.init(position), 30, jnp.asarray(0.7), 1e-2)
    b = _run(theirs.step, theirs.init(position), 30, jnp.asarray(0.7), 1e-2)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=2e-6, atol=2e-6), a, b)
    assert [x.dtype for x in jax.tree.leaves(a)] == [x.dtype for x in jax.tree.leaves(b)]
    # Eagerly, one step from the raw position (no init), as blackjax allows.
    k = jax.random.key(0)
    one = jax.tree.map(np.asarray, ours.step(k, position, jnp.asarray(0.7), 1e-2))
    ref = jax.tree.map(np.asarray, theirs.step(k, position, jnp.asarray(0.7), 1e-2))
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=2e-6, atol=2e-6), one, ref)


def test_init_converts_like_jnp_asarray():
    state = lps.blackjax.sgld.init(1.0)
    assert isinstance(state, jax.Array) and state.dtype == jnp.asarray(1.0).dtype
    state = lps.blackjax.sgld.init(np.ones(3))  # float64: promoted as jnp.asarray does
    assert isinstance(state, jax.Array) and state.dtype == jnp.asarray(np.ones(3)).dtype
    tree = {"a": jnp.ones(2, jnp.bfloat16)}
    assert lps.blackjax.sgld.init(tree) is tree  # jax arrays are kept as they are
    cyc = lps.blackjax.cyclical_sgld.init([1.0, 2.0])
    assert all(isinstance(x, jax.Array) for x in cyc.position)


@pytest.mark.parametrize("name", list(PRECISIONS))
def test_python_float_and_numpy_positions_in_every_mode(name):
    precision = PRECISIONS[name]
    alg = lps.blackjax.sgld(lambda p, _: jax.tree.map(lambda x: -x, p), precision=precision)
    for position in (1.0, np.asarray([0.5, -1.0])):
        states = _run(alg.step, alg.init(position), 10, None, 1e-2)
        assert states.shape == (10,) + np.shape(position)
        assert states.dtype == jnp.float32
        assert np.isfinite(np.asarray(states)).all()
        if precision.accumulator != "full":
            for state in states:  # each step's state on the weight grid
                np.testing.assert_array_equal(
                    lps.quantize(state, precision.weight_format, rounding="nearest"), state)


@pytest.mark.parametrize("name", list(PRECISIONS))
def test_precision_object_equals_shortcuts(name):
    precision = PRECISIONS[name]
    by_object = lps.blackjax.sgld(grad_estimator, precision=precision)
    by_keywords = lps.blackjax.sgld(grad_estimator, **_shortcuts(precision))
    _assert_trees_equal(_run(by_object.step, _start(), 10, jnp.ones(2), 1e-2),
                        _run(by_keywords.step, _start(), 10, jnp.ones(2), 1e-2))
    schedule = {"init_step_size": 1e-2, "num_cycles": 2, "total_steps": 10}
    c_obj = lps.blackjax.cyclical_sgld(grad_estimator, precision=precision, **schedule)
    c_kw = lps.blackjax.cyclical_sgld(grad_estimator, **schedule, **_shortcuts(precision))
    _assert_trees_equal(_run(c_obj.step, c_obj.init(_start())),
                        _run(c_kw.step, c_kw.init(_start())))
    key = jax.random.key(5)
    position = jax.tree.map(lambda c: c + 0.01, CENTRE)  # off the grid
    _assert_trees_equal(
        lps.blackjax.weights(position, rng_key=key, precision=precision),
        lps.blackjax.weights(position, rng_key=key, weight_format=precision.weight_format,
                             accumulator=precision.accumulator))


def test_defaults_are_full_precision():
    _assert_trees_equal(
        _run(lps.blackjax.sgld(grad_estimator).step, _start(), 5, jnp.ones(2), 1e-2),
        _run(lps.blackjax.sgld(grad_estimator, precision=PRECISIONS["FP"]).step, _start(),
             5, jnp.ones(2), 1e-2))


def test_weights_takes_only_what_it_uses():
    params = inspect.signature(lps.blackjax.weights).parameters
    assert "grad_format" not in params
    position = {"w": jnp.asarray([0.01, 0.3])}
    key = jax.random.key(0)
    with pytest.warns(DeprecationWarning, match="grad_format"):
        old = lps.blackjax.weights(position, rng_key=key, weight_format=FX, grad_format=FX)
    _assert_trees_equal(old, lps.blackjax.weights(position, rng_key=key, weight_format=FX))
    # Low/VC states are the weights themselves.
    assert lps.blackjax.weights(position, rng_key=key, weight_format=FX,
                                accumulator="low") is position
    assert lps.blackjax.weights(1.0, rng_key=key).dtype == jnp.asarray(1.0).dtype


P = lps.Precision(FX, FX, "vc")
SCHEDULE = {"init_step_size": 0.1, "num_cycles": 2, "total_steps": 10}


@pytest.mark.parametrize("make,error,match", [
    (lambda: lps.blackjax.sgld(grad_estimator, precision=P, weight_format=FX), ValueError,
     r"sgld\(\).*precision=.*not both.*weight_format="),
    (lambda: lps.blackjax.sgld(grad_estimator, precision=P, accumulator="vc"), ValueError,
     r"not both.*accumulator="),
    (lambda: lps.blackjax.cyclical_sgld(grad_estimator, precision=P, grad_format=FX,
                                        **SCHEDULE), ValueError,
     r"cyclical_sgld\(\).*not both.*grad_format="),
    (lambda: lps.blackjax.sgld.build_kernel(P, weight_format=FX), ValueError, "not both"),
    (lambda: lps.blackjax.weights(1.0, rng_key=jax.random.key(0), precision=P,
                                  weight_format=FX), ValueError, "not both"),
    (lambda: lps.blackjax.sgld(grad_estimator, precision=FX), TypeError,
     "precision must be an lpsampling.Precision.*weight_format="),
    (lambda: lps.blackjax.sgld.build_kernel(FX, FX, "low"), TypeError, "positional"),
    (lambda: lps.blackjax.sgld.build_kernel(FX), TypeError, "weight_format="),
    (lambda: lps.blackjax.sgld(grad_estimator, precision="int8"), TypeError, "Precision"),
    (lambda: lps.blackjax.sgld(grad_estimator, weight_fromat=FX), TypeError,
     "unexpected keyword argument 'weight_fromat'"),
    (lambda: lps.blackjax.weights(1.0, rng_key=jax.random.key(0), momentum=1), TypeError,
     "unexpected keyword argument 'momentum'"),
    (lambda: lps.blackjax.sgld(grad_estimator, precision=None, accumulator="vc"), ValueError,
     "weight_format"),
    (lambda: lps.blackjax.cyclical_sgld.build_kernel(precision=P, exploration_ratio=-0.1,
                                                     **SCHEDULE), ValueError,
     "exploration_ratio"),
])
def test_bad_precision_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()
