"""Tests for lpsampling.flax.models: shapes, ResNet-18 size, quantizer placement, grids."""

from __future__ import annotations

import flax.errors
import flax.linen as nn
import helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lpsampling as lps
from lpsampling.flax import (
    MODELS,
    QuantConfig,
    Quantize,
    ResNet,
    ResNet18,
    count_quantizers,
    create_model,
    quantize_calls,
)

FIXED = lps.FixedPoint(8, 6)
BFP = lps.BlockFloatingPoint(8)
QUANTS = {
    "fixed": QuantConfig.uniform(FIXED),
    "bfp": QuantConfig.uniform(BFP),
}

VOCAB = 50


on_grid = helpers.on_grid


def tiny_resnet(quant: QuantConfig | None = None) -> ResNet:
    """The ResNet-18 code path (stem, identity and projection blocks, average pool) at a
    size the CPU tests can afford: two stages of one block, 32×32 input."""
    return ResNet(
        3,
        quant or QuantConfig.full(),
        stage_sizes=(1, 1),
        widths=(4, 8),
        strides=(1, 2),
        pool_size=16,
    )


# name -> (constructor(quant), input)
CASES = {
    "logreg": (lambda q: create_model("logreg", 3, q), jnp.ones((2, 28, 28))),
    "mlp": (lambda q: create_model("mlp", 3, q, hidden=(16, 8)), jnp.ones((2, 20))),
    "cnn8": (lambda q: create_model("cnn", 3, q), jnp.ones((2, 8, 8, 1))),
    "cnn28": (lambda q: create_model("cnn", 3, q, dense=16), jnp.ones((2, 28, 28, 1))),
    "resnet": (tiny_resnet, jnp.ones((2, 32, 32, 3))),
    "lstm": (
        lambda q: create_model("lstm", 3, q, vocab_size=VOCAB, embed_dim=8, hidden=12),
        jnp.ones((2, 7), jnp.int32),
    ),
}
EXPECTED_QUANTIZERS = {"logreg": 0, "mlp": 4, "cnn8": 6, "cnn28": 6, "resnet": 8, "lstm": 2}


def _input(name: str, seed: int = 0) -> jax.Array:
    x = CASES[name][1]
    key = jax.random.key(seed)
    if name == "lstm":
        return jax.random.randint(key, x.shape, 0, VOCAB)
    return jax.random.normal(key, x.shape)


def _fast_key(seed: int) -> jax.Array:
    """A key of the counter-based "unsafe_rbg" PRNG, which compiles much faster on CPU than
    threefry; the layers and Flax accept any key implementation."""
    return jax.random.key(seed, impl="unsafe_rbg")


def _init(model: nn.Module, x: jax.Array):
    # Quantize layers hold no variables: initialise the unquantized twin (cheaper on CPU).
    full = model.clone(quant=QuantConfig.full())
    return jax.jit(lambda key, x: full.init(key, x, False))(_fast_key(0), x)


# --------------------------------------------------------------------------- ResNet-18


@pytest.fixture(scope="module")
def resnet18_variables():
    x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    # Abstract init: shapes only, nothing allocated or computed.
    return jax.eval_shape(lambda x: ResNet18(10).init(jax.random.key(0), x, train=False), x)


def test_resnet18_parameter_count(resnet18_variables):
    params = resnet18_variables["params"]
    assert sum(p.size for p in jax.tree.leaves(params)) == 11_173_962  # PyTorch's count
    stats = resnet18_variables["batch_stats"]
    # 20 BatchNorms (stem, 2 per block, 3 shortcuts), a mean and a variance per channel.
    assert len(jax.tree.leaves(stats)) == 40
    assert sum(s.size for s in jax.tree.leaves(stats)) == 9_600
    assert params["conv1"]["kernel"].shape == (3, 3, 3, 64)
    assert "bias" not in params["conv1"] and "bias" not in params["layer2_0"]["shortcut_conv"]
    assert params["classifier"]["kernel"].shape == (512, 10)
    assert "shortcut_conv" not in params["layer1_0"] and "shortcut_conv" in params["layer4_0"]


def test_resnet18_100_classes_and_output_shape():
    x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    model = create_model("resnet18", 100, QuantConfig.uniform(BFP))
    variables = jax.eval_shape(
        lambda x: model.init({"params": jax.random.key(0)}, x, train=False), x
    )
    assert sum(p.size for p in jax.tree.leaves(variables["params"])) == 11_220_132
    out = jax.eval_shape(
        lambda v, x: model.apply(v, x, train=False, rngs={"quantize": jax.random.key(0)}),
        variables,
        x,
    )
    assert out.shape == (1, 100)


def test_resnet18_quantizer_placement():
    model = ResNet18(10, QuantConfig.uniform(BFP))
    calls = quantize_calls(model, jnp.zeros((1, 32, 32, 3)), train=True)
    expected = ["q_conv1", "q_relu1"]
    shapes = [(1, 32, 32, 64)] * 2
    for stage, (width, size) in enumerate(zip((64, 128, 256, 512), (32, 16, 8, 4), strict=True), 1):
        for block in range(2):
            expected += [f"layer{stage}_{block}/{q}" for q in ("q_conv1", "q_relu1", "q_conv2")]
            shapes += [(1, size, size, width)] * 3
    assert len(calls) == 2 + 3 * 8 == 26
    assert [c.name for c in calls] == expected
    assert [c.shape for c in calls] == shapes
    # Nothing on the shortcut, the block outputs, the pooled features or the logits.
    assert not any("shortcut" in c.name for c in calls)
    assert calls[-1].name == "layer4_1/q_conv2"
    assert all(len(c.shape) == 4 for c in calls)
    assert all(c.forward_format == c.backward_format == BFP for c in calls)


def test_resnet_block_count_formula():
    model = ResNet(10, stage_sizes=(3, 4, 6, 3), widths=(2, 2, 2, 2))
    assert count_quantizers(model, jnp.zeros((1, 32, 32, 3)), train=False) == 2 + 3 * 16


# --------------------------------------------------------------------------- all models


@pytest.mark.parametrize("name", list(CASES))
def test_quantizer_counts(name):
    make, x = CASES[name]
    assert count_quantizers(make(QUANTS["bfp"]), x, train=False) == EXPECTED_QUANTIZERS[name]


# Per model: activations on one 8-bit format, errors on the other (both formats covered).
MIXED = {
    "logreg": QuantConfig(FIXED, BFP),
    "mlp": QuantConfig(FIXED, BFP),
    "cnn8": QuantConfig(BFP, FIXED),
    "cnn28": QuantConfig(FIXED, BFP),
    "resnet": QuantConfig(BFP, FIXED),
    "lstm": QuantConfig(BFP, FIXED),
}


def _is_quantize_call(context) -> bool:
    return isinstance(context.module, Quantize) and context.method_name == "__call__"


def _forward_backward(model, variables, x, head, key):
    """One jitted program: the logits, every Quantize output (forward) and the error every
    Quantize layer passes upstream (gradients w.r.t. zero perturbations of its inputs)."""
    shapes = [c.shape for c in quantize_calls(model, x, train=False)]

    def loss(eps, variables, x, key):
        queue, outs = list(eps), []

        def interceptor(next_fun, args, kwargs, context):
            if _is_quantize_call(context):
                out = next_fun(args[0] + queue.pop(0), *args[1:], **kwargs)
                outs.append(out)
                return out
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(interceptor):
            logits = model.apply(variables, x, False, rngs={"quantize": key})
        return jnp.sum(logits * head), (logits, outs)

    @jax.jit
    def run(variables, x, key):
        eps = [jnp.zeros(s) for s in shapes]
        errors, (logits, outs) = jax.grad(loss, has_aux=True)(eps, variables, x, key)
        return logits, outs, errors

    logits, outs, errors = run(variables, x, key)
    assert len(outs) == len(errors) == len(shapes)
    return logits, outs, errors


@pytest.mark.parametrize("name", ["mlp", "cnn8", "resnet", "lstm"])
def test_forward_backward_under_jit(name):
    """Activations on the activation grid and the errors passed upstream of each quantizer
    on the error grid, inside one jitted program."""
    make, _ = CASES[name]
    quant = MIXED[name]
    model = make(quant)
    x = _input(name)
    variables = _init(model, x)
    head = jax.random.normal(jax.random.key(9), (2, 3))
    logits, outs, errors = _forward_backward(model, variables, x, head, _fast_key(4))
    assert logits.shape == (2, 3) and bool(jnp.all(jnp.isfinite(logits)))
    for out in outs:
        assert on_grid(out, quant.activation_format)
    for g in errors:
        assert on_grid(g, quant.error_format)
    assert any(bool(jnp.any(o != 0)) for o in outs)
    assert any(bool(jnp.any(g != 0)) for g in errors)


def test_errors_off_grid_without_error_quantization():
    """The grid check above is not vacuous: with FULL errors they are off the grid."""
    make, _ = CASES["mlp"]
    x = _input("mlp")
    model = make(QuantConfig(FIXED, lps.FULL))
    variables = _init(model, x)
    head = jax.random.normal(jax.random.key(9), (2, 3))
    _, outs, errors = _forward_backward(model, variables, x, head, _fast_key(4))
    assert all(on_grid(o, FIXED) for o in outs)
    assert not any(on_grid(g, BFP) or on_grid(g, FIXED) for g in errors)


def test_activations_captured_with_capture_intermediates():
    model = CASES["cnn8"][0](QUANTS["fixed"])
    x = _input("cnn8")
    variables = _init(model, x)
    capture = jax.jit(
        lambda v, x, key: model.apply(
            v,
            x,
            False,
            rngs={"quantize": key},
            capture_intermediates=lambda mdl, method: isinstance(mdl, Quantize),
            mutable=["intermediates"],
        )
    )
    _, state = capture(variables, x, _fast_key(3))
    outs = jax.tree.leaves(state["intermediates"])
    assert len(outs) == 6
    assert all(on_grid(o, FIXED) for o in outs)


def _bypass_quantizers(next_fun, args, kwargs, context):
    if isinstance(context.module, Quantize):
        return args[0]
    return next_fun(*args, **kwargs)


@pytest.mark.parametrize("name", ["logreg", "mlp", "cnn8", "resnet", "lstm"])
def test_full_config_needs_no_rng_and_is_unquantized(name):
    make, _ = CASES[name]
    model = make(QuantConfig.full())
    x = _input(name)
    variables = _init(model, x)

    @jax.jit
    def both(variables, x):
        out = model.apply(variables, x, False)  # no "quantize" rng
        with nn.intercept_methods(_bypass_quantizers):
            plain = model.apply(variables, x, False)
        return out, plain

    out, plain = both(variables, x)
    np.testing.assert_array_equal(out, plain)


def test_mlp_full_matches_hand_computation():
    model = create_model("mlp", 3, hidden=(16, 8))
    x = _input("mlp")
    params = _init(model, x)["params"]
    h = x
    for i in range(2):
        h = jax.nn.relu(h @ params[f"dense{i}"]["kernel"] + params[f"dense{i}"]["bias"])
    ref = h @ params["classifier"]["kernel"] + params["classifier"]["bias"]
    np.testing.assert_allclose(model.apply({"params": params}, x, False), ref, rtol=1e-6)


def test_pytorch_default_initialisation():
    model = create_model("mlp", 3, hidden=(16, 8))
    params = _init(model, _input("mlp"))["params"]
    for layer, fan_in in (("dense0", 20), ("dense1", 16), ("classifier", 8)):
        bound = fan_in**-0.5
        for leaf in params[layer].values():
            assert float(jnp.max(jnp.abs(leaf))) <= bound
            assert float(jnp.max(jnp.abs(leaf))) > 0.5 * bound  # uniform, not zeros


def test_quantized_model_needs_rng_unless_nearest():
    make, _ = CASES["mlp"]
    x = _input("mlp")
    variables = _init(make(QUANTS["fixed"]), x)
    with pytest.raises(flax.errors.InvalidRngError, match="quantize"):
        make(QUANTS["fixed"]).apply(variables, x, False)
    nearest = make(QuantConfig.uniform(FIXED, rounding="nearest"))
    a = nearest.apply(variables, x, False)
    np.testing.assert_array_equal(a, nearest.apply(variables, x, False))


def test_quantize_rng_drives_the_rounding():
    model = CASES["mlp"][0](QUANTS["bfp"])
    x = _input("mlp")
    variables = _init(model, x)
    f = jax.jit(lambda k: model.apply(variables, x, False, rngs={"quantize": k}))
    a, b, c = f(_fast_key(0)), f(_fast_key(0)), f(_fast_key(1))
    np.testing.assert_array_equal(a, b)
    assert not bool(jnp.array_equal(a, c))


def test_resnet_batchnorm_train_and_eval():
    model = tiny_resnet()
    x = _input("resnet")
    variables = _init(model, x)

    @jax.jit
    def run(variables, x):
        _, state = model.apply(variables, 3.0 + x, True, mutable=["batch_stats"])
        # Eval mode uses running statistics: each example's output ignores the rest.
        return state, model.apply(variables, x, False), model.apply(variables, x[:1], False)

    state, full, first = run(variables, x)
    old, new = variables["batch_stats"], state["batch_stats"]
    assert not bool(jnp.array_equal(old["bn1"]["mean"], new["bn1"]["mean"]))
    assert jax.tree.structure(old) == jax.tree.structure(new)
    np.testing.assert_allclose(first, full[:1], rtol=1e-5)


def test_lstm_seq_lengths():
    model = CASES["lstm"][0](QuantConfig.full())
    x = _input("lstm")
    variables = _init(model, x)
    lengths = jnp.array([4, 7])
    padded = x.at[0, 4:].set(0)

    @jax.jit
    def run(variables, x, padded):
        return (
            model.apply(variables, x, False, seq_lengths=lengths),
            model.apply(variables, padded, False, seq_lengths=lengths),
            model.apply(variables, x[:1, :4], False),
        )

    a, b, short = run(variables, x, padded)
    np.testing.assert_allclose(a, b, rtol=1e-6)
    np.testing.assert_allclose(a[0], short[0], rtol=1e-5)


def test_create_model_names():
    assert MODELS == ("logreg", "mlp", "cnn", "resnet18", "lstm")
    assert isinstance(create_model("resnet18", 10), ResNet18)
    assert create_model("mlp", 5).quant == QuantConfig.full()
    with pytest.raises(ValueError, match="logreg, mlp, cnn, resnet18, lstm"):
        create_model("resnet50", 10)


# --------------------------------------------------------------------------- compute="int8"

from lpsampling.flax import MLP, SmallCNN, int8_products  # noqa: E402

_W8, _A8 = lps.BlockFloatingPoint(8, axis=-1), lps.BlockFloatingPoint(8, axis=0)
_FX_W, _FX_A, _FX_E = lps.FixedPoint(8, 6), lps.FixedPoint(8, 4), lps.FixedPoint(8, 8)
_MINI = dict(stage_sizes=(1, 1), widths=(8, 16), strides=(1, 2), pool_size=4)


def _int8_models(quant):
    return [("mlp", MLP(10, quant, hidden=(32, 16)), jnp.linspace(-1, 1, 4 * 64).reshape(4, 64)),
            ("cnn", SmallCNN(10, quant, channels=(4, 8), dense=16),
             jax.random.normal(jax.random.key(0), (4, 8, 8, 1))),
            ("resnet", ResNet(10, quant, **_MINI),
             jax.random.normal(jax.random.key(0), (2, 8, 8, 3)))]


def _grid_variables(model, x, wfmt):
    v = model.init({"params": jax.random.key(1), "quantize": jax.random.key(2)}, x,
                   train=False)
    return {**v, "params": lps.quantize_tree(v["params"], wfmt, rounding="nearest")}


@pytest.mark.parametrize("which", ["mlp", "cnn", "resnet"])  # one test item per model:
@pytest.mark.parametrize("formats", [(_W8, _A8, _A8), (_FX_W, _FX_A, _FX_E)],  # (balance
                         ids=["bfp8", "fixed8-all"])  # across xdist workers)
def test_models_int8_match_the_simulated_path(formats, which):
    """Forward outputs agree to float32 rounding (int8: exact products rounded once;
    simulated: float32 sums); gradients too. Stochastic rounding with the same key draws
    the same bits in both, so the quantized activations agree wherever the pre-activations
    do; the tolerance allows for rare flips of a rounding decision."""
    wfmt, afmt, efmt = formats
    quant = QuantConfig(afmt, efmt, "nearest")
    for name, model, x in _int8_models(quant):
        if name != which:
            continue
        v = _grid_variables(model, x, wfmt)
        m8 = model.clone(compute="int8", weight_format=wfmt)

        def run(params, m, v=v, x=x):
            def loss(p):
                y = m.apply({**v, "params": p}, x, train=False)
                return jnp.sum(y ** 2), y
            return jax.grad(loss, has_aux=True)(params)

        (g, y), (g8, y8) = (jax.jit(run, static_argnums=1)(v["params"], m)
                            for m in (model, m8))
        scale = float(jnp.abs(y).max())
        np.testing.assert_allclose(y8, y, rtol=0, atol=1e-3 * scale, err_msg=name)
        for a, b in zip(jax.tree.leaves(g8), jax.tree.leaves(g), strict=True):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-2 * float(jnp.abs(b).max()) + 1e-6,
                                       err_msg=name)


def test_models_report_their_int8_products():
    quant = QuantConfig(_A8, _A8)
    x = jax.ShapeDtypeStruct((2, 8, 8, 3), jnp.float32)  # traced only (batch 1 would make
    # per-example blocks whole-tensor ones, whose backward products factor)
    prods = int8_products(ResNet18(10, quant, pool_size=1, compute="int8", weight_format=_W8),
                          x, train=False)
    int8 = [p.name for p in prods if p.forward == "int8"]
    # fed by a quantizer: the first block's conv1 (after the stem's Q) and every conv2
    assert int8 == ["layer1_0/conv1"] + [f"layer{i}_{j}/conv2" for i in range(1, 5)
                                         for j in range(2)]
    assert len(prods) == 1 + 16 + 3 + 1  # stem, block convs, shortcut convs, classifier
    assert all(p.dx == p.dw == "float32" for p in prods)  # per-example / per-filter blocks
    fx = QuantConfig(_FX_A, _FX_E)
    prods = int8_products(MLP(10, fx, hidden=(16, 16), compute="int8", weight_format=_FX_W),
                          jnp.zeros((2, 8)), train=False)
    assert [(p.name, p.forward, p.dx, p.dw) for p in prods] == [
        ("dense0", "float32", "float32", "float32"), ("dense1", "int8", "int8", "int8"),
        ("classifier", "int8", "float32", "float32")]  # the logits' error is not quantized
    # float32 compute: the same layers, all float32, and the same outputs as before
    assert all(p.forward == "float32" for p in int8_products(
        ResNet(10, quant, **_MINI), x, train=False))


def test_models_int8_refuse_unquantized_activations():
    model = MLP(10, QuantConfig(), compute="int8", weight_format=_FX_W)
    with pytest.raises(ValueError, match="input_format FULL cannot run in int8"):
        model.init(jax.random.key(0), jnp.zeros((2, 8)), train=False)
    with pytest.raises(ValueError, match="compute must be one of"):
        MLP(10, QuantConfig.uniform(_A8), compute="int4").init(
            jax.random.key(0), jnp.zeros((2, 8)), train=False)


@pytest.mark.parametrize("shape", [(3, 6, 4, 2), (2, 7, 5, 3), (4, 2, 2, 1)])
def test_max_pool_2x2_equals_flax_max_pool_in_value_and_gradient(shape):
    """Bit for bit, on a coarse grid where most windows hold ties (ReLU zeros, repeated
    codes): the gradient must go to the same element of each window as ``nn.max_pool``'s
    select-and-scatter, and odd rows/columns are dropped as VALID pooling drops them."""
    rng = np.random.default_rng(sum(shape))
    for trial in range(20):
        x = jnp.asarray(np.maximum(rng.integers(-2, 3, shape), 0) * 0.25, jnp.float32)
        ref, ref_vjp = jax.vjp(lambda v: nn.max_pool(v, (2, 2), strides=(2, 2)), x)
        out, out_vjp = jax.vjp(lps.flax.max_pool_2x2, x)
        g = jnp.asarray(rng.normal(size=ref.shape), jnp.float32)
        np.testing.assert_array_equal(out, ref, err_msg=f"trial {trial}")
        np.testing.assert_array_equal(out_vjp(g)[0], ref_vjp(g)[0], err_msg=f"trial {trial}")


def test_max_pool_2x2_propagates_nan_like_flax():
    x = np.zeros((1, 4, 4, 1), np.float32)
    for i, j in [(0, 1), (1, 0), (3, 3)]:  # the 2nd, 3rd and 4th element of a window
        x[0, i, j, 0] = np.nan
    out = lps.flax.max_pool_2x2(jnp.asarray(x))
    ref = nn.max_pool(jnp.asarray(x), (2, 2), strides=(2, 2))
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    assert np.isnan(out).sum() == 2
