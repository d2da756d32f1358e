"""lpsampling: low-precision stochastic-gradient MCMC in JAX.

SGLD and cyclical SGLD whose weights, gradients and accumulators live on low-precision
grids (fixed point, block floating point, small floats), after Zhang, Wilson & De Sa,
"Low-Precision Stochastic Gradient Langevin Dynamics" (ICML 2022).
"""

from lpsampling.formats import (
    FULL,
    BlockFloatingPoint,
    FixedPoint,
    FloatingPoint,
    Format,
    Full,
    grid_gap,
)
from lpsampling.quantize import quantize, quantize_tree, quantizer

__version__ = "0.1.0"

__all__ = [
    "FULL",
    "BlockFloatingPoint",
    "FixedPoint",
    "FloatingPoint",
    "Format",
    "Full",
    "grid_gap",
    "quantize",
    "quantize_tree",
    "quantizer",
]
