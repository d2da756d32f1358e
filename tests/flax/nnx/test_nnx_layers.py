"""Tests for lpsampling.flax.nnx.layers: the NNX Quantize layer, its keys and its checks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import lpsampling as lps
from lpsampling.flax import QuantConfig
from lpsampling.flax import Quantize as LinenQuantize
from lpsampling.flax.nnx import Quantize

FIXED = lps.FixedPoint(8, 4)
BFP = lps.BlockFloatingPoint(6, axis=0)
X = jax.random.normal(jax.random.key(0), (4, 16))
W = jax.random.normal(jax.random.key(1), (4, 16))  # cotangent weights, off the BFP grid


def value_and_input_grad(layer_call, x=X):
    """The layer's output and the (quantized) error it passes back for loss sum(y * W)."""
    y, vjp = jax.vjp(layer_call, x)
    return y, vjp(W)[0]


def test_call_with_a_key_is_the_op_of_the_linen_layer():
    key = jax.random.key(5)
    layer = Quantize(BFP, FIXED)
    op = lps.quantizer(BFP, FIXED, "stochastic")
    y, g = value_and_input_grad(lambda x: layer(x, rngs=key))
    y_ref, g_ref = value_and_input_grad(lambda x: op(x, key))
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(g, g_ref)
    # The Linen layer applied with the same key makes the same op call (make_rng derives
    # its key from the root key by Flax's fold_in of the path and the call count).
    from flax.core.scope import LazyRng

    linen = LinenQuantize(BFP, FIXED)
    y_linen = linen.apply({}, X, rngs={"quantize": key})
    np.testing.assert_array_equal(y_linen, layer(X, rngs=LazyRng.create(key, 1).as_jax_rng()))


def test_own_stream_is_a_fork_of_the_quantize_stream_and_advances():
    layer = Quantize(FIXED, FIXED, rngs=nnx.Rngs(params=0, quantize=7))
    mirror = nnx.Rngs(params=0, quantize=7).quantize.fork()  # what the layer forked
    y1, y2 = layer(X), layer(X)
    np.testing.assert_array_equal(y1, layer(X, rngs=mirror()))  # explicit key: no draw
    np.testing.assert_array_equal(y2, layer(X, rngs=mirror()))
    assert not np.array_equal(y1, y2)
    assert int(layer.rngs.count[...]) == 2


def test_call_rngs_take_precedence_rngs_and_stream_accepted():
    layer = Quantize(FIXED, FIXED, rngs=nnx.Rngs(quantize=1))
    np.testing.assert_array_equal(
        layer(X, rngs=nnx.Rngs(quantize=3)), layer(X, rngs=nnx.Rngs(quantize=3).quantize))
    np.testing.assert_array_equal(
        layer(X, rngs=nnx.Rngs(quantize=3)), layer(X, rngs=jax.random.fold_in(
            jax.random.key(3), 0)))
    assert int(layer.rngs.count[...]) == 0  # its own stream was never used


def test_stream_advances_under_nnx_jit():
    layer = Quantize(FIXED, FIXED, rngs=nnx.Rngs(quantize=2))
    call = nnx.jit(lambda m, x: m(x))
    a, b = call(layer, X), call(layer, X)
    assert not np.array_equal(a, b)
    assert int(layer.rngs.count[...]) == 2
    mirror = nnx.Rngs(quantize=2).quantize.fork()
    np.testing.assert_array_equal(a, layer(X, rngs=mirror()))


@pytest.mark.parametrize("fwd,bwd,rounding", [
    (lps.FULL, lps.FULL, "stochastic"),
    (FIXED, FIXED, "nearest"),
])
def test_full_or_nearest_keeps_no_stream_and_draws_nothing(fwd, bwd, rounding):
    rngs = nnx.Rngs(params=0, quantize=7)
    layer = Quantize(fwd, bwd, rounding, rngs=rngs)
    assert layer.rngs is None and not layer.needs_rng
    assert int(rngs.quantize.count[...]) == 0  # building it consumed nothing
    y, g = value_and_input_grad(lambda x: layer(x))
    np.testing.assert_array_equal(y, lps.quantize(X, fwd, rounding="nearest"))
    np.testing.assert_array_equal(g, lps.quantize(W, bwd, rounding="nearest"))


def test_from_config_and_properties():
    layer = Quantize.from_config(QuantConfig.uniform(BFP, "nearest"))
    assert (layer.forward_format, layer.backward_format, layer.rounding) == (BFP, BFP, "nearest")
    assert Quantize().is_identity and not Quantize(FIXED).is_identity
    with pytest.raises(TypeError, match="quant must be a QuantConfig"):
        Quantize.from_config(FIXED)


def test_stochastic_without_keys_names_the_fix():
    with pytest.raises(ValueError, match="rngs=nnx.Rngs"):
        Quantize(FIXED, FIXED)(X)


def test_bad_arguments():
    with pytest.raises(ValueError, match="rounding"):
        Quantize(FIXED, FIXED, "up")
    with pytest.raises(TypeError):
        Quantize("fixed8", FIXED)
    with pytest.raises(TypeError, match="rngs must be"):
        Quantize(FIXED, FIXED, rngs=jax.random.key(0))
    with pytest.raises(TypeError, match="rngs must be"):
        Quantize(FIXED, FIXED)(X, rngs=3)
    with pytest.raises(TypeError, match="floating-point"):
        Quantize(FIXED, FIXED, "nearest")(jnp.ones((2,), jnp.int32))
