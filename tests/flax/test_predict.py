"""Posterior prediction from the packed bank (``lps.flax.bank_predict``, ``lps.bank.predict``):
the paper's models multiply the bank's int8 codes directly and agree with the simulated
float32 path on the unpacked weights."""

from __future__ import annotations

import collections
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lpsampling as lps
from lpsampling.flax import QuantConfig, bank_predict, create_model, int8_kernels, int8_products

W = lps.BlockFloatingPoint(8, axis=-1)   # one exponent per output unit / filter
A = lps.BlockFloatingPoint(8, axis=0)    # one exponent per example
FX_W, FX_A = lps.FixedPoint(8, 6), lps.FixedPoint(8, 4)

# input shapes small enough for a CPU test: 8×8 images (ResNet-18: pool 1 after 3 strides)
SHAPES = {"mlp": (8, 8, 1), "cnn": (8, 8, 1), "resnet18": (8, 8, 3)}
# ResNet-18's code path (stem, basic blocks with identity and projection shortcuts,
# BatchNorm statistics, classifier) at a tiny size: two blocks in the first stage (so an
# int8 conv2 and the next block's conv1 share a kernel shape) and one in the second. The
# paper's [2, 2, 2, 2] blocks of 64/128/256/512 channels, banked three times and compiled
# twice, take minutes on a CPU; tests/flax/test_models.py checks the full layer list.
RESNET18_TINY = {"stage_sizes": (2, 1), "widths": (4, 8), "strides": (1, 2), "pool_size": 4}


def _model(name: str, compute: str, weight, act):
    kw = RESNET18_TINY if name == "resnet18" else {}
    return create_model(name, 10, QuantConfig(act, act), compute=compute, weight_format=weight,
                        **kw)


@functools.cache
def _banks(name: str, weight, act, samples: int = 3):
    """A bank of ``samples`` distinct on-grid params (and BatchNorm statistics) of model
    ``name``, and test inputs."""
    # the same variables as the quantized model's (quantizers hold none), built without
    # compiling 26 stochastic quantizers of ResNet-18
    del act
    model = create_model(name, 10, QuantConfig.full(), **(
        RESNET18_TINY if name == "resnet18" else {}))
    shape = SHAPES[name]
    x = jax.random.normal(jax.random.key(0), (6,) + shape)
    variables = jax.jit(functools.partial(model.init, train=False))(jax.random.key(1), x)

    def fill(params, stats):
        # one compiled loop over the samples (op by op, or unrolled, the encoding of every
        # leaf compiles for many seconds); the bank stores each sample rounded to nearest
        # onto the weight grid (lps.pack), so every sample it holds is on the grid
        def add(s, banks):
            bank, stats_bank = banks
            k = jax.random.key(10 + s)
            p = jax.tree.map(lambda a: a + 0.3 * jnp.std(a) * jax.random.normal(k, a.shape),
                             params)
            bank = lps.bank.add(bank, p)
            if stats_bank is not None:
                st = jax.tree.map(lambda a: a * (1.0 + 0.1 * s) + 0.05 * s, stats)
                stats_bank = lps.bank.add(stats_bank, st)
            return bank, stats_bank

        banks = (lps.bank.init(params, weight, samples),
                 None if stats is None else lps.bank.init(stats, lps.FULL, samples))
        return jax.lax.fori_loop(0, samples, add, banks)

    bank, stats_bank = jax.jit(fill)(variables["params"], variables.get("batch_stats"))
    return bank, stats_bank, x


def _convert_from_int8(closed_jaxpr) -> list[tuple[int, ...]]:
    """Shapes of the int8 arrays that the jaxpr converts to another dtype (sub-jaxprs
    included): decoding codes widens them (to int32, then float32)."""
    found = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "convert_element_type":
                src, dst = eqn.invars[0].aval, eqn.outvars[0].aval
                if src.dtype == jnp.int8 and dst.dtype != jnp.int8:
                    found.append(tuple(src.shape))
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                walk(sub)

    walk(closed_jaxpr.jaxpr)
    return found


def _int8_products_in(closed_jaxpr) -> int:
    """Products (dot_general / conv_general_dilated) of two int8 operands."""
    n = 0

    def walk(jaxpr):
        nonlocal n
        for eqn in jaxpr.eqns:
            if eqn.primitive.name in ("dot_general", "conv_general_dilated"):
                if all(v.aval.dtype == jnp.int8 for v in eqn.invars[:2]):
                    n += 1
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                walk(sub)

    walk(closed_jaxpr.jaxpr)
    return n


@pytest.mark.parametrize("name,weight,act", [
    ("mlp", W, A), ("cnn", W, A), ("cnn", FX_W, FX_A), ("resnet18", FX_W, FX_A),
], ids=["mlp-bfp8", "cnn-bfp8", "cnn-fixed8", "resnet18-fixed8"])
def test_bma_from_codes_equals_simulated_bma(name, weight, act):
    # ResNet-18 runs in fixed point: its residual wiring and BatchNorm-statistics bank are
    # what it adds over the CNN, and the BFP kernels' int8 path is covered by the CNN case,
    # while 26 BFP quantizers took a minute of compilation (a third of this file's time)
    bank, stats_bank, x = _banks(name, weight, act)
    int8 = _model(name, "int8", weight, act)
    sim = _model(name, "float32", weight, act)
    key = jax.random.key(3)  # stochastic activation rounding: the same draws in both
    got = bank_predict(int8, bank, x, stats_bank=stats_bank, key=key, batch_size=4)
    want = bank_predict(sim, bank, x, stats_bank=stats_bank, key=key, batch_size=4,
                        packed=False)
    assert got.dtype == jnp.float32 and got.shape == (6, 10)
    # Both paths compute each product exactly: the int8 path in int32, the simulated one in
    # float32, whose partial sums of 8-bit × 8-bit grid values stay below 2**24 units here
    # (k ≤ 288, the CNN's second conv: at most 288·2**14 < 2**24), so the logits agree bit
    # for bit and so do the activation roundings that follow. The tolerance allows one
    # float32 ulp of the summed probabilities (≤ 1) per sample, in case XLA orders a
    # reduction differently.
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=3 * 2.0**-24)
    if name == "resnet18":
        return  # (one more ResNet-18 compilation: the smaller models cover it)
    # and the int8 model on unpacked weights re-encodes exactly the stored codes
    again = bank_predict(int8, bank, x, stats_bank=stats_bank, key=key, batch_size=4,
                         packed=False)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(again))


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet18"])
def test_bma_from_codes_runs_int8_products_on_undecoded_kernels(name):
    bank, stats_bank, x = _banks(name, W, A)
    int8 = _model(name, "int8", W, A)
    products = int8_products(int8, x, train=False)
    layers = [p for p in products if p.forward == "int8"]
    assert layers, "the model has no int8 layer"
    sel = int8_kernels(int8, x, train=False)

    def kernel_shape(path):
        leaf = bank.samples
        for k in path:
            leaf = leaf[k]
        return leaf["kernel"].shape

    for path in (p.path for p in layers):
        assert sel([jax.tree_util.DictKey(k) for k in path + ("kernel",)], None)
    # Layers are told apart by count: in ResNet-18 an int8 conv2 and the next block's
    # float32 conv1 have kernels of the same shape, whose codes are decoded.
    every = collections.Counter(kernel_shape(p.path) for p in products)
    int8_layers = collections.Counter(kernel_shape(p.path) for p in layers)

    def decoded_kernels(packed):
        closed = jax.make_jaxpr(lambda b, s: bank_predict(
            int8, b, x, stats_bank=s, key=jax.random.key(0), packed=packed))(bank, stats_bank)
        shapes = collections.Counter(s for s in _convert_from_int8(closed) if s in every)
        return closed, shapes

    packed, decoded = decoded_kernels(None)
    assert _int8_products_in(packed) >= len(layers)
    # the kernels of the int8 layers are never widened (decoded); every other one is, once
    assert decoded == every - int8_layers, (decoded, every, int8_layers)
    # ... which the check would see: decoding the whole bank converts every kernel's codes
    assert decoded_kernels(False)[1] == every
