"""Quantized Flax NNX layers and the paper's models (``lpsampling.flax.nnx``).

The NNX twins of :mod:`lpsampling.flax`: :class:`Quantize` rounds activations (forward)
and errors (backward) with the op the Linen layer uses, and the models equal their Linen
twins bit for bit for the same weights and keys (:func:`load_linen_variables`,
:func:`linen_variables` convert). Keys come from an :class:`flax.nnx.Rngs` stream named
``"quantize"``. Training with :class:`flax.nnx.Optimizer` and the lpsampling samplers, the
sample bank and Bayesian model averaging: the NNX page of the documentation
(``docs/nnx.md``).
"""

from lpsampling.flax.nnx.layers import QuantConv, QuantDense, Quantize
from lpsampling.flax.nnx.models import (
    MLP,
    MODELS,
    BasicBlock,
    LogisticRegression,
    ResNet,
    ResNet18,
    SmallCNN,
    create_model,
    linen_variables,
    load_linen_variables,
)
from lpsampling.flax.nnx.sampling import predict_bma

__all__ = [
    "Quantize",
    "QuantDense",
    "QuantConv",
    "MLP",
    "MODELS",
    "BasicBlock",
    "LogisticRegression",
    "ResNet",
    "ResNet18",
    "SmallCNN",
    "create_model",
    "linen_variables",
    "load_linen_variables",
    "predict_bma",
]
