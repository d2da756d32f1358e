"""Flax NNX layer that quantizes activations and backpropagated errors.

:class:`Quantize` is the NNX twin of :class:`lpsampling.flax.Quantize`: the forward pass
rounds the activation onto the *activation* format, the backward pass rounds the incoming
cotangent (the "error") onto the *error* format, with the same ``custom_vjp`` op
(:func:`lpsampling.quantizer`). Keys come from an :class:`flax.nnx.Rngs` stream named
``"quantize"``, given to the constructor (kept, as :class:`flax.nnx.Dropout` keeps its
stream) or to the call. Layers that are ``FULL`` or round to nearest draw no key.

:class:`QuantDense` / :class:`QuantConv` are ``nnx.Linear`` / ``nnx.Conv`` whose product can
run as int8 × int8 → int32, the NNX twins of :class:`lpsampling.flax.QuantDense` /
:class:`lpsampling.flax.QuantConv` on the same primitive (:mod:`lpsampling.int8`).
"""

from __future__ import annotations

from typing import Any

import jax
from flax import nnx

from lpsampling.flax.layers import (
    QUANTIZE_RNG,
    QuantConfig,
    _conv_geometry,
    _quantizer_op,
    check_compute,
    int8_conv,
    int8_dense,
)
from lpsampling.formats import FULL, Format, Full, check_format
from lpsampling.quantize import check_float_array, check_rounding

__all__ = ["Quantize", "QuantDense", "QuantConv"]

# What the ``rngs`` arguments of calls accept: an nnx.Rngs (its "quantize" stream, or its
# "default" one when it has none), an nnx.RngStream, or a PRNG key used as it is.
RngsLike = nnx.Rngs | nnx.RngStream | jax.Array


def _stream(rngs: nnx.Rngs | nnx.RngStream, collection: str) -> nnx.RngStream:
    if isinstance(rngs, nnx.Rngs):
        return rngs[collection]  # nnx.Rngs falls back to its "default" stream
    return rngs


def _fork_stream(
    rngs: nnx.Rngs | nnx.RngStream | None, collection: str, needed: bool, name: str
) -> nnx.RngStream | None:
    """The stream a layer keeps: a fork of ``rngs``' ``collection`` stream when the layer
    will draw keys, else None (a layer that never draws consumes nothing at build time)."""
    if rngs is not None and not isinstance(rngs, (nnx.Rngs, nnx.RngStream)):
        raise TypeError(f"{name}: rngs must be an nnx.Rngs, an nnx.RngStream or None, "
                        f"got {type(rngs).__name__}")
    if rngs is None or not needed:
        return None
    return _stream(rngs, collection).fork()


def _draw_key(
    rngs: RngsLike | None,
    own: nnx.RngStream | None,
    collection: str,
    name: str,
) -> jax.Array:
    """One key for one call: from the call's ``rngs`` when given (it takes precedence, as
    in :class:`flax.nnx.Dropout`), else from the layer's own stream ``own``.

    Raises:
      ValueError: neither is available.
      TypeError: ``rngs`` is of another type.
    """
    if rngs is None:
        if own is None:
            raise ValueError(
                f"{name} rounds stochastically and needs keys: pass "
                f"rngs=nnx.Rngs({collection}=seed) to its constructor, or rngs= (an nnx.Rngs, "
                "an nnx.RngStream or a PRNG key) to the call; or use rounding='nearest'"
            )
        return own()
    if isinstance(rngs, (nnx.Rngs, nnx.RngStream)):
        return _stream(rngs, collection)()
    if isinstance(rngs, jax.Array):
        return rngs
    raise TypeError(f"{name}: rngs must be an nnx.Rngs, an nnx.RngStream, a PRNG key or "
                    f"None, got {type(rngs).__name__}")


class Quantize(nnx.Module):
    """Quantize activations on the forward pass and errors on the backward pass (NNX).

    ``y = Quantize(fwd, bwd, rngs=rngs)(x)`` returns ``x`` rounded onto ``forward_format``;
    in the backward pass the cotangent of ``y`` is rounded onto ``backward_format`` before
    it reaches ``x``. The op is :func:`lpsampling.quantizer`, the one
    :class:`lpsampling.flax.Quantize` (Linen) uses: each call takes one key, from which the
    two roundings derive independent keys by ``fold_in``.

    Keys: ``rngs`` given to the call (an :class:`~flax.nnx.Rngs`, an
    :class:`~flax.nnx.RngStream` or a PRNG key used as it is) take precedence; otherwise
    the layer draws from the ``rng_collection`` stream it forked from the constructor's
    ``rngs`` (each call advances it, under :func:`flax.nnx.jit` too). With both formats
    ``FULL`` the layer is the identity; with ``rounding="nearest"`` it is deterministic;
    in both cases it keeps no stream and draws no key. No parameters.

    Args:
      forward_format: format of the activation (the layer's output).
      backward_format: format of the error (the cotangent passed to the layer's input).
      rounding: ``"stochastic"`` or ``"nearest"``, used for both directions.
      rng_collection: name of the stream for stochastic rounding (default ``"quantize"``).
      rngs: where the layer's own stream comes from (optional when every call gets
        ``rngs``).
    """

    def __init__(
        self,
        forward_format: Format = FULL,
        backward_format: Format = FULL,
        rounding: str = "stochastic",
        *,
        rng_collection: str = QUANTIZE_RNG,
        rngs: nnx.Rngs | nnx.RngStream | None = None,
    ):
        check_format(forward_format, "forward_format")
        check_format(backward_format, "backward_format")
        check_rounding(rounding)
        if not isinstance(rng_collection, str):
            raise TypeError(f"rng_collection must be a str, got {type(rng_collection).__name__}")
        self.forward_format = forward_format
        self.backward_format = backward_format
        self.rounding = rounding
        self.rng_collection = rng_collection
        self.rngs = nnx.data(_fork_stream(rngs, rng_collection, self.needs_rng, "Quantize"))

    @classmethod
    def from_config(
        cls, quant: QuantConfig, *, rngs: nnx.Rngs | nnx.RngStream | None = None
    ) -> Quantize:
        """A layer with the formats and rounding of a :class:`~lpsampling.flax.QuantConfig`."""
        if not isinstance(quant, QuantConfig):
            raise TypeError(f"quant must be a QuantConfig, got {type(quant).__name__}")
        return cls(quant.activation_format, quant.error_format, quant.rounding, rngs=rngs)

    @property
    def is_identity(self) -> bool:
        """True when both formats are ``FULL``: the layer does nothing."""
        return isinstance(self.forward_format, Full) and isinstance(self.backward_format, Full)

    @property
    def needs_rng(self) -> bool:
        """True when a call draws a key."""
        return self.rounding == "stochastic" and not self.is_identity

    def __call__(self, x: jax.Array, *, rngs: RngsLike | None = None) -> jax.Array:
        """Quantize ``x`` (forward) and its cotangent (backward); same shape and dtype."""
        check_float_array(x)
        if self.is_identity:
            return x
        key = None
        if self.needs_rng:
            key = _draw_key(rngs, self.rngs, self.rng_collection, "Quantize")
        op = _quantizer_op(self.forward_format, self.backward_format, self.rounding)
        return op(x, key)


def _check_int8_fields(weight_format: Format, input_format: Format, error_format: Format,
                       compute: str) -> None:
    check_format(weight_format, "weight_format")
    check_format(input_format, "input_format")
    check_format(error_format, "error_format")
    check_compute(compute)


class QuantDense(nnx.Linear):
    """``nnx.Linear`` whose product can run as int8 × int8 → int32 (NNX twin of
    :class:`lpsampling.flax.QuantDense`).

    The parameters, shapes and initialisers are ``nnx.Linear``'s. ``compute="float32"``
    (the default) *is* ``nnx.Linear``; ``compute="int8"`` rounds the input to nearest onto
    ``input_format`` and the kernel onto ``weight_format`` (the identity for on-grid values)
    and multiplies the codes with :func:`lpsampling.int8_matmul` (the Linen layer's code,
    shared); the bias is added in float32.

    Args:
      in_features, out_features: as ``nnx.Linear``.
      weight_format: the kernel's grid (``BlockFloatingPoint(8, axis=-1)`` or fixed point).
      input_format: the input's grid (``BlockFloatingPoint(8, axis=0)`` or fixed point).
      error_format: the grid of the output's cotangent (``FULL`` if not quantized); with an
        8-bit grid the backward products that factor run in int8 too.
      compute: ``"float32"`` or ``"int8"``.
      **kwargs: the other arguments of ``nnx.Linear`` (``rngs`` among them).
    """

    def __init__(self, in_features: int, out_features: int, *,
                 weight_format: Format = FULL, input_format: Format = FULL,
                 error_format: Format = FULL, compute: str = "float32", **kwargs: Any):
        _check_int8_fields(weight_format, input_format, error_format, compute)
        super().__init__(in_features, out_features, **kwargs)
        self.weight_format = weight_format
        self.input_format = input_format
        self.error_format = error_format
        self.compute = compute

    def __call__(self, inputs: jax.Array) -> jax.Array:
        """``inputs @ kernel + bias`` over the last axis of ``inputs``."""
        if self.compute == "float32":
            return super().__call__(inputs)
        bias = None if self.bias is None else self.bias[...]
        return int8_dense(inputs, self.kernel[...], bias, self)


class QuantConv(nnx.Conv):
    """``nnx.Conv`` whose convolution can run as int8 × int8 → int32 (NNX twin of
    :class:`lpsampling.flax.QuantConv`).

    ``compute="float32"`` (the default) is ``nnx.Conv``; ``compute="int8"`` rounds the NHWC
    input onto ``input_format`` and the HWIO kernel onto ``weight_format`` and convolves
    the codes with :func:`lpsampling.int8_conv`; 2-D, no feature groups, no input dilation,
    no mask. Arguments as :class:`QuantDense`, the rest as ``nnx.Conv``.
    """

    def __init__(self, in_features: int, out_features: int, kernel_size: int | Any, *,
                 weight_format: Format = FULL, input_format: Format = FULL,
                 error_format: Format = FULL, compute: str = "float32", **kwargs: Any):
        _check_int8_fields(weight_format, input_format, error_format, compute)
        super().__init__(in_features, out_features, kernel_size, **kwargs)
        self.weight_format = weight_format
        self.input_format = input_format
        self.error_format = error_format
        self.compute = compute
        if compute == "int8":
            _conv_geometry(self, 4)  # refuse unsupported geometry at construction

    def __call__(self, inputs: jax.Array) -> jax.Array:
        """The convolution of ``inputs`` (NHWC) with the kernel, plus the bias."""
        if self.compute == "float32":
            return super().__call__(inputs)
        bias = None if self.bias is None else self.bias[...]
        return int8_conv(inputs, self.kernel[...], bias, self)
