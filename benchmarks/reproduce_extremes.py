"""The issue-14 corner, measured: vc_quantize with noise far above the mean's block.

4096 copies of one mean μ, variance v, one key; for each format the largest |output|,
the sample mean and variance (target: μ and v, the variance plus at most the output
block's rounding variance). Before the fix the BFP rows at μ = 1e-20 (and the 4-bit row at
the reported μ = -2.9e-24, v = 1.7e-5) returned values up to 3.4e38.

Usage::

    python benchmarks/reproduce_extremes.py --write benchmarks/RESULTS_extremes.md
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys

import jax
import jax.numpy as jnp
import numpy as np
from _machine import machine_line  # a sibling module: benchmarks/ is on sys.path

import lpsampling as lps
from lpsampling.atomic import write_text_atomic

CASES = [
    (lps.BlockFloatingPoint(4, axis=-1), -2.9e-24, 1.7e-5, (64, 64)),
    (lps.BlockFloatingPoint(8, axis=0), 1e-20, 1e-4, (4096,)),
    (lps.BlockFloatingPoint(8, axis=None), 1e-20, 1e-4, (4096,)),
    (lps.BlockFloatingPoint(8, axis=0), 1e-6, 1e-4, (4096,)),
    (lps.BlockFloatingPoint(8, axis=0), 0.0, 1e-4, (4096,)),
    (lps.FloatingPoint(5, 2), 1e-20, 1e-4, (4096,)),
    (lps.FloatingPoint(8, 3), 1e-20, 1e-4, (4096,)),
    (lps.FloatingPoint(8, 3), 1e-30, 1e4, (4096,)),
    (lps.FixedPoint(8, 4), 1e-20, 1e-4, (4096,)),
]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--write", default="", help="markdown fragment to write ('' to skip)")
    args = p.parse_args(argv)
    rows = []
    for fmt, mu, v, shape in CASES:
        x = jnp.full(shape, mu, jnp.float32)
        q = np.asarray(lps.vc_quantize(x, v, fmt, key=jax.random.key(0)), np.float64).ravel()
        n = q.size
        se_mean = np.sqrt(q.var() / n)
        c = q - q.mean()
        se_var = np.sqrt(max(np.mean(c**4) - np.mean(c**2) ** 2, 0.0) / n)
        rows.append(f"| `{fmt!r}` | {mu:g} | {v:g} | {np.abs(q).max():.4g} | "
                    f"{q.mean():.3g} (± {se_mean:.2g}) | {q.var(ddof=1):.4g} "
                    f"(± {se_var:.2g}) | {np.all(np.isfinite(q))} |")
    cmd = "python " + " ".join(["benchmarks/reproduce_extremes.py"] + list(argv or sys.argv[1:]))
    lines = [
        "# vc_quantize at the extremes of the float32 range",
        "",
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- machine: {machine_line()}",
        f"- versions: Python {platform.python_version()}, jax {jax.__version__}",
        f"- command: `{cmd}`",
        "- 4096 outputs of `vc_quantize(μ·ones, v, fmt, key=jax.random.key(0))` per row; "
        "± is one standard error (of the mean: s/√n; of the variance: √((m₄ − s⁴)/n) from the "
        "draws' fourth central moment). Targets: mean μ; variance v, plus at most Δ_out²/2 "
        "where the output is re-rounded onto a coarser block or binade (coarse formats: the "
        "4-bit row, the 8-exponent-bit float at v = 1e4).",
        "",
        "| format | μ | v | max \\|q\\| | mean | variance | finite |",
        "|---|---:|---:|---:|---:|---:|---|",
        *rows,
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.write:
        write_text_atomic(args.write, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
