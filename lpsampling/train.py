r"""The experiment runner as a library: train / sample one configuration, evaluate its
Bayesian model average, checkpoint and resume, and run the paper's method grid.

One configuration is a frozen :class:`RunConfig`; :func:`run_experiment` trains it,
collects posterior samples into a packed sample bank, evaluates the Bayesian model
average (BMA) on the test set and returns (and optionally writes) a JSON-ready dict.
:func:`compare` runs the grid of the paper's Tables 1 and 2 over several seeds.

Methods (names are case-insensitive; ``_`` may be written for ``-``)
--------------------------------------------------------------------

=================  ==========  ============  ======================================
name               sampler     accumulator   label (FP32 / low precision)
=================  ==========  ============  ======================================
``sgld``           SGLD        full          SGLDFP / SGLDLP-F
``sgd``            SGD         full          SGDFP / SGDLP-F
``csgld``          cyclical    full          cSGLDFP / cSGLD-F
``sgldlp-f``       SGLD        full          SGLDLP-F (needs a low-precision format)
``sgdlp-f``        SGD         full          SGDLP-F
``sgldlp-l``       SGLD        low           naive SGLDLP-L
``vc-sgldlp-l``    SGLD        vc            VC SGLDLP-L
``sgdlp-l``        SGD         low           SGDLP-L
``csgld-f``        cyclical    full          cSGLD-F
``csgldlp-l``      cyclical    low           naive cSGLDLP-L
``vc-csgldlp-l``   cyclical    vc            VC cSGLDLP-L
=================  ==========  ============  ======================================

Formats
-------

* ``fp32``: nothing quantized.
* ``fixed8`` (= ``fixed8-8``): weights and gradients ``FixedPoint(8, 8)``, activations and
  errors in full precision, as the paper's fixed-point runs. ``FixedPoint(8, 8)`` covers
  only ``[-0.5, 0.49609375]``: every weight (BatchNorm scales included) and every
  gradient component is clamped to that range — the paper does the same.
  ``fixed<wl>-<fl>`` (e.g. ``fixed8-6``) picks another fixed-point grid.
* ``bfp8`` (``bfp<wl>``): weights, gradients, activations and errors on 8-bit block
  floating point. Activations and errors use ``BlockFloatingPoint(8, axis=0)``: one
  exponent per example, as the paper. Weights and gradients use one exponent per *output
  unit / filter*, as the paper's ``BlockFloatingPoint(8, dim=0)`` on PyTorch's
  ``(out, in, kh, kw)`` layout; in Flax's ``(..., in, out)`` layout that is
  ``BlockFloatingPoint(8, axis=-1)`` (for 1-D biases and BatchNorm parameters both mean
  one block per element).

Training
--------

Loss: mean cross-entropy over the minibatch; ``η`` is the step size on that mean, the
Gaussian prior enters as ``weight_decay`` in the sampler, ``N`` = number of training
examples, so the Langevin noise variance per step is ``2ηT/N``. The model always runs on
the low-precision weights (``lps.init_weights`` for the first pass). Schedules:
``constant``, ``decay`` (the paper's: constant for half the run, linear down to 1% at
90%, then constant) for SGLD/SGD methods, and the cosine ``cyclical`` schedule for the
cyclical methods (chosen automatically when ``schedule`` is None).

Data order is a pure function of ``(seed, epoch)`` and every random draw of a step
(quantizer keys, augmentation) a pure function of ``(seed, step)``; the sampler's own key
lives in its state. Hence a run resumed from a checkpoint continues bit-identically.

Posterior samples
-----------------

One sample is taken at the end of an epoch, over the last ``samples`` epochs (the paper:
the last 50 of 245), or for cyclical methods over the last ``cycle_samples`` epochs of
each of the ``num_cycles`` cycles (the paper: 5 of the 35 epochs of each of 7 cycles).
SGD methods are not samplers: their "ensemble" is the final weights alone (one sample).
Samples are the weights the model runs on, stored packed in the weight format (real
8-bit storage; ``fp32`` stores float32), and the BatchNorm running statistics of each
sample are stored with it (float32).

Evaluation: the BMA ``(1/S) Σ_s softmax(f(x; θ_s))`` over the bank, streamed one sample
at a time, on the test set; activation quantizers also run at test time (stochastically,
as the paper's block-floating-point runs); test-time augmentation is not applied.
Metrics: error, NLL, ECE with ``num_bins`` equal-width bins (default 15), and
``paper_ece`` — the paper's code's 9-bin quirk (:func:`lpsampling.metrics.paper_ece`).

Checkpoints
-----------

With ``checkpoint_dir`` set, the full state (params, BatchNorm statistics, optimizer
state with its PRNG key stored as ``jax.random.key_data``, step count, epoch/batch
position, sample banks, the running epoch sums, the history) is written with orbax every
``checkpoint_every`` steps and at the end of training. Orbax writes each checkpoint into
a temporary directory and renames it when complete, so a crash never leaves a checkpoint
that looks complete. The training-relevant fields of the config are stored with it;
resuming with a different configuration raises ``ValueError``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lpsampling import metrics as _metrics
from lpsampling._io import atomic_open, write_text_atomic
from lpsampling.data import DATASETS, Dataset, batches, load_dataset, random_crop_flip
from lpsampling.flax import MODELS, QuantConfig, ResNet, create_model
from lpsampling.formats import FULL, BlockFloatingPoint, FixedPoint, Format, Full
from lpsampling.optax import (
    current_learning_rate,
    cyclical_sgld,
    init_weights,
    is_sampling,
    sgd,
    sgld,
)
from lpsampling.schedules import paper_decay_schedule
from lpsampling.storage import (
    SampleBank,
    sample_bank_add,
    sample_bank_get,
    sample_bank_init,
    sample_bank_nbytes,
)

__all__ = [
    "METHODS",
    "FORMAT_NAMES",
    "MODEL_NAMES",
    "SCHEDULES",
    "PRESETS",
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

_CHECKPOINT_VERSION = 1


# ======================================================================================
# methods and formats


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """What a method name means.

    Attributes:
      name: canonical name (e.g. ``"vc-sgldlp-l"``).
      kind: ``"sgld"``, ``"sgd"`` or ``"cyclical"`` (cyclical SGLD).
      accumulator: ``"full"``, ``"low"`` or ``"vc"`` (see :func:`lpsampling.sgld`).
      fp_label: the paper's label in full precision, or None when the method needs a
        low-precision format.
      lp_label: the paper's label with a low-precision format.
    """

    name: str
    kind: str
    accumulator: str
    fp_label: str | None
    lp_label: str

    @property
    def noise(self) -> bool:
        """Whether the method adds Langevin noise (it is a sampler)."""
        return self.kind != "sgd"

    @property
    def cyclical(self) -> bool:
        return self.kind == "cyclical"


METHODS: dict[str, MethodSpec] = {
    m.name: m
    for m in (
        MethodSpec("sgld", "sgld", "full", "SGLDFP", "SGLDLP-F"),
        MethodSpec("sgd", "sgd", "full", "SGDFP", "SGDLP-F"),
        MethodSpec("csgld", "cyclical", "full", "cSGLDFP", "cSGLD-F"),
        MethodSpec("sgldlp-f", "sgld", "full", None, "SGLDLP-F"),
        MethodSpec("sgdlp-f", "sgd", "full", None, "SGDLP-F"),
        MethodSpec("sgldlp-l", "sgld", "low", None, "naive SGLDLP-L"),
        MethodSpec("vc-sgldlp-l", "sgld", "vc", None, "VC SGLDLP-L"),
        MethodSpec("sgdlp-l", "sgd", "low", None, "SGDLP-L"),
        MethodSpec("csgld-f", "cyclical", "full", None, "cSGLD-F"),
        MethodSpec("csgldlp-l", "cyclical", "low", None, "naive cSGLDLP-L"),
        MethodSpec("vc-csgldlp-l", "cyclical", "vc", None, "VC cSGLDLP-L"),
    )
}
"""Method name → :class:`MethodSpec`."""


@dataclasses.dataclass(frozen=True)
class FormatSpec:
    """Where each kind of number lives for a named precision setting."""

    name: str
    label: str
    weight: Format
    grad: Format
    activation: Format
    error: Format

    @property
    def is_full(self) -> bool:
        return all(isinstance(f, Full) for f in (self.weight, self.grad, self.activation,
                                                 self.error))

    @property
    def quant(self) -> QuantConfig:
        """The model's activation/error quantization."""
        return QuantConfig(self.activation, self.error)

    def describe(self) -> dict[str, str]:
        return {"weight": repr(self.weight), "grad": repr(self.grad),
                "activation": repr(self.activation), "error": repr(self.error)}


FORMAT_NAMES: tuple[str, ...] = ("fp32", "fixed8", "bfp8", "fixed<wl>-<fl>", "bfp<wl>")
"""The format names :func:`get_format` accepts (``<wl>``, ``<fl>``: integers)."""

MODEL_NAMES: tuple[str, ...] = tuple(MODELS) + ("resnet-mini",)
"""Model names: those of :func:`lpsampling.flax.create_model` plus ``resnet-mini`` (a
CIFAR-style ResNet with one basic block per stage, widths 16/32; for CPU tests)."""

SCHEDULES: tuple[str, ...] = ("constant", "decay", "cyclical")

_FIXED_RE = re.compile(r"^fixed(\d+)(?:-(\d+))?$")
_BFP_RE = re.compile(r"^bfp(\d+)$")


def _norm_name(name: str, what: str) -> str:
    if not isinstance(name, str):
        raise ValueError(f"{what} must be a string, got {name!r}")
    return name.strip().lower().replace("_", "-")


def get_method(name: str) -> MethodSpec:
    """The :class:`MethodSpec` of a method name (case-insensitive).

    Raises:
      ValueError: unknown name; the message lists the valid names.
    """
    key = _norm_name(name, "method")
    if key not in METHODS:
        raise ValueError(f"unknown method {name!r}; valid methods: {', '.join(METHODS)}")
    return METHODS[key]


@functools.lru_cache(maxsize=64)
def get_format(name: str) -> FormatSpec:
    """The :class:`FormatSpec` of a format name (case-insensitive).

    ``fp32``; ``fixed8`` = ``fixed8-8`` (the paper's 8-bit fixed point, weights and
    gradients only); ``fixed<wl>-<fl>``; ``bfp8`` / ``bfp<wl>`` (block floating point on
    weights, gradients, activations and errors).

    Raises:
      ValueError: unknown name or invalid word length; the message lists the valid names.
    """
    key = _norm_name(name, "format")
    valid = f"valid formats: {', '.join(FORMAT_NAMES)}"
    if key in ("fp32", "full", "float32"):
        return FormatSpec("fp32", "FP32", FULL, FULL, FULL, FULL)
    m = _FIXED_RE.match(key)
    if m:
        wl = int(m.group(1))
        fl = int(m.group(2)) if m.group(2) is not None else wl
        try:
            fmt = FixedPoint(wl, fl)
        except ValueError as err:
            raise ValueError(f"invalid format {name!r}: {err}; {valid}") from None
        canon = "fixed8" if (wl, fl) == (8, 8) else f"fixed{wl}-{fl}"
        return FormatSpec(canon, f"{wl}-bit fixed" + ("" if fl == wl else f" (fl={fl})"),
                          fmt, fmt, FULL, FULL)
    m = _BFP_RE.match(key)
    if m:
        wl = int(m.group(1))
        try:
            w = BlockFloatingPoint(wl, axis=-1)
            a = BlockFloatingPoint(wl, axis=0)
        except ValueError as err:
            raise ValueError(f"invalid format {name!r}: {err}; {valid}") from None
        return FormatSpec(f"bfp{wl}", f"{wl}-bit BFP", w, w, a, a)
    raise ValueError(f"unknown format {name!r}; {valid}")


def method_label(method: str, fmt: str) -> str:
    """The paper's name of ``method`` run in format ``fmt`` (e.g. ``"VC SGLDLP-L"``)."""
    spec, fspec = get_method(method), get_format(fmt)
    if fspec.is_full:
        return spec.fp_label or spec.lp_label
    return spec.lp_label


# ======================================================================================
# configuration


def _check_pos_int(name: str, value: Any, *, allow_none: bool = False, minimum: int = 1):
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _check_float(name: str, value: Any, *, positive: bool = False):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < 0 or (positive and v == 0):
        raise ValueError(f"{name} must be {'> 0' if positive else '>= 0'} and finite, "
                         f"got {value!r}")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """One experiment: dataset × model × method × format × hyperparameters × seed.

    The defaults are the quick setting of ``lpsampling compare``: scikit-learn's digits,
    an MLP with 100 hidden units, 60 epochs of batch 64 (22 steps each), lr 0.5 with the
    paper's decay schedule, weight decay 5e-4, a cold posterior ``T = 0.01`` (the paper's
    CIFAR runs use ``T = 1e-3``; at ``T = 1`` SGLD on digits trades accuracy for spread),
    2 cycles of 30 epochs for the cyclical methods; 12 samples (cyclical: 4 per cycle).
    :data:`PRESETS` hold the paper's CIFAR settings.

    Names are normalised (lower case; ``method`` uses ``-``, ``dataset`` uses ``_``) and
    validated on construction: unknown names raise ``ValueError`` listing the choices.

    Attributes:
      dataset: one of :data:`lpsampling.data.DATASETS`.
      data_dir: directory of the dataset files (not needed for ``digits``).
      model: one of :data:`MODEL_NAMES`.
      method: one of :data:`METHODS`.
      format: a name accepted by :func:`get_format`.
      epochs: training epochs.
      batch_size: minibatch size (the last incomplete batch of an epoch is dropped).
      lr: step size ``η`` on the mean minibatch loss (initial value for schedules).
      schedule: ``"constant"``, ``"decay"`` or ``"cyclical"``; None picks ``"cyclical"``
        for the cyclical methods and ``"decay"`` otherwise. Cyclical methods require
        ``"cyclical"`` and the others forbid it.
      temperature: ``T`` (1 samples the posterior; the paper's CIFAR runs use 1e-3).
      weight_decay: Gaussian prior ``wd`` per datum (in the sampler, full precision).
      num_cycles: cycles of the cyclical methods (``epochs`` must be a multiple).
      exploration_ratio: first fraction of each cycle without noise (cyclical only; 0:
        noise on every step, as the low-precision paper; the original cSGLD paper
        samples only late in each cycle).
      samples: SGLD methods: number of samples, one per epoch over the last ``samples``
        epochs; None: ``round(epochs · 50/245)`` (the paper's ratio), at least 1.
      cycle_samples: cyclical methods: samples per cycle, one per epoch over the last
        ``cycle_samples`` epochs of each cycle; None: ``round(epochs_per_cycle / 7)``
        (the paper's 5 of 35), at least 1.
      seed: seed of initialisation, data order, sampler, quantizers and evaluation.
      num_bins: ECE bins.
      augment: random crop and horizontal flip of training images (the CIFAR
        augmentation; padding ``max(1, H // 8)``: 4 for 32×32).
      eval_batch_size: test-time batch size.
      train_subset, test_subset: use only the first n training / test examples.
      checkpoint_dir: directory for orbax checkpoints (None: no checkpoints).
      checkpoint_every: steps between checkpoints (0: only at the end of training).
    """

    dataset: str = "digits"
    data_dir: str | None = None
    model: str = "mlp"
    method: str = "sgld"
    format: str = "fp32"
    epochs: int = 60
    batch_size: int = 64
    lr: float = 0.5
    schedule: str | None = None
    temperature: float = 0.01
    weight_decay: float = 5e-4
    num_cycles: int = 2
    exploration_ratio: float = 0.0
    samples: int | None = None
    cycle_samples: int | None = None
    seed: int = 0
    num_bins: int = 15
    augment: bool = False
    eval_batch_size: int = 1000
    train_subset: int | None = None
    test_subset: int | None = None
    checkpoint_dir: str | None = None
    checkpoint_every: int = 0

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)
        ds = _norm_name(self.dataset, "dataset").replace("-", "_")
        if ds not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; valid datasets: "
                             f"{', '.join(DATASETS)}")
        set_("dataset", ds)
        model = _norm_name(self.model, "model")
        if model not in MODEL_NAMES:
            raise ValueError(f"unknown model {self.model!r}; valid models: "
                             f"{', '.join(MODEL_NAMES)}")
        set_("model", model)
        spec = get_method(self.method)
        set_("method", spec.name)
        fspec = get_format(self.format)
        set_("format", fspec.name)
        if fspec.is_full and spec.fp_label is None:
            raise ValueError(
                f"method {spec.name!r} ({spec.lp_label}) needs a low-precision format "
                f"(e.g. fixed8 or bfp8), got {self.format!r}; in full precision use "
                f"'sgld', 'sgd' or 'csgld'")
        sched = self.schedule
        if sched is None:
            sched = "cyclical" if spec.cyclical else "decay"
        sched = _norm_name(sched, "schedule")
        if sched not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; valid schedules: "
                             f"{', '.join(SCHEDULES)}")
        if spec.cyclical and sched != "cyclical":
            raise ValueError(f"method {spec.name!r} is cyclical: its schedule is "
                             f"'cyclical', got {sched!r}")
        if not spec.cyclical and sched == "cyclical":
            raise ValueError(f"the 'cyclical' schedule belongs to the cyclical methods "
                             f"(csgld, csgld-f, vc-csgldlp-l, csgldlp-l); method "
                             f"{spec.name!r} takes 'constant' or 'decay'")
        set_("schedule", sched)
        for name in ("epochs", "batch_size", "num_cycles", "num_bins", "eval_batch_size"):
            _check_pos_int(name, getattr(self, name))
        for name in ("samples", "cycle_samples", "train_subset", "test_subset"):
            _check_pos_int(name, getattr(self, name), allow_none=True)
        _check_pos_int("checkpoint_every", self.checkpoint_every, minimum=0)
        _check_pos_int("seed", self.seed, minimum=0)
        _check_float("lr", self.lr, positive=True)
        _check_float("temperature", self.temperature)
        _check_float("weight_decay", self.weight_decay)
        _check_float("exploration_ratio", self.exploration_ratio)
        if not 0.0 <= float(self.exploration_ratio) < 1.0:
            raise ValueError(f"exploration_ratio must be in [0, 1), got {self.exploration_ratio}")
        if not isinstance(self.augment, bool):
            raise ValueError(f"augment must be a bool, got {self.augment!r}")
        if spec.cyclical:
            if self.epochs % self.num_cycles:
                raise ValueError(f"epochs ({self.epochs}) must be a multiple of num_cycles "
                                 f"({self.num_cycles}) for cyclical methods")
            epc = self.epochs // self.num_cycles
            if self.cycle_samples is not None and self.cycle_samples > epc:
                raise ValueError(f"cycle_samples ({self.cycle_samples}) exceeds the "
                                 f"{epc} epochs of a cycle")
            first = epc - self.resolved_cycle_samples
            if first / epc < float(self.exploration_ratio):
                raise ValueError(
                    f"samples are taken over the last {self.resolved_cycle_samples} epochs of "
                    f"each {epc}-epoch cycle, which starts inside the exploration stage "
                    f"(exploration_ratio={self.exploration_ratio}); lower cycle_samples or "
                    f"exploration_ratio")
        elif self.samples is not None and self.samples > self.epochs:
            raise ValueError(f"samples ({self.samples}) exceeds epochs ({self.epochs}): "
                             "one sample is taken per epoch")

    # ---- derived values

    @property
    def method_spec(self) -> MethodSpec:
        return get_method(self.method)

    @property
    def format_spec(self) -> FormatSpec:
        return get_format(self.format)

    @property
    def label(self) -> str:
        """The paper's method label, e.g. ``"VC SGLDLP-L"``."""
        return method_label(self.method, self.format)

    @property
    def resolved_samples(self) -> int:
        if self.samples is not None:
            return int(self.samples)
        return max(1, round(self.epochs * 50 / 245))

    @property
    def resolved_cycle_samples(self) -> int:
        if self.cycle_samples is not None:
            return int(self.cycle_samples)
        return max(1, round(self.epochs // self.num_cycles / 7))

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def training_dict(self) -> dict[str, Any]:
        """The fields a checkpoint must agree on (all but paths and evaluation options)."""
        d = self.to_dict()
        for k in ("data_dir", "checkpoint_dir", "checkpoint_every", "num_bins",
                  "eval_batch_size"):
            d.pop(k)
        return d


PRESETS: dict[str, dict[str, Any]] = {
    "paper-cifar10": dict(
        dataset="cifar10", model="resnet18", epochs=245, batch_size=128, lr=0.5,
        weight_decay=5e-4, temperature=1e-3, samples=50, num_cycles=7, cycle_samples=5,
        augment=True, eval_batch_size=1000,
    ),
    "paper-cifar100": dict(
        dataset="cifar100", model="resnet18", epochs=245, batch_size=128, lr=0.5,
        weight_decay=5e-4, temperature=1e-3, samples=50, num_cycles=7, cycle_samples=5,
        augment=True, eval_batch_size=1000,
    ),
}
"""Named settings from the paper's released scripts (ResNet-18, 245 epochs, batch 128,
lr 0.5 with the decay schedule, weight decay 5e-4, temperature 1e-3, 50 samples; cyclical:
7 cycles of 35 epochs, 5 samples per cycle)."""


def sample_epochs(config: RunConfig) -> list[int]:
    """The (0-based) epochs at whose end a posterior sample is taken."""
    spec = config.method_spec
    e = config.epochs
    if spec.kind == "sgd":
        return [e - 1]
    if spec.cyclical:
        epc = e // config.num_cycles
        k = config.resolved_cycle_samples
        return [c * epc + j for c in range(config.num_cycles) for j in range(epc - k, epc)]
    return list(range(e - config.resolved_samples, e))


# ======================================================================================
# compiled pieces, shared by every run with the same static configuration (all seeds)


@dataclasses.dataclass(frozen=True)
class _Static:
    """Everything the compiled functions depend on (the seed is not part of it)."""

    model: str
    method: str
    format: str
    num_classes: int
    input_shape: tuple[int, ...]
    input_dtype: str
    vocab_size: int | None
    num_train: int
    batch_size: int
    steps_per_epoch: int
    epochs: int
    lr: float
    schedule: str
    temperature: float
    weight_decay: float
    num_cycles: int
    exploration_ratio: float
    augment: bool

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch


def _build_model(name: str, num_classes: int, quant: QuantConfig,
                 input_shape: tuple[int, ...], vocab_size: int | None):
    if name == "lstm":
        if vocab_size is None:
            raise ValueError("model 'lstm' needs a text dataset (imdb)")
        return create_model("lstm", num_classes, quant, vocab_size=vocab_size)
    if len(input_shape) != 3 and name in ("cnn", "resnet18", "resnet-mini"):
        raise ValueError(f"model {name!r} needs image inputs (H, W, C), got examples of "
                         f"shape {input_shape}")
    if name in ("resnet18", "resnet-mini"):
        strides = (1, 2, 2, 2) if name == "resnet18" else (1, 2)
        size = input_shape[0]
        for s in strides:
            size = -(-size // s)
        if name == "resnet18":
            return create_model("resnet18", num_classes, quant, pool_size=size)
        return ResNet(num_classes=num_classes, quant=quant, stage_sizes=(1, 1),
                      widths=(16, 32), strides=strides, pool_size=size)
    return create_model(name, num_classes, quant)


def _cross_entropy(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


class _Engine:
    """The model, the sampler factory and the jitted step / bank / evaluation functions."""

    def __init__(self, st: _Static):
        self.static = st
        self.spec = get_method(st.method)
        self.fspec = get_format(st.format)
        self.model = _build_model(st.model, st.num_classes, self.fspec.quant, st.input_shape,
                                  st.vocab_size)
        opt = self.make_optimizer(jax.random.key(0, impl=PRNG_IMPL))
        model, augment = self.model, st.augment
        images = len(st.input_shape) == 3
        pad = max(1, st.input_shape[0] // 8) if images else 0
        bsz = float(st.batch_size)

        def step(params, batch_stats, opt_state, sums, x, y, step_idx, data_key):
            k_q, k_aug = jax.random.split(jax.random.fold_in(data_key, step_idx))
            if augment and images:
                x = random_crop_flip(k_aug, x, padding=pad)

            def loss_fn(p):
                if batch_stats is None:
                    logits = model.apply({"params": p}, x, train=True, rngs={"quantize": k_q})
                    new_bs = None
                else:
                    logits, mut = model.apply({"params": p, "batch_stats": batch_stats}, x,
                                              train=True, mutable=["batch_stats"],
                                              rngs={"quantize": k_q})
                    new_bs = mut["batch_stats"]
                return jnp.mean(_cross_entropy(logits, y)), (logits, new_bs)

            (loss, (logits, new_bs)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            updates, opt_state = opt.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            correct = jnp.sum(jnp.argmax(logits, -1) == y).astype(jnp.float32)
            loss_sum, correct_sum, seen = sums
            sums = (loss_sum + loss * bsz, correct_sum + correct, seen + bsz)
            info = (current_learning_rate(opt_state), is_sampling(opt_state))
            return params, new_bs, opt_state, sums, info

        self.step = jax.jit(step, donate_argnums=(0, 1, 2, 3))

        self.eval_logits = _eval_fn(st.model, st.num_classes, self.fspec.activation,
                                    self.fspec.error, st.input_shape, st.vocab_size)
        self.bank_add = _BANK_ADD
        self.bank_get = _BANK_GET
        self.init_state = jax.jit(self._init_state, static_argnums=(4,))

    def _init_state(self, x0, k_init, k_sampler, k_weights, capacity: int) -> TrainState:
        variables = self.model.init({"params": k_init, "quantize": k_init}, x0, train=True)
        params = variables["params"]
        batch_stats = variables.get("batch_stats")
        opt_state = self.make_optimizer(k_sampler).init(params)
        params = init_weights(params, self.fspec.weight, key=k_weights)
        bank = sample_bank_init(params, self.fspec.weight, capacity)
        stats_bank = (None if batch_stats is None
                      else sample_bank_init(batch_stats, FULL, capacity))
        return TrainState(params, batch_stats, opt_state, bank, stats_bank, _zero_sums())

    def make_optimizer(self, key: jax.Array) -> optax.GradientTransformationExtraArgs:
        st, spec, f = self.static, self.spec, self.fspec
        common = dict(weight_decay=st.weight_decay, weight_format=f.weight,
                      grad_format=f.grad, accumulator=spec.accumulator, key=key)
        if spec.cyclical:
            return cyclical_sgld(st.lr, num_data=st.num_train, num_cycles=st.num_cycles,
                                 total_steps=st.total_steps,
                                 exploration_ratio=st.exploration_ratio,
                                 temperature=st.temperature, **common)
        lr: Any = st.lr
        if st.schedule == "decay":
            lr = paper_decay_schedule(st.lr, st.total_steps)
        if spec.kind == "sgd":
            return sgd(lr, **common)
        return sgld(lr, num_data=st.num_train, temperature=st.temperature, **common)


@functools.lru_cache(maxsize=32)
def _engine(st: _Static) -> _Engine:
    return _Engine(st)


# Shared by every engine: compiled once per bank structure (weight format and shapes).
_BANK_ADD = jax.jit(sample_bank_add)
_BANK_GET = jax.jit(sample_bank_get)


@functools.lru_cache(maxsize=32)
def _eval_fn(model_name: str, num_classes: int, activation: Format, error: Format,
             input_shape: tuple[int, ...], vocab_size: int | None):
    """Jitted test-time logits, shared by every method and seed with the same network."""
    model = _build_model(model_name, num_classes, QuantConfig(activation, error),
                         input_shape, vocab_size)

    def eval_logits(params, batch_stats, x, key):
        variables = {"params": params}
        if batch_stats is not None:
            variables["batch_stats"] = batch_stats
        return model.apply(variables, x, train=False, rngs={"quantize": key})

    return jax.jit(eval_logits)


# ======================================================================================
# state, checkpoints


class TrainState(NamedTuple):
    """Everything that evolves during training (and is checkpointed)."""

    params: Any
    batch_stats: Any
    opt_state: Any
    bank: SampleBank
    stats_bank: SampleBank | None
    sums: tuple  # (loss sum, correct count, examples seen) of the current epoch


@dataclasses.dataclass
class TrainOutput:
    """The result of :func:`train`.

    Attributes:
      config: the configuration.
      state: the final :class:`TrainState` (params, BatchNorm statistics, optimizer
        state, sample banks).
      step: steps done (``total_steps`` when complete).
      total_steps: ``epochs × steps_per_epoch``.
      steps_per_epoch: optimizer steps per epoch.
      history: one dict per finished epoch (loss, accuracy, lr, phase, samples).
      sample_epochs: the epochs at whose end a sample is (to be) taken.
      resumed_from: the checkpoint step training resumed from, or None.
      train_time_s: wall time of this call's training loop (compilation included).
    """

    config: RunConfig
    state: TrainState
    step: int
    total_steps: int
    steps_per_epoch: int
    history: list[dict[str, Any]]
    sample_epochs: list[int]
    resumed_from: int | None
    train_time_s: float
    engine: Any = dataclasses.field(repr=False, default=None)

    @property
    def complete(self) -> bool:
        return self.step >= self.total_steps

    @property
    def num_samples(self) -> int:
        return int(min(int(self.state.bank.count), self.state.bank.capacity))


class EmptySampleBankError(ValueError):
    """Evaluation was asked for, but no posterior sample has been collected."""


def _is_key(x: Any) -> bool:
    return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _to_storable(state: TrainState) -> dict[str, np.ndarray]:
    leaves = jax.tree.leaves(state)
    return {f"leaf{i:05d}": np.asarray(jax.random.key_data(x) if _is_key(x) else x)
            for i, x in enumerate(leaves)}


def _from_storable(flat: Mapping[str, Any], template: TrainState) -> TrainState:
    leaves, treedef = jax.tree.flatten(template)
    if len(flat) != len(leaves):
        raise ValueError(f"checkpoint holds {len(flat)} arrays, this configuration "
                         f"{len(leaves)}")
    out = []
    for i, t in enumerate(leaves):
        a = flat[f"leaf{i:05d}"]
        if _is_key(t):
            a = jax.random.wrap_key_data(jnp.asarray(a), impl=jax.random.key_impl(t))
        else:
            a = jnp.asarray(a, dtype=t.dtype)
        if a.shape != t.shape:
            raise ValueError(f"checkpoint array {i} has shape {a.shape}, expected {t.shape}")
        out.append(a)
    return jax.tree.unflatten(treedef, out)


class _Checkpointer:
    """Orbax checkpoints of a run: item ``state`` (arrays) and ``meta`` (JSON).

    Orbax writes each step into a temporary directory and renames it when complete (an
    atomic rename on POSIX filesystems); unfinished temporaries are never listed as steps.
    """

    def __init__(self, directory: str | os.PathLike, keep: int = 2):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.directory = Path(directory).expanduser().absolute()
        # cleanup_tmp_directories: remove the temporaries of saves a crash interrupted
        opts = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                            enable_async_checkpointing=False,
                                            cleanup_tmp_directories=True)
        self.manager = ocp.CheckpointManager(self.directory, options=opts,
                                             item_names=("state", "meta"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: TrainState, meta: dict[str, Any]) -> None:
        ocp = self._ocp
        if step in self.manager.all_steps():
            return
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(_to_storable(state)),
            meta=ocp.args.JsonSave(meta)), force=True)
        self.manager.wait_until_finished()

    def restore_meta(self, step: int) -> dict[str, Any]:
        ocp = self._ocp
        return self.manager.restore(step, args=ocp.args.Composite(
            meta=ocp.args.JsonRestore()))["meta"]

    def restore_state(self, step: int, template: TrainState) -> TrainState:
        ocp = self._ocp
        target = _to_storable(template)
        got = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target)))["state"]
        return _from_storable(got, template)

    def close(self) -> None:
        self.manager.close()


def _config_mismatch(saved: Mapping[str, Any], config: RunConfig) -> list[str]:
    now = config.training_dict()
    keys = sorted(set(saved) | set(now))
    return [f"{k}: checkpoint {saved.get(k)!r} vs now {now.get(k)!r}"
            for k in keys if saved.get(k) != now.get(k)]


# ======================================================================================
# data


def _prepare_data(config: RunConfig, dataset: Dataset | None) -> Dataset:
    if dataset is None:
        dataset = load_dataset(config.dataset, config.data_dir)
    elif dataset.name != config.dataset:
        raise ValueError(f"dataset {dataset.name!r} given for a config of {config.dataset!r}")
    if config.train_subset is None and config.test_subset is None:
        return dataset
    tr = config.train_subset or dataset.num_train
    te = config.test_subset or dataset.num_test
    return Dataset(dataset.x_train[:tr], dataset.y_train[:tr], dataset.x_test[:te],
                   dataset.y_test[:te], dataset.num_classes, dataset.name,
                   dataset.vocab_size)


def _epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The data order of an epoch: a pure function of (seed, epoch)."""
    return np.random.default_rng([int(seed), int(epoch), 0x0DA7A])


def _static_of(config: RunConfig, ds: Dataset) -> _Static:
    if ds.num_train < config.batch_size:
        raise ValueError(f"batch_size {config.batch_size} exceeds the {ds.num_train} "
                         "training examples")
    return _Static(
        model=config.model, method=config.method, format=config.format,
        num_classes=ds.num_classes, input_shape=ds.input_shape,
        input_dtype=str(ds.x_train.dtype), vocab_size=ds.vocab_size,
        num_train=ds.num_train, batch_size=config.batch_size,
        steps_per_epoch=ds.num_train // config.batch_size, epochs=config.epochs,
        lr=float(config.lr), schedule=config.schedule,
        temperature=float(config.temperature), weight_decay=float(config.weight_decay),
        num_cycles=config.num_cycles, exploration_ratio=float(config.exploration_ratio),
        augment=config.augment,
    )


# Random bits dominate stochastic rounding on CPU; philox4x32 draws them about 3-4x faster
# than JAX's default threefry (benchmarks/RESULTS.md) and is counter-based, so results do
# not depend on how arrays are laid out or vmapped.
PRNG_IMPL = "philox4x32"


def _keys(seed: int):
    root = jax.random.key(seed, impl=PRNG_IMPL)
    k_init, k_sampler, k_weights, k_data, k_eval = jax.random.split(root, 5)
    return dict(init=k_init, sampler=k_sampler, weights=k_weights, data=k_data, eval=k_eval)


def _initial_state(engine: _Engine, config: RunConfig, ds: Dataset, keys) -> TrainState:
    capacity = len(sample_epochs(config))
    return engine.init_state(jnp.asarray(ds.x_train[:2]), keys["init"], keys["sampler"],
                             keys["weights"], capacity)


def _zero_sums() -> tuple:
    # three distinct buffers: the step donates them
    return tuple(jnp.zeros((), jnp.float32) for _ in range(3))


# ======================================================================================
# training


def _phase(epoch: int, plan: set[int]) -> str:
    return "sample" if epoch in plan else "explore"


def train(
    config: RunConfig,
    *,
    dataset: Dataset | None = None,
    resume: bool = False,
    progress: bool = True,
    on_step: Callable[[int], None] | None = None,
) -> TrainOutput:
    """Train / sample one configuration and collect its posterior samples.

    Args:
      config: the run.
      dataset: the loaded dataset (default: ``load_dataset(config.dataset,
        config.data_dir)``); ``train_subset`` / ``test_subset`` are applied to it.
      resume: continue from the latest checkpoint in ``config.checkpoint_dir`` if there
        is one (without a checkpoint, start afresh). Without ``resume`` an existing
        checkpoint is an error (nothing is overwritten).
      progress: show a tqdm progress bar (loss, accuracy, step size, phase).
      on_step: called with the step count after every step (and after any checkpoint
        of that step); an exception it raises aborts training (tests use it to simulate
        a crash).

    Raises:
      ValueError: invalid configuration, or a checkpoint of another configuration.
    """
    if resume and not config.checkpoint_dir:
        raise ValueError("resume needs a checkpoint directory (checkpoint_dir / "
                         "--checkpoint-dir)")
    ds = _prepare_data(config, dataset)
    st = _static_of(config, ds)
    engine = _engine(st)
    keys = _keys(config.seed)
    spe, total = st.steps_per_epoch, st.total_steps
    plan_list = sample_epochs(config)
    plan = set(plan_list)

    state = _initial_state(engine, config, ds, keys)
    step, history, resumed_from = 0, [], None
    ckpt = _Checkpointer(config.checkpoint_dir) if config.checkpoint_dir else None
    try:
        if ckpt is not None:
            latest = ckpt.latest_step()
            if latest is not None and not resume:
                raise ValueError(
                    f"{ckpt.directory} already holds a checkpoint (step {latest}); pass "
                    "resume=True (--resume) to continue it, or use another checkpoint_dir")
            if latest is not None:
                meta = ckpt.restore_meta(latest)
                if meta.get("version") != _CHECKPOINT_VERSION:
                    raise ValueError(f"{ckpt.directory}: unsupported checkpoint version "
                                     f"{meta.get('version')!r}")
                diff = _config_mismatch(meta["config"], config)
                if diff:
                    raise ValueError(
                        f"the checkpoint in {ckpt.directory} belongs to another "
                        "configuration: " + "; ".join(diff))
                if meta.get("steps_per_epoch") != spe:
                    raise ValueError(
                        f"the checkpoint in {ckpt.directory} was made with "
                        f"{meta.get('steps_per_epoch')} steps per epoch, now {spe} (another "
                        "dataset size?)")
                state = _from_storable_checked(ckpt, latest, state)
                step, history, resumed_from = int(meta["step"]), list(meta["history"]), latest

        def save(at: int, state: TrainState) -> None:
            if ckpt is None:
                return
            meta = {"version": _CHECKPOINT_VERSION, "config": config.training_dict(),
                    "step": at, "epoch": at // spe, "batch": at % spe,
                    "steps_per_epoch": spe, "total_steps": total, "history": history}
            ckpt.save(at, state, meta)

        t0 = time.perf_counter()
        state, step = _loop(engine, config, ds, keys, state, step, history, plan, save,
                            on_step, progress)
        train_time = time.perf_counter() - t0
        if step == total:
            save(step, state)
    finally:
        if ckpt is not None:
            ckpt.close()
    return TrainOutput(config=config, state=state, step=step, total_steps=total,
                       steps_per_epoch=spe, history=history, sample_epochs=plan_list,
                       resumed_from=resumed_from, train_time_s=train_time, engine=engine)


def _from_storable_checked(ckpt: _Checkpointer, step: int, template: TrainState) -> TrainState:
    try:
        return ckpt.restore_state(step, template)
    except ValueError as err:
        raise ValueError(f"the checkpoint in {ckpt.directory} (step {step}) does not match "
                         f"this configuration: {err}") from err


def _loop(engine, config, ds, keys, state, step, history, plan, save, on_step, progress):
    from tqdm.auto import tqdm

    st = engine.static
    spe, total = st.steps_per_epoch, st.total_steps
    refresh = max(1, spe // 4)
    data_key = keys["data"]
    bar = tqdm(total=total, initial=step, disable=not progress, leave=False,
               desc=f"{config.label} [{get_format(config.format).label}] seed {config.seed}",
               unit="step", dynamic_ncols=True, file=sys.stderr)
    params, bstats, opt_state, sums = state.params, state.batch_stats, state.opt_state, state.sums
    bank, stats_bank = state.bank, state.stats_bank
    aux = None
    try:
        it = None
        while step < total:
            epoch, pos = divmod(step, spe)
            if it is None or pos == 0:
                it = batches(_epoch_rng(config.seed, epoch), ds.x_train, ds.y_train,
                             config.batch_size)
                for _ in range(pos):  # resume mid-epoch: skip the batches already done
                    next(it)
            x, y = next(it)
            params, bstats, opt_state, sums, aux = engine.step(
                params, bstats, opt_state, sums, x, y, jnp.asarray(step, jnp.int32), data_key)
            step += 1
            bar.update(1)
            end_of_epoch = step % spe == 0
            if end_of_epoch or step % refresh == 0:
                loss_s, corr_s, seen = (float(v) for v in sums)
                bar.set_postfix(loss=f"{loss_s / seen:.4f}", acc=f"{corr_s / seen:.3f}",
                                lr=f"{float(aux[0]):.3g}", phase=_phase(epoch, plan),
                                refresh=False)
            if end_of_epoch:
                if epoch in plan:
                    bank = engine.bank_add(bank, params)
                    if stats_bank is not None:
                        stats_bank = engine.bank_add(stats_bank, bstats)
                loss_s, corr_s, seen = (float(v) for v in sums)
                history.append({
                    "epoch": epoch, "loss": loss_s / seen, "accuracy": corr_s / seen,
                    "lr": float(aux[0]), "noise": bool(aux[1]), "phase": _phase(epoch, plan),
                    "samples": int(bank.count),
                })
                sums = _zero_sums()
            state = TrainState(params, bstats, opt_state, bank, stats_bank, sums)
            if config.checkpoint_every and step % config.checkpoint_every == 0:
                save(step, state)
            if on_step is not None:
                on_step(step)
    finally:
        bar.close()
    state = TrainState(params, bstats, opt_state, bank, stats_bank, sums)
    return state, step


# ======================================================================================
# evaluation


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
    the model, averaging softmax probabilities.

    Returns:
      ``(metrics, probs)``: error, NLL, ECE (``num_bins`` bins), the paper's 9-bin ECE,
      the error of the last sample alone; and the ``(N, C)`` BMA probabilities.

    Raises:
      EmptySampleBankError: (a ``ValueError``) when no sample has been collected.
    """
    config = output.config
    ds = _prepare_data(config, dataset)
    engine = output.engine or _engine(_static_of(config, ds))
    bank, stats_bank = output.state.bank, output.state.stats_bank
    size = int(min(int(bank.count), bank.capacity))
    if size == 0:
        raise EmptySampleBankError(
            f"the sample bank is empty: no posterior sample was collected (training stopped "
            f"at step {output.step} of {output.total_steps}; samples are taken at the end "
            f"of epochs {_short_list(output.sample_epochs)})")
    n, c = ds.num_test, ds.num_classes
    bsz = min(config.eval_batch_size, n)
    k_eval = _keys(config.seed)["eval"]
    bma = _metrics.bma_init(n, c)
    last = None
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
    probs = _metrics.bma_probs(bma)
    labels = jnp.asarray(ds.y_test)
    out = {
        "error": float(_metrics.error_rate(probs, labels)),
        "nll": float(_metrics.nll(probs, labels)),
        "ece": float(_metrics.expected_calibration_error(probs, labels, config.num_bins)),
        "ece_num_bins": config.num_bins,
        "paper_ece": float(_metrics.paper_ece(probs, labels)),
        "paper_ece_num_bins": 9,
        "last_sample_error": float(_metrics.error_rate(last, labels)),
        "num_samples": size,
        "num_test": n,
    }
    return out, np.asarray(probs)


def _short_list(xs: Sequence[int]) -> str:
    xs = list(xs)
    if len(xs) <= 6:
        return str(xs)
    return f"[{xs[0]}, {xs[1]}, ..., {xs[-1]}] ({len(xs)} epochs)"


def _num_params(params: Any) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as JSON: to a temporary file in the same directory, fsync, then
    ``os.replace`` onto ``path`` (so a crash never leaves a partial file at ``path``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "w") as fh:
        json.dump(obj, fh, indent=2, sort_keys=False)
        fh.write("\n")
    return path


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

    The record holds the config, the method and format labels, the metrics (error, NLL,
    ECE, paper ECE, last-sample error), the sample-bank bytes (packed and as float32),
    the history per epoch and timings.
    """
    ds = _prepare_data(config, dataset)
    output = train(config, dataset=ds, resume=resume, progress=progress, on_step=on_step)
    t0 = time.perf_counter()
    metrics, probs = evaluate(output, dataset=ds)
    eval_time = time.perf_counter() - t0
    fspec = config.format_spec
    n_params = _num_params(output.state.params)
    cap = output.state.bank.capacity
    nbytes = sample_bank_nbytes(output.state.bank)
    record = {
        "label": config.label,
        "format_label": fspec.label,
        "method": config.method,
        "format": config.format,
        "formats": fspec.describe(),
        "config": config.to_dict(),
        "metrics": metrics,
        "sample_epochs": output.sample_epochs,
        "num_params": n_params,
        "bank": {
            "capacity": cap,
            "nbytes": nbytes,
            "float32_nbytes": 4 * n_params * cap,
            "ratio_vs_float32": nbytes / (4 * n_params * cap),
            "stats_nbytes": (0 if output.state.stats_bank is None
                             else sample_bank_nbytes(output.state.stats_bank)),
        },
        "steps": output.step,
        "steps_per_epoch": output.steps_per_epoch,
        "history": output.history,
        "timing": {"train_s": output.train_time_s, "eval_s": eval_time,
                   "resumed_from_step": output.resumed_from},
        "versions": {"jax": jax.__version__, "lpsampling": _version()},
        "complete": True,
    }
    if out is not None:
        write_json_atomic(out, record)
    return RunResult(record=record, probs=probs, labels=np.asarray(ds.y_test), output=output)


def _version() -> str:
    from lpsampling import __version__

    return __version__


# ======================================================================================
# the paper's grid


def paper_grid(formats: Sequence[str] = ("fixed8", "bfp8"),
               methods: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """Rows ``(format, method)`` of the paper's Tables 1 and 2, in their order.

    FP32: SGLDFP, SGDFP, cSGLDFP; then for each low-precision format: naive SGLDLP-L,
    VC SGLDLP-L, SGDLP-L, SGLDLP-F, SGDLP-F, VC cSGLDLP-L, cSGLD-F. ``methods`` keeps
    only the rows whose method is listed (``fp32`` rows use ``sgld``/``sgd``/``csgld``).
    """
    rows = [("fp32", "sgld"), ("fp32", "sgd"), ("fp32", "csgld")]
    lp = ("sgldlp-l", "vc-sgldlp-l", "sgdlp-l", "sgldlp-f", "sgdlp-f", "vc-csgldlp-l",
          "csgld-f")
    for f in formats:
        fname = get_format(f).name
        if fname == "fp32":
            continue
        rows += [(fname, m) for m in lp]
    if methods is not None:
        keep = {get_method(m).name for m in methods}
        rows = [r for r in rows if r[1] in keep]
    return rows


def _pm(mean: float, se: float, scale: float, digits: int) -> str:
    return f"{mean * scale:.{digits}f} ± {se * scale:.{digits}f}"


def format_table(summary: Sequence[Mapping[str, Any]], *, title: str | None = None) -> str:
    """A markdown table in the layout of the paper's Tables 1 and 2 (rows format ×
    method; columns error %, ECE %, NLL as mean ± standard error over seeds)."""
    num_bins = summary[0]["ece_num_bins"] if summary else 15
    lines = []
    if title:
        lines += [f"### {title}", ""]
    lines += [f"| format | method | error % | ECE % ({num_bins} bins) | NLL | seeds |",
              "|---|---|---|---|---|---|"]
    for r in summary:
        lines.append(
            f"| {r['format_label']} | {r['label']} | {_pm(*r['error'], 100, 2)} | "
            f"{_pm(*r['ece'], 100, 2)} | {_pm(*r['nll'], 1, 3)} | {r['seeds']} |")
    return "\n".join(lines) + "\n"


def compare(
    base: RunConfig,
    *,
    formats: Sequence[str] = ("fixed8", "bfp8"),
    methods: Sequence[str] | None = None,
    seeds: int = 3,
    out_dir: str | os.PathLike | None = None,
    dataset: Dataset | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Run the paper's method grid over ``seeds`` seeds (``base.seed``, +1, ...).

    Every row is ``base`` with its method and format replaced; compiled functions are
    shared by the seeds of a row. With ``out_dir``: writes ``table.md``,
    ``results.json`` (summary and every run's record), one JSON per run under
    ``runs/``, and ``reliability.png`` (BMA of the first seed of every row) plus one
    ``reliability-<format>.png`` per format.

    Returns:
      ``{"summary": [...], "runs": [...], "table": markdown}``.
    """
    _check_pos_int("seeds", seeds)
    rows = paper_grid(formats, methods)
    if not rows:
        raise ValueError("no rows to run: check formats and methods")
    ds = _prepare_data(base.replace(train_subset=None, test_subset=None), dataset)
    out_path = Path(out_dir) if out_dir is not None else None
    if out_path is not None:
        (out_path / "runs").mkdir(parents=True, exist_ok=True)
    # build (and so validate) every configuration before running anything
    base_sched = None if base.method_spec.cyclical else base.schedule
    configs = [
        [base.replace(format=fmt, method=method, seed=base.seed + s, checkpoint_dir=None,
                      schedule=None if get_method(method).cyclical else base_sched)
         for s in range(seeds)]
        for fmt, method in rows
    ]
    runs, summary, curves = [], [], {}
    total = len(rows) * seeds
    t_all = time.perf_counter()
    k = 0
    for (fmt, method), row_configs in zip(rows, configs, strict=True):
        per_seed = []
        for s, cfg in enumerate(row_configs):
            k += 1
            t0 = time.perf_counter()
            res = run_experiment(cfg, dataset=ds, progress=progress)
            rec = res.record
            if out_path is not None:
                write_json_atomic(out_path / "runs" / f"{fmt}_{method}_seed{cfg.seed}.json",
                                  rec)
            per_seed.append(rec)
            runs.append(rec)
            if s == 0:
                curves[(fmt, f"{rec['format_label']} {rec['label']}")] = (res.probs,
                                                                          res.labels)
            if log is not None:
                m = rec["metrics"]
                log(f"[{k}/{total}] {rec['format_label']:>10} {rec['label']:<16} seed "
                    f"{cfg.seed}: error {100 * m['error']:.2f}%  ECE {100 * m['ece']:.2f}%  "
                    f"NLL {m['nll']:.3f}  ({time.perf_counter() - t0:.1f} s)")
        first = per_seed[0]
        summary.append({
            "format": fmt, "method": method, "label": first["label"],
            "format_label": first["format_label"], "seeds": len(per_seed),
            "ece_num_bins": first["metrics"]["ece_num_bins"],
            **{name: _metrics.summarize([r["metrics"][name] for r in per_seed])
               for name in ("error", "ece", "nll", "paper_ece")},
            "bank_ratio_vs_float32": first["bank"]["ratio_vs_float32"],
        })
    elapsed = time.perf_counter() - t_all
    title = (f"{ds.name}, {base.model}, {base.epochs} epochs, {seeds} seed(s): BMA test "
             f"metrics, mean ± standard error")
    table = format_table(summary, title=title)
    result = {"summary": summary, "runs": runs, "table": table, "elapsed_s": elapsed,
              "base_config": base.to_dict()}
    if out_path is not None:
        write_text_atomic(out_path / "table.md", table)
        write_json_atomic(out_path / "results.json", result)
        _metrics.save_reliability_diagram(
            out_path / "reliability.png", {name: v for (_, name), v in curves.items()},
            num_bins=base.num_bins, title=f"{ds.name}: BMA reliability (seed {base.seed})")
        for fmt in dict.fromkeys(f for f, _ in rows):
            sub = {name: v for (f, name), v in curves.items() if f == fmt}
            _metrics.save_reliability_diagram(
                out_path / f"reliability-{fmt}.png", sub, num_bins=base.num_bins,
                title=f"{ds.name}, {get_format(fmt).label}: BMA reliability")
    return result


