"""Number formats: which values a low-precision tensor may hold.

Each format is a grid of representable values. For a tensor ``x`` the quantizers in
:mod:`lpsampling.quantize` and :mod:`lpsampling.vc` need two facts per element: the *gap
exponent* ``k`` (the local grid is the integer multiples of ``2**k``: fixed point
``k = -fl``; block floating point ``k = e + 2 - wl`` with ``e`` the block's exponent; low-bit
floats ``k = max(e_x, min_exp) - man``) and the saturation bounds ``lo``, ``hi`` (on the grid).

Formats are frozen dataclasses, hashable and therefore usable as static arguments of
``jax.jit``. Semantics follow QPyTorch; the differences are documented on each class and
on the formats page of the documentation (``docs/formats.md``).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "FixedPoint",
    "BlockFloatingPoint",
    "FloatingPoint",
    "Full",
    "FULL",
    "Format",
    "grid_gap",
]

# float32 facts used to read exponents exactly from the bit pattern.
_F32_MANT_BITS = 23
_F32_EXP_BIAS = 127
_F32_MIN_NORMAL_EXP = -126
_F32_MAX = float(np.finfo(np.float32).max)
# Gap exponent meaning "this element has no grid" (all-zero block, or a float gap below
# float32's normal range). Far outside every reachable gap exponent (at least -149 - 32).
NO_GRID = -(2**20)


def _check_int(name: str, value, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int in [{lo}, {hi}], got {value!r}")
    if not lo <= int(value) <= hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value}")
    return int(value)


@dataclasses.dataclass(frozen=True)
class FixedPoint:
    """Signed fixed point with ``wl`` bits in all, ``fl`` of them fractional.

    Grid gap ``Δ = 2**-fl``; values ``[-2**(wl-fl-1), 2**(wl-fl-1) - Δ]`` (with
    ``symmetric=True`` the lowest code is dropped, so the range is ``±(2**(wl-fl-1) - Δ)``).
    Values outside the range saturate (``clamp=True``; ``clamp=False`` keeps the
    integer code unbounded, as QPyTorch's ``clamp=False``). ``fl`` may exceed ``wl - 1``:
    ``FixedPoint(8, 8)`` covers ``[-0.5, 0.49609375]``.

    Word lengths above 24 are accepted, but float32 then cannot hold every grid value
    exactly: results are the float32 nearest to the grid value.
    """

    wl: int
    fl: int
    clamp: bool = True
    symmetric: bool = False

    def __post_init__(self):
        _check_int("wl", self.wl, 2, 32)
        _check_int("fl", self.fl, -100, 126)
        if self.wl - self.fl - 1 > 127:
            raise ValueError(
                f"wl - fl - 1 must be at most 127 (float32 range), got wl={self.wl}, fl={self.fl}"
            )

    @property
    def bits(self) -> int:
        return self.wl

    @property
    def gap(self) -> float:
        """The grid gap Δ = 2**-fl (the same for every element)."""
        return 2.0 ** (-self.fl)

    @property
    def max_code(self) -> int:
        return 2 ** (self.wl - 1) - 1

    @property
    def min_code(self) -> int:
        return -(2 ** (self.wl - 1)) + (1 if self.symmetric else 0)

    @property
    def max_value(self) -> float:
        return self.max_code * self.gap

    @property
    def min_value(self) -> float:
        return self.min_code * self.gap

    def __repr__(self) -> str:
        extra = "" if self.clamp and not self.symmetric else (
            f", clamp={self.clamp}, symmetric={self.symmetric}")
        return f"FixedPoint(wl={self.wl}, fl={self.fl}{extra})"


@dataclasses.dataclass(frozen=True)
class BlockFloatingPoint:
    """Block floating point: ``wl``-bit integer mantissas sharing one exponent per block.

    Blocks: ``axis=k`` gives one exponent per index along axis ``k`` (the maximum is taken
    over all other axes; QPyTorch ``dim=k``); ``axis=None`` gives one exponent for the whole
    tensor (QPyTorch ``dim=-1``); ``block_size=b`` gives contiguous blocks of ``b`` elements
    along the last axis (``axis`` is then ignored and must be left at its default or None).
    A 1-D tensor with ``axis=0`` has one block per element; a 0-d tensor is one block.

    The block exponent is ``e = floor(log2(max|x|))``, read exactly from the float32
    exponent bits of the block maximum (never from ``log2``). The gap is
    ``Δ = 2**(e + 2 - wl)`` and the integer mantissas lie in ``±(2**(wl-1) - 1)``.

    Blocks whose maximum is zero, or a float32 subnormal (which XLA on CPU flushes to
    zero in arithmetic), quantize to zero. NaN elements are ignored when finding the block
    maximum and stay NaN; ±inf count as ±float32-max (so they saturate to the largest value
    a block can hold).
    """

    wl: int
    axis: int | None = 0
    block_size: int | None = None

    def __post_init__(self):
        _check_int("wl", self.wl, 2, 32)
        if self.axis is not None and (
            isinstance(self.axis, bool) or not isinstance(self.axis, (int, np.integer))
        ):
            raise ValueError(f"axis must be an int or None, got {self.axis!r}")
        if self.block_size is not None:
            _check_int("block_size", self.block_size, 1, 2**31 - 1)
            if self.axis not in (0, None):
                raise ValueError(
                    f"axis is ignored with block_size (blocks run along the last axis): leave "
                    f"it at 0 or None, got axis={self.axis!r}"
                )

    @property
    def bits(self) -> int:
        return self.wl

    @property
    def max_code(self) -> int:
        return 2 ** (self.wl - 1) - 1

    def __repr__(self) -> str:
        if self.block_size is not None:
            return f"BlockFloatingPoint(wl={self.wl}, block_size={self.block_size})"
        return f"BlockFloatingPoint(wl={self.wl}, axis={self.axis})"


@dataclasses.dataclass(frozen=True)
class FloatingPoint:
    """A small float with ``exp`` exponent bits and ``man`` stored mantissa bits.

    QPyTorch convention: no exponent code is reserved for inf/NaN, normal exponents run
    from ``min_exp = 2 - 2**(exp-1)`` to ``max_exp = 2**(exp-1)``, the largest value is
    ``2**max_exp * (2 - 2**-man)`` (480 for ``FloatingPoint(4, 3)``), overflow saturates
    and subnormals (gap ``2**(min_exp - man)``) are kept. With ``exp = 8`` the range is
    float32's own: overflow gives ±inf, as in QPyTorch.

    Unlike QPyTorch, NaN stays NaN (QPyTorch maps it to ±max for ``exp < 8``).
    """

    exp: int
    man: int

    def __post_init__(self):
        _check_int("exp", self.exp, 1, 8)
        _check_int("man", self.man, 0, 23)

    @property
    def bits(self) -> int:
        return 1 + self.exp + self.man

    @property
    def min_exp(self) -> int:
        return 2 - 2 ** (self.exp - 1)

    @property
    def max_exp(self) -> int:
        return 2 ** (self.exp - 1)

    @property
    def max_value(self) -> float:
        """The largest finite value; for ``exp = 8`` float32's top binade, ``man`` bits."""
        if self.exp >= 8:  # the largest finite float32 with `man` mantissa bits
            return 2.0**127 * (2.0 - 2.0 ** (-self.man))
        return 2.0**self.max_exp * (2.0 - 2.0 ** (-self.man))

    @property
    def min_subnormal(self) -> float:
        return 2.0 ** (self.min_exp - self.man)

    def __repr__(self) -> str:
        return f"FloatingPoint(exp={self.exp}, man={self.man})"


@dataclasses.dataclass(frozen=True)
class Full:
    """The identity format: no quantization at all."""

    @property
    def bits(self) -> int:
        return 32

    def __repr__(self) -> str:
        return "FULL"


FULL = Full()

Format = FixedPoint | BlockFloatingPoint | FloatingPoint | Full


def check_format(fmt, name: str = "fmt") -> Format:
    """Raise a clear TypeError unless ``fmt`` is one of the number formats."""
    if not isinstance(fmt, (FixedPoint, BlockFloatingPoint, FloatingPoint, Full)):
        raise TypeError(
            f"{name} must be FixedPoint, BlockFloatingPoint, FloatingPoint or FULL, got {fmt!r}"
        )
    return fmt


# --------------------------------------------------------------------------------------
# Exact powers of two and exponents, from bits (no log2, no subnormal arithmetic).


def pow2(k: jax.Array) -> jax.Array:
    """Exactly ``2.0**k`` in float32 for integer ``k`` in [-126, 127], built from bits."""
    k = jnp.asarray(k, jnp.int32)
    return jax.lax.bitcast_convert_type((k + _F32_EXP_BIAS) << _F32_MANT_BITS, jnp.float32)


def scale_pow2(x: jax.Array, k: jax.Array) -> jax.Array:
    """``x * 2**k`` for integer ``k`` that may leave float32's normal exponent range.

    The factor is split in two so that each is an exact normal power of two; the product
    is exact unless the result itself is subnormal (flushed to zero by XLA on CPU).
    """
    k = jnp.asarray(k, jnp.int32)
    k1 = jnp.clip(k, -126, 127)
    return x * pow2(k1) * pow2(jnp.clip(k - k1, -126, 127))


def float_exponent(x: jax.Array) -> jax.Array:
    """``floor(log2|x|)`` for normal float32 ``x``, read from the exponent bits.

    Returns -127 for zero and float32 subnormals, 128 for inf/NaN.
    """
    bits = jax.lax.bitcast_convert_type(jnp.asarray(x, jnp.float32), jnp.int32)
    return ((bits >> _F32_MANT_BITS) & 0xFF) - _F32_EXP_BIAS


def _block_layout(shape: tuple[int, ...], fmt: BlockFloatingPoint):
    """``(view, axes)``: reshape a tensor to ``view`` and reduce over ``axes`` (keepdims) to
    get one entry per block; ``view`` is None when no reshape is needed."""
    if len(shape) == 0:
        return None, ()
    if fmt.block_size is not None:
        n = shape[-1]
        b = fmt.block_size
        if n % b:
            raise ValueError(
                f"block_size={b} must divide the last axis of the tensor, whose length is {n}"
            )
        return shape[:-1] + (n // b, b), (len(shape),)
    if fmt.axis is None:
        return None, tuple(range(len(shape)))
    axis = fmt.axis
    if not -len(shape) <= axis < len(shape):
        raise ValueError(
            f"axis={axis} is out of range for a tensor of {len(shape)} dimensions, shape {shape}"
        )
    axis %= len(shape)
    return None, tuple(i for i in range(len(shape)) if i != axis)


def _block_reduce_max(a: jax.Array, fmt: BlockFloatingPoint) -> jax.Array:
    """Maximum of ``a`` per block, one entry per block (in the layout's kept dimensions)."""
    view, axes = _block_layout(a.shape, fmt)
    if view is not None:
        a = a.reshape(view)
    return jnp.max(a, axis=axes, keepdims=True) if axes else a


def _block_expand(m: jax.Array, shape: tuple[int, ...], fmt: BlockFloatingPoint) -> jax.Array:
    """Per-block values ``m`` (from :func:`_block_reduce_max`) made broadcastable to ``shape``."""
    view, _ = _block_layout(shape, fmt)
    return m if view is None else jnp.broadcast_to(m, view).reshape(shape)


def block_exponent(x: jax.Array, fmt: BlockFloatingPoint) -> jax.Array:
    """The shared exponent ``e = floor(log2 max|x_block|)`` per block (int32).

    Broadcastable against ``x``. Zero or float32-subnormal block maxima give -127.
    NaN is ignored and ±inf counts as float32 max.
    """
    x = jnp.asarray(x, jnp.float32)

    # Speed: XLA on CPU reduces max(|x|) straight from the input, but materializes a masked
    # copy first if NaN is masked inside the reduction, and its fast reductions do not
    # propagate NaN reliably (a block max may silently skip values next to a NaN). So reduce
    # |x| directly, and take the NaN-masking path only when the tensor holds a NaN, detected
    # by a sum (NaN always propagates through +; an overflow to inf - inf only costs speed).
    def fast():
        return _block_reduce_max(jnp.abs(x), fmt)

    def masked():
        return _block_reduce_max(jnp.where(jnp.isnan(x), 0.0, jnp.abs(x)), fmt)

    m = jax.lax.cond(jnp.isnan(jnp.sum(x)), masked, fast)
    m = jnp.minimum(m, _F32_MAX)  # ±inf count as float32 max
    return _block_expand(float_exponent(m), x.shape, fmt)


def grid_exponent(x: jax.Array, fmt: Format) -> jax.Array:
    """The integer ``k`` such that the local grid around each element is multiples of 2**k.

    ``x`` is float32. The result broadcasts against ``x``. Where the format has no gap
    (an all-zero block, or a float gap below float32's normal range) the result is
    :data:`NO_GRID`, which the quantizers treat as "no grid".
    """
    if isinstance(fmt, FixedPoint):
        return jnp.asarray(-fmt.fl, jnp.int32)
    if isinstance(fmt, BlockFloatingPoint):
        e = block_exponent(x, fmt)
        return jnp.where(e < _F32_MIN_NORMAL_EXP, NO_GRID, e + 2 - fmt.wl)
    if isinstance(fmt, FloatingPoint):
        e = jnp.maximum(float_exponent(x), fmt.min_exp)
        e = jnp.minimum(e, min(fmt.max_exp, 127))  # inf/NaN: the top binade's gap
        k = e - fmt.man
        return jnp.where(k < _F32_MIN_NORMAL_EXP, NO_GRID, k)
    raise TypeError(f"format {fmt!r} has no grid")


def grid_bounds(k: jax.Array, fmt: Format) -> tuple[jax.Array, jax.Array]:
    """Saturation bounds (lo, hi) per element, given the gap exponents ``k``."""
    if isinstance(fmt, FixedPoint):
        return (jnp.float32(fmt.min_value), jnp.float32(fmt.max_value))
    if isinstance(fmt, BlockFloatingPoint):
        hi = scale_pow2(jnp.float32(fmt.max_code), k)
        hi = jnp.where(k == NO_GRID, 0.0, hi)
        return -hi, hi
    if isinstance(fmt, FloatingPoint):
        m = jnp.float32(fmt.max_value) if fmt.exp < 8 else jnp.float32(jnp.inf)
        return -m, m
    raise TypeError(f"format {fmt!r} has no grid")


def grid_gap(x: jax.Array, fmt: Format) -> jax.Array:
    """The grid gap Δ per element of ``x`` (float32, broadcastable against ``x``).

    Fixed point: ``2**-fl``. Block floating point: ``2**(e + 2 - wl)`` from the block's
    exact exponent (0 for an all-zero block). Floats: the gap of the binade of ``x``
    (``2**(max(e_x, min_exp) - man)``). ``FULL``: 0.
    """
    if isinstance(fmt, Full):
        return jnp.zeros((), jnp.float32)
    x = jnp.asarray(x, jnp.float32)
    if isinstance(fmt, FloatingPoint):
        # the exact exponent, also where the gap is a float32 subnormal (exp = 8)
        e = jnp.clip(float_exponent(x), fmt.min_exp, min(fmt.max_exp, 127))
        return _pow2_or_subnormal(e - fmt.man)
    k = grid_exponent(x, fmt)
    if isinstance(fmt, BlockFloatingPoint):
        return jnp.where(k == NO_GRID, 0.0, _pow2_or_subnormal(k))
    return pow2(k)


def _pow2_or_subnormal(k: jax.Array) -> jax.Array:
    """``2.0**k`` built from bits, a float32 subnormal for k in [-149, -127], 0 below."""
    k = jnp.asarray(k, jnp.int32)
    sub = jax.lax.bitcast_convert_type(
        jnp.left_shift(jnp.int32(1), jnp.clip(k + 149, 0, 22)), jnp.float32)
    return jnp.where(k >= -126, pow2(jnp.maximum(k, -126)), jnp.where(k >= -149, sub, 0.0))


def storage_bits(fmt: Format) -> int:
    """Bits per element of the packed code (the shared block exponent not counted)."""
    return fmt.bits


def describe(fmt: Format) -> str:
    """A one-line human description of the grid."""
    if isinstance(fmt, FixedPoint):
        return (f"{fmt!r}: gap 2^{-fmt.fl}, range [{fmt.min_value:g}, {fmt.max_value:g}], "
                f"{fmt.wl} bits")
    if isinstance(fmt, BlockFloatingPoint):
        return (f"{fmt!r}: gap 2^(e{2 - fmt.wl:+d}) per block, mantissas ±{fmt.max_code}, "
                f"{fmt.wl} bits + 8-bit exponent per block")
    if isinstance(fmt, FloatingPoint):
        return (f"{fmt!r}: {fmt.man} mantissa bits, exponents [{fmt.min_exp}, {fmt.max_exp}], "
                f"max {fmt.max_value:g}, {fmt.bits} bits")
    return "FULL: no quantization, 32 bits"
