"""One experiment as a frozen, validated :class:`RunConfig`; the paper's presets; the
sampling plan (:func:`sample_steps`, :func:`sample_epochs`) and the dataset of a run
(:func:`prepare_data`).

Names are resolved once, on construction, into ``method_spec`` and ``format_spec``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from lpsampling.data import Dataset, load_dataset
from lpsampling.experiments.registry import (
    FormatSpec,
    MethodSpec,
    get_dataset,
    get_format,
    get_method,
    get_model,
    get_schedule,
    method_label,
)
from lpsampling.flax.layers import check_compute
from lpsampling.int8 import check_int8_word
from lpsampling.validation import (
    ArgumentTypeError,
    finite_float,
    positive_int,
    unit_interval,
)

__all__ = ["RunConfig", "PRESETS", "DEFAULT_SAMPLE_START", "MIN_SAMPLES", "sample_steps",
           "sample_epochs", "prepare_data"]

#: Default start of the SGLD sampling window, as a fraction of training: the paper
#: samples over the last 50 of 245 epochs (0.796), so about half of its samples are taken
#: while the step size still decays (the decay schedule ends at 0.9).
DEFAULT_SAMPLE_START = 0.8
#: The least number of SGLD samples by default (the paper averages 50).
MIN_SAMPLES = 20

# Fields that neither the compiled functions nor a checkpoint depend on.
_NOT_TRAINING = ("data_dir", "checkpoint_dir", "checkpoint_every", "num_bins",
                 "eval_batch_size")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """One experiment: dataset × model × method × format × hyperparameters × seed.

    The defaults are the quick setting of ``lpsampling compare``: scikit-learn's digits,
    an MLP with 100 hidden units, 60 epochs of batch 64 (22 steps each), lr 0.5 with the
    paper's decay schedule, weight decay 5e-4, a cold posterior ``T = 0.01`` (the paper's
    CIFAR runs use ``T = 1e-3``; at ``T = 1`` SGLD on digits trades accuracy for spread),
    2 cycles of 30 epochs for the cyclical methods; 24 samples spread evenly over the
    last 20% of the steps, 2 per epoch (cyclical: 4 per cycle).
    :data:`PRESETS` hold the paper's CIFAR settings.

    Names are normalised (lower case; ``method`` uses ``-``, ``dataset`` uses ``_``) and
    validated on construction: unknown names raise ``ValueError`` listing the choices.
    The resolved specs are the attributes ``method_spec`` and ``format_spec``.

    Attributes:
      dataset: one of :data:`lpsampling.data.DATASETS`.
      data_dir: directory of the dataset files (not needed for ``digits``).
      model: one of :data:`~lpsampling.experiments.registry.MODEL_NAMES`.
      method: one of :data:`~lpsampling.experiments.registry.METHODS`.
      format: a name accepted by :func:`~lpsampling.experiments.registry.get_format`.
      compute: ``"float32"`` (the simulated low-precision path) or ``"int8"``: the layers
        whose input is a quantized activation multiply 8-bit codes as int8 with int32
        accumulation (:mod:`lpsampling.int8`); needs a format with 8-bit weights and
        activations (``bfp8``; ``fp32`` and ``fixed8`` keep activations in float32) and a
        model with such a layer (not ``logreg``).
      epochs: training epochs.
      batch_size: minibatch size (the last incomplete batch of an epoch is dropped).
      lr: step size ``η`` on the mean minibatch loss (initial value for schedules).
      schedule: ``"constant"``, ``"decay"`` or ``"cyclical"``; None picks ``"cyclical"``
        for the cyclical methods and ``"decay"`` otherwise. Cyclical methods require
        ``"cyclical"`` and the others forbid it.
      temperature: ``T`` (1 samples the posterior; the paper's CIFAR runs use 1e-3; 0 is
        the noise-free control of a sampler: the same schedule, quantization and sample
        averaging without Langevin noise).
      weight_decay: Gaussian prior ``wd`` per datum (in the sampler, full precision).
      friction: SGHMC methods: friction ``γ`` (``lr`` is then the time step ``η``).
      inverse_mass: SGHMC methods: inverse mass ``u``. The defaults ``γ = u = 2`` make
        SGHMC's large-friction limit, SGLD with step ``uη/γ``, take the step ``lr`` of
        the SGLD methods, so that ``compare`` runs them on one footing.
      num_cycles: cycles of the cyclical methods (``epochs`` must be a multiple).
      exploration_ratio: first fraction of each cycle without noise (cyclical only; 0:
        noise on every step, as the low-precision paper; the original cSGLD paper
        samples only late in each cycle).
      samples: SGLD methods: number of posterior samples, taken at steps spread evenly
        over the sampling window (the last one at the final step; see
        :func:`sample_steps`); None: ``max(20, round(2 · window epochs))`` — at least
        :data:`MIN_SAMPLES`, about 2 per epoch of the window (at most one per step).
      sample_start: SGLD methods: start of the sampling window as a fraction of the
        training steps, in [0, 1) (default :data:`DEFAULT_SAMPLE_START`: the paper's
        last 50 of 245 epochs).
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
    compute: str = "float32"
    epochs: int = 60
    batch_size: int = 64
    lr: float = 0.5
    schedule: str | None = None
    temperature: float = 0.01
    weight_decay: float = 5e-4
    friction: float = 2.0
    inverse_mass: float = 2.0
    num_cycles: int = 2
    exploration_ratio: float = 0.0
    samples: int | None = None
    sample_start: float = DEFAULT_SAMPLE_START
    cycle_samples: int | None = None
    seed: int = 0
    num_bins: int = 15
    augment: bool = False
    eval_batch_size: int = 1000
    train_subset: int | None = None
    test_subset: int | None = None
    checkpoint_dir: str | None = None
    checkpoint_every: int = 0
    # resolved from ``method`` and ``format`` on construction (not arguments)
    method_spec: MethodSpec = dataclasses.field(init=False, repr=False, compare=False)
    format_spec: FormatSpec = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self):
        self._resolve_names()
        self._check_numbers()
        self._check_sampling_plan()

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)

    def _resolve_names(self) -> None:
        self._set("dataset", get_dataset(self.dataset))
        self._set("model", get_model(self.model))
        spec, fspec = get_method(self.method), get_format(self.format)
        self._set("method", spec.name)
        self._set("method_spec", spec)
        self._set("format", fspec.name)
        self._set("format_spec", fspec)
        self._check_compute()
        if fspec.is_full and spec.fp_label is None:
            raise ValueError(
                f"method {spec.name!r} ({spec.lp_label}) needs a low-precision format "
                f"(e.g. fixed8 or bfp8), got {self.format!r}; in full precision use "
                f"'sgld', 'sgd' or 'csgld'")
        if self.schedule is None:
            sched = "cyclical" if spec.cyclical else "decay"
        else:
            sched = get_schedule(self.schedule)
        if spec.cyclical and sched != "cyclical":
            raise ValueError(f"method {spec.name!r} is cyclical: its schedule is "
                             f"'cyclical', got {sched!r}")
        if not spec.cyclical and sched == "cyclical":
            raise ValueError(f"the 'cyclical' schedule belongs to the cyclical methods "
                             f"(csgld, csgld-f, vc-csgldlp-l, csgldlp-l); method "
                             f"{spec.name!r} takes 'constant' or 'decay'")
        self._set("schedule", sched)

    def _check_compute(self) -> None:
        self._set("compute", check_compute(self.compute))
        if self.compute != "int8":
            return
        if self.model == "logreg":
            raise ValueError("compute='int8': model 'logreg' has no product whose input is a "
                             "quantized activation (its one layer reads the raw inputs); use "
                             "compute='float32'")
        f = self.format_spec
        for role, fmt in (("activations", f.activation), ("weights", f.weight)):
            if fmt.is_identity:
                raise ValueError(
                    f"compute='int8' needs 8-bit {role}, but format {self.format!r} keeps its "
                    f"{role} in float32, so no product has two 8-bit operands; use a format "
                    "with 8-bit weights and activations (bfp8) or compute='float32'")
            try:
                check_int8_word(fmt, role)
            except ValueError as err:
                raise ValueError(f"compute='int8' with format {self.format!r}: {err}") from None

    def _check_numbers(self) -> None:
        for name in ("epochs", "batch_size", "num_cycles", "num_bins", "eval_batch_size"):
            positive_int(name, getattr(self, name))
        for name in ("samples", "cycle_samples", "train_subset", "test_subset"):
            positive_int(name, getattr(self, name), allow_none=True)
        positive_int("checkpoint_every", self.checkpoint_every, minimum=0)
        positive_int("seed", self.seed, minimum=0)
        for name in ("lr", "temperature", "weight_decay", "friction", "inverse_mass"):
            if callable(getattr(self, name)):
                raise ArgumentTypeError(f"{name} must be a number, got a callable")
        finite_float("lr", self.lr, positive=True)
        finite_float("friction", self.friction, positive=True)
        finite_float("inverse_mass", self.inverse_mass, positive=True)
        finite_float("temperature", self.temperature)
        finite_float("weight_decay", self.weight_decay)
        unit_interval("exploration_ratio", self.exploration_ratio)
        unit_interval("sample_start", self.sample_start)
        if float(self.sample_start) >= 1.0:
            raise ValueError(f"sample_start must be in [0, 1) (a fraction of training), got "
                             f"{self.sample_start!r}")
        if float(self.temperature) < 0:
            raise ValueError(f"temperature must be >= 0 (0: the noise-free control), got "
                             f"{self.temperature!r}")
        if not isinstance(self.augment, bool):
            raise ValueError(f"augment must be a bool, got {self.augment!r}")

    def _check_sampling_plan(self) -> None:
        if not self.method_spec.cyclical:
            # the window must hold at least one step per sample; the exact count of steps
            # needs the dataset (checked again by sample_steps), one step per epoch is the
            # least any dataset gives
            return
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

    # ---- derived values

    @property
    def label(self) -> str:
        """The paper's method label, e.g. ``"VC SGLDLP-L"``."""
        label = method_label(self.method, self.format)
        return label + " (T=0)" if self.is_control else label

    @property
    def window_epochs(self) -> float:
        """Length of the SGLD sampling window in epochs."""
        return self.epochs * (1.0 - float(self.sample_start))

    @property
    def resolved_samples(self) -> int:
        """SGLD methods: the number of posterior samples (see ``samples``)."""
        if self.samples is not None:
            return int(self.samples)
        return max(MIN_SAMPLES, round(2 * self.window_epochs))

    @property
    def num_samples(self) -> int:
        """Samples the run collects: 1 (SGD: the final weights), ``num_cycles ×
        resolved_cycle_samples`` (cyclical) or :attr:`resolved_samples`."""
        spec = self.method_spec
        if not spec.noise:
            return 1
        if spec.cyclical:
            return self.num_cycles * self.resolved_cycle_samples
        return self.resolved_samples

    @property
    def is_control(self) -> bool:
        """A sampler run at ``T = 0``: the noise-free control of a stochastic method."""
        return self.method_spec.noise and float(self.temperature) == 0.0

    @property
    def resolved_cycle_samples(self) -> int:
        if self.cycle_samples is not None:
            return int(self.cycle_samples)
        return max(1, round(self.epochs // self.num_cycles / 7))

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The constructor arguments (JSON-ready)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}

    def training_dict(self) -> dict[str, Any]:
        """The fields a checkpoint must agree on (all but paths and evaluation options)."""
        d = self.to_dict()
        for k in _NOT_TRAINING:
            d.pop(k)
        return d

    def compile_key(self) -> RunConfig:
        """This config with every field the compiled functions ignore reset (the seed,
        paths, evaluation options) and, for Langevin (SGLD) dynamics and SGD, the
        temperature, an argument of the compiled step: the runs of one key share their
        compiled engine, so a method's runs at every temperature, the T = 0 control
        included, compile once. SGHMC keeps its temperature compiled: its noise scale
        ``T/N`` is rounded once from double precision when the sampler is built."""
        runtime = {"temperature": RunConfig.temperature} if self.runtime_temperature else {}
        return self.replace(seed=0, **{k: getattr(RunConfig, k) for k in _NOT_TRAINING},
                            **runtime)

    @property
    def runtime_temperature(self) -> bool:
        """Whether the compiled step takes the temperature as an argument (see
        :meth:`compile_key`)."""
        return self.method_spec.dynamics != "sghmc"


PRESETS: dict[str, dict[str, Any]] = {
    "paper-cifar10": dict(
        dataset="cifar10", model="resnet18", epochs=245, batch_size=128, lr=0.5,
        weight_decay=5e-4, temperature=1e-3, samples=50, num_cycles=7, cycle_samples=5,
        augment=True, eval_batch_size=1000,
    ),
    "paper-cifar100": dict(
        dataset="cifar100", model="resnet18", epochs=245, batch_size=128, lr=0.5,
        weight_decay=5e-4, temperature=1e-3, samples=50, sample_start=0.8, num_cycles=7,
        cycle_samples=5, augment=True, eval_batch_size=1000,
    ),
}
"""Named settings from the paper's released scripts (ResNet-18, 245 epochs, batch 128,
lr 0.5 with the decay schedule, weight decay 5e-4, temperature 1e-3, 50 samples over the
last 20% of training (one per epoch, as the paper's last 50 of 245 epochs); cyclical:
7 cycles of 35 epochs, 5 samples per cycle)."""


def sample_steps(config: RunConfig, steps_per_epoch: int) -> list[int]:
    """The steps after which a posterior sample is taken (step counts, 1-based: ``s``
    means "after the ``s``-th optimizer step"), increasing.

    * SGD methods: the final weights, ``[total]``;
    * cyclical methods: the end of each of the last ``cycle_samples`` epochs of every
      cycle;
    * SGLD (every other sampler): ``S = resolved_samples`` steps spread evenly over the
      window ``(s0, total]`` with ``s0 = floor(sample_start · total)``:
      ``s0 + round((k + 1)(total − s0) / S)`` for ``k = 0 … S − 1`` (the last is the final
      step).

    With ``samples=None`` on a run whose window has fewer steps than the default count,
    every step of the window is sampled (the bank keeps the default capacity).

    Raises:
      ValueError: the window has fewer steps than an explicit ``samples``.
    """
    spe = positive_int("steps_per_epoch", steps_per_epoch)
    spec = config.method_spec
    total = config.epochs * spe
    if not spec.noise:
        return [total]
    if spec.cyclical:
        epc = config.epochs // config.num_cycles
        k = config.resolved_cycle_samples
        return [(c * epc + j + 1) * spe for c in range(config.num_cycles)
                for j in range(epc - k, epc)]
    s0 = int(float(config.sample_start) * total)
    n = config.resolved_samples
    if config.samples is None:
        # the default count on a run too short for it: one sample per step of the window
        n = min(n, max(1, total - s0))
    if n > total - s0:
        raise ValueError(
            f"samples ({n}) exceeds the {total - s0} steps of the sampling window (the last "
            f"{1 - float(config.sample_start):g} of {total} steps): lower samples or "
            f"sample_start")
    return [s0 + round((k + 1) * (total - s0) / n) for k in range(n)]


def sample_epochs(config: RunConfig, steps_per_epoch: int) -> list[int]:
    """The (0-based) epochs during which at least one posterior sample is taken."""
    spe = positive_int("steps_per_epoch", steps_per_epoch)
    return sorted({(s - 1) // spe for s in sample_steps(config, spe)})


def prepare_data(config: RunConfig, dataset: Dataset | None = None) -> Dataset:
    """The dataset of a run: ``dataset`` (or the one ``config`` names, loaded) cut to
    ``train_subset`` / ``test_subset``."""
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
