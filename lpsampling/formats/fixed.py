"""Fixed point: one gap ``2**-fl`` for every element, saturating range."""

from __future__ import annotations

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np

from lpsampling.formats._core import Format, _check_int, _float_to_int_codes, pow2, scale_pow2
from lpsampling.formats.full import FULL

_NAME_RE = re.compile(r"^fixed(\d+)(?:-(\d+))?$")


@dataclasses.dataclass(frozen=True)
class FixedPoint(Format):
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

    uniform_grid = True

    def __post_init__(self):
        _check_int("wl", self.wl, 2, 32)
        _check_int("fl", self.fl, -100, 126)
        if self.wl - self.fl - 1 > 127:
            raise ValueError(
                f"wl - fl - 1 must be at most 127 (float32 range), got wl={self.wl}, fl={self.fl}"
            )
        for name in ("clamp", "symmetric"):
            value = getattr(self, name)
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"{name} must be True or False, got {value!r}")

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

    # -- grid and rounding --------------------------------------------------------------

    def grid_exponent(self, x: jax.Array) -> jax.Array:
        return jnp.asarray(-self.fl, jnp.int32)

    def grid_bounds(self, k: jax.Array) -> tuple[jax.Array, jax.Array]:
        return (jnp.float32(self.min_value), jnp.float32(self.max_value))

    def grid_gap(self, x: jax.Array) -> jax.Array:
        """``2**-fl``."""
        x = jnp.asarray(x, jnp.float32)
        return pow2(self.grid_exponent(x))

    # one exact, normal power of two each way (fl is in [-100, 126])
    def to_units(self, x: jax.Array, k: jax.Array) -> jax.Array:
        return x * np.float32(2.0**self.fl)

    def from_units(self, r: jax.Array, k: jax.Array) -> jax.Array:
        return r * np.float32(2.0**-self.fl)

    def saturate(self, y: jax.Array, k: jax.Array) -> jax.Array:
        if not self.clamp:
            return y
        return jnp.clip(y, np.float32(self.min_value), np.float32(self.max_value))

    # -- storage: code = the integer x * 2**fl --------------------------------------------

    def encode(self, q: jax.Array) -> tuple[jax.Array, None]:
        return _float_to_int_codes(scale_pow2(q, self.fl), self.min_code, self.max_code), None

    def decode(self, c: jax.Array, exps: None, shape: tuple[int, ...]) -> jax.Array:
        return scale_pow2(c.astype(jnp.float32), -self.fl)

    def check_storable(self, x) -> None:
        super().check_storable(x)
        if not self.clamp:
            # the nearest code, exactly as quantize computes it (half to even)
            xs = np.asarray(x, dtype=np.float32)
            code = np.round(xs.astype(np.float64) * 2.0**self.fl)
            if ((code > self.max_code) | (code < self.min_code)).any():
                raise ValueError(
                    f"pack: x has values outside the range [{self.min_value:g}, "
                    f"{self.max_value:g}] of {self!r} (clamp=False); they cannot be stored in "
                    f"{self.wl}-bit codes"
                )

    # -- naming ---------------------------------------------------------------------------

    def describe(self) -> str:
        return (f"{self!r}: gap 2^{-self.fl}, range [{self.min_value:g}, "
                f"{self.max_value:g}], {self.wl} bits")

    @property
    def name(self) -> str | None:
        """``fixed8`` for ``FixedPoint(8, 8)``, else ``fixed<wl>-<fl>`` (None unless clamped
        and not symmetric)."""
        if not self.clamp or self.symmetric:
            return None
        return "fixed8" if (self.wl, self.fl) == (8, 8) else f"fixed{self.wl}-{self.fl}"

    @property
    def label(self) -> str:
        return f"{self.wl}-bit fixed" + ("" if self.fl == self.wl else f" (fl={self.fl})")

    @classmethod
    def _parse_name(cls, key: str, role: str) -> Format | None:
        """``fixed<wl>`` (= ``fixed<wl>-<wl>``) or ``fixed<wl>-<fl>``: weights and gradients
        on the grid, activations and errors in full precision (the paper's fixed-point runs)."""
        m = _NAME_RE.match(key)
        if not m:
            return None
        wl = int(m.group(1))
        fl = int(m.group(2)) if m.group(2) is not None else wl
        fmt = cls(wl, fl)
        return FULL if role in ("activation", "error") else fmt
