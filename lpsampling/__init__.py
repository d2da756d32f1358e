"""lpsampling: low-precision stochastic-gradient MCMC in JAX.

SGLD and cyclical SGLD whose weights, gradients and accumulators live on low-precision
grids (fixed point, block floating point, small floats), after Zhang, Wilson & De Sa,
"Low-Precision Stochastic Gradient Langevin Dynamics" (ICML 2022).

Layers, one way: formats → quantize / vc_quantize → one update rule (``update``) → faces
(``lps.sgld`` & co. for optax, ``lps.blackjax``, ``lps.flax``, ``lps.parallel``, the CLI).
"""

from lpsampling import blackjax
from lpsampling.formats import (
    FULL,
    BlockFloatingPoint,
    FixedPoint,
    FloatingPoint,
    Format,
    Full,
    grid_gap,
)
from lpsampling.optax import (
    SGMCMCState,
    current_learning_rate,
    cyclical_sgld,
    init_weights,
    is_sampling,
    sgd,
    sgld,
)
from lpsampling.quantize import quantize, quantize_tree, quantizer
from lpsampling.schedules import cyclical_schedule, paper_decay_schedule
from lpsampling.update import ACCUMULATORS, Precision
from lpsampling.vc import vc_quantize

__version__ = "0.1.0"

__all__ = [
    "ACCUMULATORS",
    "FULL",
    "BlockFloatingPoint",
    "FixedPoint",
    "FloatingPoint",
    "Format",
    "Full",
    "Precision",
    "SGMCMCState",
    "blackjax",
    "current_learning_rate",
    "cyclical_schedule",
    "cyclical_sgld",
    "grid_gap",
    "init_weights",
    "is_sampling",
    "paper_decay_schedule",
    "quantize",
    "quantize_tree",
    "quantizer",
    "sgd",
    "sgld",
    "vc_quantize",
]
