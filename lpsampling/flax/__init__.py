"""Quantized Flax (Linen) layers and the paper's models.

Activations and backpropagated errors are quantized by :class:`Quantize` layers placed as in
the paper's networks; weights and gradients are quantized by the samplers, not here. Apply a
quantized model with ``rngs={"quantize": key}`` (stochastic rounding); see
:mod:`lpsampling.flax.models` for the rng collections and mutable state each model needs.
The same layers and models in Flax NNX: :mod:`lpsampling.flax.nnx`.
"""

# The NNX twins, a subpackage as flax.nnx is.
from lpsampling.flax import nnx
from lpsampling.flax.layers import (
    COMPUTES,
    QUANTIZE_RNG,
    Int8Product,
    QuantConfig,
    QuantConv,
    QuantDense,
    Quantize,
    QuantizeCall,
    count_quantizers,
    int8_products,
    quantize_calls,
)
from lpsampling.flax.models import (
    MLP,
    MODELS,
    BasicBlock,
    LogisticRegression,
    LSTMClassifier,
    ResNet,
    ResNet18,
    SmallCNN,
    create_model,
    max_pool_2x2,
)
from lpsampling.flax.predict import bank_predict, int8_kernels

__all__ = [
    "nnx",
    "COMPUTES",
    "Int8Product",
    "QuantConv",
    "QuantDense",
    "int8_products",
    "int8_kernels",
    "bank_predict",
    "QUANTIZE_RNG",
    "QuantConfig",
    "Quantize",
    "QuantizeCall",
    "count_quantizers",
    "quantize_calls",
    "MLP",
    "MODELS",
    "BasicBlock",
    "LogisticRegression",
    "LSTMClassifier",
    "ResNet",
    "ResNet18",
    "SmallCNN",
    "max_pool_2x2",
    "create_model",
]
