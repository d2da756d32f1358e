"""``FULL``: the identity format (no quantization, nothing encoded)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from lpsampling.formats._core import Format


@dataclasses.dataclass(frozen=True)
class Full(Format):
    """The identity format: no quantization at all."""

    is_identity = True

    @property
    def bits(self) -> int:
        return 32

    def __repr__(self) -> str:
        return "FULL"

    def grid_gap(self, x: jax.Array) -> jax.Array:
        """0: no grid."""
        return jnp.zeros((), jnp.float32)

    def round_f32(self, x: jax.Array, rounding: str, key) -> jax.Array:
        return x

    def code_dtype(self) -> np.dtype:
        raise ValueError("FULL has no code dtype: packed FULL keeps the tensor's own dtype")

    def check_storable(self, x) -> None:
        return None  # the tensor itself is stored, NaN and inf included

    def describe(self) -> str:
        return "FULL: no quantization, 32 bits"

    @property
    def name(self) -> str:
        return "fp32"

    @property
    def label(self) -> str:
        return "FP32"

    @classmethod
    def _parse_name(cls, key: str, role: str) -> Format | None:
        """``fp32`` (also ``full``, ``float32``): every number in full precision."""
        return FULL if key in ("fp32", "full", "float32") else None


FULL = Full()
