"""Real int8 products against the float32-simulated path and plain float32, in one run.

For MLP, SmallCNN (Fashion-MNIST shapes, 28×28×1) and ResNet-18 (CIFAR shapes, 32×32×3),
batch 128, in each 8-bit setting (``--formats``):

* ``bfp8``   weights ``BlockFloatingPoint(8, axis=-1)`` (one exponent per output unit /
  filter), activations and errors ``BlockFloatingPoint(8, axis=0)`` (one per example): the
  paper's BFP networks; only the forward product of a layer factors into int8;
* ``bfp8t``  whole-tensor blocks ``BlockFloatingPoint(8, axis=None)`` everywhere: all three
  products of a layer (forward, input gradient, weight gradient) factor;
* ``fixed8`` weights ``FixedPoint(8, 8)`` (the paper's), activations and errors
  ``FixedPoint(8, 4)`` (quantized, so that the products can run in int8; the paper's fixed
  point runs keep them in float32): all three products factor.

it times, interleaved (``--rounds`` rounds, the order reversed every other round, the median
counts), these variants of the same model on the same data:

* ``fp32``  plain float32: no quantizer, float32 weights, float32 SGLD;
* ``bf16``  (``--bf16``) the plain model with bfloat16 weights and inputs;
* ``sim``   the low-precision model as simulated today: on-grid values multiplied in
  float32 (``compute="float32"``), SGLDLP-F with the format's weights and gradients;
* ``int8``  the same model with ``compute="int8"``: on-grid operands multiplied as int8
  codes with int32 accumulation (the stem, fed by raw pixels, stays float32).

Rows: the forward pass (test mode) and one jitted SGLD training step (forward, backward,
sampler update, BatchNorm statistics). Then the Bayesian model average over a bank of
``--bma-samples`` packed samples on the Fashion-MNIST test set (``lps.bank.predict``):
int8 layers on the codes (``packed`` kernels) against the same model on the unpacked
float32 weights (the simulated path), and against the plain float32 model. ``--profile``
adds the time of ResNet-18's separate products (int8 vs float32 convolutions per layer
shape) that explain the training-step ratios.

Usage::

    python benchmarks/bench_int8.py                 # full run, writes benchmarks/RESULTS_int8.md
    python benchmarks/bench_int8.py --bf16 --out /tmp/int8.md   # with bfloat16 rows (GPU)
    python benchmarks/bench_int8.py --quick         # smoke run: tiny models, no file
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_line  # noqa: E402  (a sibling module: benchmarks/ is on sys.path)

import lpsampling as lps  # noqa: E402
from lpsampling.atomic import write_text_atomic  # noqa: E402
from lpsampling.flax import QuantConfig, create_model  # noqa: E402

ROOT = Path(__file__).resolve().parent
LR, NUM_DATA, TEMPERATURE, WD = 0.05, 60_000, 1e-3, 5e-4


@dataclasses.dataclass(frozen=True)
class Setting:
    name: str
    weight: lps.formats.Format
    activation: lps.formats.Format
    note: str


SETTINGS = {
    "bfp8": Setting("bfp8", lps.BlockFloatingPoint(8, axis=-1), lps.BlockFloatingPoint(8, axis=0),
                    "BFP8, per-output-unit weights, per-example activations/errors"),
    "bfp8t": Setting("bfp8t", lps.BlockFloatingPoint(8, axis=None),
                     lps.BlockFloatingPoint(8, axis=None), "BFP8, whole-tensor blocks"),
    "fixed8": Setting("fixed8", lps.FixedPoint(8, 8), lps.FixedPoint(8, 4),
                      "weights FixedPoint(8,8), activations/errors FixedPoint(8,4)"),
}
MODEL_NAMES = ("mlp", "cnn", "resnet18")
VARIANT_LABELS = {"fp32": "float32", "bf16": "bfloat16", "sim": "simulated (float32 products)",
                  "int8": "int8 products"}


def input_shape(model: str) -> tuple[int, ...]:
    return (32, 32, 3) if model == "resnet18" else (28, 28, 1)


def model_kwargs(model: str, quick: bool) -> dict:
    if not quick:
        return {}
    return {"mlp": {"hidden": (32,)}, "cnn": {"channels": (4, 8), "dense": 16},
            "resnet18": {"stage_sizes": (1, 1), "widths": (8, 16), "strides": (1, 2),
                         "pool_size": 16}}[model]


def supports_int8() -> bool:
    """True once the models have the ``compute`` switch (``lps.flax`` int8 layers)."""
    from lpsampling.flax import MLP
    return "compute" in {f.name for f in dataclasses.fields(MLP)}


def make_model(model: str, setting: Setting | None, variant: str, quick: bool):
    """The Flax model of ``variant``: plain (fp32, bf16) or quantized (sim, int8)."""
    kw = model_kwargs(model, quick)
    if variant in ("fp32", "bf16"):
        return create_model(model, 10, QuantConfig.full(), **kw)
    quant = QuantConfig.uniform(setting.activation)
    if supports_int8():
        kw["compute"] = "int8" if variant == "int8" else "float32"
        kw["weight_format"] = setting.weight
    elif variant == "int8":
        raise RuntimeError("the models have no compute='int8' switch yet")
    return create_model(model, 10, quant, **kw)


@functools.partial(jax.jit, static_argnums=1)
def _nearest(a, fmt):
    return lps.quantize(a, fmt, rounding="nearest")


def _cast(tree, dtype):
    return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating)
                        else a, tree)


@dataclasses.dataclass
class Built:
    forward: Callable
    step: Callable
    carry: tuple
    nparams: int


def build(model_name: str, setting: Setting | None, variant: str, *, batch: int, quick: bool,
          seed: int = 0) -> Built:
    """Jitted forward and SGLD step of one variant, with its initial carry."""
    model = make_model(model_name, setting, variant, quick)
    low = variant in ("sim", "int8")
    weight_fmt = setting.weight if low else lps.FULL
    k_init, k_opt = jax.random.split(jax.random.key(seed))
    x0 = jnp.zeros((batch,) + input_shape(model_name), jnp.float32)
    variables = jax.jit(functools.partial(model.init, train=False))(
        {"params": k_init, "quantize": k_init}, x0)
    params = variables["params"]
    bstats = variables.get("batch_stats")
    opt = lps.sgld(LR, num_data=NUM_DATA, temperature=TEMPERATURE, weight_decay=WD,
                   weight_format=weight_fmt, grad_format=weight_fmt, accumulator="full",
                   key=k_opt)
    opt_state = opt.init(params)
    # on the weight grid (nearest), leaf by leaf: jitting lps.init_weights over ResNet-18
    # whole takes minutes of XLA compilation on a busy CPU, and only timing matters here
    params = jax.tree.map(lambda a: _nearest(a, weight_fmt), params)
    dtype = jnp.bfloat16 if variant == "bf16" else jnp.float32

    def apply(params, bstats, x, key, train):
        v = {"params": _cast(params, dtype)}
        if bstats is not None:
            v["batch_stats"] = bstats
        x = x.astype(dtype)
        if train and bstats is not None:
            logits, mut = model.apply(v, x, train=True, mutable=["batch_stats"],
                                      rngs={"quantize": key})
            return logits.astype(jnp.float32), mut["batch_stats"]
        return model.apply(v, x, train=train, rngs={"quantize": key}).astype(jnp.float32), \
            bstats

    @jax.jit
    def forward(params, bstats, x, key):
        return apply(params, bstats, x, key, False)[0]

    @jax.jit  # no donation: the forward rows read the same params
    def step(carry, x, y, key):
        params, bstats, opt_state = carry

        def loss_fn(p):
            logits, new_bs = apply(p, bstats, x, key, True)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new_bs

        (loss, new_bs), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), new_bs, opt_state), loss

    nparams = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
    return Built(forward, step, (params, bstats, opt_state), nparams)


def interleaved(fns: dict[str, Callable[[], object]], rounds: int, inner: int
                ) -> dict[str, float]:
    """Median seconds per call of each ``fns[name]()`` (blocked), the names interleaved and
    their order reversed every other round."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            t = time.perf_counter()
            for _ in range(inner):
                out = fns[name]()
            jax.block_until_ready(out)
            times[name].append((time.perf_counter() - t) / inner)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_model(model_name: str, settings: list[Setting], variants: list[str], args
                ) -> list[dict]:
    """Forward and step times of every variant × setting of one model (one table row per
    setting and pass)."""
    rng = np.random.default_rng(0)
    shape = (args.batch,) + input_shape(model_name)
    x = jnp.asarray(rng.standard_normal(shape).astype(np.float32))
    y = jnp.asarray(rng.integers(0, 10, args.batch).astype(np.int32))
    key = jax.random.key(1)
    plain = {v: build(model_name, None, v, batch=args.batch, quick=args.quick)
             for v in variants if v in ("fp32", "bf16")}
    rows = []
    for s in settings:
        built = dict(plain)
        for v in variants:
            if v in ("sim", "int8"):
                built[v] = build(model_name, s, v, batch=args.batch, quick=args.quick)
        nparams = built["fp32"].nparams
        t0 = time.perf_counter()
        fwd = {v: functools.partial(b.forward, b.carry[0], b.carry[1], x, key)
               for v, b in built.items()}
        for f in fwd.values():
            jax.block_until_ready(f())  # compile
        carries = {v: b.carry for v, b in built.items()}

        def stepper(v, b=built, carries=carries):
            def run():
                carries[v], loss = b[v].step(carries[v], x, y, key)
                return loss
            return run

        steps = {v: stepper(v) for v in built}
        for f in steps.values():
            jax.block_until_ready(f())  # compile
        warm = time.perf_counter() - t0
        t_fwd = interleaved(fwd, args.rounds, args.inner)
        t_step = interleaved(steps, args.rounds, args.inner)
        for name, t in (("forward", t_fwd), ("SGLD step", t_step)):
            rows.append({"model": model_name, "setting": s.name, "pass": name, "times": t,
                         "nparams": nparams, "warm_s": warm})
        print(f"  {model_name} {s.name}: "
              + ", ".join(f"fwd {v} {1e3 * t_fwd[v]:.1f} ms" for v in t_fwd) + "; "
              + ", ".join(f"step {v} {1e3 * t_step[v]:.1f} ms" for v in t_step), flush=True)
    return rows


# --------------------------------------------------------------------------------------
# BMA from the packed bank.


def test_images(args) -> tuple[np.ndarray, str]:
    if not args.quick:
        try:
            ds = lps.data.load_fashion_mnist(args.data_dir)
            x = ds.x_test[: args.bma_test] if args.bma_test else ds.x_test
            return np.asarray(x, np.float32), f"Fashion-MNIST test set ({len(x)} images)"
        except (FileNotFoundError, OSError, ValueError) as err:
            print(f"  Fashion-MNIST not found ({err}); synthetic images instead", flush=True)
    n = 96 if args.quick else (args.bma_test or 10_000)
    x = np.random.default_rng(2).standard_normal((n, 28, 28, 1)).astype(np.float32)
    return x, f"synthetic 28×28×1 images ({n})"


def bench_bma(model_name: str, setting: Setting, x: np.ndarray, args) -> dict:
    """BMA over a bank of ``--bma-samples`` packed samples: int8 on the codes vs the
    simulated model on unpacked weights vs the plain float32 model on unpacked weights."""
    sim = make_model(model_name, setting, "sim", args.quick)
    x0 = jnp.zeros((2,) + x.shape[1:], jnp.float32)
    variables = jax.jit(functools.partial(sim.init, train=False))(
        {"params": jax.random.key(0), "quantize": jax.random.key(0)}, x0)
    params = variables["params"]
    bank = lps.bank.init(params, setting.weight, args.bma_samples)
    add = jax.jit(lps.bank.add)
    for s in range(args.bma_samples):
        noisy = jax.tree.map(lambda a, s=s: a * (1.0 + 0.01 * s), params)
        bank = add(bank, noisy)  # rounded to nearest onto the weight grid by the bank
    xs = jnp.asarray(x)
    bs = min(args.bma_batch, len(x))
    key = jax.random.key(5)
    bank_predict = lps.flax.bank_predict
    plain = make_model(model_name, None, "fp32", args.quick)
    fns: dict[str, Callable] = {
        # the same quantized model, every sample decoded to float32 (simulated products)
        "sim": lambda: bank_predict(sim, bank, xs, key=key, batch_size=bs, packed=False),
        # the plain float32 model on the decoded samples
        "fp32": lambda: bank_predict(plain, bank, xs, batch_size=bs, packed=False),
    }
    if "int8" in args.variants_list:
        int8 = make_model(model_name, setting, "int8", args.quick)
        # int8 layers on the stored codes, the rest decoded per sample
        fns["int8"] = lambda: bank_predict(int8, bank, xs, key=key, batch_size=bs)
    t0 = time.perf_counter()
    probs = {k: f() for k, f in fns.items()}
    warm = time.perf_counter() - t0
    agree = None
    if "int8" in probs:
        agree = float(jnp.max(jnp.abs(probs["int8"] - probs["sim"])))
    t = interleaved(fns, args.bma_rounds, 1)
    print(f"  BMA {model_name} {setting.name}: "
          + ", ".join(f"{k} {t[k]:.2f} s" for k in t), flush=True)
    return {"model": model_name, "setting": setting.name, "times": t, "warm_s": warm,
            "max_abs_diff": agree, "samples": args.bma_samples, "n": len(x)}


# --------------------------------------------------------------------------------------
# Profile: ResNet-18's separate products.

# (input size, in channels, out channels, stride, layers of ResNet-18 with this 3×3 shape)
RESNET_CONVS = [(32, 64, 64, 1, 4), (32, 64, 128, 2, 1), (16, 128, 128, 1, 3),
                (16, 128, 256, 2, 1), (8, 256, 256, 1, 3), (8, 256, 512, 2, 1),
                (4, 512, 512, 1, 3)]


def _profile_shape(setting: Setting, size: int, cin: int, cout: int, stride: int, args,
                   rng: np.random.Generator) -> dict[str, float]:
    from lpsampling import int8 as i8

    b, pad = args.batch, ((1, 1), (1, 1))
    x = jnp.asarray(np.maximum(rng.standard_normal((b, size, size, cin)), 0).astype(np.float32))
    w = jnp.asarray((rng.standard_normal((3, 3, cin, cout)) * 0.05).astype(np.float32))
    x = lps.quantize(x, setting.activation, rounding="nearest")
    w = lps.quantize(w, setting.weight, rounding="nearest")
    g = jnp.ones((b, size // stride, size // stride, cout), jnp.float32)

    def conv(x, w, **kw):
        return jax.lax.conv_general_dilated(x, w, (stride, stride), pad,
                                            dimension_numbers=i8.CONV_DIMENSION_NUMBERS, **kw)

    def layer(x, w):
        return i8.int8_conv(x, w, setting.activation, setting.weight, strides=stride,
                            padding=pad, error_format=setting.activation)

    xc, wc = i8.encode_int8(x, setting.activation), i8.encode_int8(w, setting.weight)
    f32, lay = jax.jit(conv), jax.jit(layer)
    codes = jax.jit(functools.partial(conv, preferred_element_type=jnp.int32))
    bwd32 = jax.jit(lambda x, w, g: jax.vjp(conv, x, w)[1](g))
    bwd8 = jax.jit(lambda x, w, g: jax.vjp(layer, x, w)[1](g))
    # the stochastic quantizers every quantized layer also runs in training: its input's
    # (activation format) and its output error's (error format), for the random bits
    key = jax.random.key(3)
    sr = jax.jit(lambda a, k, fmt: lps.quantize(a, fmt, rounding="stochastic", key=k),
                 static_argnums=2)
    fns = {"sr_in": functools.partial(sr, x, key, setting.activation),
           "sr_err": functools.partial(sr, g * 0.37, key, setting.activation),
           "f32": functools.partial(f32, x, w),
           "codes": functools.partial(codes, xc.codes, wc.codes),
           "layer": functools.partial(lay, x, w), "bwd32": functools.partial(bwd32, x, w, g),
           "bwd8": functools.partial(bwd8, x, w, g)}
    for f in fns.values():
        jax.block_until_ready(f())
    return interleaved(fns, args.rounds, 1)


def profile_convs(setting: Setting, args) -> list[str]:
    """Per 3×3 convolution shape of ResNet-18 at ``--batch``: the float32 convolution, the
    bare int8 × int8 → int32 convolution of encoded codes, the whole int8 layer forward
    (encode + product + scale), and the backward products of the float32 convolution and
    of the int8 layer (as the format lets them run)."""
    rows, totals = [], {}
    rng = np.random.default_rng(0)
    keys = ("f32", "codes", "layer", "bwd32", "bwd8", "sr_in", "sr_err")
    for size, cin, cout, stride, count in RESNET_CONVS:
        t = _profile_shape(setting, size, cin, cout, stride, args, rng)
        for k, v in t.items():
            totals[k] = totals.get(k, 0.0) + count * v
        rows.append(f"| {size}×{size}×{cin}→{cout}, stride {stride} | {count} | "
                    + " | ".join(f"{1e3 * t[k]:.1f}" for k in keys[:5])
                    + f" | {t['codes'] / t['f32']:.2f}× | {t['layer'] / t['f32']:.2f}× | "
                    f"{t['bwd8'] / t['bwd32']:.2f}× | {1e3 * t['sr_in']:.1f} | "
                    f"{1e3 * t['sr_err']:.1f} | "
                    f"{(t['sr_in'] + t['sr_err']) / (t['f32'] + t['bwd32']):.2f}× |")
        print(f"  profile {setting.name} {rows[-1]}", flush=True)
    head = [f"ResNet-18's 3×3 convolutions at batch {args.batch}, {setting.note} "
            "(ms, median of interleaved rounds):", "",
            "| shape | layers | float32 conv | int8 codes conv | int8 layer fwd (encode + "
            "conv + scale) | float32 backward (dx, dw) | int8 layer backward | codes / "
            "float32 | layer / float32 | backward int8 / float32 |"
            " stochastic rounding of the input | stochastic rounding of the error |"
            " both roundings / (float32 conv + backward) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    sr_share = (totals["sr_in"] + totals["sr_err"]) / (totals["f32"] + totals["bwd32"])
    tot = ("| all 3×3 convs after the stem (× layers) | 16 | "
           + " | ".join(f"{1e3 * totals[k]:.1f}" for k in keys[:5])
           + f" | {totals['codes'] / totals['f32']:.2f}× | {totals['layer'] / totals['f32']:.2f}×"
           f" | {totals['bwd8'] / totals['bwd32']:.2f}× | {1e3 * totals['sr_in']:.1f} | "
           f"{1e3 * totals['sr_err']:.1f} | {sr_share:.2f}× |")
    return head + rows + [tot]


# --------------------------------------------------------------------------------------
# Report.


def ratio(t: dict[str, float], a: str, b: str) -> str:
    return f"{t[a] / t[b]:.2f}×" if a in t and b in t else "—"


def tables(rows: list[dict], bma: list[dict], variants: list[str], args, data_note: str
           ) -> list[str]:
    md = ["| model | setting | pass | " + " | ".join(f"{VARIANT_LABELS[v]} ms"
                                                    for v in variants)
          + " | int8 / simulated | int8 / float32 | simulated / float32 |"
          + (" bf16 / float32 |" if "bf16" in variants else ""),
          "|---|---|---|" + "---:|" * (len(variants) + 3 + ("bf16" in variants))]
    for r in rows:
        t = r["times"]
        md.append(f"| {r['model']} | {r['setting']} | {r['pass']} | "
                  + " | ".join(f"{1e3 * t[v]:.1f}" if v in t else "—" for v in variants)
                  + f" | {ratio(t, 'int8', 'sim')} | {ratio(t, 'int8', 'fp32')} | "
                  f"{ratio(t, 'sim', 'fp32')} |"
                  + (f" {ratio(t, 'bf16', 'fp32')} |" if "bf16" in variants else ""))
    if bma:
        md += ["", f"BMA over a bank of {bma[0]['samples']} packed samples on the "
               f"{data_note}, `lps.bank.predict` in chunks of {args.bma_batch}:", "",
               "| model | setting | int8 on codes s | simulated on unpacked s | float32 on "
               "unpacked s | int8 / simulated | speed-up | int8 / float32 | max |Δp| int8 vs "
               "simulated |",
               "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for b in bma:
            t = b["times"]
            sp = f"{t['sim'] / t['int8']:.2f}×" if "int8" in t else "—"
            d = "—" if b["max_abs_diff"] is None else f"{b['max_abs_diff']:.1e}"
            md.append(f"| {b['model']} | {b['setting']} | "
                      + " | ".join(f"{t[k]:.2f}" if k in t else "—"
                                   for k in ("int8", "sim", "fp32"))
                      + f" | {ratio(t, 'int8', 'sim')} | {sp} | {ratio(t, 'int8', 'fp32')} "
                      f"| {d} |")
    return md


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(MODEL_NAMES))
    p.add_argument("--formats", default="bfp8,fixed8,bfp8t",
                   help="comma list of " + ",".join(SETTINGS))
    p.add_argument("--variants", default="fp32,sim,int8")
    p.add_argument("--bf16", action="store_true", help="add bfloat16 rows")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median)")
    p.add_argument("--inner", type=int, default=2, help="calls per timed round")
    p.add_argument("--bma-models", default="mlp,cnn")
    p.add_argument("--bma-formats", default="bfp8")
    p.add_argument("--bma-samples", type=int, default=50)
    p.add_argument("--bma-test", type=int, default=0,
                   help="first n test images (0: the whole test set)")
    p.add_argument("--bma-batch", type=int, default=1000)
    p.add_argument("--bma-rounds", type=int, default=3)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--profile", action="store_true",
                   help="time ResNet-18's separate products (int8 vs float32 convolutions)")
    p.add_argument("--out", default=None,
                   help="markdown file (default benchmarks/RESULTS_int8.md; none in --quick)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: a tiny MLP, bfp8, batch 8, one round, a "
                        "3-sample bank on 96 synthetic images; writes no file")
    args = p.parse_args(argv)
    if args.quick:
        args.models, args.formats, args.batch = "mlp", "bfp8", 8
        args.rounds, args.inner, args.bma_models = 1, 1, "mlp"
        args.bma_samples, args.bma_batch, args.bma_rounds = 3, 32, 1
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if args.bf16 and "bf16" not in variants:
        variants.insert(1, "bf16")
    if "fp32" not in variants:
        variants.insert(0, "fp32")
    if "int8" in variants and not supports_int8():
        print("note: the models have no compute='int8' switch yet: int8 rows skipped")
        variants.remove("int8")
    args.variants_list = variants
    for v in variants:
        if v not in VARIANT_LABELS:
            p.error(f"unknown variant {v!r}; choose from {', '.join(VARIANT_LABELS)}")
    models = [m.strip() for m in args.models.split(",") if m.strip()]  # may be empty
    settings = [SETTINGS[f.strip()] for f in args.formats.split(",") if f.strip()]
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), "
          f"jax {jax.__version__}; load average {os.getloadavg()[0]:.2f}", flush=True)
    t_start, load_start = time.perf_counter(), os.getloadavg()[0]
    rows: list[dict] = []
    for m in models:
        rows += bench_model(m, settings, variants, args)
    bma: list[dict] = []
    data_note = ""
    bma_models = [m.strip() for m in args.bma_models.split(",") if m.strip()]
    if bma_models and args.bma_samples > 0:
        x, data_note = test_images(args)
        for m in bma_models:
            for f in args.bma_formats.split(","):
                bma.append(bench_bma(m, SETTINGS[f.strip()], x, args))
    md = tables(rows, bma, variants, args, data_note)
    if args.profile:
        for s in settings:
            md += ["", *profile_convs(s, args)]
    print("\n".join(md))
    out = args.out or (None if args.quick else str(ROOT / "RESULTS_int8.md"))
    if out:
        cmd = "python benchmarks/bench_int8.py " + " ".join(argv if argv is not None
                                                            else sys.argv[1:])
        head = [
            "# Real int8 products: forward, SGLD step and BMA from the bank",
            "",
            f"- machine: {machine_line()}; device {jax.devices()[0].device_kind} "
            f"({jax.default_backend()})",
            f"- date: {datetime.date.today().isoformat()}; Python "
            f"{platform.python_version()}, jax {jax.__version__}, lpsampling {lps.__version__}",
            f"- command: `{cmd.strip()}`",
            f"- batch {args.batch}; each time is the median of {args.rounds} interleaved "
            f"rounds of {args.inner} calls (order reversed every other round); BMA: median "
            f"of {args.bma_rounds} rounds; total run {time.perf_counter() - t_start:.0f} s",
            f"- the machine is shared with other jobs (load average {load_start:.2f} at "
            f"the start, {os.getloadavg()[0]:.2f} at the end): absolute times are noisy, "
            "ratios within a round less so",
            "",
        ]
        write_text_atomic(out, "\n".join(head + md) + "\n")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
