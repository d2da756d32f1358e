"""Tests for lpsampling.flax.nnx.models: each NNX model equals its Linen twin bit for bit
(logits, gradients, BatchNorm statistics) for the same weights and keys; structure,
quantizer placement, key streams, conversion and argument checks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from flax.core.scope import LazyRng

import lpsampling as lps
from lpsampling.flax import (
    QuantConfig,
    ResNet,
    ResNet18,
    create_model,
    int8_products,
    quantize_calls,
)
from lpsampling.flax import nnx as lnnx

BFP = QuantConfig.uniform(lps.BlockFloatingPoint(8, axis=0))
FX8 = lps.FixedPoint(8, 4)
FIXED = QuantConfig.uniform(FX8)  # stochastic
FIXED_NEAREST = QuantConfig.uniform(lps.FixedPoint(8, 4), "nearest")
QUANT_IDS = {id(BFP): "bfp8", id(FIXED): "fixed8", id(FIXED_NEAREST): "fixed8-nearest"}


def rbg(seed: int) -> jax.Array:
    """A key of the counter-based "unsafe_rbg" PRNG, which compiles much faster on CPU than
    threefry (as in tests/flax/test_models.py); Flax and the layers take any key."""
    return jax.random.key(seed, impl="unsafe_rbg")


KEY = rbg(3)
TINY = dict(stage_sizes=(1, 1), widths=(2, 4), strides=(1, 2), pool_size=8)
X8 = jax.random.normal(jax.random.key(5), (4, 8, 8, 1))
X16 = jax.random.normal(jax.random.key(5), (4, 16, 16, 3))
Y = jax.random.normal(jax.random.key(6), (4, 3))  # cotangent of the logits


def pair(name, quant, compute="float32"):
    """(Linen twin, NNX model, input) of one architecture."""
    r = nnx.Rngs(0)
    kw = dict(compute=compute, weight_format=FX8) if compute == "int8" else {}
    if name == "logreg":
        return create_model("logreg", 3, quant), lnnx.LogisticRegression(64, 3, rngs=r), X8
    if name == "mlp":
        return (create_model("mlp", 3, quant, hidden=(16, 8), **kw),
                lnnx.MLP(64, 3, hidden=(16, 8), quant=quant, rngs=r, **kw), X8)
    if name == "cnn":
        return (create_model("cnn", 3, quant, dense=16, **kw),
                lnnx.SmallCNN((8, 8, 1), 3, dense=16, quant=quant, rngs=r, **kw), X8)
    return (ResNet(3, quant, **TINY, **kw),
            lnnx.ResNet((16, 16, 3), 3, quant=quant, rngs=r, **TINY, **kw), X16)


def assert_trees_equal(a, b):
    a, b = jax.tree.map(np.asarray, a), jax.tree.map(np.asarray, b)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    jax.tree.map(np.testing.assert_array_equal, a, b)


def linen_run(model, variables, x, train, compiled):
    """Logits, gradient of sum(logits * Y) and new batch stats of the Linen twin."""
    mutable = ["batch_stats"] if train and "batch_stats" in variables else False

    def loss(params):
        out = model.apply(dict(variables, params=params), x, train,
                          rngs={"quantize": KEY}, mutable=mutable)
        logits, upd = out if mutable else (out, {})
        return jnp.sum(logits * Y), (logits, upd)

    run = jax.value_and_grad(loss, has_aux=True)
    (_, (logits, upd)), grads = (jax.jit(run) if compiled else run)(variables["params"])
    return logits, grads, upd.get("batch_stats")


def nnx_run(model, x, train, compiled):
    def loss(m):
        logits = m(x, train, rngs=KEY)
        return jnp.sum(logits * Y), logits

    run = nnx.value_and_grad(loss, has_aux=True)
    (_, logits), grads = (nnx.jit(run) if compiled else run)(model)
    return logits, nnx.to_pure_dict(grads), lnnx.linen_variables(model).get("batch_stats")


# Op by op (eagerly) the two sides are the same computation, bit for bit. Compiled, they
# are two programs, and XLA may fuse the update of BatchNorm's running variance
# differently (seen: 1 ulp), so the BatchNorm model runs eagerly. Eagerly the second side
# reuses every op the first one compiled, which on CPU costs less than compiling the two
# programs (measured: MLP/CNN 4 s against 6-7 s), so most cases run eagerly; the MLP cases
# also run compiled (nnx.jit against jax.jit). Stochastic fixed point in the conv nets:
# block floating point's rounding has many more ops, and the op under test is the same.
# With compute="int8" (the dense/conv layers fed by quantizers multiply int8 codes, as in
# the Linen twins) the products are the shared primitive's on both sides.
CASES = [
    ("logreg", BFP, False, "float32"),
    ("mlp", BFP, False, "float32"),
    ("mlp", FIXED_NEAREST, True, "float32"),
    ("cnn", FIXED, False, "float32"),
    ("resnet", FIXED, False, "float32"),
    ("mlp", FIXED, True, "int8"),
    ("resnet", FIXED_NEAREST, False, "int8"),
]


@pytest.mark.parametrize("name,quant,compiled,compute", CASES,
                         ids=[f"{n}-{QUANT_IDS[id(q)]}-{'jit' if c else 'eager'}-{m}"
                              for n, q, c, m in CASES])
def test_equal_to_linen_twin(name, quant, compiled, compute):
    linen, model, x = pair(name, quant, compute)
    variables = linen.init({"params": jax.random.key(0), "quantize": rbg(1)}, x,
                           train=False)
    lnnx.load_linen_variables(model, variables)
    assert_trees_equal(lnnx.linen_variables(model), variables)
    for train in ([True, False] if name == "resnet" else [True]):
        logits, grads, stats = linen_run(linen, variables, x, train, compiled)
        n_logits, n_grads, n_stats = nnx_run(model, x, train, compiled)
        np.testing.assert_array_equal(n_logits, logits)  # bit for bit
        assert_trees_equal(n_grads, grads)
        if train and stats is not None:
            assert_trees_equal(n_stats, stats)  # BatchNorm running statistics too
            lnnx.load_linen_variables(model, variables)  # undo the update for train=False


def test_bn_mode_follows_train_eval_when_train_is_none():
    _, model, x = pair("resnet", QuantConfig.full())
    model.eval()
    np.testing.assert_array_equal(model(x), model(x, False))
    before = lnnx.linen_variables(model)["batch_stats"]
    model.train()
    np.testing.assert_array_equal(model(x), pair("resnet", QuantConfig.full())[1](x, True))
    after = lnnx.linen_variables(model)["batch_stats"]
    assert not np.array_equal(before["bn1"]["mean"], after["bn1"]["mean"])


def test_model_stream_draws_one_key_per_pass_and_equals_explicit_keys():
    model = lnnx.MLP(64, 3, hidden=(8,), quant=BFP, rngs=nnx.Rngs(params=0, quantize=rbg(9)))
    mirror = nnx.Rngs(params=0, quantize=rbg(9)).quantize.fork()
    a, b = model(X8), model(X8)
    np.testing.assert_array_equal(a, model(X8, rngs=mirror()))
    np.testing.assert_array_equal(b, model(X8, rngs=mirror()))
    assert not np.array_equal(a, b)
    assert int(model.rngs.count[...]) == 2
    # The quantizers get Linen's per-path keys, not the pass's key itself.
    h = model.dense0(X8.reshape(4, -1))
    np.testing.assert_array_equal(
        model.q_dense0(h, rngs=LazyRng.create(KEY, "q_dense0", 1).as_jax_rng()),
        lps.quantizer(BFP.activation_format, BFP.error_format)(
            h, LazyRng.create(KEY, "q_dense0", 1).as_jax_rng()))


@pytest.mark.parametrize("quant", [QuantConfig.full(), FIXED_NEAREST])
def test_deterministic_models_keep_no_stream(quant):
    rngs = nnx.Rngs(params=0, quantize=rbg(9))
    model = lnnx.ResNet((16, 16, 3), 3, quant=quant, rngs=rngs, **TINY)
    assert model.rngs is None and int(rngs.quantize.count[...]) == 0
    np.testing.assert_array_equal(model(X16, False), model(X16, False))


def test_stochastic_model_without_quantize_stream_uses_default():
    model = lnnx.MLP(64, 3, hidden=(8,), quant=BFP, rngs=nnx.Rngs(0, quantize=rbg(0)))
    assert model(X8).shape == (4, 3)
    with pytest.raises(ValueError, match="needs keys"):
        lnnx.MLP(64, 3, quant=BFP, rngs=nnx.Rngs(0)).__class__.__call__(
            _without_stream(lnnx.MLP(64, 3, quant=BFP, rngs=nnx.Rngs(0))), X8)


def _without_stream(model):
    model.rngs = None
    return model


def _quantizer_paths(model) -> list[str]:
    return sorted("/".join(map(str, p)) for p, m in nnx.iter_modules(model)
                  if isinstance(m, lnnx.Quantize))


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet"])
def test_quantizers_sit_where_linen_puts_them(name):
    linen, model, x = pair(name, BFP)
    assert _quantizer_paths(model) == sorted(c.name for c in quantize_calls(linen, x, train=False))


def test_resnet18_size_and_quantizers_abstractly():
    model = nnx.eval_shape(lambda: lnnx.ResNet18((32, 32, 3), 10, quant=BFP,
                                                 rngs=nnx.Rngs(0)))
    assert sum(a.size for a in jax.tree.leaves(nnx.state(model, nnx.Param))) == 11_173_962
    x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
    linen_calls = quantize_calls(ResNet18(10, BFP), x, train=False)
    assert _quantizer_paths(model) == sorted(c.name for c in linen_calls)
    assert len(linen_calls) == 26
    assert sum(a.size for a in jax.tree.leaves(nnx.state(model, nnx.BatchStat))) == 2 * 4800


def test_create_model():
    r = nnx.Rngs(0)
    assert isinstance(lnnx.create_model("mlp", 3, (8, 8), hidden=(4,), rngs=r), lnnx.MLP)
    assert lnnx.create_model("logreg", 3, (8, 8), rngs=r)(X8).shape == (4, 3)
    assert lnnx.create_model("cnn", 3, (8, 8, 1), dense=4, rngs=r)(X8).shape == (4, 3)
    assert lnnx.MODELS == ("logreg", "mlp", "cnn", "resnet18")
    with pytest.raises(ValueError, match="unknown model 'lstm'"):
        lnnx.create_model("lstm", 3, (8,), rngs=r)


def test_bad_arguments():
    r = nnx.Rngs(0)
    with pytest.raises(TypeError, match="rngs must be an nnx.Rngs"):
        lnnx.MLP(4, 3, rngs=0)
    with pytest.raises(TypeError, match="QuantConfig"):
        lnnx.MLP(4, 3, quant=lps.FixedPoint(8, 4), rngs=r)
    with pytest.raises(ValueError, match="too small"):
        lnnx.SmallCNN((5, 5), 3, rngs=r)
    with pytest.raises(ValueError, match="too small"):
        lnnx.ResNet((8, 8, 3), 3, pool_size=16, stage_sizes=(1,), widths=(4,), strides=(1,),
                    rngs=r)
    with pytest.raises(ValueError, match="same length"):
        lnnx.ResNet((32, 32, 3), 3, stage_sizes=(1, 1), widths=(4,), strides=(1, 2), rngs=r)
    with pytest.raises(ValueError, match="input_shape"):
        lnnx.SmallCNN((8,), 3, rngs=r)
    with pytest.raises(ValueError):
        lnnx.MLP(0, 3, rngs=r)


def test_load_linen_variables_checks_the_tree():
    linen, model, x = pair("resnet", QuantConfig.full())
    variables = linen.init(jax.random.key(0), x, train=False)
    lnnx.load_linen_variables(model, variables)
    with pytest.raises(ValueError, match="missing"):
        lnnx.load_linen_variables(model, {"params": variables["params"]})
    bad = jax.tree.map(lambda a: a, dict(variables))
    bad["params"] = dict(bad["params"], classifier={"kernel": jnp.zeros((3, 3)),
                                                    "bias": jnp.zeros(3)})
    with pytest.raises(ValueError, match="classifier/kernel.*shape"):
        lnnx.load_linen_variables(model, bad)
    with pytest.raises(ValueError, match="collections"):
        lnnx.load_linen_variables(model, dict(variables, quantize={}))
    with pytest.raises(TypeError, match="mapping"):
        lnnx.load_linen_variables(model, [variables])


def _module(model, path):
    for name in path:
        model = getattr(model, name)
    return model


def _linen_layers(linen, x):
    """path -> (compute, input, weight, error format) of each Linen QuantDense/QuantConv."""
    import flax.linen as nn

    found = {}

    def interceptor(next_fun, args, kwargs, context):
        m = context.module
        if context.method_name == "__call__" and hasattr(m, "input_format"):
            found.setdefault(tuple(m.path), (m.compute, m.input_format, m.weight_format,
                                             m.error_format))
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
        jax.eval_shape(lambda: linen.init({"params": jax.random.key(0), "quantize": rbg(1)},
                                          x, train=False))
    return found


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet"])
def test_compute_int8_where_the_linen_twin_computes_int8(name):
    linen, model, x = pair(name, FIXED, "int8")
    layers = _linen_layers(linen, x)
    assert {f[0] for f in layers.values()} == {"float32", "int8"}  # stems stay float32
    assert set(layers) == {p.path for p in int8_products(linen, x, train=False)}
    for path, (compute, fin, fw, fe) in layers.items():
        layer = model
        for part in path:
            layer = getattr(layer, part)
        assert layer.compute == compute, path
        if compute == "int8":
            assert (layer.input_format, layer.weight_format, layer.error_format) == (
                fin, fw, fe), path
    assert "preferred_element_type=int32" in str(jax.make_jaxpr(
        lambda v: model(v, False, rngs=KEY))(x))


def test_compute_int8_needs_grids():
    with pytest.raises(ValueError, match="8-bit grids"):
        lnnx.MLP(64, 3, compute="int8", weight_format=lps.FixedPoint(8, 4), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="compute"):
        lnnx.SmallCNN((8, 8), 3, compute="int4", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="8-bit grids"):
        lnnx.ResNet((16, 16, 3), 3, quant=FIXED, compute="int8", rngs=nnx.Rngs(0), **TINY)
