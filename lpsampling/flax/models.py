"""The paper's networks in Flax Linen, with activation/error quantizers where it puts them.

Every model has fields ``num_classes`` and ``quant`` (:class:`~lpsampling.flax.QuantConfig`,
default: no quantization), is called as ``model(x, train)`` and returns logits
``(batch, num_classes)``. :class:`MLP`, :class:`SmallCNN`, :class:`ResNet` and
:class:`LSTMClassifier` also have ``compute`` (``"float32"``: the simulated path, the
default; ``"int8"``: every dense / conv layer whose input is a quantized activation
multiplies in int8, :mod:`lpsampling.int8`) and ``weight_format`` (the weights' grid, needed
for int8; see :func:`~lpsampling.flax.int8_products` for which products run how). RNG
collections: ``"params"`` for ``model.init``, ``"quantize"``
whenever ``quant.needs_rng`` (at test time too); no dropout. :class:`ResNet` /
:class:`ResNet18` keep full-precision BatchNorm statistics in ``"batch_stats"`` (train with
``mutable=["batch_stats"]``). Weights are quantized by the samplers, not here.
Initialisation follows PyTorch's defaults, as in the paper's code (``docs/flax.md``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lpsampling.flax.layers import QuantConfig, QuantConv, QuantDense, check_compute
from lpsampling.formats import FULL, Format
from lpsampling.validation import positive_int

__all__ = [
    "MODELS",
    "LogisticRegression",
    "MLP",
    "SmallCNN",
    "max_pool_2x2",
    "BasicBlock",
    "ResNet",
    "ResNet18",
    "LSTMClassifier",
    "create_model",
]

# PyTorch's default for Linear/Conv weights: kaiming_uniform(a=sqrt(5)), i.e. U(±1/sqrt(fan_in)).
torch_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_bias_init(fan_in: int) -> Callable[..., jax.Array]:
    """PyTorch's default bias initialiser: ``U(±1/sqrt(fan_in))``."""
    bound = 1.0 / float(fan_in) ** 0.5

    def init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def _int8_fields(model: nn.Module, quantized_input: bool, quantized_error: bool
                 ) -> dict[str, Any]:
    """The :class:`QuantDense` / :class:`QuantConv` fields of a layer of ``model``: int8
    where ``model.compute`` asks for it and the layer's input is a quantized activation;
    the error format where the layer's output goes straight into a Quantize."""
    if check_compute(getattr(model, "compute", "float32")) == "float32" or not quantized_input:
        return {}
    q = model.quant
    return dict(compute="int8", weight_format=model.weight_format,
                input_format=q.activation_format,
                error_format=q.error_format if quantized_error else FULL)


def _dense(features: int, fan_in: int, name: str, **int8: Any) -> nn.Dense:
    return QuantDense(
        features,
        kernel_init=torch_kernel_init,
        bias_init=torch_bias_init(fan_in),
        name=name,
        **int8,
    )


def _flatten(x: jax.Array) -> jax.Array:
    return x.reshape((x.shape[0], -1))


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2×2 max pooling with stride 2 over the spatial axes of NHWC ``x`` (an odd last row
    or column is dropped): ``nn.max_pool(x, (2, 2), strides=(2, 2))`` with a faster
    gradient.

    Equal to ``nn.max_pool`` in value and gradient, bit for bit: the gradient goes to the
    first maximum of each window in row-major order, as XLA's select-and-scatter sends it,
    which matters on a quantization grid where ties are common. The gradient is written as
    three selects over the four strided views of ``x`` because XLA:CPU's select-and-scatter
    took a quarter of a small CNN's step (20× slower than the selects). The forward pass
    stays ``reduce_window``: written with the views too, XLA fused a stochastic quantizer
    into each of the four and drew its random bits four times. Differentiable in reverse
    mode (``grad``, ``vjp``), like every layer whose gradient is defined by hand here.
    """
    return _max_pool_2x2(x)


def _reduce_window_pool(x: jax.Array) -> jax.Array:
    return nn.max_pool(x, (2, 2), strides=(2, 2))


def _later_wins(earlier: jax.Array, later: jax.Array) -> jax.Array:
    # ``>`` keeps the earlier element on a tie; a NaN wins, as in ``reduce_window``
    return jnp.where((later > earlier) | jnp.isnan(later), later, earlier)


def _pool_by_views(x: jax.Array) -> jax.Array:
    h, w = x.shape[-3] // 2 * 2, x.shape[-2] // 2 * 2
    x = x[..., :h, :w, :]
    a, b = x[..., 0::2, 0::2, :], x[..., 0::2, 1::2, :]
    c, d = x[..., 1::2, 0::2, :], x[..., 1::2, 1::2, :]
    return _later_wins(_later_wins(a, b), _later_wins(c, d))


@jax.custom_vjp
def _max_pool_2x2(x: jax.Array) -> jax.Array:
    return _reduce_window_pool(x)


def _max_pool_2x2_fwd(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    return _reduce_window_pool(x), x


def _max_pool_2x2_bwd(x: jax.Array, g: jax.Array) -> tuple[jax.Array]:
    return jax.vjp(_pool_by_views, x)[1](g)


_max_pool_2x2.defvjp(_max_pool_2x2_fwd, _max_pool_2x2_bwd)


class LogisticRegression(nn.Module):
    """Multinomial logistic regression: flatten, one dense layer.

    There is no hidden activation, so nothing is quantized (``quant`` is accepted for a
    uniform interface and ignored); weights are quantized by the sampler.
    """

    num_classes: int
    quant: QuantConfig = QuantConfig()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        del train
        x = _flatten(x)
        return _dense(self.num_classes, x.shape[-1], "classifier")(x)


class MLP(nn.Module):
    """Fully connected ReLU network: flatten, then per hidden layer
    ``Dense -> Q -> relu -> Q``, then an unquantized output ``Dense``.

    ``len(hidden) * 2`` quantizers.
    """

    num_classes: int
    quant: QuantConfig = QuantConfig()
    hidden: Sequence[int] = (100,)
    compute: str = "float32"
    weight_format: Format = FULL

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        del train
        x = _flatten(x)
        for i, width in enumerate(self.hidden):
            # the first layer reads raw inputs: float32
            x = _dense(width, x.shape[-1], f"dense{i}", **_int8_fields(self, i > 0, True))(x)
            x = self.quant.layer(f"q_dense{i}")(x)
            x = nn.relu(x)
            x = self.quant.layer(f"q_relu{i}")(x)
        int8 = _int8_fields(self, bool(self.hidden), False)
        return _dense(self.num_classes, x.shape[-1], "classifier", **int8)(x)


class SmallCNN(nn.Module):
    """A small convolutional network for 28×28×1 (MNIST) or 8×8×1 (sklearn digits) images.

    ``conv3x3(32) -> Q -> relu -> Q -> conv3x3(64) -> Q -> relu -> Q -> maxpool 2×2 ->
    flatten -> Dense(128) -> Q -> relu -> Q -> Dense(num_classes)``: six quantizers, one
    after each conv/dense layer and one after each activation; the classifier is
    unquantized. Convolutions are unpadded (``VALID``), as in PyTorch's MNIST example, so
    inputs need at least 6×6 pixels (any channel count). Input layout NHWC.
    """

    num_classes: int
    quant: QuantConfig = QuantConfig()
    channels: Sequence[int] = (32, 64)
    dense: int = 128
    compute: str = "float32"
    weight_format: Format = FULL

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        del train
        if x.ndim == 3:  # (batch, H, W): add the channel axis
            x = x[..., None]
        for i, ch in enumerate(self.channels):
            fan_in = 9 * x.shape[-1]
            x = QuantConv(
                ch,
                (3, 3),
                padding="VALID",
                kernel_init=torch_kernel_init,
                bias_init=torch_bias_init(fan_in),
                name=f"conv{i}",
                **_int8_fields(self, i > 0, True),  # conv0 reads raw pixels: float32
            )(x)
            x = self.quant.layer(f"q_conv{i}")(x)
            x = nn.relu(x)
            x = self.quant.layer(f"q_relu{i}")(x)
        # max pooling keeps a subset of each example's values: still on its grid
        x = max_pool_2x2(x)
        x = _flatten(x)
        int8 = _int8_fields(self, bool(self.channels), True)
        x = _dense(self.dense, x.shape[-1], "dense", **int8)(x)
        x = self.quant.layer("q_dense")(x)
        x = nn.relu(x)
        x = self.quant.layer("q_relu_dense")(x)
        return _dense(self.num_classes, x.shape[-1], "classifier",
                      **_int8_fields(self, True, False))(x)


def _conv(features: int, kernel: int, strides: int, name: str, **int8: Any) -> nn.Conv:
    """A bias-free convolution padded like PyTorch's (``padding = kernel // 2``, symmetric)."""
    pad = kernel // 2
    return QuantConv(
        features,
        (kernel, kernel),
        strides=(strides, strides),
        padding=((pad, pad), (pad, pad)),
        use_bias=False,
        kernel_init=torch_kernel_init,
        name=name,
        **int8,
    )


def _batch_norm(train: bool, name: str) -> nn.BatchNorm:
    # PyTorch BatchNorm2d defaults: momentum 0.1 (0.9 in Flax's convention), eps 1e-5.
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)


class BasicBlock(nn.Module):
    """The ResNet basic block of the paper's ``resnet_low.py``.

    ``conv1 -> Q -> BN -> relu -> Q -> conv2 -> Q -> BN``, plus the shortcut (identity,
    or a 1×1 conv + BN when the shape changes), then ``add -> relu``. Three quantizers;
    the shortcut and the block output are unquantized.

    With ``compute="int8"``, ``conv2`` (fed by ``Q``) runs in int8, and ``conv1`` and the
    shortcut conv too when ``quantized_input`` says the block's input is a quantized
    activation (the first block after the stem); otherwise their input is the unquantized
    sum of the previous block and they stay float32.
    """

    features: int
    strides: int = 1
    quant: QuantConfig = QuantConfig()
    compute: str = "float32"
    weight_format: Format = FULL
    quantized_input: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        q = self.quant
        qin = self.quantized_input
        y = _conv(self.features, 3, self.strides, "conv1", **_int8_fields(self, qin, True))(x)
        y = q.layer("q_conv1")(y)
        y = nn.relu(_batch_norm(train, "bn1")(y))
        y = q.layer("q_relu1")(y)
        y = _conv(self.features, 3, 1, "conv2", **_int8_fields(self, True, True))(y)
        y = q.layer("q_conv2")(y)
        y = _batch_norm(train, "bn2")(y)
        if self.strides != 1 or x.shape[-1] != self.features:
            shortcut = _conv(self.features, 1, self.strides, "shortcut_conv",
                             **_int8_fields(self, qin, False))(x)
            shortcut = _batch_norm(train, "shortcut_bn")(shortcut)
        else:
            shortcut = x
        return nn.relu(y + shortcut)


class ResNet(nn.Module):
    """CIFAR-style ResNet with basic blocks, quantized as in the paper's released code.

    Stem ``conv3x3(widths[0], stride 1) -> Q -> BN -> relu -> Q`` (no max-pool); stages of
    :class:`BasicBlock` (``stage_sizes`` blocks of ``widths[i]`` channels, the first block
    of stage ``i`` with stride ``strides[i]``); ``pool_size × pool_size`` average pool
    (4×4 on the 4×4 final map of a 32×32 input); flatten; linear classifier. The pooling and
    classifier are unquantized. Quantizers: ``2 + 3 * sum(stage_sizes)``.

    The defaults are ResNet-18 (see :class:`ResNet18`). Input layout NHWC.
    """

    num_classes: int
    quant: QuantConfig = QuantConfig()
    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    widths: Sequence[int] = (64, 128, 256, 512)
    strides: Sequence[int] = (1, 2, 2, 2)
    pool_size: int = 4
    compute: str = "float32"
    weight_format: Format = FULL

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        q = self.quant
        x = _conv(self.widths[0], 3, 1, "conv1")(x)  # the stem reads raw pixels: float32
        x = q.layer("q_conv1")(x)
        x = nn.relu(_batch_norm(train, "bn1")(x))
        x = q.layer("q_relu1")(x)
        for i, (blocks, width, stride) in enumerate(
            zip(self.stage_sizes, self.widths, self.strides, strict=True)
        ):
            for j in range(blocks):
                x = BasicBlock(
                    width,
                    stride if j == 0 else 1,
                    q,
                    compute=self.compute,
                    weight_format=self.weight_format,
                    quantized_input=(i, j) == (0, 0),  # fed by the stem's quantizer
                    name=f"layer{i + 1}_{j}",
                )(x, train)
        p = self.pool_size
        x = nn.avg_pool(x, (p, p), strides=(p, p))
        x = _flatten(x)
        return _dense(self.num_classes, x.shape[-1], "classifier")(x)


class ResNet18(ResNet):
    """ResNet-18 for CIFAR exactly as in the paper: 3×3 stem with 64 channels, stride 1,
    no max-pool; basic blocks ``[2, 2, 2, 2]`` of widths 64/128/256/512 with strides
    1/2/2/2; 4×4 average pool; linear classifier. 11,173,962 parameters for 10 classes
    (11,220,132 for 100), BatchNorm scale/bias included, running statistics not.

    26 quantizers: 2 in the stem and 3 per block (after conv1, after bn1-relu, after
    conv2), as in the released ``resnet_low.py``.
    """


class LSTMClassifier(nn.Module):
    """Text classifier: ``Embed -> Q -> LSTM -> last hidden state -> Q -> Dense``.

    Input: integer token ids of shape ``(batch, time)``. ``seq_lengths`` (optional, shape
    ``(batch,)``) marks where each padded sequence ends; the LSTM's state at that step
    is used. The recurrent cell itself runs in full precision (its weights are quantized
    by the sampler).
    """

    num_classes: int
    vocab_size: int
    quant: QuantConfig = QuantConfig()
    embed_dim: int = 64
    hidden: int = 128
    compute: str = "float32"
    weight_format: Format = FULL

    @nn.compact
    def __call__(
        self, x: jax.Array, train: bool, seq_lengths: jax.Array | None = None
    ) -> jax.Array:
        del train
        h = nn.Embed(self.vocab_size, self.embed_dim, name="embed")(x)
        h = self.quant.layer("q_embed")(h)
        rnn = nn.RNN(nn.OptimizedLSTMCell(self.hidden), return_carry=True, name="lstm")
        (_, h_last), _ = rnn(h, seq_lengths=seq_lengths)
        h_last = self.quant.layer("q_lstm")(h_last)
        return _dense(self.num_classes, self.hidden, "classifier",
                      **_int8_fields(self, True, False))(h_last)


_REGISTRY: dict[str, type[nn.Module]] = {
    "logreg": LogisticRegression,
    "mlp": MLP,
    "cnn": SmallCNN,
    "resnet18": ResNet18,
    "lstm": LSTMClassifier,
}

MODELS: tuple[str, ...] = tuple(_REGISTRY)
"""The names :func:`create_model` accepts."""


def create_model(
    name: str,
    num_classes: int,
    quant: QuantConfig | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a model by name: ``"logreg" | "mlp" | "cnn" | "resnet18" | "lstm"``.

    Args:
      name: one of :data:`MODELS`.
      num_classes: number of output logits.
      quant: activation/error quantization (default: none).
      **kwargs: further fields of the model class (e.g. ``hidden=(400, 400)`` for
        ``"mlp"``; ``vocab_size=...`` is required for ``"lstm"``).
    """
    try:
        cls = _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODELS)}") from None
    num_classes = positive_int("num_classes", num_classes)
    return cls(num_classes=num_classes, quant=quant or QuantConfig.full(), **kwargs)

