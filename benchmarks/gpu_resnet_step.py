"""Training-step throughput of low-precision SGLD on ResNet-18, as a ratio to FP SGLD.

ResNet-18 (CIFAR style, ``lpsampling.flax.create_model("resnet18", 10, ...)``) on synthetic
CIFAR-shaped data (``batch × 32 × 32 × 3`` normal pixels, random labels; a small pool of
batches cycled on the device), one full jitted training step per iteration: forward,
backward, the sampler's update, BatchNorm statistics. Modes:

* ``fp``    FP SGLD: no quantization anywhere;
* ``lpf``   SGLDLP-F, 8-bit block floating point: weights and gradients
  ``BlockFloatingPoint(8, axis=-1)`` (one exponent per output channel in Flax's kernel
  layout; per element for 1-D leaves), activations and errors
  ``QuantConfig.uniform(BlockFloatingPoint(8))`` (one exponent per example), stochastic
  rounding, float32 accumulator;
* ``vc``    VC SGLDLP-L with the same formats (the chain lives on the weight grid);
* ``naive`` naive SGLDLP-L (optional, ``--modes``).

Sampler settings follow the paper's CIFAR runs (lr 0.5 is not needed for timing; lr 0.05,
N = 50,000, T = 1e-3, weight decay 5e-4). Each mode: ``--warmup`` steps (compilation), then
``--steps`` timed steps ending with ``block_until_ready``, repeated ``--rounds`` times with
the modes interleaved; the median round counts. Reported: steps/s, ms/step, images/s and
the ratio to FP SGLD in the same run.

Run::

    python benchmarks/gpu_resnet_step.py                       # GPU: batch 128, 50 steps
    python benchmarks/gpu_resnet_step.py --quick               # CPU smoke: tiny ResNet
"""

from __future__ import annotations

import argparse
import datetime
import functools
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import lpsampling as lps
from lpsampling.atomic import write_text_atomic
from lpsampling.flax import QuantConfig, create_model

MODES = {
    "fp": "FP SGLD",
    "lpf": "SGLDLP-F (BFP8)",
    "vc": "VC SGLDLP-L (BFP8)",
    "naive": "naive SGLDLP-L (BFP8)",
}
LR, NUM_DATA, TEMPERATURE, WD = 0.05, 50_000, 1e-3, 5e-4


def build(mode: str, *, batch: int, quick: bool, seed: int = 0):
    """(step, carry, batches) for one mode; ``step(carry, x, y, key) -> (carry, loss)``."""
    low = mode != "fp"
    weight_fmt = lps.BlockFloatingPoint(8, axis=-1) if low else lps.FULL
    quant = QuantConfig.uniform(lps.BlockFloatingPoint(8)) if low else QuantConfig.full()
    kwargs = ({"stage_sizes": (1, 1), "widths": (8, 16), "strides": (1, 2), "pool_size": 16}
              if quick else {})
    model = create_model("resnet18", 10, quant, **kwargs)
    accumulator = {"fp": "full", "lpf": "full", "vc": "vc", "naive": "low"}[mode]
    k_init, k_q, k_opt, k_w = jax.random.split(jax.random.key(seed), 4)
    x0 = jnp.zeros((batch, 32, 32, 3), jnp.float32)
    init = jax.jit(functools.partial(model.init, train=False))  # eager init is op by op
    variables = init({"params": k_init, "quantize": k_q}, x0)
    params, batch_stats = variables["params"], variables["batch_stats"]
    opt = lps.sgld(LR, num_data=NUM_DATA, temperature=TEMPERATURE, weight_decay=WD,
                   weight_format=weight_fmt, grad_format=weight_fmt,
                   accumulator=accumulator, key=k_opt)
    opt_state = opt.init(params)
    params = jax.jit(lps.init_weights, static_argnums=(1,))(params, weight_fmt, key=k_w)

    def loss_fn(params, batch_stats, x, y, key):
        logits, updates = model.apply(
            {"params": params, "batch_stats": batch_stats}, x, train=True,
            mutable=["batch_stats"], rngs={"quantize": key})
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, updates["batch_stats"]

    @functools.partial(jax.jit, donate_argnums=(0,))
    def step(carry, x, y, key):
        params, batch_stats, opt_state = carry
        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, batch_stats, x, y, key)
        updates, opt_state = opt.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return (params, batch_stats, opt_state), loss

    rng = np.random.default_rng(seed)
    pool = 4
    xs = jnp.asarray(rng.standard_normal((pool, batch, 32, 32, 3)).astype(np.float32))
    ys = jnp.asarray(rng.integers(0, 10, (pool, batch)).astype(np.int32))
    nparams = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
    return step, (params, batch_stats, opt_state), (xs, ys), nparams


def run_steps(step, carry, data, n: int, key, offset: int):
    xs, ys = data
    loss = None
    for i in range(n):
        j = (offset + i) % xs.shape[0]
        carry, loss = step(carry, xs[j], ys[j], jax.random.fold_in(key, offset + i))
    jax.block_until_ready((carry, loss))
    return carry, loss


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--modes", default="fp,lpf,vc", help="comma list of " + ",".join(MODES))
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=50, help="timed steps per round")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps (compilation)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: a tiny ResNet of the same code (2 stages of 1 block, "
                        "widths 8 and 16), batch 8, 3 steps, 1 round")
    p.add_argument("--write", metavar="PATH", help="also write the markdown table here")
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.steps, args.warmup, args.rounds = 8, 3, 1, 1
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for m in modes:
        if m not in MODES:
            p.error(f"unknown mode {m!r}; choose from {', '.join(MODES)}")
    if "fp" not in modes:
        modes.insert(0, "fp")

    dev = jax.devices()[0]
    print(f"device: {dev.device_kind} ({jax.default_backend()}), jax {jax.__version__}",
          flush=True)
    built, carries, compile_s, losses = {}, {}, {}, {}
    key = jax.random.key(42)
    for m in modes:
        t = time.perf_counter()
        step, carry, data, nparams = build(m, batch=args.batch, quick=args.quick)
        carry, loss = run_steps(step, carry, data, args.warmup, key, 0)
        compile_s[m] = time.perf_counter() - t
        built[m], carries[m] = (step, data), carry
        print(f"  {m}: {nparams:,} params, warm-up {compile_s[m]:.1f} s, loss {float(loss):.3f}",
              flush=True)
    times = {m: [] for m in modes}
    for r in range(args.rounds):
        for m in (modes if r % 2 == 0 else modes[::-1]):
            step, data = built[m]
            t = time.perf_counter()
            carries[m], loss = run_steps(step, carries[m], data, args.steps, key,
                                         args.warmup + r * args.steps)
            times[m].append(time.perf_counter() - t)
            losses[m] = float(loss)
    med = {m: float(np.median(times[m])) for m in modes}
    fp_rate = args.steps / med["fp"]
    lines = [
        f"{'tiny ResNet (--quick)' if args.quick else 'ResNet-18'}, {nparams:,} params, batch "
        f"{args.batch}, {args.steps} timed steps × {args.rounds} rounds (median), "
        f"device {dev.device_kind} ({jax.default_backend()})",
        "",
        "| mode | steps/s | ms/step | images/s | ratio to FP SGLD | warm-up s | last loss |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for m in modes:
        rate = args.steps / med[m]
        lines.append(f"| {MODES[m]} | {rate:.2f} | {1e3 / rate:.1f} | {rate * args.batch:,.0f} "
                     f"| {rate / fp_rate:.3f} | {compile_s[m]:.1f} | {losses[m]:.3f} |")
    table = "\n".join(lines)
    print(table)
    if args.write:
        out = Path(args.write)
        out.parent.mkdir(parents=True, exist_ok=True)
        head = [
            "# ResNet-18 low-precision SGLD step throughput\n",
            f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
            f"- versions: Python {platform.python_version()}, jax {jax.__version__}, "
            f"lpsampling {lps.__version__}",
            f"- command: `python benchmarks/gpu_resnet_step.py {' '.join(argv or sys.argv[1:])}`",
            "",
        ]
        write_text_atomic(out, "\n".join(head) + "\n" + table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
