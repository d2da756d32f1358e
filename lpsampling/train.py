"""The experiment runner (backwards-compatible alias).

The code lives in :mod:`lpsampling.experiments` (``registry``, ``config``, ``engine``,
``checkpoint``, ``loop``, ``evaluation``, ``grid``); this module re-exports its public
names so that ``from lpsampling.train import RunConfig, compare`` keeps working. New code
should import from :mod:`lpsampling.experiments`. The manual is ``docs/experiments.md``.
"""

from lpsampling.atomic import write_json_atomic, write_text_atomic
from lpsampling.experiments.config import PRESETS, RunConfig, sample_epochs
from lpsampling.experiments.engine import PRNG_IMPL, TrainState
from lpsampling.experiments.evaluation import (
    EmptySampleBankError,
    RunResult,
    evaluate,
    run_experiment,
)
from lpsampling.experiments.grid import compare, format_table, paper_grid
from lpsampling.experiments.loop import TrainOutput, train
from lpsampling.experiments.registry import (
    FORMAT_NAMES,
    METHODS,
    MODEL_NAMES,
    SCHEDULES,
    FormatSpec,
    MethodSpec,
    get_format,
    get_method,
    method_label,
)

__all__ = [
    "METHODS",
    "FORMAT_NAMES",
    "MODEL_NAMES",
    "SCHEDULES",
    "PRESETS",
    "PRNG_IMPL",
    "MethodSpec",
    "FormatSpec",
    "RunConfig",
    "RunResult",
    "TrainOutput",
    "TrainState",
    "EmptySampleBankError",
    "get_method",
    "get_format",
    "method_label",
    "sample_epochs",
    "train",
    "evaluate",
    "run_experiment",
    "compare",
    "paper_grid",
    "format_table",
    "write_json_atomic",
    "write_text_atomic",
]
