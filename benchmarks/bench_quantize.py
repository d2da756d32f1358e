"""Speed of lps.quantize relative to one elementwise pass over the same array.

Every contender is a jitted function of a float32 array of ``--size`` elements (shaped
``(size // 4096, 4096)``, i.e. (4096, 4096) at the default 2^24). The baseline is
``x * s`` with ``s`` a runtime scalar argument (XLA cannot elide it). Within each repeat the
contenders run one after the other, interleaved, so machine noise hits all of them alike
(the order is shuffled anew in each repeat, so no contender always follows the same one).
The table reports the median over repeats and the ratio of medians to the baseline's (the
targets apply to it), and also the fastest repeat of each and the ratio of those, which is
less sensitive to other processes on a shared machine. Only ratios from the same run are
comparable.

Also measured: stochastic fixed point with keys of every PRNG implementation JAX offers, and
``jax.random.bits`` alone for each implementation.

    python benchmarks/bench_quantize.py              # full size (2^24), 9 repeats
    python benchmarks/bench_quantize.py --quick      # smoke run
    python benchmarks/bench_quantize.py --size 4194304 --repeats 15
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import random
import shlex
import statistics
import sys
import time

import jax
import jax.numpy as jnp

import lpsampling as lps

FORMATS = [
    ("FixedPoint(8, 3)", lps.FixedPoint(8, 3), "fixed"),
    ("BlockFloatingPoint(8, axis=0)", lps.BlockFloatingPoint(8, axis=0), "bfp"),
    ("BlockFloatingPoint(8, axis=None)", lps.BlockFloatingPoint(8, axis=None), "bfp"),
    ("FloatingPoint(4, 3)", lps.FloatingPoint(4, 3), "float"),
    ("FloatingPoint(8, 7)", lps.FloatingPoint(8, 7), "float"),
]
# The PRNG implementations JAX registers (see the jax.random module docs).
PRNG_IMPLS = ["threefry2x32", "threefry4x32", "philox2x32", "philox4x32", "rbg", "unsafe_rbg"]
TARGETS = {("nearest", "fixed"): 1.3, ("nearest", "bfp"): 1.3, ("nearest", "float"): 1.3,
           ("stochastic", "fixed"): 2.0, ("stochastic", "bfp"): 2.5}


RECOMMENDED_IMPL = "philox4x32"


def build(size: int):
    """(name, key, group, fn, args, target) for every contender, baseline first."""
    cols = 4096 if size >= 4096 else size
    x = jax.random.normal(jax.random.key(0), (size // cols, cols), jnp.float32) * 3.0
    default_key = jax.random.key(1)  # threefry2x32, JAX's default
    philox = jax.random.key(1, impl=RECOMMENDED_IMPL)
    contenders = [("baseline: `x * s`", "", "baseline", jax.jit(lambda x, s: x * s),
                   (x, jnp.float32(1.0)), None)]
    for name, fmt, kind in FORMATS:
        for rounding, keys in (("nearest", [("", default_key)]),
                               ("stochastic", [("threefry2x32", default_key),
                                               (RECOMMENDED_IMPL, philox)])):
            fn = jax.jit(lambda x, k, fmt=fmt, r=rounding: lps.quantize(x, fmt, key=k, rounding=r))
            for key_name, key in keys:
                contenders.append((f"{name}, {rounding}", key_name, "formats", fn, (x, key),
                                   TARGETS.get((rounding, kind))))
    fixed = lps.FixedPoint(8, 3)
    for impl in PRNG_IMPLS:
        k = jax.random.key(1, impl=impl)
        fn = jax.jit(lambda x, k: lps.quantize(x, fixed, key=k))
        contenders.append(("FixedPoint(8, 3), stochastic", impl, "prng", fn, (x, k), 2.0))
        bits = jax.jit(lambda x, k: jax.random.bits(k, x.shape, jnp.uint32))
        contenders.append(("`jax.random.bits` alone", impl, "bits", bits, (x, k), None))
    raw = jax.random.PRNGKey(1)
    contenders.append(("FixedPoint(8, 3), stochastic", "raw `PRNGKey` (threefry2x32)", "prng",
                       jax.jit(lambda x, k: lps.quantize(x, fixed, key=k)), (x, raw), 2.0))
    return x, contenders


def run(size: int, repeats: int, warmup: int = 2):
    x, contenders = build(size)
    for *_, fn, args, _ in contenders:  # compile + warm up
        for _ in range(warmup):
            jax.block_until_ready(fn(*args))
    times = [[] for _ in contenders]
    order = list(range(len(contenders)))
    rng = random.Random(0)
    for _ in range(repeats):
        rng.shuffle(order)  # interleaved, in a fresh order each repeat (no position effects)
        for i in order:
            fn, args = contenders[i][3], contenders[i][4]
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*args))
            times[i].append(time.perf_counter() - t0)
    med = [statistics.median(t) for t in times]
    best = [min(t) for t in times]
    return x, contenders, med, best


def table(contenders, med, best) -> str:
    lines = [
        "| contender | key | median ms | × baseline | target | min ms | × baseline (min) |",
        "|---|---|---:|---:|---|---:|---:|",
    ]
    for (name, key, group, _, _, target), m, b in zip(contenders, med, best, strict=True):
        ratio = m / med[0]
        tgt = "" if target is None else (f"≤ {target}× " + ("✅" if ratio <= target else "❌"))
        if group == "bits":
            tgt = "(random bits only)"
        lines.append(f"| {name} | {key} | {m * 1e3:.2f} | {ratio:.2f} | {tgt} | "
                     f"{b * 1e3:.2f} | {b / best[0]:.2f} |")
    return "\n".join(lines)


def header(size, repeats) -> str:
    cmd = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return "\n".join([
        f"- machine: `{platform.platform()}`, {platform.processor() or platform.machine()}, "
        f"nproc = {nproc}, JAX backend `{jax.default_backend()}` "
        f"({', '.join(str(d) for d in jax.devices())})",
        f"- date: {now}; jax {jax.__version__}, Python {platform.python_version()}",
        f"- command: `{cmd}`",
        f"- array: {size} float32 elements shaped {(size // min(size, 4096), min(size, 4096))}; "
        f"median of {repeats} interleaved repeats (shuffled order) after warm-up; "
        f"baseline = jitted `x * s` (s a runtime scalar)",
    ])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=2**24, help="elements (default 2^24)")
    p.add_argument("--repeats", type=int, default=9, help="timed repeats (default 9, min 7)")
    p.add_argument("--quick", action="store_true", help="smoke run: 2^16 elements, 3 repeats")
    a = p.parse_args(argv)
    size, repeats = (2**16, 3) if a.quick else (a.size, max(a.repeats, 7))
    if size % min(size, 4096):
        p.error("--size must be a multiple of 4096 (or smaller than 4096)")
    _, contenders, med, best = run(size, repeats)
    print(header(size, repeats))
    print()
    print(table(contenders, med, best))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
