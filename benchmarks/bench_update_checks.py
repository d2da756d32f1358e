"""Cost of the update rule's per-step checks: ms/step of ``update_position`` on one leaf of
1,000,000 float32 parameters, 50 steps per jitted ``lax.scan``, median of 5, philox keys.

Run it on two checkouts back to back for an A/B (``PYTHONPATH=<checkout> python
benchmarks/bench_update_checks.py``); the figures are in ``RESULTS_step_checks.md``.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

import lpsampling as lps
from lpsampling.update import Precision, update_position

N = 1_000_000
STEPS = 50


def bench(precision: Precision, noise_variance, label: str) -> None:
    def one(carry, key, grads):
        new, _ = update_position(key, carry, grads, learning_rate=0.01,
                                 noise_variance=noise_variance, precision=precision)
        return new, None

    run = jax.jit(lambda key, theta, grads: jax.lax.scan(
        lambda c, k: one(c, k, grads), theta, jax.random.split(key, STEPS))[0])
    theta = {"w": jnp.linspace(-1.0, 1.0, N)}
    grads = {"w": jnp.linspace(-0.1, 0.1, N)}
    key = jax.random.key(0, impl="philox4x32")
    jax.block_until_ready(run(key, theta, grads))
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        jax.block_until_ready(run(key, theta, grads))
        times.append(time.perf_counter() - t0)
    print(f"{label}: {np.median(times) / STEPS * 1e3:.3f} ms/step", flush=True)


def main() -> None:
    bench(Precision(lps.FULL, lps.FULL, "full"), None, "SGD FP")
    bench(Precision(lps.FULL, lps.FULL, "full"), 1e-4, "SGLD FP")
    bench(Precision(lps.FixedPoint(8, 4), lps.FixedPoint(8, 4), "vc"), 1e-4, "VC fixed8")
    bench(Precision(lps.BlockFloatingPoint(8), lps.BlockFloatingPoint(8), "vc"), 1e-4,
          "VC bfp8")


if __name__ == "__main__":
    main()
