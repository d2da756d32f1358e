"""Evaluation metrics for posterior samples: BMA, error, NLL, calibration.

Notation: ``N`` examples, ``C`` classes, ``S`` posterior samples, ``p_i`` the predictive
distribution of example ``i`` (a row of ``probs``), ``y_i`` its integer label,
``conf_i = max_c p_ic`` and ``correct_i = [argmax_c p_ic == y_i]`` (ties to the lowest index).

The array functions use :mod:`jax.numpy` and work under :func:`jax.jit` (``num_bins`` and
``from_log`` static); inputs narrower than float32 are promoted to float32. Label-range
checks run only outside ``jit`` (inside, an out-of-range label makes :func:`nll` NaN).
:func:`reliability_diagram_data`, :func:`paper_ece`, :func:`save_reliability_diagram` and
:func:`summarize` are host-side NumPy helpers. ECE uses ``num_bins`` equal-width bins
(default 15; report the count); :func:`paper_ece` reproduces the paper code's 9-bin binning.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp
from jax.typing import ArrayLike

from lpsampling.atomic import atomic_open
from lpsampling.validation import positive_int

__all__ = [
    "NLL_EPS",
    "BMAState",
    "ReliabilityData",
    "bayesian_model_average",
    "bma_init",
    "bma_probs",
    "bma_update",
    "error_rate",
    "expected_calibration_error",
    "log_bayesian_model_average",
    "nll",
    "pairwise_disagreement",
    "paper_ece",
    "reliability_diagram_data",
    "save_reliability_diagram",
    "summarize",
]

#: Probabilities are clipped below at this value before taking the log in :func:`nll`
#: (log-probabilities below ``log(NLL_EPS)`` are clipped likewise), so a single
#: zero-probability label contributes at most ``-log(1e-12) ~= 27.63`` nats instead of
#: ``inf``. It is representable in float32 (it is promoted to at least float32 first).
NLL_EPS: float = 1e-12


# --------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------


def _float_array(x: ArrayLike) -> jax.Array:
    """``x`` as a JAX array of a floating dtype at least as wide as float32."""
    x = jnp.asarray(x)
    dtype = jnp.promote_types(x.dtype, jnp.float32)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.float32
    return x.astype(dtype)


def _concrete(x: ArrayLike) -> np.ndarray | None:
    """NumPy view of ``x`` if it is concrete, ``None`` if it is a tracer (under jit)."""
    try:
        return np.asarray(x)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def _check_probs(probs: ArrayLike, name: str = "probs") -> jax.Array:
    probs = _float_array(probs)
    if probs.ndim != 2:
        raise ValueError(
            f"`{name}` must be 2-D with shape (num_examples, num_classes); "
            f"got shape {tuple(probs.shape)}"
        )
    if probs.shape[0] == 0 or probs.shape[1] == 0:
        raise ValueError(f"`{name}` must have at least one example and one class; "
                         f"got shape {tuple(probs.shape)}")
    return probs


def _check_labels(labels: ArrayLike, num_examples: int, num_classes: int,
                  probs_name: str = "probs") -> jax.Array:
    labels = jnp.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"`labels` must be 1-D with shape (num_examples,); "
                         f"got shape {tuple(labels.shape)}")
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"`labels` must have an integer dtype; got {labels.dtype}")
    if labels.shape[0] != num_examples:
        raise ValueError(
            f"`labels` has {labels.shape[0]} entries but `{probs_name}` has "
            f"{num_examples} rows; they must match"
        )
    concrete = _concrete(labels)
    if concrete is not None and concrete.size and (
        concrete.min() < 0 or concrete.max() >= num_classes
    ):
        raise ValueError(
            f"`labels` must lie in [0, {num_classes}); got values in "
            f"[{concrete.min()}, {concrete.max()}]"
        )
    return labels


def _check_num_bins(num_bins: int) -> int:
    return positive_int("num_bins", num_bins)


def _check_logits3(logits: ArrayLike) -> jax.Array:
    logits = _float_array(logits)
    if logits.ndim != 3:
        raise ValueError(
            "`logits` must be 3-D with shape (num_samples, num_examples, num_classes); "
            f"got shape {tuple(logits.shape)}"
        )
    if logits.shape[0] == 0:
        raise ValueError("`logits` must contain at least one posterior sample")
    return logits


# --------------------------------------------------------------------------------------
# Bayesian model averaging
# --------------------------------------------------------------------------------------


def log_bayesian_model_average(logits: ArrayLike) -> jax.Array:
    """Log of the Bayesian-model-average predictive distribution.

    For logits ``z[s, i, :]`` of ``S`` posterior samples::

        log p_BMA[i, c] = logsumexp_s( log_softmax(z[s, i])[c] ) - log S
                        = log( (1/S) * sum_s softmax(z[s, i])[c] )

    computed without ever exponentiating unnormalised logits, so it stays finite and
    accurate for very confident samples (use it for :func:`nll` with ``from_log=True``).

    Args:
      logits: array of shape ``(S, N, C)``.

    Returns:
      Array of shape ``(N, C)`` of log-probabilities (float32 or wider).

    Raises:
      ValueError: if ``logits`` is not 3-D or has ``S == 0``.
    """
    return _log_bma(_check_logits3(logits))


@jax.jit
def _log_bma(logits: jax.Array) -> jax.Array:
    log_p = jax.nn.log_softmax(logits, axis=-1)
    return logsumexp(log_p, axis=0) - jnp.log(jnp.asarray(logits.shape[0], log_p.dtype))


def bayesian_model_average(logits: ArrayLike) -> jax.Array:
    """Bayesian-model-average predictive probabilities ``(1/S) sum_s softmax(z_s)``.

    Equal to ``exp(log_bayesian_model_average(logits))``; see that function for the
    formula.

    Args:
      logits: array of shape ``(S, N, C)``.

    Returns:
      Array of shape ``(N, C)``; each row sums to 1.
    """
    return jnp.exp(log_bayesian_model_average(logits))


class BMAState(NamedTuple):
    """Running state of the streaming BMA.

    Attributes:
      prob_sum: float32 array ``(N, C)``, ``sum_s softmax(z_s)`` over the samples seen.
      count: int32 scalar, number of samples ``S`` seen so far.
    """

    prob_sum: jax.Array
    count: jax.Array


def bma_init(num_examples: int, num_classes: int) -> BMAState:
    """Empty streaming-BMA state for ``num_examples`` x ``num_classes`` predictions."""
    num_examples = positive_int("num_examples", num_examples)
    num_classes = positive_int("num_classes", num_classes)
    return BMAState(
        prob_sum=jnp.zeros((int(num_examples), int(num_classes)), jnp.float32),
        count=jnp.zeros((), jnp.int32),
    )


def bma_update(state: BMAState, logits: ArrayLike) -> BMAState:
    """Add one posterior sample (logits ``(N, C)``) or a batch ``(S, N, C)`` to ``state``.

    ``prob_sum <- prob_sum + sum_s softmax(z_s)`` (accumulated in float32) and
    ``count <- count + S``. Pure: returns a new state. Memory is ``O(N C)`` regardless of
    how many samples are streamed.
    """
    logits = _float_array(logits)
    if logits.ndim == 2:
        logits = logits[None]
    if logits.ndim != 3 or logits.shape[1:] != state.prob_sum.shape:
        raise ValueError(
            f"`logits` must have shape {tuple(state.prob_sum.shape)} or "
            f"(num_samples, *{tuple(state.prob_sum.shape)}); got {tuple(logits.shape)}"
        )
    return _bma_update(state, logits)


@jax.jit
def _bma_update(state: BMAState, logits: jax.Array) -> BMAState:
    probs = jax.nn.softmax(logits, axis=-1).astype(jnp.float32)
    return BMAState(
        prob_sum=state.prob_sum + jnp.sum(probs, axis=0),
        count=state.count + jnp.asarray(logits.shape[0], jnp.int32),
    )


def bma_probs(state: BMAState) -> jax.Array:
    """BMA probabilities ``prob_sum / count`` of a streaming state, shape ``(N, C)``.

    Raises:
      ValueError: if no sample has been added (only detectable outside ``jit``; under
        ``jit`` an empty state gives NaN).
    """
    count = _concrete(state.count)
    if count is not None and int(count) == 0:
        raise ValueError("`state` holds no samples; call bma_update first")
    return state.prob_sum / state.count.astype(state.prob_sum.dtype)


# --------------------------------------------------------------------------------------
# point metrics
# --------------------------------------------------------------------------------------


def error_rate(probs: ArrayLike, labels: ArrayLike) -> jax.Array:
    """Misclassification rate ``(1/N) sum_i [argmax_c p_ic != y_i]`` as a fraction.

    Only the argmax is used, so probabilities, log-probabilities or logits all work.
    """
    probs = _check_probs(probs)
    labels = _check_labels(labels, *probs.shape)
    return _error_rate(probs, labels)


@jax.jit
def _error_rate(probs: jax.Array, labels: jax.Array) -> jax.Array:
    return jnp.mean(jnp.argmax(probs, axis=-1) != labels, dtype=probs.dtype)


def nll(probs_or_logprobs: ArrayLike, labels: ArrayLike, *, from_log: bool = False
        ) -> jax.Array:
    """Mean negative log-likelihood ``-(1/N) sum_i log max(p_{i,y_i}, eps)``.

    ``eps`` is :data:`NLL_EPS` ``= 1e-12``. With ``from_log=True`` the input holds
    log-probabilities ``l_ic`` and the formula is ``-(1/N) sum_i max(l_{i,y_i}, log eps)``
    (preferred for BMA: pass :func:`log_bayesian_model_average`).
    """
    name = "probs_or_logprobs"
    values = _check_probs(probs_or_logprobs, name)
    labels = _check_labels(labels, *values.shape, probs_name=name)
    return _nll(values, labels, bool(from_log))


@partial(jax.jit, static_argnums=2)
def _nll(values: jax.Array, labels: jax.Array, from_log: bool) -> jax.Array:
    picked = jnp.take_along_axis(values, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]
    log_eps = jnp.log(jnp.asarray(NLL_EPS, values.dtype))
    if from_log:
        log_p = jnp.maximum(picked, log_eps)
    else:
        log_p = jnp.log(jnp.maximum(picked, jnp.asarray(NLL_EPS, values.dtype)))
    return -jnp.mean(log_p)


# --------------------------------------------------------------------------------------
# calibration
# --------------------------------------------------------------------------------------


@partial(jax.jit, static_argnums=2)
def _bin_sums(probs: jax.Array, labels: jax.Array, num_bins: int
              ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per-bin ``(count, sum correct, sum conf)`` with the ``[0,e1], (e_b, e_b+1]`` bins."""
    conf = jnp.max(probs, axis=-1)
    correct = (jnp.argmax(probs, axis=-1) == labels).astype(probs.dtype)
    edges = jnp.asarray(np.linspace(0.0, 1.0, num_bins + 1), dtype=probs.dtype)
    # side="left": first index b with edges[b] >= conf, so conf in (e_{b-1}, e_b] -> b - 1;
    # conf == 0 -> -1, clipped into the first bin; conf > 1 (rounding) -> last bin.
    idx = jnp.clip(jnp.searchsorted(edges, conf, side="left") - 1, 0, num_bins - 1)
    counts = jax.ops.segment_sum(jnp.ones_like(conf), idx, num_segments=num_bins)
    sum_correct = jax.ops.segment_sum(correct, idx, num_segments=num_bins)
    sum_conf = jax.ops.segment_sum(conf, idx, num_segments=num_bins)
    return counts, sum_correct, sum_conf


def expected_calibration_error(probs: ArrayLike, labels: ArrayLike, num_bins: int = 15
                               ) -> jax.Array:
    """Expected calibration error with ``num_bins`` equal-width confidence bins.

    With ``B = num_bins`` bins ``[0, 1/B], (1/B, 2/B], ..., ((B-1)/B, 1]`` over
    ``conf_i = max_c p_ic``, ``n_b`` examples in bin ``b``,
    ``acc_b = (1/n_b) sum_{i in b} correct_i`` and ``conf_b = (1/n_b) sum_{i in b} conf_i``::

        ECE = sum_b (n_b / N) * |acc_b - conf_b|
            = (1/N) * sum_b |sum_{i in b} (correct_i - conf_i)|

    (empty bins contribute 0). The result is a fraction in ``[0, 1]``, not a percentage.
    The paper's code bins differently (9 bins of width 1/9): see :func:`paper_ece`.

    Raises:
      ValueError: if ``num_bins`` is not a positive int, ``probs`` is not 2-D, or
        ``labels`` does not match ``probs``.
    """
    num_bins = _check_num_bins(num_bins)
    probs = _check_probs(probs)
    labels = _check_labels(labels, *probs.shape)
    return _ece(probs, labels, num_bins)


@partial(jax.jit, static_argnums=2)
def _ece(probs: jax.Array, labels: jax.Array, num_bins: int) -> jax.Array:
    _, sum_correct, sum_conf = _bin_sums(probs, labels, num_bins)
    return jnp.sum(jnp.abs(sum_correct - sum_conf)) / probs.shape[0]


class ReliabilityData(NamedTuple):
    """Per-bin statistics of a reliability diagram (NumPy arrays of length ``num_bins``).

    Attributes:
      edges: bin edges, length ``num_bins + 1``.
      counts: ``n_b``, number of examples per bin (int64).
      accuracy: ``acc_b`` (NaN for empty bins).
      confidence: ``conf_b``, mean confidence per bin (NaN for empty bins).
    """

    edges: np.ndarray
    counts: np.ndarray
    accuracy: np.ndarray
    confidence: np.ndarray


def reliability_diagram_data(probs: ArrayLike, labels: ArrayLike, num_bins: int = 15
                             ) -> ReliabilityData:
    """Per-bin count, accuracy and mean confidence, using the bins of
    :func:`expected_calibration_error` (so ``sum_b counts_b/N * |acc_b - conf_b|`` is its
    ECE)."""
    num_bins = _check_num_bins(num_bins)
    probs = _check_probs(probs)
    labels = _check_labels(labels, *probs.shape)
    counts, sum_correct, sum_conf = (np.asarray(a, np.float64)
                                     for a in _bin_sums(probs, labels, num_bins))
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.where(counts > 0, sum_correct / counts, np.nan)
        confidence = np.where(counts > 0, sum_conf / counts, np.nan)
    return ReliabilityData(
        edges=np.linspace(0.0, 1.0, num_bins + 1),
        counts=np.rint(counts).astype(np.int64),
        accuracy=accuracy,
        confidence=confidence,
    )


def paper_ece(probs: ArrayLike, labels: ArrayLike) -> float:
    """ECE exactly as computed by the paper's released code (host-side NumPy).

    Mirrors ``expected_calibration_error(y_true, y_pred, num_bins=10)`` in the paper's
    ``bnn/ens.py``::

        edges = np.linspace(0, 1, 10)                    # 0, 1/9, ..., 1 (float64)
        b_i   = np.digitize(conf_i, edges, right=True)   # e_{b-1} < conf_i <= e_b
        ECE   = (1/N) * sum_{b=0}^{9} |sum_{i: b_i = b} (correct_i - conf_i)|

    i.e. bin ``{0}`` plus 9 bins of width 1/9 (not 10 bins). Accumulation here is in
    float64. Differs from ``expected_calibration_error(..., num_bins=9)`` only through the
    bin convention (a confidence of exactly 0 has its own bin here, and float64 vs input-
    dtype edges for confidences within an ulp of ``k/9``). Not jit-compatible.
    """
    probs = _check_probs(probs)
    labels = _check_labels(labels, *probs.shape)
    p = np.asarray(probs)
    y = np.asarray(labels)
    conf = p.max(axis=-1).astype(np.float64)
    correct = (p.argmax(axis=-1) == y).astype(np.float64)
    bins = np.digitize(conf, np.linspace(0.0, 1.0, 10), right=True)
    total = 0.0
    for b in range(10):
        mask = bins == b
        if np.any(mask):
            total += abs(float(np.sum(correct[mask] - conf[mask])))
    return total / p.shape[0]


def save_reliability_diagram(
    path: str | os.PathLike[str],
    curves: Mapping[str, tuple[ArrayLike, ArrayLike]],
    num_bins: int = 15,
    title: str | None = None,
) -> Path:
    """Write a reliability diagram PNG for one or more methods.

    The top panel shows the diagonal ``acc = conf`` (perfect calibration) and, per method,
    the line ``conf_b -> acc_b`` over non-empty bins, labelled with its ECE and the bin
    count. A small bottom panel shows the histogram of confidences of every method.

    Rendering uses an explicit Agg canvas (``matplotlib.figure.Figure`` +
    ``FigureCanvasAgg``), so neither pyplot nor the global backend is touched. The file is
    written atomically: to a temporary file in the destination directory, then
    :func:`os.replace`.

    Args:
      path: destination ``.png``; its parent directory must exist.
      curves: ``{method name: (probs (N, C), labels (N,))}``, at least one entry.
      num_bins: number of equal-width bins (as in :func:`expected_calibration_error`).
      title: optional figure title.

    Returns:
      The destination path.

    Raises:
      ValueError: if ``curves`` is empty, ``num_bins`` is invalid or any ``probs`` /
        ``labels`` pair is malformed.
      FileNotFoundError: if the parent directory of ``path`` does not exist.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    num_bins = _check_num_bins(num_bins)
    if not isinstance(curves, Mapping) or len(curves) == 0:
        raise ValueError("`curves` must be a non-empty mapping {name: (probs, labels)}")
    path = Path(path)
    parent = path.parent
    if not parent.is_dir():
        raise FileNotFoundError(f"parent directory of `path` does not exist: {parent}")

    prepared = []
    for name, pair in curves.items():
        try:
            probs, labels = pair
        except (TypeError, ValueError) as err:
            raise ValueError(f"`curves[{name!r}]` must be a (probs, labels) pair") from err
        probs = _check_probs(probs)
        labels = _check_labels(labels, *probs.shape)
        data = reliability_diagram_data(probs, labels, num_bins)
        ece = float(expected_calibration_error(probs, labels, num_bins))
        conf = np.asarray(jnp.max(probs, axis=-1), np.float64)
        prepared.append((str(name), data, ece, conf))

    fig = Figure(figsize=(5.0, 6.0))
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, 1, height_ratios=(3, 1), hspace=0.08)
    ax = fig.add_subplot(grid[0])
    ax_hist = fig.add_subplot(grid[1], sharex=ax)
    ax.plot([0, 1], [0, 1], linestyle="--", color="0.5", linewidth=1, label="perfect")
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    for name, data, ece, conf in prepared:
        keep = data.counts > 0
        ax.plot(data.confidence[keep], data.accuracy[keep], marker="o", markersize=3,
                label=f"{name} (ECE {100 * ece:.2f}%)")
        ax_hist.hist(conf, bins=edges, histtype="step", density=True)
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.0)
    ax.set_ylabel("accuracy")
    ax.legend(loc="upper left", fontsize="small", title=f"{num_bins} equal-width bins",
              title_fontsize="small")
    ax.tick_params(labelbottom=False)
    ax_hist.set_xlabel("confidence (max probability)")
    ax_hist.set_ylabel("density")
    if title is not None:
        ax.set_title(title)

    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=100)
    return path


def pairwise_disagreement(predictions: ArrayLike, num_classes: int) -> jax.Array:
    """The diversity of an ensemble: the mean, over pairs of samples and over examples, of
    the fraction of examples on which two samples predict different classes.

    With ``c_ik`` the number of the ``S`` samples that predict class ``k`` on example
    ``i``, the agreeing pairs of example ``i`` are ``Σ_k c_ik (c_ik − 1) / 2``, so

    ``D = 1 − (1/N) Σ_i Σ_k c_ik (c_ik − 1) / (S (S − 1))``;

    ``D = 0`` when every sample predicts alike (and for ``S = 1``).

    Args:
      predictions: ``(S, N)`` integer class predictions (e.g. ``argmax`` of each
        sample's logits), values in ``[0, num_classes)``.
      num_classes: ``C``.

    Raises:
      ValueError: ``predictions`` is not 2-D or ``num_classes`` is not a positive int.
    """
    num_classes = positive_int("num_classes", num_classes)
    pred = jnp.asarray(predictions)
    if pred.ndim != 2:
        raise ValueError(f"`predictions` must be (S, N) class indices; got shape {pred.shape}")
    return _disagreement(pred, num_classes)


@partial(jax.jit, static_argnums=1)
def _disagreement(pred: jax.Array, num_classes: int) -> jax.Array:
    s = pred.shape[0]
    if s < 2:
        return jnp.zeros((), jnp.float32)
    counts = jnp.sum(jax.nn.one_hot(pred, num_classes, dtype=jnp.float32), axis=0)  # (N, C)
    agree = jnp.sum(counts * (counts - 1.0), axis=-1) / (s * (s - 1.0))
    return 1.0 - jnp.mean(agree)


# --------------------------------------------------------------------------------------
# aggregation over seeds
# --------------------------------------------------------------------------------------


def summarize(values: Sequence[float] | ArrayLike) -> tuple[float, float]:
    """Mean and standard error of the mean over independent runs (e.g. seeds).

    ``mean = (1/n) sum_k v_k``; ``se = s / sqrt(n)`` with the sample standard deviation
    ``s = sqrt( sum_k (v_k - mean)^2 / (n - 1) )`` (``ddof=1``); ``se = 0.0`` when
    ``n = 1``.

    Raises:
      ValueError: if ``values`` is empty or not 1-D.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"`values` must be a non-empty 1-D sequence; got shape {v.shape}")
    mean = float(v.mean())
    if v.size == 1:
        return mean, 0.0
    return mean, float(v.std(ddof=1) / math.sqrt(v.size))
