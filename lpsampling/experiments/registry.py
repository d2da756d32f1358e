"""Names of the experiment runner → typed specs: methods, formats, datasets, models, schedules.

Names are case-insensitive and ``_`` may be written for ``-`` (:func:`normalize_name`);
unknown names raise ``ValueError`` listing the valid ones.
"""

from __future__ import annotations

import dataclasses
import functools
import re

from lpsampling.data import DATASETS
from lpsampling.flax import MODELS, QuantConfig
from lpsampling.formats import FULL, BlockFloatingPoint, FixedPoint, Format, Full
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
    weights, gradients, activations and errors).

    Raises:
      ValueError: unknown name or invalid word length; the message lists the valid names.
    """
    key = normalize_name(name, "format")
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
