"""Tests for lpsampling.flax.layers: the Quantize layer and QuantConfig."""

from __future__ import annotations

import dataclasses

import flax.errors
import flax.linen as nn
import helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lpsampling as lps
from lpsampling.flax import (
    QuantConfig,
    Quantize,
    count_quantizers,
    quantize_calls,
)

FIXED = lps.FixedPoint(8, 6)
BFP = lps.BlockFloatingPoint(8)
FORMATS = [FIXED, BFP]


on_grid = helpers.on_grid


def _x(shape=(8, 16), seed=0, scale=1.5):
    return scale * jax.random.normal(jax.random.key(seed), shape)


def _grad_through(layer: Quantize, x, head, rngs):
    """d/dx sum(head * layer(x)): the error the layer passes upstream."""
    return jax.grad(lambda x: jnp.sum(head * layer.apply({}, x, rngs=rngs)))(x)


# --------------------------------------------------------------------------- forward


def test_full_is_identity_and_needs_no_rng():
    layer = Quantize()
    assert layer.is_identity and not layer.needs_rng
    x = _x()
    assert layer.init(jax.random.key(0), x) == {}
    np.testing.assert_array_equal(layer.apply({}, x), x)
    g = _grad_through(layer, x, _x(seed=1), rngs=None)
    np.testing.assert_array_equal(g, _x(seed=1))


@pytest.mark.parametrize("fmt", FORMATS, ids=repr)
def test_forward_stochastic_on_grid_and_close(fmt):
    x = _x()
    out = Quantize(fmt).apply({}, x, rngs={"quantize": jax.random.key(3)})
    assert out.shape == x.shape and out.dtype == x.dtype
    assert on_grid(out, fmt)
    gap = lps.grid_gap(x, fmt)
    lo, hi = (fmt.min_value, fmt.max_value) if isinstance(fmt, lps.FixedPoint) else (-9, 9)
    assert bool(jnp.all(jnp.abs(out - jnp.clip(x, lo, hi)) <= gap))


@pytest.mark.parametrize("fmt", FORMATS, ids=repr)
def test_nearest_needs_no_rng_and_matches_quantize(fmt):
    layer = Quantize(fmt, fmt, rounding="nearest")
    assert not layer.needs_rng
    x = _x()
    out = layer.apply({}, x)  # no rngs at all
    np.testing.assert_array_equal(out, lps.quantize(x, fmt, rounding="nearest"))


def test_stochastic_without_rng_raises():
    with pytest.raises(flax.errors.InvalidRngError, match="quantize"):
        Quantize(FIXED).apply({}, _x())


def test_custom_rng_collection():
    layer = Quantize(FIXED, rng_collection="act")
    x = _x()
    out = layer.apply({}, x, rngs={"act": jax.random.key(0)})
    assert on_grid(out, FIXED)
    with pytest.raises(flax.errors.InvalidRngError):
        layer.apply({}, x, rngs={"quantize": jax.random.key(0)})


def test_keys_determine_rounding():
    x = _x()
    layer = Quantize(FIXED)
    a = layer.apply({}, x, rngs={"quantize": jax.random.key(0)})
    b = layer.apply({}, x, rngs={"quantize": jax.random.key(0)})
    c = layer.apply({}, x, rngs={"quantize": jax.random.key(1)})
    np.testing.assert_array_equal(a, b)
    assert not bool(jnp.array_equal(a, c))


def test_each_call_draws_a_fresh_key():
    class Twice(nn.Module):
        @nn.compact
        def __call__(self, x):
            return Quantize(FIXED)(x), Quantize(FIXED)(x)

    x = _x()
    a, b = Twice().apply({}, x, rngs={"quantize": jax.random.key(0)})
    assert on_grid(a, FIXED) and on_grid(b, FIXED)
    assert not bool(jnp.array_equal(a, b))


def test_stochastic_rounding_is_unbiased_through_layer():
    x = jnp.full((64, 256), 0.3, jnp.float32)  # between 0.296875 and 0.3125 for fl=6
    out = Quantize(FIXED).apply({}, x, rngs={"quantize": jax.random.key(5)})
    assert set(np.unique(np.asarray(out)).tolist()) <= {0.296875, 0.3125}
    assert abs(float(out.mean()) - 0.3) < 3e-4  # std of the mean ≈ 5e-5


# --------------------------------------------------------------------------- backward


@pytest.mark.parametrize("rounding", ["stochastic", "nearest"])
@pytest.mark.parametrize("bwd", FORMATS, ids=repr)
@pytest.mark.parametrize("fwd", [lps.FULL, *FORMATS], ids=repr)
def test_error_passed_upstream_is_on_backward_grid(fwd, bwd, rounding):
    x = _x()
    head = _x(seed=7, scale=0.7)  # a random linear head: the incoming cotangent
    layer = Quantize(fwd, bwd, rounding=rounding)
    g = _grad_through(layer, x, head, rngs={"quantize": jax.random.key(11)})
    assert on_grid(g, bwd)
    if rounding == "nearest":
        np.testing.assert_array_equal(g, lps.quantize(head, bwd, rounding="nearest"))
    else:
        lo, hi = (bwd.min_value, bwd.max_value) if bwd == FIXED else (-9, 9)
        assert bool(jnp.all(jnp.abs(g - jnp.clip(head, lo, hi)) <= lps.grid_gap(head, bwd)))
    if not isinstance(fwd, lps.Full):
        assert not on_grid(head, bwd)  # the check above is not vacuous


def test_full_backward_passes_error_unchanged():
    x, head = _x(), _x(seed=1)
    g = _grad_through(Quantize(FIXED, lps.FULL), x, head, {"quantize": jax.random.key(0)})
    np.testing.assert_array_equal(g, head)


def test_block_floating_point_error_has_one_exponent_per_example():
    # Rows of very different scale: each row keeps its own exponent (axis=0 blocks).
    x = _x()
    head = _x(seed=2).at[1].multiply(1e-3)
    g = _grad_through(Quantize(lps.FULL, BFP), x, head, {"quantize": jax.random.key(0)})
    assert on_grid(g, BFP)
    assert int(jnp.sum(g[1] != 0)) > 12  # a shared exponent would flush the small row


def test_jit_and_dtype():
    layer = Quantize(BFP, BFP)
    x = _x().astype(jnp.bfloat16)
    f = jax.jit(lambda x, k: layer.apply({}, x, rngs={"quantize": k}))
    out = f(x, jax.random.key(0))
    assert out.dtype == jnp.bfloat16
    assert on_grid(out, BFP)
    np.testing.assert_array_equal(out, layer.apply({}, x, rngs={"quantize": jax.random.key(0)}))


# --------------------------------------------------------------------------- QuantConfig


def test_quant_config():
    full = QuantConfig.full()
    assert full == QuantConfig() and full.is_full and not full.needs_rng
    q = QuantConfig.uniform(BFP)
    assert q.activation_format == q.error_format == BFP
    assert q.needs_rng and not q.is_full
    assert not QuantConfig(FIXED, rounding="nearest").needs_rng
    assert QuantConfig(FIXED).needs_rng  # activations only
    hash(q)
    with pytest.raises(dataclasses.FrozenInstanceError):
        q.rounding = "nearest"
    with pytest.raises(ValueError, match="rounding"):
        QuantConfig(FIXED, FIXED, "up")
    with pytest.raises(TypeError, match="activation_format"):
        QuantConfig(8)
    layer = QuantConfig(FIXED, BFP, "nearest").layer()
    assert (layer.forward_format, layer.backward_format, layer.rounding) == (
        FIXED,
        BFP,
        "nearest",
    )


def test_quantize_calls_records_order_and_shapes():
    class Toy(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool):
            x = Quantize(FIXED, name="a")(x)
            x = nn.Dense(3)(x)
            x = Quantize(name="b")(x)  # identity layers are recorded too
            return x

    calls = quantize_calls(Toy(), jnp.zeros((2, 5)), train=True)
    assert [c.name for c in calls] == ["a", "b"]
    assert [c.shape for c in calls] == [(2, 5), (2, 3)]
    assert calls[0].forward_format == FIXED and calls[1].forward_format == lps.FULL
    assert count_quantizers(Toy(), jax.ShapeDtypeStruct((7, 5), jnp.float32), train=False) == 2


# --------------------------------------------------------------------------- QuantDense / QuantConv

from lpsampling.flax import Int8Product, QuantConv, QuantDense, int8_products  # noqa: E402

BFP_W, BFP_A = lps.BlockFloatingPoint(8, axis=-1), lps.BlockFloatingPoint(8, axis=0)
_DENSE = (QuantDense, nn.Dense, dict(features=5))
_CONV = (QuantConv, nn.Conv, dict(features=4, kernel_size=(3, 3), padding="SAME"))


def _int8_dots(closed):
    """Input and output dtypes of every dot / conv of a jaxpr (nested ones included)."""
    import jax.extend.core

    found = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name in ("dot_general", "conv_general_dilated"):
                found.append(tuple(str(v.aval.dtype) for v in (*eqn.invars, *eqn.outvars)))
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                walk(sub)

    walk(closed.jaxpr)
    return found


@pytest.mark.parametrize("layer", [_DENSE, _CONV], ids=["dense", "conv"])
def test_quant_layers_float32_are_the_flax_layers(layer):
    cls, ref, kw = layer
    x = _x((3, 6, 6, 2))
    v, vr = cls(**kw).init(jax.random.key(1), x), ref(**kw).init(jax.random.key(1), x)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), v, vr))
    np.testing.assert_array_equal(cls(**kw, weight_format=BFP_W, input_format=BFP_A)
                                  .apply(v, x), ref(**kw).apply(vr, x))


@pytest.mark.parametrize("layer", [_DENSE, _CONV], ids=["dense", "conv"])
def test_quant_layers_int8_from_float_and_packed_kernels(layer):
    cls, ref, kw = layer
    x = helpers.nearest(_x((3, 6, 6, 2)), BFP_A)
    params = ref(**kw).init(jax.random.key(1), x)["params"]
    params = jax.tree.map(lambda a: helpers.nearest(a, BFP_W), params)
    m = cls(**kw, weight_format=BFP_W, input_format=BFP_A, compute="int8")
    y = m.apply({"params": params}, x)
    y_sim = ref(**kw).apply({"params": params}, x)
    # exact product rounded once vs float32 sums: a few float32 ulps of the largest term
    np.testing.assert_allclose(y, y_sim, rtol=0, atol=1e-5 * float(jnp.abs(y_sim).max()))
    packed = jax.tree.map(lambda a: lps.pack(a, BFP_W), params)
    np.testing.assert_array_equal(m.apply({"params": packed}, x), y)
    dots = _int8_dots(jax.make_jaxpr(lambda p: m.apply({"params": p}, x))(packed))
    assert dots == [("int8", "int8", "int32")]
    # a bank's stacked leaf is refused (by Flax's shape check): map over samples instead
    stack = jax.tree.map(lambda a: lps.pack(jnp.stack([a, a]), BFP_W), params)
    with pytest.raises(flax.errors.ScopeParamShapeError):
        m.apply({"params": stack}, x)


def test_quant_layers_refuse_what_cannot_run_int8():
    x = _x((3, 6, 6, 2))
    with pytest.raises(ValueError, match="compute"):
        QuantDense(4, compute="int16").init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="input_format FULL"):
        QuantDense(4, weight_format=BFP_W, compute="int8").init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="contracted axis"):
        QuantConv(4, (3, 3), weight_format=BFP_W, input_format=lps.BlockFloatingPoint(8, -1),
                  compute="int8").init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="feature_group_count"):
        QuantConv(4, (3, 3), feature_group_count=2, weight_format=BFP_W,
                  input_format=BFP_A, compute="int8").init(jax.random.key(0), x)


def test_int8_products_reports_each_product():
    fx = lps.FixedPoint(8, 4)

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.Conv(3, (3, 3), name="stem")(x)
            x = QuantConv(3, (3, 3), weight_format=BFP_W, input_format=BFP_A,
                          error_format=BFP_A, compute="int8", name="bfp")(x)
            x = x.reshape((x.shape[0], -1))
            return QuantDense(2, weight_format=fx, input_format=fx, error_format=fx,
                              compute="int8", name="fixed")(x)

    got = int8_products(Net(), jnp.zeros((2, 8, 8, 1)))
    assert got == [
        Int8Product(("stem",), "conv", "float32", "float32", "float32", "float32"),
        Int8Product(("bfp",), "conv", "int8", "int8", "float32", "float32"),
        Int8Product(("fixed",), "dense", "int8", "int8", "int8", "int8"),
    ]
