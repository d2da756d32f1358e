"""Small floats (QPyTorch convention), rounded and encoded on the float32 bit pattern."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from lpsampling.formats._core import (
    _F32_MIN_NORMAL_EXP,
    NO_GRID,
    Format,
    _check_int,
    _pow2_or_subnormal,
    float_exponent,
    pow2,
)

_U = jnp.uint32


@dataclasses.dataclass(frozen=True)
class FloatingPoint(Format):
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

    signed_codes = False  # sign | biased exponent | mantissa bit patterns

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

    # -- grid and rounding --------------------------------------------------------------

    def grid_exponent(self, x: jax.Array) -> jax.Array:
        """``max(e_x, min_exp) - man`` (:data:`NO_GRID` below float32's normal range)."""
        e = jnp.maximum(float_exponent(x), self.min_exp)
        e = jnp.minimum(e, min(self.max_exp, 127))  # inf/NaN: the top binade's gap
        k = e - self.man
        return jnp.where(k < _F32_MIN_NORMAL_EXP, NO_GRID, k)

    def grid_bounds(self, k: jax.Array) -> tuple[jax.Array, jax.Array]:
        m = jnp.float32(self.max_value) if self.exp < 8 else jnp.float32(jnp.inf)
        return -m, m

    def grid_gap(self, x: jax.Array) -> jax.Array:
        """The gap of the binade of ``x``: ``2**(max(e_x, min_exp) - man)``."""
        x = jnp.asarray(x, jnp.float32)
        # the exact exponent, also where the gap is a float32 subnormal (exp = 8)
        e = jnp.clip(float_exponent(x), self.min_exp, min(self.max_exp, 127))
        return _pow2_or_subnormal(e - self.man)

    # exp <= 7: |k| <= 62 + 23, so 2**-k and 2**k are single normal powers of two
    def to_units(self, x: jax.Array, k: jax.Array) -> jax.Array:
        return x * pow2(-k)

    def from_units(self, r: jax.Array, k: jax.Array) -> jax.Array:
        return r * pow2(k)

    def round_f32(self, x: jax.Array, rounding: str, key) -> jax.Array:
        """The grid kernel for ``exp < 8``; with 8 exponent bits, on the bit pattern."""
        if self.exp >= 8:
            return self._round_bits(x, rounding, key)
        return super().round_f32(x, rounding, key)

    def _round_bits(self, x: jax.Array, rounding: str, key) -> jax.Array:
        """Round float32 ``x`` to ``man`` mantissa bits on its bit pattern (exp == 8).

        With eight exponent bits the format's binades and subnormals are float32's own, so
        the magnitude's bit pattern is linear in the value within each binade and rounding
        at bit ``23 - man`` (the carry may step into the next binade) is exact, subnormals
        included.
        """
        shift = 23 - self.man
        if shift == 0:
            return x
        bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
        sign = bits & jnp.uint32(0x80000000)
        mag = bits & jnp.uint32(0x7FFFFFFF)
        if rounding == "nearest":
            odd = (mag >> shift) & jnp.uint32(1)
            rounded = mag + jnp.uint32((1 << (shift - 1)) - 1) + odd
        else:
            rounded = mag + (jax.random.bits(key, x.shape, jnp.uint32) >> (32 - shift))
        rounded = rounded & jnp.uint32(~((1 << shift) - 1) & 0xFFFFFFFF)
        special = mag >= jnp.uint32(0x7F800000)  # inf and NaN keep their pattern
        out = sign | jnp.where(special, mag, rounded)
        return jax.lax.bitcast_convert_type(out, jnp.float32)

    # -- storage: the (1 + exp + man)-bit pattern, by integer operations ------------------

    def encode(self, q: jax.Array) -> tuple[jax.Array, None]:
        """``sign | biased exponent | mantissa`` (bias ``2**(exp-1) - 1``); for ``exp = 8``
        float32's top ``9 + man`` bits (IEEE inf/NaN)."""
        bits = jax.lax.bitcast_convert_type(q, jnp.uint32)
        sign = bits >> 31
        nan = jnp.isnan(q)
        if self.exp >= 8:
            shift = 23 - self.man
            code = bits >> shift
            if self.man >= 1:  # keep NaN a NaN even if its payload was in the dropped bits
                nan_code = (sign << (8 + self.man)) | _U(
                    (0xFF << self.man) | (1 << (self.man - 1)))
                code = jnp.where(nan, nan_code, code)
            else:
                code = jnp.where(nan, _U(0), code)
            return code, None
        man, bias = self.man, 2 ** (self.exp - 1) - 1
        big_e = ((bits >> 23) & _U(0xFF)).astype(jnp.int32)
        mant = bits & _U(0x7FFFFF)
        e = big_e - 127
        normal = e >= self.min_exp
        normal_code = ((e + bias).astype(jnp.uint32) << man) | (mant >> (23 - man))
        sub_shift = jnp.clip((23 - man) + (self.min_exp - e), 0, 31).astype(jnp.uint32)
        sub_code = (mant | _U(0x800000)) >> sub_shift
        mag = jnp.where(normal, normal_code, jnp.where(big_e == 0, _U(0), sub_code))
        code = (sign << (self.exp + man)) | mag
        return jnp.where(nan, _U(0), code), None

    def decode(self, c: jax.Array, exps: None, shape: tuple[int, ...]) -> jax.Array:
        c = c.astype(jnp.uint32)
        if self.exp >= 8:
            return jax.lax.bitcast_convert_type(c << (23 - self.man), jnp.float32)
        man, bias = self.man, 2 ** (self.exp - 1) - 1
        sign = ((c >> (self.exp + man)) & _U(1)) << 31
        big_e = ((c >> man) & _U(2**self.exp - 1)).astype(jnp.int32)
        mant = c & _U(2**man - 1)
        normal_bits = ((big_e - bias + 127).astype(jnp.uint32) << 23) | (mant << (23 - man))
        sub_val = mant.astype(jnp.float32) * pow2(self.min_exp - man)  # a normal float32
        sub_bits = jax.lax.bitcast_convert_type(sub_val, jnp.uint32)
        out = sign | jnp.where(big_e > 0, normal_bits, sub_bits)
        return jax.lax.bitcast_convert_type(out, jnp.float32)

    def check_storable(self, x) -> None:
        """``exp < 8``: no NaN or inf; ``exp = 8``: inf is stored, NaN only if ``man >= 1``."""
        if self.exp < 8:
            return super().check_storable(x)
        if self.man == 0:
            xs = np.asarray(x, dtype=np.float32)
            self._reject(np.isnan(xs), "NaN")

    # -- naming ---------------------------------------------------------------------------

    def describe(self) -> str:
        return (f"{self!r}: {self.man} mantissa bits, exponents [{self.min_exp}, "
                f"{self.max_exp}], max {self.max_value:g}, {self.bits} bits")

    @property
    def label(self) -> str:
        return f"{self.bits}-bit float (exp={self.exp}, man={self.man})"
