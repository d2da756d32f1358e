"""Flax (Linen) layers that quantize activations and backpropagated errors.

:class:`Quantize` rounds the activation onto the *activation* format in the forward pass and
the incoming cotangent (the "error") onto the *error* format in the backward pass, as
QPyTorch's ``Quantizer`` module does in the paper's networks; :class:`QuantConfig` bundles
the two formats and the rounding mode. Weights and gradients are quantized by the samplers,
not here. A stochastic :class:`Quantize` draws a fresh key from its own ``"quantize"`` RNG
stream on every call: pass ``rngs={"quantize": key}`` to ``model.apply`` (and
``model.init``). Layers that are ``FULL`` or round to nearest draw nothing.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax

from lpsampling.formats import FULL, Format, Full, check_format
from lpsampling.quantize import check_rounding, quantizer

__all__ = [
    "QUANTIZE_RNG",
    "Quantize",
    "QuantConfig",
    "QuantizeCall",
    "quantize_calls",
    "count_quantizers",
]

QUANTIZE_RNG = "quantize"
"""The default RNG collection from which :class:`Quantize` draws its rounding keys."""


@functools.lru_cache(maxsize=256)
def _quantizer_op(
    forward_fmt: Format, backward_fmt: Format, rounding: str
) -> Callable[[jax.Array, jax.Array | None], jax.Array]:
    # Formats are frozen (hashable) dataclasses: build each custom_vjp op once.
    return quantizer(forward_fmt, backward_fmt, rounding)


class Quantize(nn.Module):
    """Quantize activations on the forward pass and errors on the backward pass.

    ``y = Quantize(fwd, bwd)(x)`` returns ``x`` rounded onto ``forward_format``; in the
    backward pass the cotangent of ``y`` is rounded onto ``backward_format`` before it is
    passed on to ``x`` (the op is :func:`lpsampling.quantizer`, a ``custom_vjp``). The
    two roundings use independent keys derived from one key per call, drawn with
    ``self.make_rng(rng_collection)``.

    With both formats ``FULL`` the layer is the identity and draws no key; with
    ``rounding="nearest"`` it is deterministic and draws no key either. It has no
    parameters and does not quantize weights (the samplers do that).

    For :class:`~lpsampling.BlockFloatingPoint` with ``axis=0`` (the paper's setting)
    each example of the batch gets its own exponent, in the forward and backward pass.

    Attributes:
      forward_format: format of the activation (the layer's output).
      backward_format: format of the error (the cotangent passed to the layer's input).
      rounding: ``"stochastic"`` or ``"nearest"``, used for both directions.
      rng_collection: name of the RNG stream for stochastic rounding.
    """

    forward_format: Format = FULL
    backward_format: Format = FULL
    rounding: str = "stochastic"
    rng_collection: str = QUANTIZE_RNG

    @property
    def is_identity(self) -> bool:
        """True when both formats are ``FULL``: the layer does nothing."""
        return isinstance(self.forward_format, Full) and isinstance(self.backward_format, Full)

    @property
    def needs_rng(self) -> bool:
        """True when a call draws a key from ``rng_collection``."""
        return self.rounding == "stochastic" and not self.is_identity

    def __call__(self, x: jax.Array) -> jax.Array:
        """Quantize ``x`` (forward) and its cotangent (backward); same shape and dtype."""
        check_format(self.forward_format, "forward_format")
        check_format(self.backward_format, "backward_format")
        check_rounding(self.rounding)
        if self.is_identity:
            return x
        key = self.make_rng(self.rng_collection) if self.needs_rng else None
        op = _quantizer_op(self.forward_format, self.backward_format, self.rounding)
        return op(x, key)


@dataclasses.dataclass(frozen=True)
class QuantConfig:
    """How a model quantizes its activations and errors (weights: see the samplers).

    Attributes:
      activation_format: format of the activations at each quantization point.
      error_format: format of the backpropagated errors at the same points.
      rounding: ``"stochastic"`` (the paper's choice; needs the ``"quantize"`` rng) or
        ``"nearest"``.

    ``QuantConfig()`` / :meth:`full` quantize nothing. The paper's 8-bit block floating
    point runs use ``QuantConfig.uniform(BlockFloatingPoint(8))`` (per-example exponents);
    its 8-bit fixed-point runs keep activations and errors in full precision.
    """

    activation_format: Format = FULL
    error_format: Format = FULL
    rounding: str = "stochastic"

    def __post_init__(self):
        check_format(self.activation_format, "activation_format")
        check_format(self.error_format, "error_format")
        check_rounding(self.rounding)

    @classmethod
    def full(cls) -> QuantConfig:
        """No quantization: every :class:`Quantize` layer is the identity."""
        return cls()

    @classmethod
    def uniform(cls, fmt: Format, rounding: str = "stochastic") -> QuantConfig:
        """The same format for activations and errors."""
        return cls(fmt, fmt, rounding)

    @property
    def is_full(self) -> bool:
        """True when neither activations nor errors are quantized."""
        return isinstance(self.activation_format, Full) and isinstance(self.error_format, Full)

    @property
    def needs_rng(self) -> bool:
        """True when applying a model with this config needs the ``"quantize"`` rng."""
        return self.rounding == "stochastic" and not self.is_full

    def layer(self, name: str | None = None) -> Quantize:
        """A :class:`Quantize` layer with this config (call inside a compact method)."""
        return Quantize(self.activation_format, self.error_format, self.rounding, name=name)


class QuantizeCall(NamedTuple):
    """One call of a :class:`Quantize` layer, as recorded by :func:`quantize_calls`."""

    path: tuple[str, ...]
    shape: tuple[int, ...]
    forward_format: Format
    backward_format: Format
    rounding: str

    @property
    def name(self) -> str:
        """The module path joined with ``/``, e.g. ``"layer1_0/q_conv1"``."""
        return "/".join(self.path)


def quantize_calls(
    model: nn.Module,
    *args: Any,
    method: Callable[..., Any] | str | None = None,
    **kwargs: Any,
) -> list[QuantizeCall]:
    """The :class:`Quantize` calls made by ``model.init(rngs, *args, **kwargs)``, in order.

    Traced abstractly with :func:`jax.eval_shape`, so nothing is computed or allocated
    (``args`` may be arrays or :class:`jax.ShapeDtypeStruct`). Identity layers (``FULL``
    formats) are recorded too: the result describes where a model quantizes, whatever
    its formats. Non-array keyword arguments (``train=...``) are passed through.
    """
    calls: list[QuantizeCall] = []

    def interceptor(next_fun, call_args, call_kwargs, context):
        module = context.module
        if isinstance(module, Quantize) and context.method_name == "__call__":
            x = call_args[0] if call_args else next(iter(call_kwargs.values()))
            calls.append(
                QuantizeCall(
                    tuple(module.path),
                    tuple(x.shape),
                    module.forward_format,
                    module.backward_format,
                    module.rounding,
                )
            )
        return next_fun(*call_args, **call_kwargs)

    def init(*a):
        rngs = {"params": jax.random.key(0), QUANTIZE_RNG: jax.random.key(1)}
        return model.init(rngs, *a, method=method, **kwargs)

    with nn.intercept_methods(interceptor):
        jax.eval_shape(init, *args)
    return calls


def count_quantizers(model: nn.Module, *args: Any, **kwargs: Any) -> int:
    """How many :class:`Quantize` calls one forward pass of ``model`` makes."""
    return len(quantize_calls(model, *args, **kwargs))
