"""The :class:`Format` base class and the exact float32 bit helpers every format uses."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# float32 facts used to read exponents exactly from the bit pattern.
_F32_MANT_BITS = 23
_F32_EXP_BIAS = 127
_F32_MIN_NORMAL_EXP = -126
_F32_MAX = float(np.finfo(np.float32).max)
# Gap exponent meaning "this element has no grid" (all-zero block, or a float gap below
# float32's normal range). Far outside every reachable gap exponent (at least -149 - 32).
NO_GRID = -(2**20)

# Every format class, by class name (filled by Format.__init_subclass__; used to read
# formats back from files).
FORMAT_TYPES: dict[str, type[Format]] = {}


def _check_int(name: str, value, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int in [{lo}, {hi}], got {value!r}")
    if not lo <= int(value) <= hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value}")
    return int(value)


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


def _pow2_or_subnormal(k: jax.Array) -> jax.Array:
    """``2.0**k`` built from bits, a float32 subnormal for k in [-149, -127], 0 below."""
    k = jnp.asarray(k, jnp.int32)
    sub = jax.lax.bitcast_convert_type(
        jnp.left_shift(jnp.int32(1), jnp.clip(k + 149, 0, 22)), jnp.float32)
    return jnp.where(k >= -126, pow2(jnp.maximum(k, -126)), jnp.where(k >= -149, sub, 0.0))


# --------------------------------------------------------------------------------------
# Rounding to an integer in units of the gap (re-exported by lpsampling.quantize).


def uniform24(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Uniform float32 in [0, 1) on a 2**-24 lattice, from 32 fresh bits per element."""
    bits = jax.random.bits(key, shape, jnp.uint32)
    return (bits >> 8).astype(jnp.float32) * jnp.float32(2.0**-24)


def round_scaled(s: jax.Array, rounding: str, key: jax.Array | None) -> jax.Array:
    """Round float32 ``s`` (a value in units of its grid gap) to an integer-valued float."""
    if rounding == "nearest":
        return jnp.round(s)  # half to even
    lo = jnp.floor(s)
    return lo + (uniform24(key, s.shape) < s - lo).astype(s.dtype)


def _float_to_int_codes(m: jax.Array, lo: int, hi: int) -> jax.Array:
    """Integer-valued float32 ``m`` -> int32, saturated to [lo, hi], NaN -> 0."""
    # float32 cannot hold 2**31 - 1: saturate at the largest float32 below 2**31.
    hi_f = float(min(hi, 2**31 - 128))
    lo_f = float(max(lo, -(2**31)))
    m = jnp.where(jnp.isnan(m), 0.0, jnp.clip(jnp.round(m), lo_f, hi_f))
    return m.astype(jnp.int32)


# --------------------------------------------------------------------------------------
# The base class.


class Format:
    """Base class of the number formats: a grid of values and how to store them.

    A format subclass is a frozen dataclass that implements, for float32 tensors:

    * the grid: :meth:`grid_exponent` (the gap exponent ``k`` per element, or
      :data:`NO_GRID`), :meth:`grid_bounds` (saturation bounds given ``k``) and
      :meth:`grid_gap`; the quantizers round through :meth:`round_f32`, whose default is
      the shared grid kernel (scale by ``2**-k`` with :meth:`to_units`, round, scale back
      with :meth:`from_units`, :meth:`saturate`);
    * storage: :attr:`bits`, :meth:`code_dtype`, :meth:`exponent_shape`, :meth:`encode`,
      :meth:`decode` and :meth:`check_storable` (used by :mod:`lpsampling.storage`);
    * naming: :meth:`describe`, :attr:`name`, :attr:`label` and, for formats with a short
      name, ``_parse_name`` (used by :func:`lpsampling.formats.parse_format`).

    Defining the subclass registers it (by class name) for :func:`~lpsampling.load_packed`.
    """

    #: True only for ``FULL``: quantizing is the identity and nothing is encoded.
    is_identity = False
    #: True when every element has the same gap and bounds (fixed point): a multiple of
    #: the gap inside the bounds is always a value of the format.
    uniform_grid = False
    #: Whether the packed integer codes are signed (two's complement).
    signed_codes = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        FORMAT_TYPES[cls.__name__] = cls

    # -- the grid ---------------------------------------------------------------------

    @property
    def bits(self) -> int:
        raise NotImplementedError

    def grid_exponent(self, x: jax.Array) -> jax.Array:
        """The integer ``k`` per element such that the local grid is multiples of ``2**k``.

        ``x`` is float32; the result broadcasts against ``x``; :data:`NO_GRID` where the
        format has no gap (an all-zero block, or a float gap below float32's normal range).
        """
        raise TypeError(f"format {self!r} has no grid")

    def grid_bounds(self, k: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Saturation bounds ``(lo, hi)`` per element, given the gap exponents ``k``."""
        raise TypeError(f"format {self!r} has no grid")

    def grid_gap(self, x: jax.Array) -> jax.Array:
        """The grid gap Δ per element of ``x`` (float32, broadcastable against ``x``)."""
        raise NotImplementedError

    # -- rounding ---------------------------------------------------------------------

    def to_units(self, x: jax.Array, k: jax.Array) -> jax.Array:
        """``x * 2**-k``: ``x`` in units of its gap (exact)."""
        return scale_pow2(x, -k)

    def from_units(self, r: jax.Array, k: jax.Array) -> jax.Array:
        """``r * 2**k``: integer-valued units back to values (exact)."""
        return scale_pow2(r, k)

    def saturate(self, y: jax.Array, k: jax.Array) -> jax.Array:
        """Clip grid values ``y`` to the format's range at gap exponents ``k``."""
        lo, hi = self.grid_bounds(k)
        return jnp.clip(y, lo, hi)

    def round_f32(self, x: jax.Array, rounding: str, key) -> jax.Array:
        """Round float32 ``x`` onto the format (``"nearest"`` or ``"stochastic"``).

        The kernel of :func:`lpsampling.quantize.quantize` (no checks, no gradient rule).
        """
        k = self.grid_exponent(x)
        r = round_scaled(self.to_units(x, k), rounding, key)
        return self.saturate(self.from_units(r, k), k)

    def round_unbiased_f32(self, x: jax.Array, key) -> jax.Array:
        """Stochastic rounding whose mean is ``x`` also where the top code would clip.

        See :func:`lpsampling.quantize.round_unbiased_f32`; only block floating point
        needs more than :meth:`round_f32`.
        """
        return self.round_f32(x, "stochastic", key)

    # -- storage ----------------------------------------------------------------------

    def code_dtype(self) -> np.dtype:
        """The dtype of packed codes (``uint8`` holding two nibbles if bits <= 4)."""
        bits = self.bits
        if bits <= 4:
            return np.dtype(np.uint8)
        for width in (8, 16, 32):
            if bits <= width:
                return np.dtype(f"{'int' if self.signed_codes else 'uint'}{width}")
        raise AssertionError(bits)

    def exponent_shape(self, shape: tuple[int, ...]) -> tuple[int, ...] | None:
        """Shape of the stored shared exponents for a tensor of ``shape`` (None: none)."""
        return None

    def encode(self, q: jax.Array) -> tuple[jax.Array, jax.Array | None]:
        """Grid values ``q`` (float32) -> (int32/uint32 codes of ``q``'s shape, exponents)."""
        raise NotImplementedError

    def decode(self, c: jax.Array, exps: jax.Array | None,
               shape: tuple[int, ...]) -> jax.Array:
        """Codes ``c`` (int32/uint32, batch + ``shape``) and exponents -> float32 values."""
        raise NotImplementedError

    def check_storable(self, x) -> None:
        """Raise ``ValueError`` for values of concrete ``x`` the codes cannot hold."""
        xs = np.asarray(x, dtype=np.float32)
        self._reject(~np.isfinite(xs), "NaN or inf")

    def _reject(self, bad: np.ndarray, what: str) -> None:
        if bad.any():
            raise ValueError(
                f"pack: x contains {what} ({int(bad.sum())} element(s)), which {self!r} "
                f"cannot represent; replace them before packing"
            )

    # -- naming -----------------------------------------------------------------------

    def describe(self) -> str:
        """A one-line human description of the grid."""
        raise NotImplementedError

    @property
    def name(self) -> str | None:
        """The short name :func:`~lpsampling.formats.parse_format` reads back (or None)."""
        return None

    @property
    def label(self) -> str:
        """A short human label (``"8-bit fixed"``), as in the paper's tables."""
        return repr(self)

    @classmethod
    def _parse_name(cls, key: str, role: str) -> Format | None:
        """The format for the normalised name ``key`` in ``role``; None if not this family."""
        return None


# --------------------------------------------------------------------------------------
# Module-level functions (the public API before formats carried their methods).


def check_format(fmt, name: str = "fmt") -> Format:
    """Raise a clear TypeError unless ``fmt`` is one of the number formats."""
    if not isinstance(fmt, Format):
        raise TypeError(
            f"{name} must be FixedPoint, BlockFloatingPoint, FloatingPoint or FULL, got {fmt!r}"
        )
    return fmt


def _grid_format(fmt) -> Format:
    if not isinstance(fmt, Format):
        raise TypeError(f"format {fmt!r} has no grid")
    return fmt


def grid_exponent(x: jax.Array, fmt: Format) -> jax.Array:
    """The integer ``k`` such that the local grid around each element is multiples of 2**k.

    ``x`` is float32. The result broadcasts against ``x``. Where the format has no gap
    (an all-zero block, or a float gap below float32's normal range) the result is
    :data:`NO_GRID`, which the quantizers treat as "no grid". (:meth:`Format.grid_exponent`)
    """
    return _grid_format(fmt).grid_exponent(x)


def grid_bounds(k: jax.Array, fmt: Format) -> tuple[jax.Array, jax.Array]:
    """Saturation bounds (lo, hi) per element, given the gap exponents ``k``."""
    return _grid_format(fmt).grid_bounds(k)


def grid_gap(x: jax.Array, fmt: Format) -> jax.Array:
    """The grid gap Δ per element of ``x`` (float32, broadcastable against ``x``).

    Fixed point: ``2**-fl``. Block floating point: ``2**(e + 2 - wl)`` from the block's
    exact exponent (0 for an all-zero block). Floats: the gap of the binade of ``x``
    (``2**(max(e_x, min_exp) - man)``). ``FULL``: 0.
    """
    return _grid_format(fmt).grid_gap(x)


def storage_bits(fmt: Format) -> int:
    """Bits per element of the packed code (the shared block exponent not counted)."""
    return fmt.bits


def describe(fmt: Format) -> str:
    """A one-line human description of the grid."""
    return fmt.describe()
