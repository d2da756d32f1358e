"""Tests for lpsampling.flax.nnx.layers: the NNX Quantize layer, its keys and its checks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import lpsampling as lps
from lpsampling.flax import QuantConfig
from lpsampling.flax import QuantConv as LinenQuantConv
from lpsampling.flax import QuantDense as LinenQuantDense
from lpsampling.flax import Quantize as LinenQuantize
from lpsampling.flax.nnx import QuantConv, QuantDense, Quantize

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
    with pytest.raises(TypeError, match="rngs must be"):
        Quantize(rngs=0)  # refused even where no stream would be kept
    with pytest.raises(TypeError, match="floating-point"):
        Quantize(FIXED, FIXED, "nearest")(jnp.ones((2,), jnp.int32))


# --------------------------------------------------------------------------------------
# QuantDense / QuantConv: the NNX twins of the Linen int8 layers (same primitive).

FX = lps.FixedPoint(8, 4)
BFP_ROWS = lps.BlockFloatingPoint(8, axis=0)
BFP_COLS = lps.BlockFloatingPoint(8, axis=-1)


def _twins_equal(linen_layer, nnx_layer, x):
    variables = linen_layer.init(jax.random.key(0), x)
    nnx_layer.kernel[...] = variables["params"]["kernel"]
    if "bias" in variables["params"]:
        nnx_layer.bias[...] = variables["params"]["bias"]
    cot = jax.random.normal(jax.random.key(2), linen_layer.apply(variables, x).shape)

    def linen_loss(params, x):
        return jnp.sum(linen_layer.apply({"params": params}, x) * cot)

    def nnx_loss(layer, x):
        return jnp.sum(layer(x) * cot)

    lv, (lgp, lgx) = jax.value_and_grad(linen_loss, argnums=(0, 1))(variables["params"], x)
    nv, (ngp, ngx) = nnx.value_and_grad(nnx_loss, argnums=(0, 1))(nnx_layer, x)
    np.testing.assert_array_equal(nnx_layer(x), linen_layer.apply(variables, x))
    np.testing.assert_array_equal(nv, lv)
    np.testing.assert_array_equal(ngx, lgx)
    jax.tree.map(np.testing.assert_array_equal, nnx.to_pure_dict(ngp), lgp)


@pytest.mark.parametrize("compute", ["float32", "int8"])
@pytest.mark.parametrize("formats", [(FX, FX, FX), (BFP_ROWS, BFP_COLS, lps.FULL)],
                         ids=["fixed8", "bfp8"])
def test_quant_dense_equals_linen(compute, formats):
    fin, fw, fe = formats
    kw = dict(input_format=fin, weight_format=fw, error_format=fe, compute=compute)
    x = lps.quantize(jax.random.normal(jax.random.key(1), (4, 6)), fin, rounding="nearest")
    _twins_equal(LinenQuantDense(5, **kw), QuantDense(6, 5, rngs=nnx.Rngs(0), **kw), x)


@pytest.mark.parametrize("compute", ["float32", "int8"])
def test_quant_conv_equals_linen(compute):
    kw = dict(input_format=FX, weight_format=FX, error_format=FX, compute=compute,
              strides=2, padding=((1, 1), (1, 1)), use_bias=False)
    x = lps.quantize(jax.random.normal(jax.random.key(1), (2, 6, 6, 3)), FX, rounding="nearest")
    _twins_equal(LinenQuantConv(4, (3, 3), **kw),
                 QuantConv(3, 4, (3, 3), rngs=nnx.Rngs(0), **kw), x)


def test_int8_layers_multiply_int8_codes():
    layer = QuantDense(6, 5, input_format=FX, weight_format=FX, compute="int8",
                       rngs=nnx.Rngs(0))
    jaxpr = str(jax.make_jaxpr(lambda x: layer(x))(jnp.ones((4, 6))))
    assert "i8" in jaxpr and "preferred_element_type=int32" in jaxpr
    assert "i8" not in str(jax.make_jaxpr(
        lambda x: QuantDense(6, 5, rngs=nnx.Rngs(0))(x))(jnp.ones((4, 6))))


def test_int8_layer_checks():
    with pytest.raises(ValueError, match="compute"):
        QuantDense(6, 5, compute="int4", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="input_format"):
        QuantDense(6, 5, weight_format=FX, compute="int8", rngs=nnx.Rngs(0))(jnp.ones((2, 6)))
    with pytest.raises(ValueError, match="feature_group_count"):
        QuantConv(4, 4, (3, 3), feature_group_count=2, compute="int8", input_format=FX,
                  weight_format=FX, rngs=nnx.Rngs(0))
