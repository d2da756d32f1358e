"""Evaluation of a run: the Bayesian model average ``(1/S) Σ_s softmax(f(x; θ_s))`` of its
sample bank on the test set (error, NLL, ECE, the paper's 9-bin ECE), and
:func:`run_experiment` (train → evaluate → JSON record).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lpsampling import bank as sample_bank
from lpsampling import metrics as _metrics
from lpsampling.atomic import write_json_atomic
from lpsampling.data import Dataset
from lpsampling.experiments.config import RunConfig, prepare_data
from lpsampling.experiments.engine import get_engine, run_keys
from lpsampling.experiments.loop import TrainOutput, train
from lpsampling.flax.predict import bank_predict

__all__ = ["MAX_NONFINITE_FRACTION", "EmptySampleBankError", "RunResult", "evaluate",
           "run_experiment"]

#: A run fails when more than this fraction of its steps was skipped because the
#: gradients were not finite (``"failed"`` in the record, non-zero exit of the CLI).
MAX_NONFINITE_FRACTION = 0.01


class EmptySampleBankError(ValueError):
    """Evaluation was asked for, but no posterior sample has been collected."""


@dataclasses.dataclass
class RunResult:
    """What :func:`run_experiment` returns: the JSON-ready ``record`` and the BMA
    predictive probabilities on the test set (for reliability diagrams)."""

    record: dict[str, Any]
    probs: np.ndarray
    labels: np.ndarray
    output: TrainOutput


def evaluate(output: TrainOutput, *, dataset: Dataset | None = None
             ) -> tuple[dict[str, Any], np.ndarray]:
    """Bayesian model average of the collected samples on the test set.

    Streams the samples one at a time (each with its own BatchNorm statistics) through
    the model, averaging softmax probabilities. A run with ``compute="int8"`` predicts from
    the packed bank directly (:func:`lpsampling.flax.bank_predict`: the int8 layers multiply
    the stored codes); ``metrics["bma_from"]`` says which (``"int8 codes"`` or
    ``"unpacked"``).

    Returns:
      ``(metrics, probs)``: error, NLL, ECE (``num_bins`` bins), the paper's 9-bin ECE,
      the error of the last sample alone, the mean error of the individual samples
      (``member_error``: the BMA's gain over it is the gain of averaging), the ensemble's
      diversity (``disagreement``: :func:`~lpsampling.metrics.pairwise_disagreement` of
      the samples' predictions); and the ``(N, C)`` BMA probabilities.

    Raises:
      EmptySampleBankError: (a ``ValueError``) when no sample has been collected.
    """
    config = output.config
    ds = prepare_data(config, dataset)
    engine = output.engine or get_engine(config, ds)
    bank, stats_bank = output.state.bank, output.state.stats_bank
    size = int(min(int(bank.count), bank.capacity))
    if size == 0:
        raise EmptySampleBankError(
            f"the sample bank is empty: no posterior sample was collected (training stopped "
            f"at step {output.step} of {output.total_steps}; samples are taken at the end "
            f"after steps {_short_list(output.sample_steps)})")
    n, c = ds.num_test, ds.num_classes
    bsz = min(config.eval_batch_size, n)
    k_eval = run_keys(config.seed).eval
    bma = _metrics.bma_init(n, c)
    last = None
    labels = jnp.asarray(ds.y_test)
    preds, member_errors = [], []
    for i in range(size):
        idx = jnp.asarray(i, jnp.int32)
        params = engine.bank_get(bank, idx)
        bstats = None if stats_bank is None else engine.bank_get(stats_bank, idx)
        k_i = jax.random.fold_in(k_eval, i)
        chunks = []
        for j, start in enumerate(range(0, n, bsz)):
            xb = ds.x_test[start:start + bsz]
            m = xb.shape[0]
            if m < bsz:  # pad: one compiled shape
                xb = np.concatenate([xb, np.zeros((bsz - m,) + xb.shape[1:], xb.dtype)])
            logits = engine.eval_logits(params, bstats, xb, jax.random.fold_in(k_i, j))
            chunks.append(logits[:m])
        logits = jnp.concatenate(chunks, axis=0)
        bma = _metrics.bma_update(bma, logits)
        last = logits
        preds.append(jnp.argmax(logits, axis=-1))
        member_errors.append(float(_metrics.error_rate(logits, labels)))
    if _bma_from_codes(config, bank):
        # The members' own predictions (member error, disagreement) come from the loop
        # above; the ensemble's probabilities from the int8 layers multiplying the bank's
        # codes, with the same keys per sample and chunk.
        probs = bank_predict(engine.model, bank, ds.x_test, stats_bank=stats_bank,
                             key=k_eval, batch_size=bsz)
        bma_from = "int8 codes"
    else:
        probs = _metrics.bma_probs(bma)
        bma_from = "unpacked"
    out = {
        "error": float(_metrics.error_rate(probs, labels)),
        "nll": float(_metrics.nll(probs, labels)),
        "ece": float(_metrics.expected_calibration_error(probs, labels, config.num_bins)),
        "ece_num_bins": config.num_bins,
        "paper_ece": float(_metrics.paper_ece(probs, labels)),
        "paper_ece_num_bins": 9,
        "last_sample_error": float(_metrics.error_rate(last, labels)),
        "member_error": float(np.mean(member_errors)),
        "disagreement": float(_metrics.pairwise_disagreement(jnp.stack(preds), c)),
        "num_samples": size,
        "num_test": n,
        "bma_from": bma_from,
    }
    return out, np.asarray(probs)


def _bma_from_codes(config: RunConfig, bank: sample_bank.SampleBank) -> bool:
    """True for a ``compute="int8"`` run whose bank holds codes: the BMA then runs the int8
    layers on them (:func:`lpsampling.flax.bank_predict`)."""
    return (getattr(config, "compute", "float32") == "int8"
            and not config.format_spec.weight.is_identity)


def _sampling(config: RunConfig, output: TrainOutput) -> dict[str, Any]:
    """When the samples were taken, in words a table can print."""
    steps, spe = output.sample_steps, output.steps_per_epoch
    first_epoch = (steps[0] - 1) / spe if steps else None
    span = (steps[-1] - steps[0]) / spe + 1 if steps else 0.0
    return {
        "num_samples": len(steps),
        "first_step": steps[0] if steps else None,
        "last_step": steps[-1] if steps else None,
        "window_start_fraction": (steps[0] / output.total_steps if steps else None),
        "first_epoch": first_epoch,
        "samples_per_epoch": len(steps) / max(span, 1.0),
        "temperature": float(config.temperature),
        "control": config.is_control,
    }


def _short_list(xs: Sequence[int]) -> str:
    xs = list(xs)
    if len(xs) <= 6:
        return str(xs)
    return f"[{xs[0]}, {xs[1]}, ..., {xs[-1]}] ({len(xs)} epochs)"


def _num_params(params: Any) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


def run_experiment(
    config: RunConfig,
    *,
    dataset: Dataset | None = None,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
    on_step: Callable[[int], None] | None = None,
) -> RunResult:
    """Train, sample, evaluate; optionally write the JSON record to ``out`` (atomically,
    only once everything succeeded).

    A run whose skipped-step fraction exceeds :data:`MAX_NONFINITE_FRACTION` or whose
    metrics are not finite is recorded with ``"complete": false`` and a ``"failed"``
    reason (the CLI exits non-zero); ``nonfinite_count`` / ``nonfinite_fraction`` count
    the skipped steps and ``nonfinite_metrics`` names the metrics written as ``null``.

    The record holds the config, the method and format labels, the metrics (error, NLL,
    ECE, paper ECE, last-sample error), the sample-bank bytes (packed and as float32),
    the history per epoch and timings.
    """
    ds = prepare_data(config, dataset)
    output = train(config, dataset=ds, resume=resume, progress=progress, on_step=on_step)
    t0 = time.perf_counter()
    metrics, probs = evaluate(output, dataset=ds)
    eval_time = time.perf_counter() - t0
    fspec = config.format_spec
    n_params = _num_params(output.state.params)
    cap = output.state.bank.capacity
    nbytes = sample_bank.nbytes(output.state.bank)
    record = {
        "label": config.label,
        "format_label": fspec.label,
        "method": config.method,
        "format": config.format,
        "compute": config.compute,
        "formats": fspec.describe(),
        "config": config.to_dict(),
        "metrics": metrics,
        "sample_epochs": output.sample_epochs,
        "sample_steps": output.sample_steps,
        "sampling": _sampling(config, output),
        "num_params": n_params,
        "bank": {
            "capacity": cap,
            "nbytes": nbytes,
            "float32_nbytes": 4 * n_params * cap,
            "ratio_vs_float32": nbytes / (4 * n_params * cap),
            "stats_nbytes": (0 if output.state.stats_bank is None
                             else sample_bank.nbytes(output.state.stats_bank)),
        },
        "steps": output.step,
        "steps_per_epoch": output.steps_per_epoch,
        "history": output.history,
        "timing": {"train_s": output.train_time_s, "eval_s": eval_time,
                   "resumed_from_step": output.resumed_from},
        "versions": {"jax": jax.__version__, "lpsampling": _version()},
        "nonfinite_count": output.nonfinite_count,
        "nonfinite_fraction": output.nonfinite_count / max(1, output.step),
        "nonfinite_metrics": sorted(k for k, v in metrics.items()
                                    if isinstance(v, float) and not math.isfinite(v)),
    }
    record["failed"] = _failure(record)
    record["complete"] = output.complete and record["failed"] is None
    if out is not None:
        write_json_atomic(out, record)
    return RunResult(record=record, probs=probs, labels=np.asarray(ds.y_test), output=output)


def _failure(record: dict[str, Any]) -> str | None:
    """Why a finished run counts as failed, or None."""
    reasons = []
    if record["nonfinite_fraction"] > MAX_NONFINITE_FRACTION:
        reasons.append(f"{record['nonfinite_count']} of {record['steps']} steps "
                       f"({100 * record['nonfinite_fraction']:.1f}%) skipped for non-finite "
                       f"gradients (limit {100 * MAX_NONFINITE_FRACTION:g}%)")
    if record["nonfinite_metrics"]:
        reasons.append("non-finite metrics: " + ", ".join(record["nonfinite_metrics"]))
    return "; ".join(reasons) or None


def _version() -> str:
    from lpsampling import __version__

    return __version__
