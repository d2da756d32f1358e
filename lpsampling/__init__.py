"""lpsampling: low-precision stochastic-gradient MCMC in JAX.

SGLD and cyclical SGLD whose weights, gradients and accumulators live on low-precision
grids (fixed point, block floating point, small floats), after Zhang, Wilson & De Sa,
"Low-Precision Stochastic Gradient Langevin Dynamics" (ICML 2022).

Layers, one way: formats → quantize / vc_quantize → one update rule (``update``) → faces
(``lps.sgld`` & co. for optax, ``lps.blackjax``, ``lps.flax``, ``lps.parallel``, the CLI).
"""

from lpsampling import bank, formats, int8, optax, schedules, storage, update, validation, vc
from lpsampling.bank import SampleBank
from lpsampling.formats import (
    FULL,
    BlockFloatingPoint,
    FixedPoint,
    FloatingPoint,
    Format,
    Full,
    grid_gap,
)
from lpsampling.int8 import (
    Int8Operand,
    encode_int8,
    int8_conv,
    int8_conv_encoded,
    int8_matmul,
    int8_matmul_encoded,
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
from lpsampling.storage import (  # sample_bank_*: deprecated aliases of lps.bank.*
    Packed,
    load_packed,
    pack,
    sample_bank_add,
    sample_bank_get,
    sample_bank_init,
    sample_bank_nbytes,
    sample_bank_size,
    sample_bank_stack,
    save_packed,
    unpack,
)
from lpsampling.update import ACCUMULATORS, Precision
from lpsampling.vc import vc_quantize

__version__ = "0.1.0"


_LAZY_SUBMODULES = (
    "blackjax", "parallel", "flax", "data", "metrics", "experiments", "train", "gaussian", "cli",
)


def __getattr__(name: str):
    # Faces and tools are imported on first use: importing blackjax starts the JAX backend,
    # after which jax.distributed.initialize (multi-host runs) refuses to run, and the
    # experiment modules pull in flax, orbax and matplotlib.
    if name in _LAZY_SUBMODULES:
        import importlib

        module = importlib.import_module(f"lpsampling.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'lpsampling' has no attribute {name!r}")

__all__ = [
    # functions, classes and constants
    "ACCUMULATORS",
    "BlockFloatingPoint",
    "current_learning_rate",
    "cyclical_schedule",
    "cyclical_sgld",
    "FixedPoint",
    "FloatingPoint",
    "Format",
    "FULL",
    "Full",
    "grid_gap",
    "encode_int8",
    "init_weights",
    "Int8Operand",
    "int8_conv",
    "int8_conv_encoded",
    "int8_matmul",
    "int8_matmul_encoded",
    "is_sampling",
    "load_packed",
    "pack",
    "Packed",
    "paper_decay_schedule",
    "Precision",
    "quantize",
    "quantize_tree",
    "quantizer",
    "sample_bank_add",
    "sample_bank_get",
    "sample_bank_init",
    "sample_bank_nbytes",
    "sample_bank_size",
    "sample_bank_stack",
    "SampleBank",
    "save_packed",
    "sgd",
    "sgld",
    "SGMCMCState",
    "unpack",
    "vc_quantize",
    # submodules (the lazy ones are imported on first access)
    "atomic",
    "bank",
    "formats",
    "int8",
    "optax",
    "schedules",
    "storage",
    "update",
    "validation",
    "vc",
    *_LAZY_SUBMODULES,
]
