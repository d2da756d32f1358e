"""Cost of one sampler step, gradients given, on a ~1M-parameter pytree.

Every contender runs ``--steps`` updates inside one jitted ``lax.scan`` (so dispatch does not
count), the contenders are interleaved, and each time is the median of ``--repeats`` runs
(after one warm-up), with ``block_until_ready``. Reported per step, and as ratios

* to ``blackjax.sgld`` on the same position, for the same number of steps, its noise drawn
  from ``jax.random.key`` (the reference; with ``--impl philox4x32`` from Philox keys), and
* to the bare cost of the random numbers the mode needs: its Gaussian draws and its
  stochastic-rounding uniforms (32 bits each), generated alone, per leaf, in a scan of the
  same length (each added into a carry so they are materialised once, as in an update).

Optax contenders include ``optax.apply_updates`` (blackjax returns the new position, so the
optax face must too to be comparable).

Usage::

    python benchmarks/bench_step.py            # full run, writes benchmarks/RESULTS_step.md
    python benchmarks/bench_step.py --quick    # smoke run: small pytree, few steps, no file
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import blackjax
import jax
import jax.numpy as jnp
import optax

import lpsampling as lps

FIXED8 = lps.FixedPoint(8, 8)   # the paper's 8-bit fixed point (range ±0.5)
BFP8 = lps.BlockFloatingPoint(8)  # one exponent per index of axis 0

# Random numbers per element each mode's maths needs: (Gaussians, 32-bit uniforms).
#   SGLD FP: ξ.  SGLDLP-F: Q_G, ξ, Q_W (model weights).  naive LP-L: Q_G, ξ, Q_W.
#   VC LP-L: Q_G, and Q_vc's Gaussian and uniform choice (for formats other than fixed point
#   the VC kernel draws one more uniform, to round values that cross a block or binade edge
#   back onto the format: counted in the "impl" column, not in the maths' need).
#   SGDLP-F / SGDLP-L: Q_G, Q_W.


@dataclass
class Contender:
    name: str
    fmt: str
    build: Callable  # (params, grads, key) -> (jitted run(carry) -> carry, carry)
    need: tuple[int, int] | None  # (Gaussians, uniforms) per element; None: no randomness
    impl_draws: tuple[int, int] | None = None
    target_bj: float | None = None
    target_rng: float | None = 1.3
    ref: str = "blackjax.sgld"  # the peer of the "× reference" column
    per_call: int = 1  # updates per step call (blackjax.sghmc: num_integration_steps)


def make_params(quick: bool):
    shapes = ({"w1": (64, 256), "b1": (256,), "w2": (128, 256)} if quick else
              {"w1": (512, 1024), "b1": (1024,), "w2": (256, 1024), "w3": (1024, 200),
               "b3": (200,)})
    keys = jax.random.split(jax.random.key(123), len(shapes))
    params = {k: 0.05 * jax.random.normal(kk, s) for (k, s), kk in zip(shapes.items(), keys,
                                                                        strict=True)}
    # Two gradient pytrees, used alternately: the update must read a gradient every step
    # (constant gradients would be constant-folded or hoisted out of the loop).
    grads = {k: 0.01 * jax.random.normal(jax.random.fold_in(kk, 1), (2, *s))
             for (k, s), kk in zip(shapes.items(), keys, strict=True)}
    return params, grads


def _grads_at(grads, i):
    return jax.tree.map(lambda g: jax.lax.dynamic_index_in_dim(g, i % 2, keepdims=False), grads)


def optax_contender(factory, steps, **kw):
    def build(params, grads, key):
        opt = factory(key=key, **kw)
        fmt = kw.get("weight_format", lps.FULL)
        p0 = lps.init_weights(params, fmt, key=jax.random.fold_in(key, 7))

        def run(carry, grads, key):
            def body(carry, i):
                p, st = carry
                u, st = opt.update(_grads_at(grads, i), st, p)
                return (optax.apply_updates(p, u), st), None
            return jax.lax.scan(body, carry, jnp.arange(steps))[0]

        return jax.jit(run), (p0, opt.init(params))
    return build


def blackjax_contender(alg_factory, steps, fmt=lps.FULL, num_integration_steps=None):
    def build(params, grads, key):
        estimator = lambda position, minibatch: minibatch  # noqa: E731
        alg = (alg_factory(estimator) if num_integration_steps is None
               else alg_factory(estimator, num_integration_steps))
        p0 = lps.init_weights(params, fmt, key=jax.random.fold_in(key, 7))

        def run(p, grads, key):
            def body(p, xs):
                k, i = xs
                return alg.step(k, p, _grads_at(grads, i), 1e-4), None
            return jax.lax.scan(body, p, (jax.random.split(key, steps), jnp.arange(steps)))[0]

        return jax.jit(run), p0
    return build


SGHMC_L = 10


def optax_sgdm(steps):
    """optax.sgd(1e-4, momentum=0.9) itself, as the peer of ``lps.sgd(momentum=0.9)``."""
    def factory(key, **kw):
        del key
        return optax.sgd(1e-4, momentum=0.9)
    return optax_contender(factory, steps)


def rng_baseline(n_normal: int, n_uniform: int, steps: int):
    """The random numbers alone: per step and leaf, ``n_normal`` Gaussians and ``n_uniform``
    32-bit uniforms (as stochastic rounding draws them), each added into a carry."""
    def build(params, grads, key):
        del grads
        leaves, treedef = jax.tree.flatten(params)

        per_leaf = n_normal + n_uniform

        def body(carry, k):
            out = []
            keys = jax.random.split(k, len(leaves) * per_leaf)  # one split per step
            for j, acc in enumerate(carry):
                ks = keys[j * per_leaf:(j + 1) * per_leaf]
                for i in range(n_normal):
                    acc = acc + jax.random.normal(ks[i], acc.shape, jnp.float32)
                for i in range(n_normal, n_normal + n_uniform):
                    bits = jax.random.bits(ks[i], acc.shape, jnp.uint32)
                    acc = acc + (bits >> 8).astype(jnp.float32) * jnp.float32(2.0**-24)
                out.append(acc)
            return out, None

        def run(carry, grads, key):
            return jax.lax.scan(body, carry, jax.random.split(key, steps))[0]

        return jax.jit(run), [jnp.zeros_like(x) for x in leaves]
    return build


def contenders(steps: int) -> list[Contender]:
    sgld = lambda **kw: optax_contender(lps.sgld, steps, learning_rate=1e-4, num_data=50_000,
                                        **kw)
    sgd = lambda **kw: optax_contender(lps.sgd, steps, learning_rate=1e-4, **kw)
    sghmc = lambda **kw: optax_contender(lps.sghmc, steps, learning_rate=1e-2,
                                         num_data=50_000, **kw)
    sgdm = lambda **kw: optax_contender(lps.sgd, steps, learning_rate=1e-4, momentum=0.9,
                                        **kw)
    lp = lambda fmt, acc: dict(weight_format=fmt, grad_format=fmt, accumulator=acc)
    return [
        Contender("blackjax.sgld", "FP32", blackjax_contender(blackjax.sgld, steps), (1, 0),
                  target_rng=None),
        Contender("lps.blackjax.sgld", "FP32", blackjax_contender(lps.blackjax.sgld, steps),
                  (1, 0)),
        Contender("lps.sgld (SGLD)", "FP32", sgld(), (1, 0), target_bj=1.0),
        Contender("lps.sgld SGLDLP-F", "fixed8", sgld(**lp(FIXED8, "full")), (1, 2),
                  target_bj=1.3),
        Contender("lps.sgld SGLDLP-F", "BFP8", sgld(**lp(BFP8, "full")), (1, 2)),
        Contender("lps.sgld naive SGLDLP-L", "fixed8", sgld(**lp(FIXED8, "low")), (1, 2)),
        Contender("lps.sgld naive SGLDLP-L", "BFP8", sgld(**lp(BFP8, "low")), (1, 2)),
        # v = 2ηT/N = 4e-9 < Δ²/4 = 1.5e-5 everywhere, a compile-time fact for fixed point:
        # Q_vc is then stochastic rounding plus a ±Δ kick (one uniform, no Gaussian), and
        # XLA drops the unused Gaussian.
        Contender("lps.sgld VC SGLDLP-L", "fixed8", sgld(**lp(FIXED8, "vc")), (0, 2)),
        Contender("lps.sgld VC SGLDLP-L", "BFP8", sgld(**lp(BFP8, "vc")), (1, 2),
                  impl_draws=(1, 3), target_bj=1.6),
        Contender("lps.blackjax.sgld VC SGLDLP-L", "BFP8", blackjax_contender(
            lambda g: lps.blackjax.sgld(g, **lp(BFP8, "vc")), steps, BFP8), (1, 2),
            impl_draws=(1, 3)),
        Contender("lps.sgd (SGD)", "FP32", sgd(), None, target_rng=None),
        Contender("lps.sgd SGDLP-F", "fixed8", sgd(**lp(FIXED8, "full")), (0, 2)),
        Contender("lps.sgd SGDLP-L", "BFP8", sgd(**lp(BFP8, "low")), (0, 2)),
        # SGHMC. blackjax.sghmc's step runs L = 10 Euler updates from a fresh momentum (one
        # Gaussian per element per update, plus one per call for the momentum): its time per
        # update is the reference. lps.sghmc (exact integration, Wang et al.) draws two
        # correlated Gaussians per update (ξᵛ, ξˣ); its LP modes round x and v.
        Contender("blackjax.sghmc (L=10)", "FP32", blackjax_contender(
            blackjax.sghmc, steps, num_integration_steps=SGHMC_L), (1, 0), target_rng=None,
            ref="blackjax.sghmc (L=10)", per_call=SGHMC_L),
        Contender("lps.blackjax.sghmc (L=10)", "FP32", blackjax_contender(
            lps.blackjax.sghmc, steps, num_integration_steps=SGHMC_L), (1, 0),
            ref="blackjax.sghmc (L=10)", per_call=SGHMC_L),
        Contender("lps.blackjax.sghmc (L=10) VC", "fixed8", blackjax_contender(
            lambda g, n: lps.blackjax.sghmc(g, n, **lp(FIXED8, "vc")), steps, FIXED8,
            num_integration_steps=SGHMC_L), (1, 2), ref="blackjax.sghmc (L=10)",
            per_call=SGHMC_L),
        Contender("lps.sghmc (SGHMC)", "FP32", sghmc(), (2, 0), ref="blackjax.sghmc (L=10)"),
        Contender("lps.sghmc SGHMCLP-F", "fixed8", sghmc(**lp(FIXED8, "full")), (2, 2),
                  ref="blackjax.sghmc (L=10)"),
        Contender("lps.sghmc naive SGHMCLP-L", "fixed8", sghmc(**lp(FIXED8, "low")), (2, 3),
                  ref="blackjax.sghmc (L=10)"),
        Contender("lps.sghmc VC SGHMCLP-L", "fixed8", sghmc(**lp(FIXED8, "vc")), (2, 3),
                  ref="blackjax.sghmc (L=10)"),
        Contender("lps.sghmc VC SGHMCLP-L", "BFP8", sghmc(**lp(BFP8, "vc")), (2, 3),
                  impl_draws=(2, 5), ref="blackjax.sghmc (L=10)"),
        Contender("lps.sgd momentum 0.9", "FP32", sgdm(), None, target_rng=None,
                  ref="optax.sgd momentum 0.9"),
        Contender("optax.sgd momentum 0.9", "FP32", optax_sgdm(steps), None, target_rng=None,
                  ref="optax.sgd momentum 0.9"),
    ]


def time_all(builds: dict, grads, key, repeats: int) -> dict[str, float]:
    """Median seconds per run of each compiled contender, interleaved."""
    compiled = {}
    for name, (run, carry) in builds.items():
        out = run(carry, grads, key)  # compile + warm up
        jax.block_until_ready(out)
        compiled[name] = (run, carry)
    times: dict[str, list[float]] = {name: [] for name in compiled}
    for _ in range(repeats):
        for name, (run, carry) in compiled.items():
            t0 = time.perf_counter()
            jax.block_until_ready(run(carry, grads, key))
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def bench(impl: str, quick: bool, steps: int, repeats: int, only: str | None = None):
    params, grads = make_params(quick)
    key = jax.random.key(0, impl=impl)
    cs = contenders(steps)
    if only:  # the chosen rows and the references they are compared with
        chosen = [c for c in cs if re.search(only, c.name)]
        refs = {c.ref for c in chosen}
        cs = [c for c in cs if c in chosen or c.name in refs]
    # Gradients are passed in (not closed over) so XLA cannot constant-fold them.
    builds = {}
    for c in cs:
        run, carry = c.build(params, grads, key)
        builds[c.name + " | " + c.fmt] = (run, carry)
    needs = {c.need for c in cs if c.need} | {c.impl_draws for c in cs if c.impl_draws}
    for need in sorted(needs):
        builds[f"rng {need}"] = rng_baseline(*need, steps)(params, grads, key)
    t = time_all(builds, grads, jax.random.fold_in(key, 1), repeats)
    per_step = {k: v / steps for k, v in t.items()}
    for c in cs:  # per update, not per call
        per_step[c.name + " | " + c.fmt] /= c.per_call
    rows = []
    for c in cs:
        ms = per_step[c.name + " | " + c.fmt] * 1e3
        x_bj = per_step[c.name + " | " + c.fmt] / per_step[c.ref + " | FP32"]
        x_rng = None if c.need is None else per_step[c.name + " | " + c.fmt] / per_step[
            f"rng {c.need}"]
        x_impl = None if c.impl_draws is None else per_step[c.name + " | " + c.fmt] / \
            per_step[f"rng {c.impl_draws}"]
        rows.append((c, ms, x_bj, x_rng, x_impl))
    rng_rows = {k: v * 1e3 for k, v in per_step.items() if k.startswith("rng")}
    n_params = sum(x.size for x in jax.tree.leaves(params))
    return rows, rng_rows, n_params


def fmt_ratio(x, target):
    if x is None:
        return "—"
    mark = "" if target is None else (" ✓" if x <= target else f" ✗ (target ≤ {target})")
    return f"{x:.2f}×{mark}"


def table(impl, rows, rng_rows):
    lines = [
        f"**Keys: `{impl}`**",
        "",
        "| method | format | random numbers (maths) | ms/update | × reference "
        "| × own random numbers (maths) | × random numbers drawn (impl) |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for c, ms, x_bj, x_rng, x_impl in rows:
        need = "none" if c.need is None else f"{c.need[0]}N + {c.need[1]}U"
        lines.append(
            f"| {c.name} | {c.fmt} | {need} | {ms:.3f} | "
            f"{fmt_ratio(x_bj, c.target_bj)} vs {c.ref} | "
            f"{fmt_ratio(x_rng, c.target_rng)} | "
            f"{fmt_ratio(x_impl, c.target_rng) if x_impl is not None else '—'} |")
    lines.append("")
    lines.append("Random numbers alone, ms/step: " + ", ".join(
        f"{k[5]}N + {k[8]}U {v:.3f}" for k, v in sorted(rng_rows.items())))
    lines.append("")
    return "\n".join(lines)


NOTES = """\
Notes (targets: FP `lps.sgld` ≤ 1.0× `blackjax.sgld`, SGLDLP-F fixed8 ≤ 1.3×, VC SGLDLP-L BFP8
≤ 1.6×, every mode ≤ 1.3× its own random numbers; ✓/✗ mark them in the tables):

- On CPU the step is bound by random-bit generation. JAX lowers threefry2x32 on CPU to a
  rolled loop over the whole array, and each 32-bit output costs a full 64-bit block; a
  low-precision mode needs 2–3 random words per element where `blackjax.sgld` needs 1, so the
  ×blackjax targets for SGLDLP-F and VC cannot be met with threefry keys without drawing fewer
  random numbers than the maths needs. With Philox keys the bits are cheap and the memory
  traffic of the update itself (SGLDLP-F reads θ, g, w and writes θ', w') becomes visible in the
  "× own random numbers" column of the SGD and VC rows.
- FP `lps.sgld` vs `blackjax.sgld`: the one extra cost is the non-finite check (a reduction
  over the gradients before the step, so that NaN/inf never enter the chain), a few percent.
- VC on block floating point: the VC kernel (lpsampling/vc.py) draws a fourth random word per
  element to round block-edge crossings back onto the format, and every block exponent (of g,
  of μ, of the VC output) costs a reduction pass, each preceded by a NaN pre-pass
  (`lax.cond(isnan(sum(x)))` in formats.py). Ideas for their owners: take the final rounding's
  uniform from the VC choice uniform (conditional on the chosen branch it is uniform on its
  sub-interval: rescaled, it is a fresh U(0, 1) independent of the branch), or round only the
  blocks whose exponent grew; fold the NaN masking into the max reduction (one pass); derive
  the output's block exponent from μ's plus an overflow test instead of a new reduction.
- SGHMC rows (added with issue 13): "× reference" is against `blackjax.sghmc` per
  update (its `step` runs `num_integration_steps` = 10 Euler updates from a freshly drawn
  momentum; the time per call is divided by 10). `lps.sghmc` is a different integrator
  (the exact Ornstein–Uhlenbeck step of Wang et al. 2024) that draws two correlated
  Gaussians per element and update (ξᵛ, ξˣ) where blackjax's Euler step draws one, and
  keeps the momentum in the optax state across steps; `lps.blackjax.sghmc` is the
  drop-in with blackjax's own integrator. `lps.sgd(momentum=0.9)` is timed against
  `optax.sgd(momentum=0.9)` (both through `optax.apply_updates`).
- Machine: a shared 2-core VM without an accelerator (no GPU was available for this run);
  the process is pinned to one core, which makes the ratios reproducible to a few percent
  while absolute times still vary with the load.
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run (small, no file)")
    parser.add_argument("--steps", type=int, default=None, help="steps per scan (default 50)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs (default 5)")
    parser.add_argument("--impl", nargs="+", default=None,
                        help="PRNG implementations to run with (default: threefry2x32 and "
                        "philox4x32; threefry2x32 only with --quick). Valid: threefry2x32, "
                        "threefry4x32, philox2x32, philox4x32, rbg, unsafe_rbg")
    parser.add_argument("--no-pin", action="store_true",
                        help="on CPU, do not pin the process to one core (pinning makes the "
                        "ratios reproducible on a shared machine)")
    parser.add_argument("--out", default=None, help="markdown file (default: "
                        "benchmarks/RESULTS_step.md unless --quick)")
    parser.add_argument("--only", default=None,
                        help="regular expression: run only the matching rows (and the "
                        "references they are compared with), e.g. 'sghmc|momentum'")
    args = parser.parse_args(argv)
    steps = args.steps or (5 if args.quick else 50)
    repeats = args.repeats or (3 if args.quick else 5)
    impls = args.impl or (["threefry2x32"] if args.quick else ["threefry2x32", "philox4x32"])
    out = args.out or (None if args.quick else
                       os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                    "RESULTS_step.md"))
    pinned = None
    if not args.no_pin and hasattr(os, "sched_setaffinity") and \
            os.environ.get("JAX_PLATFORMS", "cpu").startswith("cpu"):
        # Before the first JAX computation, so XLA's CPU threads inherit the affinity.
        pinned = max(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {pinned})
    device = jax.devices()[0]
    if device.platform != "cpu" and pinned is not None:
        os.sched_setaffinity(0, set(range(os.cpu_count())))
        pinned = None
    header = [
        "## One sampler step (gradients given): `benchmarks/bench_step.py`",
        "",
        f"- machine: {platform.machine()} {platform.processor() or ''}, "
        f"{os.cpu_count()} CPUs; JAX device: {device.device_kind} ({device.platform})",
        f"- date: {datetime.date.today().isoformat()}; jax {jax.__version__}, "
        f"optax {optax.__version__}, blackjax {blackjax.__version__}",
        "- command: `" + " ".join(["python benchmarks/bench_step.py", *sys.argv[1:]]) + "`",
        f"- {steps} steps per jitted `lax.scan`, median of {repeats} interleaved runs after a "
        "warm-up; optax rows include `optax.apply_updates`"
        + (f"; pinned to CPU core {pinned}." if pinned is not None else "."),
        "- ratios: to the reference (`blackjax.sgld`; SGHMC rows: `blackjax.sghmc` per "
        "update; SGD momentum: `optax.sgd`; same position, same steps, its noise from keys of "
        "the same implementation), and to the random numbers alone (per element: N Gaussians + "
        "U 32-bit uniforms, per leaf, same scan length). 'maths' = what the mode's formulas "
        "need; 'impl' = what the implementation draws where it differs (VC on block floating "
        "point draws one more uniform, to round block-edge crossings back onto the format).",
    ]
    sections = []
    for impl in impls:
        rows, rng_rows, n_params = bench(impl, args.quick, steps, repeats, args.only)
        if not sections:
            header.append(f"- pytree: {n_params:,} float32 parameters in "
                          f"{3 if args.quick else 5} leaves")
            header.append("")
        sections.append(table(impl, rows, rng_rows))
        print(sections[-1], flush=True)
    if hasattr(os, "getloadavg"):  # a busy machine makes every time, and the ratios, noisy
        header.insert(-1, f"- load average at the end of the run: "
                          f"{os.getloadavg()[0]:.1f} (other jobs share the machine)")
    text = "\n".join(header) + "\n" + "\n".join(sections) + "\n" + NOTES
    print("\n".join(header))
    if out:
        with open(out, "w") as f:
            f.write(text)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
