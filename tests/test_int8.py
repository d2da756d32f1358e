"""Tests for lpsampling.int8: exact int8 × int8 → int32 products of on-grid operands."""

from __future__ import annotations

import functools

import helpers
import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest

import lpsampling as lps
from lpsampling.int8 import (
    MAX_CONTRACTION,
    Int8Operand,
    encode_int8,
    int8_conv,
    int8_conv_encoded,
    int8_matmul,
    int8_matmul_encoded,
    int8_plan,
)

FX = lps.FixedPoint
BFP = lps.BlockFloatingPoint

# (x_format, w_format): every supported layout class of x @ w
MATMUL_LAYOUTS = [
    (FX(8, 4), FX(8, 6)),
    (FX(8, 8), FX(6, 3, symmetric=True)),
    (BFP(8, axis=0), BFP(8, axis=-1)),
    (BFP(8, axis=None), BFP(8, axis=None)),
    (BFP(8, axis=0), BFP(8, axis=None)),
    (FX(8, 5), BFP(8, axis=-1)),
    (BFP(6, axis=0), BFP(7, axis=1)),
]


# Every product, rounding and encoding below runs through one jitted function per
# (formats, shapes): compiling one small program is about twice as fast on CPU as compiling
# each of the dozens of primitives of an eager call, and the cases share shapes (16×37 @
# 37×9, 3×8×8×5 ⊛ 3×3×5×4) so that the compiled programs are reused across tests.
_matmul = jax.jit(int8_matmul, static_argnums=(2, 3), static_argnames=("error_format",))
_conv = jax.jit(int8_conv, static_argnums=(2, 3), static_argnames=(
    "strides", "padding", "kernel_dilation", "error_format"))
_encode = jax.jit(encode_int8, static_argnums=1)
_jit_nearest = jax.jit(helpers.nearest, static_argnums=1)


def _nearest(x, fmt):
    return _jit_nearest(jnp.asarray(x, jnp.float32), fmt)


def _operands(x_shape, w_shape, xf, wf, seed=0):
    kx, kw = jax.random.split(jax.random.key(seed))
    # magnitudes spread over several binades, so block exponents differ between blocks
    x = jax.random.normal(kx, x_shape) * 2.0 ** jax.random.randint(kx, x_shape[:-1] + (1,),
                                                                   -3, 3)
    w = 0.3 * jax.random.normal(kw, w_shape) * 2.0 ** jax.random.randint(kw, (1, w_shape[-1]),
                                                                          -2, 2)
    return _nearest(x, xf), _nearest(w, wf)


def _ref_matmul(x, w):
    """float64 product (exact: every row·column sum is an integer multiple of one power of
    two below 2**53), rounded once to float32."""
    return (np.asarray(x, np.float64) @ np.asarray(w, np.float64)).astype(np.float32)


def _assert_bits(actual, expected):
    np.testing.assert_array_equal(np.asarray(actual), np.asarray(expected))


# --------------------------------------------------------------------------- exactness


# every layout on one shape; the paper's layouts (first four) on every shape class: batch
# dims and a 1-D x (the same w, so its rounding is compiled once). A contraction of k = 5000,
# whose int32 sums exceed 2**24, is test_matmul_saturated_codes_round_once.
SHAPES = [((16, 37), 9), ((2, 3, 37), 9), ((37,), 9)]
MATMUL_CASES = ([(xf, wf, SHAPES[0]) for xf, wf in MATMUL_LAYOUTS]
                + [(xf, wf, s) for xf, wf in MATMUL_LAYOUTS[:4] for s in SHAPES[1:]
                   if not (isinstance(xf, BFP) and xf.axis == 0 and len(s[0]) == 1)])


@pytest.mark.parametrize("xf,wf,shape", MATMUL_CASES, ids=repr)
def test_matmul_exact_against_float64(xf, wf, shape):
    x_shape, n = shape
    x, w = _operands(x_shape, (x_shape[-1], n), xf, wf)
    y = _matmul(x, w, xf, wf)
    assert y.dtype == jnp.float32 and y.shape == x_shape[:-1] + (n,)
    _assert_bits(y, _ref_matmul(x, w))


@pytest.mark.parametrize("xf,wf", [(FX(8, 4), FX(8, 4)), (BFP(8, axis=0), BFP(8, axis=-1))],
                         ids=repr)
def test_matmul_saturated_codes_round_once(xf, wf):
    # every code at its extreme: the int32 sum 127·127·5000 (fixed point: 128·128·5000 too)
    # exceeds 2**24, so the float32 result is the exact sum rounded once
    k = 5000
    top = 127 * 2.0**-4 if isinstance(xf, FX) else 127.0 / 128
    lo = -128 * 2.0**-4 if isinstance(xf, FX) else -top
    x = jnp.stack([jnp.full((k,), top), jnp.full((k,), lo),
                   jnp.where(jnp.arange(k) % 3 == 0, lo, top)]).astype(jnp.float32)
    w = jnp.stack([jnp.full((k,), top), jnp.full((k,), lo)], axis=1).astype(jnp.float32)
    x, w = _nearest(x, xf), _nearest(w, wf)
    cx = np.asarray(_encode(x, xf).codes, np.int64)
    cw = np.asarray(_encode(w, wf).codes, np.int64)
    assert np.abs(cx).max() in (127, 128) and np.abs(cw).max() in (127, 128)
    assert np.abs(cx @ cw).max() > 2**24  # the int32 sums really exceed float32's 2**24
    _assert_bits(_matmul(x, w, xf, wf), _ref_matmul(x, w))


def test_matmul_all_zero_blocks():
    xf, wf = BFP(8, axis=0), BFP(8, axis=-1)
    x, w = _operands((16, 37), (37, 9), xf, wf)
    x = x.at[2].set(0.0).at[4].set(1e-42)  # zero and float32-subnormal blocks: no grid
    w = w.at[:, 1].set(0.0)
    y = _matmul(x, w, xf, wf)
    _assert_bits(y, _ref_matmul(_nearest(x, xf), w))
    assert not np.asarray(y[2]).any() and not np.asarray(y[:, 1]).any()


def test_operands_are_rounded_to_nearest():
    xf, wf = BFP(8, axis=0), FX(8, 6)
    kx, kw = jax.random.split(jax.random.key(3))
    x, w = jax.random.normal(kx, (16, 37)), jax.random.normal(kw, (37, 9))
    want = _ref_matmul(_nearest(x, xf), _nearest(w, wf))
    _assert_bits(_matmul(x, w, xf, wf), want)
    _assert_bits(int8_matmul(x, w, xf, wf), want)  # and eagerly, op by op


def test_encode_matches_the_formats_codes():
    x = jax.random.normal(jax.random.key(1), (6, 5, 7))
    x = x * jnp.array([0, 1e-40, 1, 100, 1e-30, 3])[:, None, None]
    x = x.at[3, 0, 0].set(1e6).at[5, 1, 1].set(jnp.inf)
    # carry=True changes stochastic rounding only: the int8 codes are the same
    for fmt in [FX(8, 4), FX(6, 3, symmetric=True), BFP(8, axis=0), BFP(8, axis=None),
                BFP(5, axis=-1), BFP(8, axis=1), BFP(8, axis=0, carry=True)]:
        op = _encode(x, fmt)
        q = _nearest(x, fmt)
        c, _ = jax.jit(fmt.encode)(q)
        assert op.codes.dtype == jnp.int8
        np.testing.assert_array_equal(np.asarray(op.codes, np.int32), np.asarray(c))
        q = np.asarray(q)
        v = np.asarray(op.codes, np.float64) * 2.0 ** np.asarray(op.exponent, np.float64)
        np.testing.assert_array_equal(v, q)


def test_nonfinite_operands_give_nan():
    xf, wf = BFP(8, axis=0), BFP(8, axis=-1)
    x, w = _operands((16, 37), (37, 9), xf, wf)
    assert np.isnan(np.asarray(_matmul(x.at[1, 2].set(jnp.nan), w, xf, wf))).all()
    assert np.isnan(np.asarray(_matmul(x, w.at[0, 0].set(jnp.inf), xf, wf))).all()


def _np_conv(x, w, strides, pad, dil):
    """float64 NHWC × HWIO convolution, tap by tap (exact for these integer multiples)."""
    x = np.pad(np.asarray(x, np.float64), ((0, 0), pad[0], pad[1], (0, 0)))
    w = np.asarray(w, np.float64)
    kh, kw = w.shape[:2]
    oh = (x.shape[1] - dil[0] * (kh - 1) - 1) // strides[0] + 1
    ow = (x.shape[2] - dil[1] * (kw - 1) - 1) // strides[1] + 1
    y = np.zeros((x.shape[0], oh, ow, w.shape[3]))
    for i in range(kh):
        for j in range(kw):
            a, b = i * dil[0], j * dil[1]
            patch = x[:, a:a + strides[0] * (oh - 1) + 1:strides[0],
                      b:b + strides[1] * (ow - 1) + 1:strides[1]]
            y += np.einsum("nhwc,co->nhwo", patch, w[i, j])
    return y


CONV_LAYOUTS = [(BFP(8, axis=0), BFP(8, axis=-1)), (FX(8, 4), FX(8, 6)),
                (BFP(8, axis=None), BFP(8, axis=None)), (FX(8, 3), BFP(8, axis=-1))]
GEOMETRIES = [  # strides, padding, dilation, explicit pads for the reference
    ((1, 1), "VALID", (1, 1), ((0, 0), (0, 0))),
    ((2, 2), "SAME", (1, 1), ((0, 1), (0, 1))),  # SAME, stride 2, 8 -> 4: pad (0, 1)
    ((1, 2), ((1, 2), (0, 1)), (1, 1), ((1, 2), (0, 1))),
    ((1, 1), 1, (2, 2), ((1, 1), (1, 1))),
]


# every layout on one geometry; the paper's layout on every geometry
CONV_CASES = ([(xf, wf, GEOMETRIES[0]) for xf, wf in CONV_LAYOUTS]
              + [(*CONV_LAYOUTS[0], g) for g in GEOMETRIES[1:]])


@pytest.mark.parametrize("xf,wf,geometry", CONV_CASES, ids=repr)
def test_conv_exact_against_float64(xf, wf, geometry):
    strides, padding, dil, pads = geometry
    x, w = _operands((3, 8, 8, 5), (3, 3, 5, 4), xf, wf)
    x = x.at[1].set(0.0)  # an all-zero example
    y = _conv(x, w, xf, wf, strides=strides, padding=padding, kernel_dilation=dil)
    ref = _np_conv(x, w, strides, pads, dil).astype(np.float32)
    assert y.shape == ref.shape
    _assert_bits(y, ref)


def test_conv_saturated_codes_large_window():
    # a 3×3×600 window: 5400 terms of 127·127, beyond 2**24
    xf, wf = BFP(8, axis=0), BFP(8, axis=-1)
    x = jnp.full((2, 4, 4, 600), 127.0 / 128).at[1].multiply(-1.0)
    w = jnp.full((3, 3, 600, 2), 127.0 / 128)
    y = _conv(x, w, xf, wf, padding="VALID")
    _assert_bits(y, _np_conv(x, w, (1, 1), ((0, 0), (0, 0)), (1, 1)).astype(np.float32))


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("fmt,where,pattern", [
    (BFP(8, axis=-1), "x", "contracted axis 1"),
    (BFP(8, axis=0), "w", "contracted axis 0"),
    (BFP(8, block_size=4), "x", "block_size"),
    (BFP(8, block_size=4), "w", "block_size"),
    (BFP(9, axis=0), "x", "wl <= 8"),
    (FX(12, 8), "w", "wl <= 8"),
    (FX(8, 4, clamp=False), "x", "clamp=True"),
    (lps.FloatingPoint(4, 3), "x", "only FixedPoint"),
    (lps.FULL, "w", "only FixedPoint"),
])
def test_matmul_refuses_unsupported_layouts(fmt, where, pattern):
    x, w = jnp.ones((4, 8)), jnp.ones((8, 3))
    xf, wf = (fmt, FX(8, 4)) if where == "x" else (FX(8, 4), fmt)
    with pytest.raises(ValueError, match=pattern) as err:
        int8_matmul(x, w, xf, wf)
    assert repr(fmt) in str(err.value)


def test_conv_refuses_unsupported_layouts():
    x, w = jnp.ones((2, 5, 5, 3)), jnp.ones((3, 3, 3, 4))
    for xf, wf, pattern in [(BFP(8, axis=-1), FX(8, 4), "contracted axis 3"),
                            (BFP(8, axis=1), FX(8, 4), "contracted axis 1"),
                            (FX(8, 4), BFP(8, axis=2), "contracted axis 2"),
                            (FX(8, 4), BFP(8, axis=0), "contracted axis 0")]:
        with pytest.raises(ValueError, match=pattern):
            int8_conv(x, w, xf, wf)
    with pytest.raises(ValueError, match="padding"):
        int8_conv(x, w, FX(8, 4), FX(8, 4), padding="CIRCULAR")


def test_refuses_mismatched_shapes_and_long_contractions():
    with pytest.raises(ValueError, match="do not multiply"):
        int8_matmul(jnp.ones((2, 3)), jnp.ones((4, 5)), FX(8, 4), FX(8, 4))
    k = MAX_CONTRACTION + 1
    with pytest.raises(ValueError, match="int32 accumulator"):
        int8_matmul(jnp.ones((1, k)), jnp.ones((k, 1)), FX(8, 4), FX(8, 4))


# --------------------------------------------------------------------------- the jaxpr


def _int8_products(closed):
    """(primitive, input dtypes, output dtype) of every dot / conv in a jaxpr, nested ones
    included."""
    found = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name in ("dot_general", "conv_general_dilated"):
                found.append((eqn.primitive.name,
                              tuple(str(v.aval.dtype) for v in eqn.invars),
                              str(eqn.outvars[0].aval.dtype)))
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                walk(sub)

    walk(closed.jaxpr)
    return found


def test_jaxpr_has_int8_products():
    xf, wf = BFP(8, axis=0), BFP(8, axis=-1)
    x, w = jnp.ones((4, 8)), jnp.ones((8, 3))
    prods = _int8_products(jax.make_jaxpr(lambda a, b: int8_matmul(a, b, xf, wf))(x, w))
    assert prods == [("dot_general", ("int8", "int8"), "int32")]
    xc, wc = jnp.ones((2, 5, 5, 3)), jnp.ones((3, 3, 3, 4))
    prods = _int8_products(jax.make_jaxpr(lambda a, b: int8_conv(a, b, xf, wf))(xc, wc))
    assert prods == [("conv_general_dilated", ("int8", "int8"), "int32")]
    # fixed point with an error format: all three products of the gradient run in int8
    f = FX(8, 4)

    def loss(a, b):
        return jnp.sum(int8_conv(a, b, f, f, padding="SAME", error_format=f) ** 2)

    prods = _int8_products(jax.make_jaxpr(jax.grad(loss, argnums=(0, 1)))(xc, wc))
    # the forward convolution; the two transposed products as int8 matrix products
    # (XLA:CPU has no fast int8 kernel for the transposed convolutions)
    assert prods == [("conv_general_dilated", ("int8", "int8"), "int32")] + [
        ("dot_general", ("int8", "int8"), "int32")] * 2
    # and no float product at all: every product of the gradient is int8 x int8 -> int32
    assert all(p[1] == ("int8", "int8") for p in prods)


# --------------------------------------------------------------------------- gradients


def test_gradients_straight_through_without_error_format():
    xf, wf = BFP(8, axis=0), BFP(8, axis=-1)
    kx, kw, kh = jax.random.split(jax.random.key(5), 3)
    x, w = jax.random.normal(kx, (6, 20)), jax.random.normal(kw, (20, 4))
    head = jax.random.normal(kh, (6, 4))

    def sim(a, b):  # today's simulated path: quantize (straight-through), float32 product
        return (lps.quantize(a, xf, rounding="nearest")
                @ lps.quantize(b, wf, rounding="nearest"))

    gi = jax.jit(jax.grad(lambda a, b: jnp.sum(head * int8_matmul(a, b, xf, wf)),
                          (0, 1)))(x, w)
    gs = jax.jit(jax.grad(lambda a, b: jnp.sum(head * sim(a, b)), (0, 1)))(x, w)
    for a, b in zip(gi, gs, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    assert int8_plan("dense", x.shape, w.shape, xf, wf, BFP(8, axis=0)) == {
        "forward": "int8", "dx": "float32", "dw": "float32"}


@pytest.mark.parametrize("fmt", [FX(8, 4), BFP(8, axis=None), BFP(8, axis=None, carry=True)],
                         ids=repr)
def test_gradients_in_int8_equal_the_simulated_errors(fmt):
    """With an error format the cotangent is rounded onto it, as the Quantize after a layer
    does; the int8 backward products are then the exact ones, rounded once."""
    ef = FX(8, 6) if isinstance(fmt, FX) else fmt
    kx, kw, kh = jax.random.split(jax.random.key(6), 3)
    x = _nearest(jax.random.normal(kx, (3, 5, 24)), fmt)
    w = _nearest(0.5 * jax.random.normal(kw, (24, 7)), fmt)
    head = jax.random.normal(kh, (3, 5, 7))
    (dx, dw), g = jax.jit(jax.grad(
        lambda a, b: jnp.sum(head * int8_matmul(a, b, fmt, fmt, error_format=ef)),
        (0, 1)))(x, w), _nearest(head, ef)
    assert int8_plan("dense", x.shape, w.shape, fmt, fmt, ef) == dict.fromkeys(
        ("forward", "dx", "dw"), "int8")
    g64, w64, x64 = (np.asarray(a, np.float64) for a in (g, w, x))
    _assert_bits(dx, (g64 @ w64.T).astype(np.float32))
    _assert_bits(dw, np.einsum("btk,btn->kn", x64, g64).astype(np.float32))


def test_conv_gradients_int8_and_float32():
    f = FX(8, 4)
    kx, kw, kh = jax.random.split(jax.random.key(7), 3)
    x = _nearest(jax.random.normal(kx, (2, 7, 7, 3)), f)
    w = _nearest(0.5 * jax.random.normal(kw, (3, 3, 3, 4)), f)
    head = _nearest(jax.random.normal(kh, (2, 4, 4, 4)), f)  # the error, on its grid

    def conv(a, b):  # sums of at most 98 products of 127·127: exact in float32
        return jax.lax.conv_general_dilated(a, b, (2, 2), ((1, 1), (1, 1)),
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    ref = jax.jit(jax.grad(lambda a, b: jnp.sum(head * conv(a, b)), (0, 1)))(x, w)
    for ef in (f, lps.FULL):  # int8 backward, float32 backward
        got = jax.jit(jax.grad(lambda a, b, ef=ef: jnp.sum(head * int8_conv(
            a, b, f, f, strides=2, padding="SAME", error_format=ef)), (0, 1)))(x, w)
        for a, b in zip(got, ref, strict=True):
            _assert_bits(a, b)
    plan = int8_plan("conv", x.shape, w.shape, BFP(8, axis=0), BFP(8, axis=-1),
                     BFP(8, axis=0), out_shape=(2, 4, 4, 4))
    assert plan == {"forward": "int8", "dx": "float32", "dw": "float32"}


@pytest.mark.parametrize("strides,padding,dil", [
    ((1, 1), "SAME", (1, 1)), ((2, 2), "SAME", (1, 1)), ((1, 1), "VALID", (2, 2)),
    ((2, 3), ((2, 0), (0, 3)), (1, 2)), ((1, 1), ((-1, 1), (1, -1)), (1, 1)),
    ((3, 1), ((1, 1), (1, 1)), (2, 1)),
], ids=str)
def test_conv_transposed_products_exact_on_codes(strides, padding, dil):
    # The int8 backward products (im2col / scatter-add on the codes) against XLA's float32
    # transposed convolutions of the same integers: sums of at most 2·9·9·3 products of
    # |127·127| < 2**24, so the float32 reference is exact and equality must be bitwise.
    from lpsampling.int8 import (
        _conv_input_grad_codes,
        _conv_kernel_grad_codes,
        _conv_params,
    )

    rng = np.random.default_rng(11)
    x = rng.integers(-127, 128, (2, 9, 8, 3)).astype(np.int8)
    w = rng.integers(-127, 128, (3, 3, 3, 4)).astype(np.int8)
    st, pad, dl = _conv_params(x.shape, w.shape, strides, padding, dil)

    def conv(a, b):
        return jax.lax.conv_general_dilated(a, b, st, pad, rhs_dilation=dl,
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    y, vjp = jax.vjp(conv, x.astype(np.float32), w.astype(np.float32))
    g = rng.integers(-127, 128, y.shape).astype(np.int8)
    ref_dx, ref_dw = vjp(g.astype(np.float32))
    dx = jax.jit(_conv_input_grad_codes, static_argnums=(2, 3, 4, 5))(g, w, x.shape, st, pad, dl)
    dw = jax.jit(_conv_kernel_grad_codes, static_argnums=(2, 3, 4, 5))(g, x, w.shape, st, pad, dl)
    assert dx.dtype == dw.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(dx), np.asarray(ref_dx).astype(np.int64))
    np.testing.assert_array_equal(np.asarray(dw), np.asarray(ref_dw).astype(np.int64))


# --------------------------------------------------------------------------- encoded operands


def test_encoded_operands_from_packed_and_vmap():
    xf, wf = BFP(8, axis=0), BFP(8, axis=-1)
    x, w = _operands((16, 37), (37, 9), xf, wf)
    y = _matmul(x, w, xf, wf)
    pack = jax.jit(lps.pack, static_argnums=1)
    wo = Int8Operand.from_packed(pack(w, wf))
    _assert_bits(int8_matmul_encoded(_encode(x, xf), wo), y)
    # a stack of packed kernels (as a bank leaf): map over the stack
    ws = jnp.stack([w, 2 * w, -w])
    stack = lps.storage.Packed(*jax.jit(jax.vmap(lambda a: tuple(
        (lambda p: (p.codes, p.exponents))(lps.pack(a, wf)))))(ws), wf, w.shape, "float32")
    ys = jax.jit(jax.vmap(int8_matmul_encoded, in_axes=(None, 0)))(
        _encode(x, xf), Int8Operand.from_packed(stack))
    for i in range(3):
        _assert_bits(ys[i], _ref_matmul(x, ws[i]))
    # conv from packed
    xc, wc = _operands((3, 8, 8, 5), (3, 3, 5, 4), xf, wf)
    conv = jax.jit(functools.partial(int8_conv_encoded, padding="SAME"))
    _assert_bits(conv(_encode(xc, xf), Int8Operand.from_packed(pack(wc, wf))),
                 _conv(xc, wc, xf, wf, padding="SAME"))
    with pytest.raises(ValueError, match="4-bit"):
        Int8Operand.from_packed(lps.pack(w, BFP(4, axis=-1)))
