"""Number formats: which values a low-precision tensor may hold, and how they are stored.

Each format is a grid of representable values. For a tensor ``x`` the quantizers in
:mod:`lpsampling.quantize` and :mod:`lpsampling.vc` need two facts per element: the *gap
exponent* ``k`` (the local grid is the integer multiples of ``2**k``: fixed point
``k = -fl``; block floating point ``k = e + 2 - wl`` with ``e`` the block's exponent; low-bit
floats ``k = max(e_x, min_exp) - man``) and the saturation bounds ``lo``, ``hi`` (on the grid).

Each format is one class (a subclass of :class:`Format`, one module per family) carrying its
grid, rounding hook, packed encoding, description and short name, so the quantizers, the
storage and the update rule never branch on the format's class. Formats are frozen
dataclasses, hashable and therefore usable as static arguments of ``jax.jit``. Semantics
follow QPyTorch; the differences are documented on each class and on the formats page of
the documentation (``docs/formats.md``).
"""

# Re-exported with "as" (explicit re-exports); __all__ lists the documented surface.
from lpsampling.formats._core import FORMAT_TYPES as FORMAT_TYPES
from lpsampling.formats._core import NO_GRID as NO_GRID
from lpsampling.formats._core import Format as Format
from lpsampling.formats._core import check_format as check_format
from lpsampling.formats._core import describe as describe
from lpsampling.formats._core import float_exponent as float_exponent
from lpsampling.formats._core import grid_bounds as grid_bounds
from lpsampling.formats._core import grid_exponent as grid_exponent
from lpsampling.formats._core import grid_gap as grid_gap
from lpsampling.formats._core import pow2 as pow2
from lpsampling.formats._core import round_scaled as round_scaled
from lpsampling.formats._core import scale_pow2 as scale_pow2
from lpsampling.formats._core import storage_bits as storage_bits
from lpsampling.formats._core import uniform24 as uniform24
from lpsampling.formats.block import ZERO_BLOCK_EXPONENT as ZERO_BLOCK_EXPONENT
from lpsampling.formats.block import BlockFloatingPoint as BlockFloatingPoint
from lpsampling.formats.block import block_exponent as block_exponent
from lpsampling.formats.fixed import FixedPoint as FixedPoint
from lpsampling.formats.floating import FloatingPoint as FloatingPoint
from lpsampling.formats.full import FULL as FULL
from lpsampling.formats.full import Full as Full
from lpsampling.formats.names import FORMAT_NAMES as FORMAT_NAMES
from lpsampling.formats.names import ROLES as ROLES
from lpsampling.formats.names import normalize_format_name as normalize_format_name
from lpsampling.formats.names import parse_format as parse_format

__all__ = [
    "FixedPoint",
    "BlockFloatingPoint",
    "FloatingPoint",
    "Full",
    "FULL",
    "Format",
    "grid_gap",
    "parse_format",
]
