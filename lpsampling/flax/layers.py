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
import jax.numpy as jnp

from lpsampling import int8 as _int8
from lpsampling.formats import FULL, Format, Full, check_format
from lpsampling.quantize import check_rounding, quantizer
from lpsampling.storage import Packed, unpack

__all__ = [
    "QUANTIZE_RNG",
    "Quantize",
    "QuantConfig",
    "QuantizeCall",
    "quantize_calls",
    "count_quantizers",
    "COMPUTES",
    "QuantDense",
    "QuantConv",
    "Int8Product",
    "int8_products",
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


def _trace_init(model: nn.Module, args: tuple, method: Any, kwargs: dict,
                interceptor: Callable[..., Any]) -> None:
    """Run ``model.init`` abstractly (:func:`jax.eval_shape`: nothing computed or
    allocated) with ``interceptor`` seeing every module method call."""

    def init(*a):
        rngs = {"params": jax.random.key(0), QUANTIZE_RNG: jax.random.key(1)}
        return model.init(rngs, *a, method=method, **kwargs)

    with nn.intercept_methods(interceptor):
        jax.eval_shape(init, *args)


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

    _trace_init(model, args, method, kwargs, interceptor)
    return calls


def count_quantizers(model: nn.Module, *args: Any, **kwargs: Any) -> int:
    """How many :class:`Quantize` calls one forward pass of ``model`` makes."""
    return len(quantize_calls(model, *args, **kwargs))


# --------------------------------------------------------------------------------------
# Dense and convolution layers that can multiply in int8 (lpsampling.int8).

COMPUTES: tuple[str, ...] = ("float32", "int8")
"""The ``compute`` modes of :class:`QuantDense` / :class:`QuantConv`."""


def check_compute(compute: str) -> str:
    if compute not in COMPUTES:
        raise ValueError(f"compute must be one of {COMPUTES}, got {compute!r}")
    return compute


def _float_param(v: Any) -> jax.Array:
    """A parameter given as a :class:`~lpsampling.storage.Packed` leaf, decoded."""
    return unpack(v) if isinstance(v, Packed) else v


def _packed_operand(kernel: Packed) -> _int8.Int8Operand:
    op = _int8.Int8Operand.from_packed(kernel)
    if op.codes.ndim != len(kernel.shape):
        raise ValueError(
            f"the Packed kernel holds a stack of {op.codes.shape[0]} tensors (codes of shape "
            f"{op.codes.shape}); apply the model to one sample at a time (e.g. jax.vmap over "
            "the bank's sample axis)")
    return op


class QuantDense(nn.Dense):
    """``nn.Dense`` whose product can run as int8 × int8 → int32 (:mod:`lpsampling.int8`).

    A drop-in for ``nn.Dense``: the same fields, parameters (``kernel`` ``(in, out)``,
    ``bias``), shapes and initialisers, so checkpoints and the samplers work unchanged.
    ``compute="float32"`` (the default) *is* ``nn.Dense`` (the simulated low-precision
    path, bit for bit). ``compute="int8"`` rounds the input to nearest onto
    ``input_format`` and the kernel onto ``weight_format`` (the identity for on-grid
    values: :class:`Quantize` outputs, the samplers' weights) and multiplies the codes
    with :func:`lpsampling.int8_matmul`; the bias is added in float32. The result is the
    exact product rounded once to float32, where float32 rounds at every addition.

    In int8 mode the ``kernel`` parameter may also be a :class:`lpsampling.storage.Packed`
    leaf of 8-bit codes (as in a packed :class:`~lpsampling.bank.SampleBank`): its codes are
    multiplied without being decoded (its own format is used; prediction only, no gradient
    with respect to it). A Packed ``bias`` is decoded.

    Besides ``nn.Dense``'s fields:

    Attributes:
      weight_format: the kernel's grid (``BlockFloatingPoint(8, axis=-1)``: one exponent
        per output unit; or fixed point / ``axis=None``).
      input_format: the input's grid (``BlockFloatingPoint(8, axis=0)``: one exponent per
        example; or fixed point / ``axis=None``).
      error_format: the grid of the cotangent of the output (the error format of the
        :class:`Quantize` that follows the layer), ``FULL`` if none; with an 8-bit grid the
        backward products that factor run in int8 too (see :mod:`lpsampling.int8`).
      compute: ``"float32"`` or ``"int8"``.
    """

    weight_format: Format = FULL
    input_format: Format = FULL
    error_format: Format = FULL
    compute: str = "float32"

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        """``inputs @ kernel + bias`` over the last axis of ``inputs``."""
        if check_compute(self.compute) == "float32":
            return super().__call__(inputs)
        kernel = self.param("kernel", self.kernel_init, (jnp.shape(inputs)[-1], self.features),
                            self.param_dtype)
        bias = (self.param("bias", self.bias_init, (self.features,), self.param_dtype)
                if self.use_bias else None)
        return int8_dense(inputs, kernel, bias, self)


def int8_dense(inputs: jax.Array, kernel: Any, bias: Any, layer: Any) -> jax.Array:
    """The int8 forward of a dense layer (shared by the Linen and NNX ``QuantDense``):
    ``layer`` supplies ``input_format``, ``weight_format`` and ``error_format``."""
    _int8.check_int8(layer.input_format, inputs.shape, (-1,), "input_format")
    if isinstance(kernel, Packed):
        x = _int8.encode_int8(inputs, layer.input_format)
        y = _int8.int8_matmul_encoded(x, _packed_operand(kernel))
        y = y + _int8._nonfinite(inputs)
    else:
        _int8.check_int8(layer.weight_format, jnp.shape(kernel), (0,), "weight_format")
        y = _int8.int8_matmul(inputs, kernel, layer.input_format, layer.weight_format,
                              error_format=layer.error_format)
    if bias is not None:
        y = y + jnp.reshape(_float_param(bias), (1,) * (y.ndim - 1) + (-1,))
    return y


def _conv_geometry(conv: Any, ndim: int):
    """The strides / padding / dilation of ``conv`` (an ``nn.Conv`` or ``nnx.Conv``: the same
    attribute names) for :func:`lpsampling.int8_conv`."""
    if ndim != 4:
        raise ValueError(f"QuantConv with compute='int8' needs NHWC inputs (4-D), got {ndim}-D")
    if len(conv.kernel_size) != 2:
        raise ValueError("QuantConv with compute='int8' supports 2-D kernels only, got "
                         f"kernel_size={conv.kernel_size}")
    if conv.input_dilation not in (None, 1, (1, 1), [1, 1]):
        raise ValueError(f"QuantConv with compute='int8' does not support input_dilation "
                         f"(got {conv.input_dilation!r})")
    if conv.feature_group_count != 1 or conv.mask is not None:
        raise ValueError("QuantConv with compute='int8' supports feature_group_count=1 and "
                         "no mask")
    if isinstance(conv.padding, str) and conv.padding.upper() not in ("SAME", "VALID"):
        raise ValueError(f"QuantConv with compute='int8' supports padding 'SAME', 'VALID' or "
                         f"explicit pairs, got {conv.padding!r}")
    return dict(strides=conv.strides or 1, padding=conv.padding,
                kernel_dilation=conv.kernel_dilation or 1)


class QuantConv(nn.Conv):
    """``nn.Conv`` whose convolution can run as int8 × int8 → int32 (:mod:`lpsampling.int8`).

    A drop-in for ``nn.Conv`` (same fields, parameters, shapes and initialisers);
    ``compute="float32"`` (the default) is ``nn.Conv`` itself. ``compute="int8"`` rounds the
    NHWC input onto ``input_format`` (one exponent per example, ``axis=0``, or fixed point /
    whole tensor) and the HWIO kernel onto ``weight_format`` (one exponent per output filter,
    ``axis=-1``, or fixed point / whole tensor) and convolves the codes with
    :func:`lpsampling.int8_conv`; the bias is added in float32. 2-D, no feature groups,
    no input dilation, no mask; padding ``"SAME"``, ``"VALID"``, ints or pairs. As
    :class:`QuantDense`, the kernel may be a :class:`~lpsampling.storage.Packed` leaf in int8
    mode (prediction only).

    Besides ``nn.Conv``'s fields it has ``weight_format``, ``input_format``,
    ``error_format`` and ``compute``, as :class:`QuantDense`.
    """

    weight_format: Format = FULL
    input_format: Format = FULL
    error_format: Format = FULL
    compute: str = "float32"

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        """The convolution of ``inputs`` (NHWC) with the kernel, plus the bias."""
        if check_compute(self.compute) == "float32":
            return super().__call__(inputs)
        _conv_geometry(self, inputs.ndim)
        kernel_size = tuple(self.kernel_size)
        kshape = kernel_size + (inputs.shape[-1], self.features)
        kernel = self.param("kernel", self.kernel_init, kshape, self.param_dtype)
        bias = (self.param("bias", self.bias_init, (self.features,), self.param_dtype)
                if self.use_bias else None)
        return int8_conv(inputs, kernel, bias, self)


def int8_conv(inputs: jax.Array, kernel: Any, bias: Any, layer: Any) -> jax.Array:
    """The int8 forward of a convolution (shared by the Linen and NNX ``QuantConv``):
    ``layer`` supplies the formats and the geometry (``strides``, ``padding``, ...)."""
    geometry = _conv_geometry(layer, inputs.ndim)
    _int8.check_int8(layer.input_format, inputs.shape, (1, 2, 3), "input_format")
    if isinstance(kernel, Packed):
        x = _int8.encode_int8(inputs, layer.input_format)
        y = _int8.int8_conv_encoded(x, _packed_operand(kernel), **geometry)
        y = y + _int8._nonfinite(inputs)
    else:
        _int8.check_int8(layer.weight_format, jnp.shape(kernel), (0, 1, 2), "weight_format")
        y = _int8.int8_conv(inputs, kernel, layer.input_format, layer.weight_format,
                            error_format=layer.error_format, **geometry)
    if bias is not None:
        y = y + jnp.reshape(_float_param(bias), (1,) * (y.ndim - 1) + (-1,))
    return y


class Int8Product(NamedTuple):
    """One dense / convolution call of a model, as recorded by :func:`int8_products`.

    ``forward``, ``dx`` (gradient of the input) and ``dw`` (gradient of the kernel) are
    ``"int8"`` or ``"float32"``: how each product runs.
    """

    path: tuple[str, ...]
    kind: str
    compute: str
    forward: str
    dx: str
    dw: str

    @property
    def name(self) -> str:
        """The module path joined with ``/``, e.g. ``"layer1_0/conv2"``."""
        return "/".join(self.path)


def int8_products(
    model: nn.Module,
    *args: Any,
    method: Callable[..., Any] | str | None = None,
    **kwargs: Any,
) -> list[Int8Product]:
    """Every ``nn.Dense`` / ``nn.Conv`` call (:class:`QuantDense` / :class:`QuantConv`
    included) of ``model.init(rngs, *args, **kwargs)``, in order, with how each of its three
    products (forward, input gradient, kernel gradient) runs.

    Traced abstractly with :func:`jax.eval_shape` (nothing is computed), as
    :func:`quantize_calls`; plain ``nn.Dense`` / ``nn.Conv`` and ``compute="float32"``
    layers report ``"float32"`` for all three.
    """
    found: list[Int8Product] = []
    active: list[Any] = []  # the layers being called (QuantDense's float32 path calls
    # nn.Dense.__call__ on itself: record the outer call only)

    def interceptor(next_fun, call_args, call_kwargs, context):
        module = context.module
        if any(m is module for m in active):
            return next_fun(*call_args, **call_kwargs)
        active.append(module)
        try:
            out = next_fun(*call_args, **call_kwargs)
        finally:
            active.pop()
        if isinstance(module, (nn.Dense, nn.Conv)) and context.method_name == "__call__":
            x = call_args[0] if call_args else next(iter(call_kwargs.values()))
            kind = "dense" if isinstance(module, nn.Dense) else "conv"
            compute = getattr(module, "compute", "float32")
            plan = dict.fromkeys(("forward", "dx", "dw"), "float32")
            if compute == "int8":
                if kind == "dense":
                    w_shape = (x.shape[-1], module.features)
                else:
                    w_shape = tuple(module.kernel_size) + (x.shape[-1], module.features)
                plan = _int8.int8_plan(kind, x.shape, w_shape, module.input_format,
                                       module.weight_format, module.error_format,
                                       out_shape=out.shape)
            found.append(Int8Product(tuple(module.path), kind, compute, **plan))
        return out

    _trace_init(model, args, method, kwargs, interceptor)
    return found
