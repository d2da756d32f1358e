"""Names of the experiment runner → typed specs: methods, formats, datasets, models, schedules.

Names are case-insensitive and ``_`` may be written for ``-`` (:func:`normalize_name`);
unknown names raise ``ValueError`` listing the valid ones.
"""

from __future__ import annotations

import dataclasses
import functools

from lpsampling.data import DATASETS
from lpsampling.flax import MODELS, QuantConfig
from lpsampling.formats import FORMAT_NAMES, ROLES, Format, parse_format
from lpsampling.validation import normalize_name

__all__ = [
    "METHODS",
    "FORMAT_NAMES",
    "MODEL_NAMES",
    "SCHEDULES",
    "MethodSpec",
    "FormatSpec",
    "normalize_name",
    "get_method",
    "get_format",
    "get_dataset",
    "get_model",
    "get_schedule",
    "method_label",
]


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """What a method name means.

    Attributes:
      name: canonical name (e.g. ``"vc-sgldlp-l"``).
      kind: ``"sgld"``, ``"sgd"`` or ``"cyclical"`` (the schedule and sampling plan:
        constant/decay sampler, no noise, or cyclical).
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
    dynamics: str = "sgld"
    """``"sgld"`` (:func:`lpsampling.sgld` & co.) or ``"sghmc"`` (:func:`lpsampling.sghmc`,
    :func:`lpsampling.cyclical_sghmc`)."""

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
        MethodSpec("sghmc", "sgld", "full", "SGHMCFP", "SGHMCLP-F", "sghmc"),
        MethodSpec("sghmclp-f", "sgld", "full", None, "SGHMCLP-F", "sghmc"),
        MethodSpec("sghmclp-l", "sgld", "low", None, "naive SGHMCLP-L", "sghmc"),
        MethodSpec("vc-sghmclp-l", "sgld", "vc", None, "VC SGHMCLP-L", "sghmc"),
        MethodSpec("csghmc", "cyclical", "full", "cSGHMCFP", "cSGHMC-F", "sghmc"),
        MethodSpec("csghmc-f", "cyclical", "full", None, "cSGHMC-F", "sghmc"),
        MethodSpec("csghmclp-l", "cyclical", "low", None, "naive cSGHMCLP-L", "sghmc"),
        MethodSpec("vc-csghmclp-l", "cyclical", "vc", None, "VC cSGHMCLP-L", "sghmc"),
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
        return all(f.is_identity for f in (self.weight, self.grad, self.activation,
                                            self.error))

    @property
    def quant(self) -> QuantConfig:
        """The model's activation/error quantization."""
        return QuantConfig(self.activation, self.error)

    def describe(self) -> dict[str, str]:
        return {"weight": repr(self.weight), "grad": repr(self.grad),
                "activation": repr(self.activation), "error": repr(self.error)}



MODEL_NAMES: tuple[str, ...] = tuple(MODELS) + ("resnet-mini", "cnn-mini")
"""Model names: those of :func:`lpsampling.flax.create_model` plus ``resnet-mini`` (a
CIFAR-style ResNet with one basic block per stage, widths 16/32; for CPU tests) and
``cnn-mini`` (:class:`~lpsampling.flax.SmallCNN` with 8/16 channels and 64 dense units,
about 150k parameters on 28×28 images: the CNN of the CPU bit-width sweep)."""

SCHEDULES: tuple[str, ...] = ("constant", "decay", "cyclical")



def _lookup(name: str, what: str, valid: tuple[str, ...] | dict, *, sep: str = "-") -> str:
    key = normalize_name(name, what, sep=sep)
    if key not in valid:
        raise ValueError(f"unknown {what} {name!r}; valid {what}s: {', '.join(valid)}")
    return key


def get_method(name: str) -> MethodSpec:
    """The :class:`MethodSpec` of a method name (case-insensitive).

    Raises:
      ValueError: unknown name; the message lists the valid names.
    """
    return METHODS[_lookup(name, "method", METHODS)]


def get_dataset(name: str) -> str:
    """The canonical dataset name (``fashion-MNIST`` → ``fashion_mnist``)."""
    return _lookup(name, "dataset", DATASETS, sep="_")


def get_model(name: str) -> str:
    """The canonical model name (one of :data:`MODEL_NAMES`)."""
    return _lookup(name, "model", MODEL_NAMES)


def get_schedule(name: str) -> str:
    """The canonical schedule name (one of :data:`SCHEDULES`)."""
    return _lookup(name, "schedule", SCHEDULES)


@functools.lru_cache(maxsize=64)
def get_format(name: str) -> FormatSpec:
    """The :class:`FormatSpec` of a format name (case-insensitive).

    ``fp32``; ``fixed8`` = ``fixed8-8`` (the paper's 8-bit fixed point, weights and
    gradients only); ``fixed<wl>-<fl>``; ``bfp8`` / ``bfp<wl>`` (block floating point on
    weights, gradients, activations and errors); ``bfp<wl>c`` (the same with
    ``carry=True``). The names are parsed once, by
    :func:`lpsampling.formats.parse_format`, one format per role.

    Raises:
      ValueError: unknown name or invalid word length; the message lists the valid names.
    """
    weight, grad, activation, error = (parse_format(name, role) for role in ROLES)
    return FormatSpec(weight.name, weight.label, weight, grad, activation, error)


def method_label(method: str, fmt: str) -> str:
    """The paper's name of ``method`` run in format ``fmt`` (e.g. ``"VC SGLDLP-L"``)."""
    spec, fspec = get_method(method), get_format(fmt)
    if fspec.is_full:
        return spec.fp_label or spec.lp_label
    return spec.lp_label
