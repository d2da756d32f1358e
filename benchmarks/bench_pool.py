"""Max pooling's gradient in a small CNN: ``lps.flax.max_pool_2x2`` (select-based gradient)
against ``nn.max_pool`` (XLA's select-and-scatter), in the forward + backward pass of the
word-length sweep's ``cnn-mini`` and of the default ``SmallCNN`` (32/64 channels).

Both poolings are bit-identical in value and gradient (tests/flax/test_models.py); this
times them. Each case compiles ``jax.grad`` of the mean cross-entropy for both poolings,
then times them in interleaved rounds (the order alternates), ``--steps`` calls per round;
the ratio is the median over rounds of ``time(max_pool_2x2) / time(nn.max_pool)`` in the
same round, so a shared machine slows both alike.

Usage::

    python benchmarks/bench_pool.py [--rounds 5] [--steps 10] [--write benchmarks/RESULTS_pool.md]
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from _machine import machine_line  # a sibling module: benchmarks/ is on sys.path

import lpsampling as lps
import lpsampling.flax.models as models
from lpsampling.atomic import write_text_atomic
from lpsampling.experiments import cross_entropy
from lpsampling.flax import QuantConfig, SmallCNN

# the network's quantizers: none (fp32, and fixed8 runs, whose formats act on weights and
# gradients only) or BFP8 on activations and errors (bfp8 runs)
FORMATS = {"fp32": QuantConfig(), "bfp8": QuantConfig.uniform(lps.BlockFloatingPoint(8))}
NETS = {"cnn-mini": dict(channels=(8, 16), dense=64), "SmallCNN": dict()}


def _reduce_window_pool(x: jax.Array) -> jax.Array:
    return nn.max_pool(x, (2, 2), strides=(2, 2))


def _grad_fn(net: str, fmt: str, pool):
    """The jitted gradient of a ``net`` whose pooling is ``pool`` (the model module's
    global is swapped while the function is traced, then restored)."""
    model = SmallCNN(num_classes=10, quant=FORMATS[fmt], **NETS[net])

    def loss(params, x, y, key):
        logits = model.apply({"params": params}, x, train=True, rngs={"quantize": key})
        return jnp.mean(cross_entropy(logits, y))

    grad = jax.jit(jax.grad(loss))

    def traced(*args):
        saved = models.max_pool_2x2
        models.max_pool_2x2 = pool
        try:
            return grad.lower(*args).compile()
        finally:
            models.max_pool_2x2 = saved

    return model, traced


def bench(net: str, fmt: str, batch: int, rounds: int, steps: int) -> dict:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(batch, 28, 28, 1)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 10, batch), jnp.int32)
    key = jax.random.key(0, impl="philox4x32")
    compiled = {}
    for name, pool in (("nn.max_pool", _reduce_window_pool), ("max_pool_2x2",
                                                             models.max_pool_2x2)):
        model, make = _grad_fn(net, fmt, pool)
        params = model.init({"params": key, "quantize": key}, x, train=True)["params"]
        compiled[name] = (make(params, x, y, key), params)
    times: dict[str, list[float]] = {k: [] for k in compiled}
    for r in range(rounds):
        for name in (list(compiled) if r % 2 == 0 else list(reversed(compiled))):
            fn, params = compiled[name]
            jax.block_until_ready(fn(params, x, y, key))
            t = time.perf_counter()
            for _ in range(steps):
                out = fn(params, x, y, key)
            jax.block_until_ready(out)
            times[name].append((time.perf_counter() - t) / steps * 1e3)
    ratios = [a / b for a, b in zip(times["max_pool_2x2"], times["nn.max_pool"], strict=True)]
    return dict(net=net, fmt=fmt, old=statistics.median(times["nn.max_pool"]),
                new=statistics.median(times["max_pool_2x2"]), ratio=statistics.median(ratios))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--nets", default="cnn-mini,SmallCNN")
    p.add_argument("--formats", default="fp32,bfp8")
    p.add_argument("--write", default="", help="write the report to this file")
    args = p.parse_args(argv)
    nets, fmts = args.nets.split(","), args.formats.split(",")
    for name, known, arg in ((nets, NETS, "--nets"), (fmts, FORMATS, "--formats")):
        bad = [v for v in name if v not in known]
        if bad:
            p.error(f"{arg}: unknown {bad}; allowed: {', '.join(known)}")
    if min(args.rounds, args.steps, args.batch) < 1:
        p.error("--rounds, --steps and --batch must be >= 1")
    cmd = "python " + " ".join(["benchmarks/bench_pool.py", *(sys.argv[1:] if argv is None
                                                              else argv)])
    lines = [
        "# Max pooling's gradient: select-based vs select-and-scatter",
        "",
        f"- date: {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}; "
        f"machine: {machine_line()}; jax {jax.__version__}",
        f"- command: `{cmd}`",
        f"- forward + backward (`jax.grad` of the mean cross-entropy) of a batch of "
        f"{args.batch} 28×28 images; median ms over {args.rounds} interleaved rounds of "
        f"{args.steps} calls; ratio: median of the per-round ratios. `fp32` is also the "
        "network of a fixed8 run (its formats act on weights and gradients only); `bfp8` "
        "quantizes activations and errors.",
        "",
        "| network | activations | nn.max_pool ms | max_pool_2x2 ms | ratio |",
        "|---|---|---:|---:|---:|",
    ]
    for net in nets:
        for fmt in fmts:
            r = bench(net, fmt, args.batch, args.rounds, args.steps)
            lines.append(f"| {net} | {fmt} | {r['old']:.2f} | {r['new']:.2f} | "
                         f"{r['ratio']:.2f}× |")
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        write_text_atomic(Path(args.write), text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
