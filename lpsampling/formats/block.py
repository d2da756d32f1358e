"""Block floating point: integer mantissas sharing one exponent per block."""

from __future__ import annotations

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np

from lpsampling.formats._core import (
    _F32_MAX,
    _F32_MIN_NORMAL_EXP,
    NO_GRID,
    Format,
    _check_int,
    _float_to_int_codes,
    _pow2_or_subnormal,
    float_exponent,
    round_scaled,
    scale_pow2,
)

# The exponent stored for an all-zero block.
ZERO_BLOCK_EXPONENT = -128

_NAME_RE = re.compile(r"^bfp(\d+)(c?)$")


@dataclasses.dataclass(frozen=True)
class BlockFloatingPoint(Format):
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

    The top of a block: the largest code ``(2**(wl-1) - 1)·Δ`` lies one gap below
    ``2**(e+1)``. ``carry`` chooses what stochastic rounding does with a value in that
    last gap (it concerns stochastic rounding and :func:`~lpsampling.vc_quantize` only;
    nearest rounding always saturates there):

    * ``carry=False`` (default, QPyTorch's semantics): it saturates at the top code, a
      bias toward zero of at most one gap on that one element;
    * ``carry=True``: it rounds up to ``2**(e+1)`` with probability equal to its fractional
      position, a carry into the block's next exponent, and the whole block is then
      stochastically re-rounded onto that exponent's grid ``2Δ`` (mean exact everywhere;
      the extra variance, up to ``Δ²`` per element of the block, only when a carry
      happens). The trade-off is in ``docs/formats.md``, "The top of a block".
    """

    wl: int
    axis: int | None = 0
    block_size: int | None = None
    carry: bool = False

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
        if not isinstance(self.carry, (bool, np.bool_)):
            raise TypeError(f"carry must be True or False, got {self.carry!r}")
        # a Python bool, so that the format serializes (storage writes JSON) and one
        # static branch is traced per setting
        object.__setattr__(self, "carry", bool(self.carry))

    @property
    def bits(self) -> int:
        return self.wl

    @property
    def max_code(self) -> int:
        return 2 ** (self.wl - 1) - 1

    def __repr__(self) -> str:
        extra = ", carry=True" if self.carry else ""
        if self.block_size is not None:
            return f"BlockFloatingPoint(wl={self.wl}, block_size={self.block_size}{extra})"
        return f"BlockFloatingPoint(wl={self.wl}, axis={self.axis}{extra})"

    # -- grid and rounding --------------------------------------------------------------

    def grid_exponent(self, x: jax.Array) -> jax.Array:
        """``e + 2 - wl`` per block (:data:`NO_GRID` for an all-zero block)."""
        e = block_exponent(x, self)
        return jnp.where(e < _F32_MIN_NORMAL_EXP, NO_GRID, e + 2 - self.wl)

    def grid_bounds(self, k: jax.Array) -> tuple[jax.Array, jax.Array]:
        hi = scale_pow2(jnp.float32(self.max_code), k)
        hi = jnp.where(k == NO_GRID, 0.0, hi)
        return -hi, hi

    def grid_gap(self, x: jax.Array) -> jax.Array:
        """``2**(e + 2 - wl)`` from the block's exact exponent (0 for an all-zero block)."""
        x = jnp.asarray(x, jnp.float32)
        k = self.grid_exponent(x)
        return jnp.where(k == NO_GRID, 0.0, _pow2_or_subnormal(k))

    # to_units / from_units: the base's scale_pow2 (-k = wl - 2 - e may exceed 127 for tiny
    # blocks, so two factors); saturate: the base's clip to ±max_code * 2**k.

    def round_f32(self, x: jax.Array, rounding: str, key) -> jax.Array:
        """The shared grid kernel (saturating at the top code), except stochastic rounding
        with ``carry=True``, which is :meth:`round_unbiased_f32`."""
        if self.carry and rounding == "stochastic":
            return self.round_unbiased_f32(x, key)
        return super().round_f32(x, rounding, key)

    def round_unbiased_f32(self, x: jax.Array, key) -> jax.Array:
        """Carry into the block's next exponent instead of holding at the top code.

        ``x`` is first rounded on its own block grid without the top-code limit (at most
        ``2**(wl-1)`` in gap units, exactly ``2**(e+1)``), then stochastically onto the
        format (the saturating kernel), whose grid is then the block's next exponent
        wherever a carry happened. Both roundings are unbiased, so ``E[q] = x`` up to the
        range end (exponent 127). Where no element carried, the second rounding would be
        the identity and is skipped: the result is then bit for bit the saturating
        stochastic rounding with ``key`` (the same random bits, nothing clipped).
        """
        k = self.grid_exponent(x)
        no_grid = k == NO_GRID
        kk = jnp.where(no_grid, 0, k)
        units = round_scaled(scale_pow2(x, -kk), "stochastic", key)
        # a block without a grid holds zeros, subnormals (read as zero) and NaN: x * 0
        # keeps the NaN (NaN propagates in every format) and the sign of zero
        carried = jnp.where(no_grid, x * 0.0, scale_pow2(units, kk))
        # |units| > max_code only as 2**(wl-1), i.e. 2**(e+1): a carry (NaN compares false)
        any_carry = jnp.any(jnp.abs(units) > self.max_code)
        return jax.lax.cond(
            any_carry,
            lambda c: Format.round_f32(self, c, "stochastic", jax.random.fold_in(key, 1)),
            lambda c: c, carried)

    # -- storage: mantissa codes plus one int8 exponent per block --------------------------

    def exponent_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The block shape, broadcastable against the tensor (``()`` for a 0-d tensor)."""
        ndim = len(shape)
        if ndim == 0:
            return ()
        if self.block_size is not None:
            n, b = shape[-1], self.block_size
            if n % b:
                raise ValueError(
                    f"block_size={b} must divide the last axis of the tensor, whose length is {n}"
                )
            return tuple(shape[:-1]) + (n // b, 1)
        if self.axis is None:
            return (1,) * ndim
        axis = self.axis
        if not -ndim <= axis < ndim:
            raise ValueError(
                f"axis={axis} is out of range for a tensor of {ndim} dimensions, shape {shape}"
            )
        axis %= ndim
        return tuple(d if i == axis else 1 for i, d in enumerate(shape))

    def _block_view(self, a: jax.Array, shape: tuple[int, ...]) -> jax.Array:
        """Reshape ``a`` (batch + shape) so that it broadcasts against the stored exponents."""
        if self.block_size is None or len(shape) == 0:
            return a
        nb = a.ndim - len(shape)
        b = self.block_size
        return a.reshape(a.shape[:nb] + tuple(shape[:-1]) + (shape[-1] // b, b))

    def encode(self, q: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Codes: the mantissas ``m`` with value ``m * 2**(e + 2 - wl)``; exponents: ``e``
        per block as int8, :data:`ZERO_BLOCK_EXPONENT` for an all-zero block."""
        shape = q.shape
        e = block_exponent(q, self)  # broadcastable against q; -127 for zero blocks
        if self.block_size is not None and q.ndim:
            e = self._block_view(e, shape)[..., :1]
        e = jnp.reshape(e, self.exponent_shape(shape))
        zero = e < -126
        k = e + 2 - self.wl
        qb = self._block_view(q, shape)
        m = scale_pow2(qb, -k)
        c = _float_to_int_codes(m, -self.max_code, self.max_code)
        c = jnp.where(zero, 0, c).reshape(shape)
        exps = jnp.where(zero, ZERO_BLOCK_EXPONENT, e).astype(jnp.int8)
        return c, exps

    def decode(self, c: jax.Array, exps: jax.Array, shape: tuple[int, ...]) -> jax.Array:
        e = exps.astype(jnp.int32)
        cb = self._block_view(c, shape).astype(jnp.float32)
        v = scale_pow2(cb, e + 2 - self.wl)
        v = jnp.where(e == ZERO_BLOCK_EXPONENT, 0.0, v)
        return v.reshape(c.shape)

    # -- naming ---------------------------------------------------------------------------

    def describe(self) -> str:
        top = ("; stochastic rounding carries past the top code into the next exponent"
               if self.carry else "")
        return (f"{self!r}: gap 2^(e{2 - self.wl:+d}) per block, mantissas ±{self.max_code}, "
                f"{self.wl} bits + 8-bit exponent per block{top}")

    @property
    def name(self) -> str | None:
        """``bfp<wl>`` for the paper's per-row/per-column blocks (``axis`` 0 or -1);
        ``bfp<wl>c`` with ``carry=True``."""
        if self.block_size is not None or self.axis not in (0, -1):
            return None
        return f"bfp{self.wl}{'c' if self.carry else ''}"

    @property
    def label(self) -> str:
        return f"{self.wl}-bit BFP{' (carry)' if self.carry else ''}"

    @classmethod
    def _parse_name(cls, key: str, role: str) -> Format | None:
        """``bfp<wl>``: every number on a block grid; weights and gradients with
        ``axis=-1``, activations and errors with ``axis=0`` (one exponent per example).
        ``bfp<wl>c``: the same with ``carry=True``."""
        m = _NAME_RE.match(key)
        if not m:
            return None
        wl, carry = int(m.group(1)), m.group(2) == "c"
        w = cls(wl, axis=-1, carry=carry)
        a = cls(wl, axis=0, carry=carry)
        return w if role in ("weight", "grad") else a


# --------------------------------------------------------------------------------------
# Block layout and the shared exponent.


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
    # initial=0: |x| >= 0, so it changes no result, and a block over a zero-length axis
    # (e.g. shape (0, 4) with axis=1) is an all-zero block instead of a reduction error
    return jnp.max(a, axis=axes, keepdims=True, initial=0.0) if axes else a


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
