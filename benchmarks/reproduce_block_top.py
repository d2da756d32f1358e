"""The top of a block: saturating stochastic rounding against the mean-exact carry.

Two measurements of ``BlockFloatingPoint(..., carry=False)`` (QPyTorch's saturation, the
default) against ``carry=True`` (a block maximum in its last gap carries into the next
exponent, and the block is re-rounded onto that exponent's grid):

1. the cost of the carry: the total variance and the total bias² of
   ``vc_quantize(x, 0, fmt)`` (= stochastic rounding in distribution, in either setting)
   on a 784×100 N(0, 0.05²) kernel with ``axis=0`` (784 blocks of 100), per word length;
2. what the saturation costs an optimizer: optax's Rosenbrock problem
   (``AliasTest::test_optimization``: start (0, 0), η = 1e-3, 10⁴ steps) solved by
   ``lps.sgld(1e-3, num_data=10**6)`` with 8-bit whole-tensor blocks (the conformance
   runner's bfp8 modes), naive and VC SGLDLP-L, each setting.

Usage::

    python benchmarks/reproduce_block_top.py --write benchmarks/RESULTS_block_top.md
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _machine import machine_line  # a sibling module: benchmarks/ is on sys.path

import lpsampling as lps
from lpsampling.atomic import write_text_atomic
from lpsampling.update import Precision

# optax's tolerance for test_optimization (rtol = atol = 3e-2) plus the conformance
# runner's 4 grid gaps of the weight format at the optimum (bfp8 at |θ*| = 1: Δ = 2^-6)
ROSENBROCK_ATOL = 3e-2 + 4 * 2.0**-6
ROSENBROCK_RTOL = 3e-2


def variance_rows(wls, n, seed=0):
    """Per word length: total variance and bias² of Q_vc(x, 0) in each setting."""
    x = jax.random.normal(jax.random.key(seed), (784, 100)) * 0.05
    keys = jax.random.split(jax.random.key(seed + 1), n)
    x64 = np.asarray(x, np.float64)
    rows = []
    for wl in wls:
        stats = {}
        for carry in (False, True):
            fmt = lps.BlockFloatingPoint(wl, axis=0, carry=carry)
            draw = jax.jit(jax.vmap(lambda k, fmt=fmt: lps.vc_quantize(x, 0.0, fmt, key=k)))
            q = np.asarray(draw(keys), np.float64)
            mean = q.mean(0)
            var = q.var(0, ddof=1)
            # bias² with the sampling noise of the mean (var/n) taken out (unbiased in
            # total; not clipped per element, which would add the noise back)
            bias2 = (mean - x64) ** 2 - var / n
            # the totals' standard error, from the per-element sample variances' own
            # (fourth-moment) standard errors, elements independent
            m4 = np.mean((q - mean) ** 4, axis=0)
            se = np.sqrt(np.sum(np.maximum(m4 - var**2, 0.0) / n))
            stats[carry] = (var.sum(), bias2.sum(), se)
        fmt = lps.BlockFloatingPoint(wl, axis=0)
        gap = np.asarray(lps.grid_gap(x, fmt), np.float64)
        in_last_gap = np.abs(x64) > fmt.max_code * gap
        blocks = int(np.any(in_last_gap, axis=1).sum())
        (v0, b0, se0), (v1, b1, se1) = stats[False], stats[True]
        extra = 100 * (v1 / v0 - 1)
        se_extra = 100 * np.hypot(se0 / v0, se1 / v0)
        rows.append(f"| {wl} | {blocks} / 784 | {v0:.4g} | {b0:.3g} | {v1:.4g} | {b1:.2g} "
                    f"| {extra:+.1f}% (± {se_extra:.2f}) |")
    return rows


def rosenbrock(carry, accumulator, steps, seed=0):
    fmt = lps.BlockFloatingPoint(8, axis=None, carry=carry)
    opt = lps.sgld(1e-3, num_data=10**6, precision=Precision(fmt, fmt, accumulator),
                   key=jax.random.key(seed))

    def f(p):
        return (1.0 - p[0]) ** 2 + 100.0 * (p[1] - p[0] ** 2) ** 2

    def step(c, _):
        p, s = c
        u, s = opt.update(jax.grad(f)(p), s, p)
        p = optax.apply_updates(p, u)
        return (p, s), p[0]

    p = jnp.zeros(2, jnp.float32)
    (p, _), xs = jax.jit(lambda c: jax.lax.scan(step, c, None, length=steps))(
        (p, opt.init(p)))
    return np.asarray(p, np.float64), float(jnp.max(xs))


def rosenbrock_rows(steps, seeds):
    rows = []
    for carry in (False, True):
        for acc, label in (("low", "naive SGLDLP-L"), ("vc", "VC SGLDLP-L")):
            finals, passed, top = [], 0, 0.0
            for seed in seeds:
                p, xmax = rosenbrock(carry, acc, steps, seed)
                finals.append(p)
                top = max(top, xmax)
                passed += bool(np.all(np.abs(p - 1.0) <= ROSENBROCK_ATOL + ROSENBROCK_RTOL))
            mode = f"{'naive' if acc == 'low' else 'VC'} L bfp8{' carry' if carry else ''}"
            first = finals[0]
            rows.append(f"| {mode} | {label} | {carry} | ({first[0]:.4g}, {first[1]:.4g}) "
                        f"| {top:.4g} | {passed} / {len(seeds)} |")
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--write", default="", help="markdown fragment to write ('' to skip)")
    p.add_argument("--quick", action="store_true", help="few draws and steps (smoke test)")
    args = p.parse_args(argv)
    n, steps, seeds, wls = (200, 10_000, (0, 1, 2), (3, 4, 5, 8))
    if args.quick:
        n, steps, seeds, wls = (16, 200, (0,), (4,))
    var_rows = variance_rows(wls, n)
    ros_rows = rosenbrock_rows(steps, seeds)
    cmd = "python " + " ".join(["benchmarks/reproduce_block_top.py"]
                               + list(sys.argv[1:] if argv is None else argv))
    lines = [
        "# The top of a block: saturate (QPyTorch, default) or carry",
        "",
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- machine: {machine_line()} (shared with other jobs; nothing here is timed)",
        f"- versions: Python {platform.python_version()}, jax {jax.__version__}",
        f"- command: `{cmd}`",
        "",
        "## The cost of the carry: variance on a 784×100 kernel",
        "",
        f"`vc_quantize(x, 0, BlockFloatingPoint(wl, axis=0, carry=...))`, x ~ N(0, 0.05²) "
        f"(784 blocks of 100), {n} draws; sums over the 78,400 elements of the per-element "
        "sample variance and of the squared bias (mean − x)² less its sampling noise var/n. "
        "\"last gap\": blocks whose maximum lies above the top code, where the two settings "
        "differ. Extra variance: carry against saturate, ± one standard error (from the "
        "per-element sample variances' fourth-moment standard errors).",
        "",
        "| wl | blocks with a maximum in the last gap | saturate: variance | saturate: "
        "bias² | carry: variance | carry: bias² | extra variance |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        *var_rows,
        "",
        "## What the saturation costs an optimizer: optax's Rosenbrock problem",
        "",
        f"`lps.sgld(1e-3, num_data=10**6)` from (0, 0), {steps} steps, weights and gradients "
        "in `BlockFloatingPoint(8, axis=None, carry=...)` (the conformance runner's bfp8 "
        f"modes); passes: |θ − (1, 1)| ≤ {ROSENBROCK_ATOL:.4g} + 3e-2 per coordinate "
        f"(optax's tolerance plus 4Δ), over seeds {list(seeds)}. Final θ of seed {seeds[0]}; "
        "max x: the largest first coordinate reached in any step of any seed (127·2^-9 = "
        "0.248 and 127·2^-8 = 0.496 are top codes of a block).",
        "",
        "| mode | method | carry | final θ | max x | passes |",
        "|---|---|---|---|---:|---:|",
        *ros_rows,
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.write:
        write_text_atomic(args.write, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
