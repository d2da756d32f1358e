"""Real int8 compute: matrix products and convolutions of 8-bit operands as int8 × int8 → int32.

A value of an 8-bit format is an integer code times a power of two: fixed point
``c · 2**-fl``, block floating point ``c · 2**(e + 2 - wl)`` with one exponent ``e`` per
block. When the exponent of each operand does not vary along the contracted axes (blocks
per row of ``x`` and per column of ``w``), it factors out of the product::

    x · W = diag(2**k_x) · (C_x · C_w) · diag(2**k_w)

so the codes are multiplied as ``int8`` with ``int32`` accumulation
(``lax.dot_general`` / ``lax.conv_general_dilated`` with
``preferred_element_type=int32``) and the scales are applied once.

**Exactness.** Each code product is at most ``128 · 128 = 2**14`` in magnitude, so the
``int32`` accumulator is exact for a contraction of up to ``2**17 - 1 = 131071`` terms
(:data:`MAX_CONTRACTION`; longer ones are refused). Converting the ``int32`` sum to
``float32`` rounds once (to nearest, ties to even; exact below ``2**24``), and multiplying by
the power of two ``2**(k_x + k_w)`` is exact unless the result leaves float32's normal
range (overflow to inf, or a subnormal, which XLA on CPU flushes to zero). So the result
is the exact product of the two on-grid operands rounded once to float32: never less
accurate than the simulated float32 product of the same operands, whose sum rounds at
every addition.

**Operands.** :func:`int8_matmul` and :func:`int8_conv` round float operands to nearest
onto their formats first (the identity for values already on the grid, as the samplers'
weights and :class:`~lpsampling.flax.Quantize` outputs are) and encode them with the
formats' own :meth:`~lpsampling.formats.Format.encode`. :func:`int8_matmul_encoded` and
:func:`int8_conv_encoded` take already-encoded :class:`Int8Operand` s (codes and gap
exponents), e.g. :meth:`Int8Operand.from_packed` of a :class:`lpsampling.storage.Packed`
leaf of a sample bank, so stored codes are multiplied without being decoded.

**Supported layouts.** ``FixedPoint(wl <= 8, fl)`` (clamped) and
``BlockFloatingPoint(wl <= 8)`` whose exponent does not vary along the contracted axes:
for ``x @ w``, ``x`` with ``axis=0`` (one exponent per example) or ``axis=None`` (whole
tensor) and ``w`` with ``axis=-1`` (one per output column, Flax's ``(in, out)`` layout) or
``axis=None``; for convolutions, NHWC activations with ``axis=0`` or None and HWIO kernels
with ``axis=-1`` (one per output filter) or None. Blocks along a contracted axis,
``block_size`` blocks, floating-point formats, ``FULL``, unclamped fixed point and word
lengths above 8 are refused with a ``ValueError`` naming the layout (:func:`check_int8`).

**Gradients** (reverse mode, ``custom_vjp``). Straight-through, as the simulated path: the
rounding of the operands passes the cotangent unchanged, so with ``y = x_q · w_q``,
``dx = g · w_qᵀ`` and ``dw = x_qᵀ · g`` with the on-grid operands. When an 8-bit
``error_format`` is given (the error arrives on that grid, as the
:class:`~lpsampling.flax.Quantize` after a layer puts it; it is rounded to nearest,
the identity then) each backward product whose exponents also factor runs in int8;
the others run in float32 exactly as today:

=====================================  ===========  ==============  ==============
operand formats                         forward      ``dx = g·wᵀ``   ``dw = xᵀ·g``
=====================================  ===========  ==============  ==============
fixed point x, w, error                 int8         int8            int8
whole-tensor BFP x, w, error            int8         int8            int8
per-example x/error, per-column w       int8         float32         float32
(the paper's ``bfp8``)
any of the above, no error format       int8         float32         float32
=====================================  ===========  ==============  ==============

``dx`` factors when ``w``'s exponent is constant along its output axis and the error's
along its last axis; ``dw`` when the exponents of ``x`` and of the error are constant
along the batch axes. :func:`int8_plan` reports the choice for given shapes and formats.
A convolution's two int8 backward products run as int8 matrix products (im2col; for a
strided input gradient, one product and a strided scatter-add of the kernel taps), not as
XLA's transposed convolutions, which have no fast int8 kernel on CPU; both are exact.

Operands with NaN or ±inf give an all-NaN result (codes cannot hold them); the check is one
fused ``sum(x · 0)`` per float operand.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lpsampling.formats import (
    FULL,
    NO_GRID,
    ZERO_BLOCK_EXPONENT,
    BlockFloatingPoint,
    FixedPoint,
    Format,
    check_format,
    round_scaled,
    scale_pow2,
)
from lpsampling.formats._core import (
    _F32_MAX,
    _F32_MIN_NORMAL_EXP,
    _float_to_int_codes,
    float_exponent,
)
from lpsampling.formats.block import _block_expand, _block_reduce_max
from lpsampling.quantize import check_float_array

__all__ = [
    "MAX_CONTRACTION",
    "CONV_DIMENSION_NUMBERS",
    "Int8Operand",
    "check_int8",
    "check_int8_word",
    "int8_capable",
    "encode_int8",
    "int8_matmul",
    "int8_matmul_encoded",
    "int8_conv",
    "int8_conv_encoded",
    "int8_plan",
]

#: The longest contraction whose int32 accumulator is exact: ``(2**31 - 1) // 128**2``.
MAX_CONTRACTION = (2**31 - 1) // 128**2

#: The convolution layout of :func:`int8_conv` (Flax's): NHWC activations, HWIO kernels.
CONV_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")

# the gap exponent + wl of an all-zero block, as decoded from its stored exponent
_ZERO_BLOCK_GAP = ZERO_BLOCK_EXPONENT + 2

_INT8 = "int8"
_F32 = "float32"


class Int8Operand(NamedTuple):
    """An operand as int8 codes and gap exponents: the value is ``codes · 2**exponent``.

    ``exponent`` is int32 and broadcasts against ``codes`` (same number of dimensions, or a
    scalar for fixed point). For an all-zero block of block floating point the codes are
    0 and the exponent is irrelevant (it stays finite). A pytree (a named tuple): it can
    be passed through ``jit`` and ``vmap``.
    """

    codes: jax.Array
    exponent: jax.Array

    @classmethod
    def from_packed(cls, packed: Any) -> Int8Operand:
        """The operand stored in a :class:`lpsampling.storage.Packed` leaf, not decoded.

        Works for 8-bit (5 to 8 bits) fixed point and block floating point; extra
        leading (stack) axes of the children are kept, so a whole bank leaf can be
        converted and then mapped over with ``vmap``.
        """
        from lpsampling.storage import Packed

        if not isinstance(packed, Packed):
            raise TypeError(f"from_packed expects a lpsampling.storage.Packed, got "
                            f"{type(packed).__name__}")
        fmt = packed.fmt
        _check_word(fmt, "packed.fmt", packed.shape)
        if fmt.bits <= 4:
            raise ValueError(
                f"packed.fmt {fmt!r} stores two 4-bit codes per byte; int8 products read "
                "one code per byte: unpack it, or store it with 5 to 8 bits")
        codes = jnp.asarray(packed.codes)
        if codes.dtype != jnp.int8:
            raise ValueError(f"packed.codes must be int8, got {codes.dtype}")
        return cls(codes, _gap_exponent(fmt, packed.exponents))


# --------------------------------------------------------------------------------------
# Layout checks.


def _check_word(fmt: Format, name: str, shape: Sequence[int] | None = None) -> None:
    """Refuse formats whose codes are not 8-bit integers with a power-of-two scale."""
    check_format(fmt, name)
    if isinstance(fmt, FixedPoint):
        if fmt.wl > 8 or not fmt.clamp:
            raise ValueError(
                f"{name} {fmt!r} cannot run in int8: fixed point needs wl <= 8 and "
                "clamp=True (its codes must fit in int8)")
        return
    if isinstance(fmt, BlockFloatingPoint):
        if fmt.wl > 8:
            raise ValueError(f"{name} {fmt!r} cannot run in int8: block floating point "
                             "needs wl <= 8")
        if fmt.block_size is not None:
            raise ValueError(
                f"{name} {fmt!r} cannot run in int8: block_size blocks lie along the last "
                "axis; use axis=0 / -1 (per row / column) or axis=None (whole tensor)")
        return
    raise ValueError(
        f"{name} {fmt!r} cannot run in int8: only FixedPoint(wl<=8) and "
        "BlockFloatingPoint(wl<=8) have integer codes with a power-of-two scale")


def check_int8_word(fmt: Format, name: str = "format") -> None:
    """Raise ``ValueError`` (naming ``name``) unless ``fmt`` has int8 codes with a
    power-of-two scale: clamped ``FixedPoint(wl <= 8)`` or ``BlockFloatingPoint(wl <= 8)``
    without ``block_size`` (the block layout is checked per product by :func:`check_int8`)."""
    _check_word(fmt, name)


def _exponent_dims(fmt: Format, shape: Sequence[int]) -> tuple[int, ...]:
    """The axes of a tensor of ``shape`` along which ``fmt``'s exponent varies."""
    if isinstance(fmt, FixedPoint):
        return ()
    es = fmt.exponent_shape(tuple(shape))
    return tuple(i for i, (d, s) in enumerate(zip(es, shape, strict=True))
                 if d != 1 and s != 1)


def check_int8(fmt: Format, shape: Sequence[int], contracted: Sequence[int],
               name: str = "format") -> None:
    """Raise ``ValueError`` unless a tensor of ``shape`` in ``fmt`` can enter an int8
    product that contracts the axes ``contracted``: an 8-bit fixed-point or block
    floating-point format whose exponent does not vary along those axes."""
    _check_word(fmt, name, shape)
    ndim = len(shape)
    contracted = {a % ndim for a in contracted} if ndim else set()
    bad = sorted(set(_exponent_dims(fmt, shape)) & contracted)
    if bad:
        raise ValueError(
            f"{name} {fmt!r} cannot run in int8 on a tensor of shape {tuple(shape)}: its "
            f"blocks lie along the contracted axis {bad[0]}, so the block exponents do not "
            "factor out of the product; activations need one exponent per example "
            "(axis=0) or per tensor (axis=None), weights one per output column / filter "
            "(axis=-1) or per tensor (axis=None)")


def int8_capable(fmt: Format, shape: Sequence[int], contracted: Sequence[int]) -> bool:
    """Whether :func:`check_int8` accepts ``fmt`` for this shape and contraction."""
    try:
        check_int8(fmt, shape, contracted)
    except (ValueError, TypeError):
        return False
    return True


def _check_contraction(n: int, what: str) -> None:
    if n > MAX_CONTRACTION:
        raise ValueError(
            f"{what}: a contraction of {n} terms may overflow the int32 accumulator "
            f"(at most {MAX_CONTRACTION} = (2**31 - 1) // 128**2 terms are exact)")


# --------------------------------------------------------------------------------------
# Encoding (the formats' own rounding and codes).


def _gap_exponent(fmt: Format, stored: jax.Array | None) -> jax.Array:
    """Stored exponents (block floating point: ``e`` per block, int8) -> gap exponents."""
    if isinstance(fmt, FixedPoint):
        return jnp.asarray(-fmt.fl, jnp.int32)
    # all-zero blocks store -128: their codes are 0, and the gap exponent stays finite
    return jnp.asarray(stored, jnp.int32) + (2 - fmt.wl)


def encode_int8(x: jax.Array, fmt: Format) -> Int8Operand:
    """Round float ``x`` to nearest onto ``fmt`` and encode it as an :class:`Int8Operand`.

    The format's own grid kernel, stopped at the integer codes: the gap exponents ``k``
    from :meth:`~lpsampling.formats.Format.grid_exponent`, ``x`` in units of the gap
    (:meth:`~lpsampling.formats.Format.to_units`), rounded half to even
    (:func:`~lpsampling.formats.round_scaled`) and saturated to the format's codes. The
    codes equal :meth:`~lpsampling.formats.Format.encode` of
    ``quantize(x, fmt, rounding="nearest")`` (as :func:`lpsampling.storage.pack` stores
    them; tested), in one reduction and one elementwise pass. ``fmt`` must be 8-bit fixed
    point or block floating point without ``block_size``. NaN gets code 0, and a block
    holding NaN an unspecified exponent (the products turn NaN operands into NaN results
    separately).
    """
    _check_word(fmt, "fmt")
    x = check_float_array(x).astype(jnp.float32)
    if isinstance(fmt, FixedPoint):
        k = jnp.asarray(fmt.grid_exponent(x), jnp.int32)
    else:
        # BlockFloatingPoint.grid_exponent without its NaN-masking pass (a sum and a
        # cond, as costly as the encoding itself): the products turn a NaN operand into
        # a NaN result anyway, so a block holding NaN may get any exponent here.
        m = jnp.minimum(_block_reduce_max(jnp.abs(x), fmt), _F32_MAX)
        e = _block_expand(float_exponent(m), x.shape, fmt)
        k = jnp.where(e < _F32_MIN_NORMAL_EXP, NO_GRID, e + 2 - fmt.wl)
    if isinstance(fmt, FixedPoint):
        lo, hi = fmt.min_code, fmt.max_code
    else:
        lo, hi = -fmt.max_code, fmt.max_code
        # an all-zero (or float32-subnormal) block has no grid: code 0 at a finite exponent
        zero = k == NO_GRID
        k = jnp.where(zero, _ZERO_BLOCK_GAP - fmt.wl, k)
        x = jnp.where(zero, 0.0, x)
    r = round_scaled(fmt.to_units(x, k), "nearest", None)
    codes = _float_to_int_codes(r, lo, hi).astype(jnp.int8)
    if k.ndim:  # one exponent per block, as the stored exponents
        k = _block_min(k, fmt.exponent_shape(x.shape))
    return Int8Operand(codes, k)


def _block_min(k: jax.Array, block_shape: tuple[int, ...]) -> jax.Array:
    """Per-element gap exponents (constant within each block) -> one per block."""
    axes = tuple(i for i, (b, s) in enumerate(zip(block_shape, k.shape, strict=True))
                 if b == 1 and s != 1)
    return jnp.min(k, axis=axes, keepdims=True) if axes else k


def _nonfinite(x: jax.Array) -> jax.Array:
    """0.0 if ``x`` is finite, NaN otherwise (one fused reduction)."""
    return jnp.sum(x * 0.0, dtype=jnp.float32)


def _decode(op: Int8Operand) -> jax.Array:
    """The float32 values of an operand (exact)."""
    return scale_pow2(op.codes.astype(jnp.float32), op.exponent)


def _varying(e: jax.Array, codes_shape: Sequence[int]) -> tuple[int, ...]:
    """The axes along which an exponent array (broadcastable to ``codes_shape``) varies."""
    if e.ndim == 0:
        return ()
    return tuple(i for i, (d, s) in enumerate(zip(e.shape, codes_shape, strict=True))
                 if d != 1 and s != 1)


# --------------------------------------------------------------------------------------
# Matrix products.


def _free_exponent(e: jax.Array, shape: Sequence[int], contract: Sequence[int]) -> jax.Array:
    """An operand's exponent with its contracted axes removed (they have size 1)."""
    if e.ndim == 0:
        return e
    e = jnp.broadcast_to(e, tuple(1 if d == 1 else s for d, s in zip(e.shape, shape,
                                                                       strict=True)))
    return jnp.squeeze(e, axis=tuple(contract)) if contract else e


def _factored_dot(a: Int8Operand, b: Int8Operand, contract_a: Sequence[int],
                  contract_b: Sequence[int]) -> jax.Array:
    """``sum over contracted axes of a · b`` in int8 × int8 → int32, scaled once (float32).

    Output axes: ``a``'s free axes, then ``b``'s (as ``lax.dot_general``). The exponents
    must not vary along the contracted axes (checked by the callers).
    """
    ca = tuple(i % a.codes.ndim for i in contract_a)
    cb = tuple(i % b.codes.ndim for i in contract_b)
    n = int(np.prod([a.codes.shape[i] for i in ca], dtype=np.int64))
    _check_contraction(n, "int8 product")
    acc = jax.lax.dot_general(a.codes, b.codes, ((ca, cb), ((), ())),
                              preferred_element_type=jnp.int32)
    ea = _free_exponent(a.exponent, a.codes.shape, ca)
    eb = _free_exponent(b.exponent, b.codes.shape, cb)
    na = a.codes.ndim - len(ca)
    nb = b.codes.ndim - len(cb)
    if ea.ndim:
        ea = ea.reshape(ea.shape + (1,) * nb)
    if eb.ndim:
        eb = eb.reshape((1,) * na + eb.shape)
    return scale_pow2(acc.astype(jnp.float32), ea + eb)


def _check_encoded(op: Any, name: str) -> Int8Operand:
    if not isinstance(op, Int8Operand):
        raise TypeError(f"{name} must be an Int8Operand (codes, exponent), got "
                        f"{type(op).__name__}")
    if op.codes.dtype != jnp.int8:
        raise TypeError(f"{name}.codes must be int8, got {op.codes.dtype}")
    if op.exponent.ndim not in (0, op.codes.ndim):
        raise ValueError(f"{name}.exponent of shape {op.exponent.shape} does not broadcast "
                         f"against codes of shape {op.codes.shape}")
    return op


def _check_factors(op: Int8Operand, contract: Sequence[int], name: str) -> None:
    bad = sorted(set(_varying(op.exponent, op.codes.shape))
                 & {i % op.codes.ndim for i in contract})
    if bad:
        raise ValueError(
            f"{name}: its exponent (shape {op.exponent.shape}) varies along the contracted "
            f"axis {bad[0]} of codes of shape {op.codes.shape}: it does not factor out of "
            "the product")


def int8_matmul_encoded(x: Int8Operand, w: Int8Operand) -> jax.Array:
    """``x @ w`` of already-encoded operands (no gradient): int8 × int8 → int32, scaled once.

    ``x.codes`` has shape ``(..., k)`` and an exponent constant along ``k``; ``w.codes``
    has shape ``(k, n)`` and an exponent constant along ``k``. Returns float32 of shape
    ``(..., n)``: the exact product rounded once (see the module docstring).
    """
    _check_encoded(x, "x")
    _check_encoded(w, "w")
    if w.codes.ndim != 2 or x.codes.ndim < 1 or x.codes.shape[-1] != w.codes.shape[0]:
        raise ValueError(f"int8_matmul: x of shape {x.codes.shape} and w of shape "
                         f"{w.codes.shape} do not multiply ((..., k) @ (k, n))")
    _check_factors(x, (-1,), "x")
    _check_factors(w, (0,), "w")
    return _factored_dot(x, w, (x.codes.ndim - 1,), (0,))


def _matmul_plan(x_shape, w_shape, xf: Format, wf: Format, ef: Format) -> dict[str, str]:
    """Which product runs how, for the formats (all assumed checked for the forward)."""
    out = tuple(x_shape[:-1]) + (w_shape[1],)
    plan = {"forward": _INT8, "dx": _F32, "dw": _F32}
    if not (isinstance(ef, (FixedPoint, BlockFloatingPoint)) and _word_ok(ef)):
        return plan
    batch = tuple(range(len(x_shape) - 1))
    if int8_capable(wf, w_shape, (1,)) and int8_capable(ef, out, (-1,)):
        plan["dx"] = _INT8
    if batch and int8_capable(xf, x_shape, batch) and int8_capable(ef, out, batch):
        plan["dw"] = _INT8
    return plan


def _word_ok(fmt: Format) -> bool:
    try:
        _check_word(fmt, "fmt")
    except ValueError:
        return False
    return True


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _matmul(x, w, formats):
    xf, wf, _ = formats
    y = int8_matmul_encoded(encode_int8(x, xf), encode_int8(w, wf))
    return y + (_nonfinite(x) + _nonfinite(w))


def _matmul_fwd(x, w, formats):
    xf, wf, _ = formats
    xo, wo = encode_int8(x, xf), encode_int8(w, wf)
    y = int8_matmul_encoded(xo, wo) + (_nonfinite(x) + _nonfinite(w))
    return y, (xo, wo)


def _matmul_bwd(formats, res, g):
    xf, wf, ef = formats
    xo, wo = res
    plan = _matmul_plan(xo.codes.shape, wo.codes.shape, xf, wf, ef)
    go = encode_int8(g, ef) if _INT8 in (plan["dx"], plan["dw"]) else None
    bad = _nonfinite(g)
    batch = tuple(range(xo.codes.ndim - 1))
    if plan["dx"] == _INT8:
        dx = _factored_dot(go, wo, (go.codes.ndim - 1,), (1,)) + bad
    else:
        dx = jnp.matmul(g, _decode(wo).T)
    if plan["dw"] == _INT8:
        dw = _factored_dot(xo, go, batch, batch) + bad
    else:
        x = _decode(xo)
        dw = jax.lax.dot_general(x, g.astype(jnp.float32), ((batch, batch), ((), ())))
    return dx, dw


_matmul.defvjp(_matmul_fwd, _matmul_bwd)


def int8_matmul(x: jax.Array, w: jax.Array, x_format: Format, w_format: Format, *,
                error_format: Format = FULL) -> jax.Array:
    """``x @ w`` with both operands on 8-bit grids, multiplied as int8 with int32 sums.

    Args:
      x: float array of shape ``(..., k)``, rounded to nearest onto ``x_format`` (the
        identity if already on it).
      w: float array of shape ``(k, n)``, rounded to nearest onto ``w_format``.
      x_format: fixed point or block floating point, ``wl <= 8``, exponent constant along
        ``k`` (``BlockFloatingPoint(8, axis=0)``: one per example; ``axis=None``).
      w_format: likewise, exponent constant along ``k`` (``axis=-1``: one per output
        column; ``axis=None``).
      error_format: the grid the cotangent of the result lies on (``FULL``: none); when
        8-bit, the backward products that factor run in int8 (module docstring).

    Returns:
      float32 ``(..., n)``: the exact product of the on-grid operands, rounded once.
      Differentiable in reverse mode with the straight-through rule.

    Raises:
      ValueError: a format or layout that cannot run in int8 (named), mismatched
        shapes, or a contraction longer than :data:`MAX_CONTRACTION`.
    """
    x = check_float_array(x, "x")
    w = check_float_array(w, "w")
    if w.ndim != 2 or x.ndim < 1 or x.shape[-1] != w.shape[0]:
        raise ValueError(f"int8_matmul: x of shape {x.shape} and w of shape {w.shape} do "
                         "not multiply ((..., k) @ (k, n))")
    check_int8(x_format, x.shape, (-1,), "x_format")
    check_int8(w_format, w.shape, (0,), "w_format")
    check_format(error_format, "error_format")
    _check_contraction(x.shape[-1], "int8_matmul")
    # float32 inside: the cotangents then come back in the operands' own dtypes
    return _matmul(x.astype(jnp.float32), w.astype(jnp.float32),
                   (x_format, w_format, error_format))


# --------------------------------------------------------------------------------------
# Convolutions (NHWC activations, HWIO kernels).


def _conv_params(x_shape, w_shape, strides, padding, dilation):
    if len(x_shape) != 4 or len(w_shape) != 4:
        raise ValueError(f"int8_conv: expects NHWC activations and HWIO kernels (4-D), got "
                         f"x of shape {tuple(x_shape)} and w of shape {tuple(w_shape)}")
    if x_shape[-1] != w_shape[2]:
        raise ValueError(f"int8_conv: x has {x_shape[-1]} channels, the kernel expects "
                         f"{w_shape[2]} (feature groups are not supported)")
    strides = _pair(strides, "strides")
    dilation = _pair(dilation, "kernel_dilation")
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "VALID"):
            raise ValueError(f"int8_conv: padding must be 'SAME', 'VALID', an int or "
                             f"((lo, hi), (lo, hi)), got {padding!r}")
        pad = jax.lax.padtype_to_pads(
            x_shape[1:3], [(k - 1) * d + 1 for k, d in zip(w_shape[:2], dilation,
                                                           strict=True)],
            strides, padding.upper())
    elif isinstance(padding, (int, np.integer)):
        pad = [(int(padding), int(padding))] * 2
    else:
        try:  # (lo, hi) pairs, or one int per spatial axis (flax.linen.Conv's forms)
            pad = [(int(p), int(p)) if isinstance(p, (int, np.integer))
                   else (int(p[0]), int(p[1])) for p in padding]
        except (TypeError, ValueError, IndexError):
            raise ValueError(f"int8_conv: padding must be 'SAME', 'VALID', an int or "
                             f"((lo, hi), (lo, hi)), got {padding!r}") from None
        if len(pad) != 2:
            raise ValueError(f"int8_conv: padding needs one (lo, hi) pair per spatial "
                             f"axis (2), got {padding!r}")
    return strides, tuple(tuple(p) for p in pad), dilation


def _pair(v, name):
    if isinstance(v, (int, np.integer)):
        return (int(v), int(v))
    t = tuple(int(a) for a in v)
    if len(t) != 2 or min(t) < 1:
        raise ValueError(f"int8_conv: {name} must be a positive int or a pair, got {v!r}")
    return t


def _dn(x_shape, w_shape):
    return jax.lax.conv_dimension_numbers(x_shape, w_shape, CONV_DIMENSION_NUMBERS)


def _conv_codes(xc, wc, strides, pad, dilation):
    return jax.lax.conv_general_dilated(
        xc, wc, strides, pad, rhs_dilation=dilation,
        dimension_numbers=_dn(xc.shape, wc.shape), preferred_element_type=jnp.int32)


def int8_conv_encoded(x: Int8Operand, w: Int8Operand, *, strides: int | Sequence[int] = 1,
                      padding: str | int | Sequence[tuple[int, int]] = "VALID",
                      kernel_dilation: int | Sequence[int] = 1) -> jax.Array:
    """A 2-D convolution of already-encoded operands (no gradient), int8 × int8 → int32.

    ``x.codes``: NHWC with an exponent that varies at most along N (one per example);
    ``w.codes``: HWIO with an exponent that varies at most along O (one per output
    filter). ``strides``, ``padding`` (``"SAME"``, ``"VALID"``, an int or
    ``((lo, hi), (lo, hi))``) and ``kernel_dilation`` as ``flax.linen.Conv``. Returns
    float32 NHWC: the exact convolution rounded once.
    """
    _check_encoded(x, "x")
    _check_encoded(w, "w")
    strides, pad, dil = _conv_params(x.codes.shape, w.codes.shape, strides, padding,
                                     kernel_dilation)
    _check_factors(x, (1, 2, 3), "x")
    _check_factors(w, (0, 1, 2), "w")
    return _conv_scaled(x, w, strides, pad, dil)


def _conv_scaled(x, w, strides, pad, dil):
    kh, kw, ci, _ = w.codes.shape
    _check_contraction(kh * kw * ci, "int8_conv")
    acc = _conv_codes(x.codes, w.codes, strides, pad, dil)
    ex = x.exponent if x.exponent.ndim == 0 else x.exponent.reshape(-1, 1, 1, 1)
    ew = w.exponent if w.exponent.ndim == 0 else w.exponent.reshape(1, 1, 1, -1)
    return scale_pow2(acc.astype(jnp.float32), ex + ew)


def _conv_plan(x_shape, w_shape, xf, wf, ef, out_shape) -> dict[str, str]:
    plan = {"forward": _INT8, "dx": _F32, "dw": _F32}
    if not (isinstance(ef, (FixedPoint, BlockFloatingPoint)) and _word_ok(ef)):
        return plan
    if int8_capable(wf, w_shape, (0, 1, 2, 3)) and int8_capable(ef, out_shape, (1, 2, 3)):
        plan["dx"] = _INT8
    if int8_capable(xf, x_shape, (0, 1, 2, 3)) and int8_capable(ef, out_shape, (0, 1, 2, 3)):
        plan["dw"] = _INT8
    return plan


# The two transposed products of a convolution, on int8 codes. XLA's own transposes (a
# convolution with the batch as its contracted axis for the kernel gradient, one with a
# reversed kernel and a dilated input for the input gradient) have no fast int8 kernel on
# CPU: measured 10-25x slower than the float32 backward. So both are lowered to int8
# matrix products, which have one: the kernel gradient as an im2col product, the input
# gradient as an im2col product with the flipped kernel (stride 1) or as one product
# followed by a strided scatter-add of its kernel taps (stride > 1, where im2col would
# multiply the zeros of a dilated gradient). All three are exact in int32.


def _taps(a, kh, kw, out_h, out_w, strides, dil):
    """``(B, out_h, out_w, kh*kw, C)``: the kernel taps' windows of padded NHWC ``a``."""
    (sh, sw), (dh, dw) = strides, dil
    return jnp.stack([a[:, i * dh: i * dh + (out_h - 1) * sh + 1: sh,
                        j * dw: j * dw + (out_w - 1) * sw + 1: sw, :]
                      for i in range(kh) for j in range(kw)], axis=3)


def _pad_hw(a, pad):
    # lax.pad: negative (lo, hi) crop, as explicit convolution padding may
    zero = jnp.zeros((), a.dtype)
    return jax.lax.pad(a, zero, ((0, 0, 0), (*pad[0], 0), (*pad[1], 0), (0, 0, 0)))


def _conv_kernel_grad_codes(g, x, w_shape, strides, pad, dil):
    """``dw[i, j, c, o] = Σ_{b,y,x} x_pad[b, y·s + i·d, x·s + j·d, c] · g[b, y, x, o]``."""
    kh, kw, ci, co = w_shape
    cols = _taps(_pad_hw(x, pad), kh, kw, g.shape[1], g.shape[2], strides, dil)
    acc = jax.lax.dot_general(cols, g, (((0, 1, 2), (0, 1, 2)), ((), ())),
                              preferred_element_type=jnp.int32)
    return acc.reshape(kh, kw, ci, co)


def _conv_input_grad_codes(g, w, x_shape, strides, pad, dil):
    """``dx[b, u, v, c] = Σ g[b, y, x, o] · w[i, j, c, o]`` over ``u + lo = y·s + i·d``."""
    kh, kw, ci, _ = w.shape
    n, h, wd, _ = x_shape
    (sh, sw), (dh, dw) = strides, dil
    (lh, hh), (lw, hw) = pad
    if (sh, sw) == (1, 1):
        # a stride-1 convolution of g (padded by (k-1)·d - lo below) with the flipped kernel
        wflip = jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2).reshape(kh * kw, -1, ci)
        gpad = _pad_hw(g, (((kh - 1) * dh - lh, h + lh - g.shape[1]),
                           ((kw - 1) * dw - lw, wd + lw - g.shape[2])))
        cols = _taps(gpad, kh, kw, h, wd, (1, 1), dil)
        return jax.lax.dot_general(cols, wflip, (((3, 4), (0, 1)), ((), ())),
                                   preferred_element_type=jnp.int32)
    taps = jax.lax.dot_general(g, w, (((3,), (3,)), ((), ())),
                               preferred_element_type=jnp.int32)  # B, Ho, Wo, kh, kw, C
    ho, wo = g.shape[1], g.shape[2]
    acc = jnp.zeros((n, max(h + lh + hh, (ho - 1) * sh + (kh - 1) * dh + 1),
                     max(wd + lw + hw, (wo - 1) * sw + (kw - 1) * dw + 1), ci), jnp.int32)
    for i in range(kh):
        for j in range(kw):
            acc = acc.at[:, i * dh: i * dh + (ho - 1) * sh + 1: sh,
                         j * dw: j * dw + (wo - 1) * sw + 1: sw, :].add(taps[:, :, :, i, j])
    # undo the padding: crop lo, and crop or zero-extend the high end to the input's size
    return _pad_hw(acc, ((-lh, h + lh - acc.shape[1]), (-lw, wd + lw - acc.shape[2])))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(x, w, formats, geometry):
    return _conv_fwd(x, w, formats, geometry)[0]


def _conv_fwd(x, w, formats, geometry):
    xf, wf, _ = formats
    xo, wo = encode_int8(x, xf), encode_int8(w, wf)
    y = _conv_scaled(xo, wo, *geometry) + (_nonfinite(x) + _nonfinite(w))
    return y, (xo, wo)


def _conv_bwd(formats, geometry, res, g):
    xf, wf, ef = formats
    strides, pad, dil = geometry
    xo, wo = res
    plan = _conv_plan(xo.codes.shape, wo.codes.shape, xf, wf, ef, g.shape)
    go = encode_int8(g, ef) if _INT8 in (plan["dx"], plan["dw"]) else None
    bad = _nonfinite(g)
    if plan["dx"] == _INT8:
        acc = _conv_input_grad_codes(go.codes, wo.codes, xo.codes.shape, strides, pad, dil)
        eg = go.exponent if go.exponent.ndim == 0 else go.exponent.reshape(-1, 1, 1, 1)
        dx = scale_pow2(acc.astype(jnp.float32), eg + wo.exponent.reshape(())) + bad
    if plan["dw"] == _INT8:
        acc = _conv_kernel_grad_codes(go.codes, xo.codes, wo.codes.shape, strides, pad, dil)
        dw = scale_pow2(acc.astype(jnp.float32),
                        xo.exponent.reshape(()) + go.exponent.reshape(())) + bad
    if _F32 in (plan["dx"], plan["dw"]):
        def f(xv, wv):
            return jax.lax.conv_general_dilated(
                xv, wv, strides, pad, rhs_dilation=dil,
                dimension_numbers=_dn(xv.shape, wv.shape))

        _, vjp = jax.vjp(f, _decode(xo), _decode(wo))
        fdx, fdw = vjp(g.astype(jnp.float32))
        if plan["dx"] == _F32:
            dx = fdx
        if plan["dw"] == _F32:
            dw = fdw
    return dx, dw


_conv.defvjp(_conv_fwd, _conv_bwd)


def int8_conv(x: jax.Array, w: jax.Array, x_format: Format, w_format: Format, *,
              strides: int | Sequence[int] = 1,
              padding: str | int | Sequence[tuple[int, int]] = "VALID",
              kernel_dilation: int | Sequence[int] = 1,
              error_format: Format = FULL) -> jax.Array:
    """A 2-D convolution with both operands on 8-bit grids, as int8 with int32 sums.

    ``x``: NHWC float activations, rounded to nearest onto ``x_format`` (exponent one per
    example, ``axis=0``, or per tensor); ``w``: HWIO float kernel, rounded to nearest onto
    ``w_format`` (one exponent per output filter, ``axis=-1``, or per tensor).
    ``strides``, ``padding`` (``"SAME"``, ``"VALID"``, an int or ``((lo, hi), (lo, hi))``)
    and ``kernel_dilation`` as ``flax.linen.Conv``; no feature groups, no input dilation.
    ``error_format`` as :func:`int8_matmul`. Returns float32 NHWC, the exact convolution of
    the on-grid operands rounded once; differentiable in reverse mode (straight-through).

    Raises:
      ValueError: a format or layout that cannot run in int8 (named), bad geometry, or a
        window ``KH·KW·C`` longer than :data:`MAX_CONTRACTION`.
    """
    x = check_float_array(x, "x")
    w = check_float_array(w, "w")
    geometry = _conv_params(x.shape, w.shape, strides, padding, kernel_dilation)
    check_int8(x_format, x.shape, (1, 2, 3), "x_format")
    check_int8(w_format, w.shape, (0, 1, 2), "w_format")
    check_format(error_format, "error_format")
    _check_contraction(w.shape[0] * w.shape[1] * w.shape[2], "int8_conv")
    return _conv(x.astype(jnp.float32), w.astype(jnp.float32),
                 (x_format, w_format, error_format), geometry)


def int8_plan(kind: str, x_shape: Sequence[int], w_shape: Sequence[int], x_format: Format,
              w_format: Format, error_format: Format = FULL,
              out_shape: Sequence[int] | None = None) -> dict[str, str]:
    """How each product of an int8 layer runs: ``{"forward", "dx", "dw"} -> "int8" |
    "float32"``.

    ``kind`` is ``"dense"`` (``x @ w``) or ``"conv"`` (then ``out_shape``, the NHWC output
    shape, is needed). Raises ``ValueError`` if the forward product cannot run in int8.
    """
    x_shape, w_shape = tuple(x_shape), tuple(w_shape)
    if kind == "dense":
        check_int8(x_format, x_shape, (-1,), "x_format")
        check_int8(w_format, w_shape, (0,), "w_format")
        return _matmul_plan(x_shape, w_shape, x_format, w_format, error_format)
    if kind == "conv":
        if out_shape is None:
            raise ValueError("int8_plan: kind='conv' needs out_shape")
        check_int8(x_format, x_shape, (1, 2, 3), "x_format")
        check_int8(w_format, w_shape, (0, 1, 2), "w_format")
        return _conv_plan(x_shape, w_shape, x_format, w_format, error_format,
                          tuple(out_shape))
    raise ValueError(f"kind must be 'dense' or 'conv', got {kind!r}")
