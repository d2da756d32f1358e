"""The paper's networks in Flax NNX, numerically equal to their Linen twins.

Each model mirrors the Linen model of the same name in :mod:`lpsampling.flax.models`:
same layers, same quantizer placement, same PyTorch-default initialisation, and attribute
names equal to the Linen module names, so that the NNX state has the tree of the Linen
variables (:func:`load_linen_variables` and :func:`linen_variables` convert). NNX builds
its layers eagerly, so a model takes the shape of one example first
(``MLP(784, 10, rngs=rngs)``, ``ResNet18((32, 32, 3), 10, rngs=rngs)``).

Call a model as ``model(x)`` (or ``model(x, train)``, as the Linen twins); it returns
logits ``(batch, num_classes)``. ``train`` selects BatchNorm's batch or running statistics;
``None`` (the default) follows the module's mode, set with ``model.train()`` /
``model.eval()``. Only the ResNets have state besides their parameters
(``nnx.BatchStat``, full precision). ``compute="int8"`` (with the sampler's
``weight_format``) makes the dense/conv layers fed by quantizers multiply int8 codes, where
the Linen twins do (:class:`~lpsampling.flax.nnx.QuantDense`, :mod:`lpsampling.int8`).

**Keys.** A model whose :class:`~lpsampling.flax.QuantConfig` rounds stochastically
(``quant.needs_rng``) forks a ``"quantize"`` stream from the constructor's ``rngs`` and
draws **one** key per forward pass from it (or takes the call's ``rngs``: an
:class:`~flax.nnx.Rngs`, an :class:`~flax.nnx.RngStream` or a PRNG key used as the pass's
key). Each quantizer's key is derived from the pass's key exactly as Linen's ``make_rng``
derives it from ``rngs={"quantize": key}`` (``fold_in`` of a SHA-1 hash of the Linen
module path and the call count, Flax's own ``LazyRng``), so ``model(x, train, rngs=key)``
is bit-for-bit ``linen_twin.apply(variables, x, train, rngs={"quantize": key})``, in the
forward and the backward pass. A model that quantizes nothing or rounds to nearest keeps
no stream and draws nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
from flax import nnx
from flax.core.scope import LazyRng
from flax.traverse_util import flatten_dict

from lpsampling.flax.layers import QUANTIZE_RNG, QuantConfig, check_compute
from lpsampling.flax.models import max_pool_2x2, torch_bias_init, torch_kernel_init
from lpsampling.flax.nnx.layers import (
    QuantConv,
    QuantDense,
    Quantize,
    RngsLike,
    _draw_key,
    _fork_stream,
)
from lpsampling.formats import FULL, Format, check_format
from lpsampling.validation import positive_int

__all__ = [
    "MODELS",
    "LogisticRegression",
    "MLP",
    "SmallCNN",
    "BasicBlock",
    "ResNet",
    "ResNet18",
    "create_model",
    "load_linen_variables",
    "linen_variables",
]


def _linen_key(base: jax.Array | None, path: tuple[str, ...]) -> jax.Array | None:
    """The key Linen's ``make_rng`` gives the first call in scope ``path`` of a module
    applied with ``rngs={"quantize": base}``: ``fold_in(base, sha1(path, 1))``."""
    if base is None:
        return None
    return LazyRng.create(base, *path, 1).as_jax_rng()


def _check_quant(quant: QuantConfig | None) -> QuantConfig:
    if quant is None:
        return QuantConfig.full()
    if not isinstance(quant, QuantConfig):
        raise TypeError(f"quant must be a lpsampling.flax.QuantConfig or None, "
                        f"got {type(quant).__name__}")
    return quant


def _check_rngs(rngs: Any, name: str) -> nnx.Rngs:
    if not isinstance(rngs, nnx.Rngs):
        raise TypeError(f"{name}: rngs must be an nnx.Rngs (e.g. nnx.Rngs(0) or "
                        f"nnx.Rngs(params=0, quantize=1)), got {type(rngs).__name__}")
    return rngs


def _positive_ints(name: str, values: Sequence[int]) -> tuple[int, ...]:
    if isinstance(values, (int, str)) or not isinstance(values, Sequence):
        raise TypeError(f"{name} must be a sequence of positive ints, got {values!r}")
    return tuple(positive_int(name, v) for v in values)


def _linear(fan_in: int, features: int, rngs: nnx.Rngs,
            int8: dict[str, Any] | None = None) -> QuantDense:
    return QuantDense(fan_in, features, kernel_init=torch_kernel_init,
                      bias_init=torch_bias_init(fan_in), rngs=rngs, **(int8 or {}))


def _flatten(x: jax.Array) -> jax.Array:
    return x.reshape((x.shape[0], -1))


def _relu(x: jax.Array) -> jax.Array:
    return nnx.relu(x)


class _QuantModel(nnx.Module):
    """What every model shares: the quant config, the model's key stream, key derivation."""

    def _init_quant(self, quant: QuantConfig | None, rngs: nnx.Rngs,
                    own_stream: bool = True) -> QuantConfig:
        quant = _check_quant(quant)
        self.quant = quant
        self.rngs = nnx.data(_fork_stream(rngs, QUANTIZE_RNG, quant.needs_rng and own_stream,
                                          type(self).__name__))
        return quant

    def _init_compute(self, compute: str, weight_format: Format) -> None:
        check_compute(compute)
        check_format(weight_format, "weight_format")
        self.compute = compute
        self.weight_format = weight_format
        if compute == "int8" and (self.quant.activation_format.is_identity
                                  or weight_format.is_identity):
            raise ValueError(
                f"{type(self).__name__}: compute='int8' needs 8-bit grids: an 8-bit "
                "quant.activation_format (the layers' inputs) and weight_format (the "
                f"sampler's weight grid); got {self.quant.activation_format!r} and "
                f"{weight_format!r}")

    def _int8(self, quantized_input: bool, quantized_error: bool) -> dict[str, Any]:
        """The :class:`QuantDense` / :class:`QuantConv` fields of a layer, as the Linen
        twin's: int8 where ``compute="int8"`` and the layer's input is a quantized
        activation; the error format where the layer's output goes into a quantizer."""
        if self.compute == "float32" or not quantized_input:
            return {}
        q = self.quant
        return dict(compute="int8", weight_format=self.weight_format,
                    input_format=q.activation_format,
                    error_format=q.error_format if quantized_error else FULL)

    def _quantizer(self) -> Quantize:
        # The model hands each quantizer its key; the layer keeps no stream of its own.
        return Quantize.from_config(self.quant)

    def _pass_key(self, rngs: RngsLike | None) -> jax.Array | None:
        if not self.quant.needs_rng:
            return None
        return _draw_key(rngs, self.rngs, QUANTIZE_RNG, type(self).__name__)

    def _q(self, name: str, x: jax.Array, base: jax.Array | None,
           prefix: tuple[str, ...] = ()) -> jax.Array:
        return getattr(self, name)(x, rngs=_linen_key(base, prefix + (name,)))


class LogisticRegression(_QuantModel):
    """Multinomial logistic regression: flatten, one dense layer (``classifier``).

    Nothing is quantized (``quant`` is accepted for a uniform interface and ignored).

    Args:
      in_features: number of input features (the flattened example size).
      num_classes: number of logits.
      quant: accepted and ignored.
      rngs: initialisation keys (``"params"`` stream).
    """

    def __init__(self, in_features: int, num_classes: int, *,
                 quant: QuantConfig | None = None, rngs: nnx.Rngs):
        _check_rngs(rngs, "LogisticRegression")
        _check_quant(quant)
        self.quant = QuantConfig.full()
        self.rngs = nnx.data(None)
        self.compute = "float32"
        self.classifier = _linear(positive_int("in_features", in_features),
                                  positive_int("num_classes", num_classes), rngs)

    def __call__(self, x: jax.Array, train: bool | None = None, *,
                 rngs: RngsLike | None = None) -> jax.Array:
        """Logits ``(batch, num_classes)``; ``train`` and ``rngs`` are unused."""
        del train, rngs
        return self.classifier(_flatten(x))


class MLP(_QuantModel):
    """Fully connected ReLU network: flatten, then per hidden layer
    ``Dense -> Q -> relu -> Q``, then an unquantized ``classifier`` (Linen:
    :class:`lpsampling.flax.MLP`). ``len(hidden) * 2`` quantizers.

    Args:
      in_features: the flattened example size (784 for 28×28 images).
      num_classes: number of logits.
      hidden: widths of the hidden layers.
      quant: activation/error quantization (default: none).
      compute: ``"float32"`` (the default: the simulated low-precision path) or
        ``"int8"``: as in the Linen twin, every dense/conv layer whose input is a
        quantized activation multiplies int8 codes (:class:`QuantDense` /
        :class:`QuantConv`, kernel on ``weight_format``, input on
        ``quant.activation_format``); layers reading raw inputs or unquantized sums stay
        float32; layers followed by a quantizer take its error format, so their backward
        products run in int8 where the exponents factor.
      weight_format: the sampler's weight grid (needed by ``compute="int8"``).
      rngs: ``"params"`` for the weights; ``"quantize"`` (or ``"default"``) seeds the
        model's key stream when ``quant.needs_rng``.
    """

    def __init__(self, in_features: int, num_classes: int, *, hidden: Sequence[int] = (100,),
                 quant: QuantConfig | None = None, compute: str = "float32",
                 weight_format: Format = FULL, rngs: nnx.Rngs):
        _check_rngs(rngs, "MLP")
        self._init_quant(quant, rngs)
        self._init_compute(compute, weight_format)
        self.hidden = _positive_ints("hidden", hidden)
        fan_in = positive_int("in_features", in_features)
        for i, width in enumerate(self.hidden):
            # the first layer reads raw inputs: float32
            setattr(self, f"dense{i}", _linear(fan_in, width, rngs, self._int8(i > 0, True)))
            setattr(self, f"q_dense{i}", self._quantizer())
            setattr(self, f"q_relu{i}", self._quantizer())
            fan_in = width
        self.classifier = _linear(fan_in, positive_int("num_classes", num_classes), rngs,
                                  self._int8(bool(self.hidden), False))

    def __call__(self, x: jax.Array, train: bool | None = None, *,
                 rngs: RngsLike | None = None) -> jax.Array:
        """Logits ``(batch, num_classes)``; ``rngs`` overrides the model's key stream."""
        del train
        base = self._pass_key(rngs)
        x = _flatten(x)
        for i in range(len(self.hidden)):
            x = getattr(self, f"dense{i}")(x)
            x = self._q(f"q_dense{i}", x, base)
            x = self._q(f"q_relu{i}", _relu(x), base)
        return self.classifier(x)


def _image_shape(input_shape: Sequence[int], name: str) -> tuple[int, int, int]:
    shape = _positive_ints("input_shape", input_shape)
    if len(shape) == 2:
        shape = shape + (1,)
    if len(shape) != 3:
        raise ValueError(f"{name}: input_shape must be (height, width) or (height, width, "
                         f"channels), got {tuple(input_shape)!r}")
    return shape  # type: ignore[return-value]


class SmallCNN(_QuantModel):
    """The small convolutional network of :class:`lpsampling.flax.SmallCNN` in NNX.

    ``conv3x3(32) -> Q -> relu -> Q -> conv3x3(64) -> Q -> relu -> Q -> maxpool 2×2 ->
    flatten -> Dense(128) -> Q -> relu -> Q -> classifier``; unpadded convolutions; six
    quantizers. Input NHWC (or NHW: a channel axis is added).

    Args:
      input_shape: one example's ``(height, width)`` or ``(height, width, channels)``
        (at least 6×6).
      num_classes: number of logits.
      channels: output channels of the two convolutions.
      dense: width of the hidden dense layer.
      quant, compute, weight_format, rngs: as for :class:`MLP`.
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, *,
                 channels: Sequence[int] = (32, 64), dense: int = 128,
                 quant: QuantConfig | None = None, compute: str = "float32",
                 weight_format: Format = FULL, rngs: nnx.Rngs):
        _check_rngs(rngs, "SmallCNN")
        self._init_quant(quant, rngs)
        self._init_compute(compute, weight_format)
        height, width, in_ch = _image_shape(input_shape, "SmallCNN")
        self.channels = _positive_ints("channels", channels)
        for i, ch in enumerate(self.channels):
            fan_in = 9 * in_ch
            setattr(self, f"conv{i}", QuantConv(
                in_ch, ch, (3, 3), padding="VALID", kernel_init=torch_kernel_init,
                bias_init=torch_bias_init(fan_in), rngs=rngs,
                **self._int8(i > 0, True)))  # conv0 reads raw pixels: float32
            setattr(self, f"q_conv{i}", self._quantizer())
            setattr(self, f"q_relu{i}", self._quantizer())
            in_ch, height, width = ch, height - 2, width - 2
        height, width = height // 2, width // 2
        if height < 1 or width < 1:
            raise ValueError(f"SmallCNN: input_shape {tuple(input_shape)} is too small; "
                             "it needs at least 6×6 pixels")
        fan_in = height * width * in_ch
        self.dense = _linear(fan_in, positive_int("dense", dense), rngs,
                             self._int8(bool(self.channels), True))
        self.q_dense = self._quantizer()
        self.q_relu_dense = self._quantizer()
        self.classifier = _linear(self.dense.out_features,
                                  positive_int("num_classes", num_classes), rngs,
                                  self._int8(True, False))

    def __call__(self, x: jax.Array, train: bool | None = None, *,
                 rngs: RngsLike | None = None) -> jax.Array:
        """Logits ``(batch, num_classes)``; ``rngs`` overrides the model's key stream."""
        del train
        base = self._pass_key(rngs)
        if x.ndim == 3:
            x = x[..., None]
        for i in range(len(self.channels)):
            x = getattr(self, f"conv{i}")(x)
            x = self._q(f"q_conv{i}", x, base)
            x = self._q(f"q_relu{i}", _relu(x), base)
        x = max_pool_2x2(x)
        x = self.dense(_flatten(x))
        x = self._q("q_dense", x, base)
        x = self._q("q_relu_dense", _relu(x), base)
        return self.classifier(x)


def _conv(in_features: int, features: int, kernel: int, strides: int,
          rngs: nnx.Rngs, int8: dict[str, Any]) -> QuantConv:
    """A bias-free convolution padded like PyTorch's (``kernel // 2`` on each side)."""
    pad = kernel // 2
    return QuantConv(in_features, features, (kernel, kernel), strides=(strides, strides),
                     padding=((pad, pad), (pad, pad)), use_bias=False,
                     kernel_init=torch_kernel_init, rngs=rngs, **int8)


def _batch_norm(features: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
    # PyTorch BatchNorm2d defaults: momentum 0.1 (0.9 in Flax's convention), eps 1e-5.
    return nnx.BatchNorm(features, momentum=0.9, epsilon=1e-5, rngs=rngs)


def _running(train: bool | None) -> bool | None:
    return None if train is None else not train


class BasicBlock(_QuantModel):
    """The ResNet basic block of :class:`lpsampling.flax.BasicBlock` in NNX.

    ``conv1 -> Q -> BN -> relu -> Q -> conv2 -> Q -> BN``, plus the shortcut (identity,
    or ``shortcut_conv`` 1×1 + ``shortcut_bn`` when the shape changes), then
    ``add -> relu``. Three quantizers.

    Args:
      in_features: input channels.
      features: output channels.
      strides: stride of ``conv1`` and of the projection shortcut.
      quant, compute, weight_format, rngs: as for :class:`MLP`.
      quantized_input: whether the block's input is a quantized activation (then
        ``conv1`` and the shortcut conv run in int8 too with ``compute="int8"``; in the
        ResNet, the first block after the stem).
    """

    def __init__(self, in_features: int, features: int, strides: int = 1, *,
                 quant: QuantConfig | None = None, compute: str = "float32",
                 weight_format: Format = FULL, quantized_input: bool = False, rngs: nnx.Rngs,
                 _own_stream: bool = True):
        _check_rngs(rngs, "BasicBlock")
        self._init_quant(quant, rngs, _own_stream)
        self._init_compute(compute, weight_format)
        qin = self.quantized_input = bool(quantized_input)
        in_features = positive_int("in_features", in_features)
        features = positive_int("features", features)
        strides = positive_int("strides", strides)
        self.conv1 = _conv(in_features, features, 3, strides, rngs, self._int8(qin, True))
        self.q_conv1 = self._quantizer()
        self.bn1 = _batch_norm(features, rngs)
        self.q_relu1 = self._quantizer()
        self.conv2 = _conv(features, features, 3, 1, rngs, self._int8(True, True))
        self.q_conv2 = self._quantizer()
        self.bn2 = _batch_norm(features, rngs)
        self.projection = strides != 1 or in_features != features
        if self.projection:
            self.shortcut_conv = _conv(in_features, features, 1, strides, rngs,
                                       self._int8(qin, False))
            self.shortcut_bn = _batch_norm(features, rngs)

    def __call__(self, x: jax.Array, train: bool | None = None, *,
                 rngs: RngsLike | None = None) -> jax.Array:
        """The block's output; ``train`` as for the models."""
        return self._forward(x, train, self._pass_key(rngs), ())

    def _forward(self, x: jax.Array, train: bool | None, base: jax.Array | None,
                 prefix: tuple[str, ...]) -> jax.Array:
        ura = _running(train)
        y = self._q("q_conv1", self.conv1(x), base, prefix)
        y = _relu(self.bn1(y, use_running_average=ura))
        y = self._q("q_relu1", y, base, prefix)
        y = self._q("q_conv2", self.conv2(y), base, prefix)
        y = self.bn2(y, use_running_average=ura)
        if self.projection:
            shortcut = self.shortcut_bn(self.shortcut_conv(x), use_running_average=ura)
        else:
            shortcut = x
        return _relu(y + shortcut)


class ResNet(_QuantModel):
    """CIFAR-style ResNet of :class:`lpsampling.flax.ResNet` in NNX.

    Stem ``conv1 -> Q -> bn1 -> relu -> Q``; stages of :class:`BasicBlock` named
    ``layer{i}_{j}`` as in Linen; ``pool_size`` average pool; flatten; ``classifier``.
    ``2 + 3 * sum(stage_sizes)`` quantizers; BatchNorm statistics are ``nnx.BatchStat``.

    Args:
      input_shape: one example's ``(height, width, channels)`` (``(32, 32, 3)`` for CIFAR).
      num_classes: number of logits.
      stage_sizes, widths, strides, pool_size: the architecture (defaults: ResNet-18).
      quant, compute, weight_format, rngs: as for :class:`MLP`.
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, *,
                 stage_sizes: Sequence[int] = (2, 2, 2, 2),
                 widths: Sequence[int] = (64, 128, 256, 512),
                 strides: Sequence[int] = (1, 2, 2, 2), pool_size: int = 4,
                 quant: QuantConfig | None = None, compute: str = "float32",
                 weight_format: Format = FULL, rngs: nnx.Rngs):
        name = type(self).__name__
        _check_rngs(rngs, name)
        quant = self._init_quant(quant, rngs)
        self._init_compute(compute, weight_format)
        height, width, in_ch = _image_shape(input_shape, name)
        stage_sizes = _positive_ints("stage_sizes", stage_sizes)
        widths = _positive_ints("widths", widths)
        strides = _positive_ints("strides", strides)
        if not len(stage_sizes) == len(widths) == len(strides):
            raise ValueError(f"{name}: stage_sizes, widths and strides must have the same "
                             f"length, got {len(stage_sizes)}, {len(widths)}, {len(strides)}")
        self.pool_size = positive_int("pool_size", pool_size)
        self.conv1 = _conv(in_ch, widths[0], 3, 1, rngs, {})  # raw pixels: float32
        self.q_conv1 = self._quantizer()
        self.bn1 = _batch_norm(widths[0], rngs)
        self.q_relu1 = self._quantizer()
        blocks = []
        in_ch = widths[0]
        for i, (n, w, s) in enumerate(zip(stage_sizes, widths, strides, strict=True)):
            for j in range(n):
                stride = s if j == 0 else 1
                block_name = f"layer{i + 1}_{j}"
                # Keys come from the ResNet (one per pass): the blocks keep no stream.
                setattr(self, block_name, BasicBlock(
                    in_ch, w, stride, quant=quant, compute=compute,
                    weight_format=weight_format, rngs=rngs, _own_stream=False,
                    quantized_input=(i, j) == (0, 0)))  # fed by the stem's quantizer
                blocks.append(block_name)
                in_ch = w
                height, width = (height - 1) // stride + 1, (width - 1) // stride + 1
        self.blocks = tuple(blocks)
        height, width = height // self.pool_size, width // self.pool_size
        if height < 1 or width < 1:
            raise ValueError(f"{name}: input_shape {tuple(input_shape)} is too small for "
                             f"pool_size {self.pool_size} after strides {strides}")
        self.classifier = _linear(height * width * in_ch,  # after the pool: float32
                                  positive_int("num_classes", num_classes), rngs)

    def __call__(self, x: jax.Array, train: bool | None = None, *,
                 rngs: RngsLike | None = None) -> jax.Array:
        """Logits ``(batch, num_classes)``; ``train`` as documented in the module."""
        base = self._pass_key(rngs)
        ura = _running(train)
        x = self._q("q_conv1", self.conv1(x), base)
        x = _relu(self.bn1(x, use_running_average=ura))
        x = self._q("q_relu1", x, base)
        for block_name in self.blocks:
            x = getattr(self, block_name)._forward(x, train, base, (block_name,))
        p = self.pool_size
        x = nnx.avg_pool(x, (p, p), strides=(p, p))
        return self.classifier(_flatten(x))


class ResNet18(ResNet):
    """ResNet-18 for CIFAR as in the paper (:class:`lpsampling.flax.ResNet18`): the
    :class:`ResNet` defaults; 11,173,962 parameters for 10 classes; 26 quantizers."""


_REGISTRY: dict[str, type[_QuantModel]] = {
    "logreg": LogisticRegression,
    "mlp": MLP,
    "cnn": SmallCNN,
    "resnet18": ResNet18,
}

MODELS: tuple[str, ...] = tuple(_REGISTRY)
"""The names :func:`create_model` accepts (the Linen ``"lstm"`` has no NNX twin)."""


def create_model(name: str, num_classes: int, input_shape: Sequence[int],
                 quant: QuantConfig | None = None, *, rngs: nnx.Rngs,
                 **kwargs: Any) -> nnx.Module:
    """Build an NNX model by name: ``"logreg" | "mlp" | "cnn" | "resnet18"``.

    Args:
      name: one of :data:`MODELS`.
      num_classes: number of logits.
      input_shape: the shape of one example (``(28, 28)``, ``(32, 32, 3)``, ...); the
        dense models take its product as ``in_features``.
      quant: activation/error quantization (default: none).
      rngs: initialisation keys, and the seed of the ``"quantize"`` stream.
      **kwargs: further constructor arguments (``hidden=...`` for ``"mlp"``).
    """
    try:
        cls = _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODELS)}") from None
    shape = _positive_ints("input_shape", input_shape)
    first: Any = math.prod(shape) if cls in (LogisticRegression, MLP) else shape
    return cls(first, num_classes, quant=quant, rngs=rngs, **kwargs)


_COLLECTIONS = {"params": nnx.Param, "batch_stats": nnx.BatchStat}


def linen_variables(model: nnx.Module) -> dict[str, Any]:
    """The model's weights as the variables of its Linen twin: ``{"params": ...}`` plus
    ``"batch_stats"`` for the ResNets (nested dicts of arrays)."""
    out = {}
    for collection, kind in _COLLECTIONS.items():
        tree = nnx.to_pure_dict(nnx.state(model, kind))
        if tree or collection == "params":
            out[collection] = tree
    return out


def load_linen_variables(model: nnx.Module, variables: Mapping[str, Any]) -> None:
    """Copy the variables of a Linen twin (``linen_model.init(...)`` or a trained state)
    into ``model``, in place. ``variables`` holds ``"params"`` and, for the ResNets,
    ``"batch_stats"``; trees and shapes must match the model's exactly.

    Raises:
      ValueError: a collection, a variable or a shape differs (named in the message).
    """
    if not isinstance(variables, Mapping):
        raise TypeError(f"variables must be a mapping of collections, "
                        f"got {type(variables).__name__}")
    extra = set(variables) - set(_COLLECTIONS)
    if extra:
        raise ValueError(f"variables has collections {sorted(extra)} that NNX models do not "
                         f"have; allowed: {sorted(_COLLECTIONS)}")
    for collection, kind in _COLLECTIONS.items():
        state = nnx.state(model, kind)
        want = flatten_dict(nnx.to_pure_dict(state), sep="/")
        got = flatten_dict(_plain(variables.get(collection, {})), sep="/")
        if set(want) != set(got):
            missing, unknown = sorted(set(want) - set(got)), sorted(set(got) - set(want))
            raise ValueError(f"variables[{collection!r}] does not match the model: missing "
                             f"{missing}, unexpected {unknown}")
        for path, value in want.items():
            if tuple(got[path].shape) != tuple(value.shape):
                raise ValueError(f"variables[{collection!r}][{path!r}] has shape "
                                 f"{tuple(got[path].shape)}; the model's is "
                                 f"{tuple(value.shape)}")
        if want:
            nnx.replace_by_pure_dict(state, _plain(variables[collection]))
            nnx.update(model, state)


def _plain(tree: Any) -> Any:
    """Nested mappings (dict, FrozenDict) as nested dicts."""
    if isinstance(tree, Mapping):
        return {k: _plain(v) for k, v in tree.items()}
    return tree
