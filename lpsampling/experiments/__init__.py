"""The experiment runner: train / sample one configuration, evaluate its Bayesian model
average, checkpoint and resume, run the paper's grid; the CLI and the Gaussian study.

Modules: ``registry`` (names → specs), ``config`` (:class:`RunConfig`), ``engine`` (model
and jitted step, :func:`make_train_step`), ``checkpoint`` (orbax), ``loop`` (:func:`train`),
``evaluation`` (:func:`evaluate`, :func:`run_experiment`), ``grid`` (:func:`compare`),
``stats`` (mean ± SE and verdicts), ``cli``, ``gaussian``, ``logreg`` (Bayesian logistic
regression against NUTS). Names below are imported on first use. Manual: docs/experiments.md.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "registry": ("METHODS", "FORMAT_NAMES", "MODEL_NAMES", "SCHEDULES", "MethodSpec",
                 "FormatSpec", "normalize_name", "get_method", "get_format", "method_label"),
    "config": ("RunConfig", "PRESETS", "sample_steps", "sample_epochs", "prepare_data"),
    "engine": ("PRNG_IMPL", "Engine", "TrainState", "TrainStep", "RunKeys", "cross_entropy",
               "get_engine", "make_train_step", "run_keys"),
    "checkpoint": ("CHECKPOINT_VERSION", "Checkpointer"),
    "loop": ("TrainOutput", "train"),
    "evaluation": ("EmptySampleBankError", "RunResult", "evaluate", "run_experiment"),
    "grid": ("paper_grid", "format_table", "compare", "reference_row", "save_summary_figure",
             "save_reliability_grid"),
    "stats": ("Comparison", "compare_samples"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
_SUBMODULES = (*_EXPORTS, "cli", "gaussian", "logreg")


def __getattr__(name: str):
    # lazy: `lpsampling.experiments.gaussian` and the CLI's parser need neither flax's
    # models nor orbax
    if name in _WHERE:
        value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [*_WHERE, *_SUBMODULES]
