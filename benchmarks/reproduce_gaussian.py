"""Figure 1 of Zhang, Wilson & De Sa (ICML 2022), reproduced: stationary variance of
low-precision SGLD on a standard Gaussian.

Target N(0, 1), U(θ) = θ²/2, stochastic gradient g = θ + 0.1·ξ, start θ₀ = 0; weights and
gradients on ``FixedPoint(8, 3)`` (Δ = 1/8) with stochastic rounding. For each step size α the
three samplers are run through the optax face,
``lps.sgld(α, num_data=1, weight_format=fmt, grad_format=fmt, accumulator=...)``:

* ``"low"``  naive SGLDLP-L: θ ← Q(θ − α·Q(g) + √(2α)·ξ)
* ``"vc"``   VC SGLDLP-L:    θ ← Q_vc(θ − α·Q(g), 2α)
* ``"full"`` SGLDLP-F:       θ ← θ − α·Q(g(Q(θ))) + √(2α)·ξ, the samples are the grid
  weights Q(θ) the model runs on (whose variance exceeds θ's by about Δ²/6 ≈ 0.003).

The simulation is the library's own
:func:`lpsampling.experiments.gaussian.gaussian_experiment` (the CLI's): many independent
chains at once, ``jax.vmap`` over chains inside one jit with ``lax.scan``. Each chain runs
``--scale/α`` steps (the mixing time is ~1/α steps); the first half is burn-in. The
variance is pooled over chains and post-burn-in steps; its Monte-Carlo standard error comes
from batch means across chains (the chains split into ``--batches`` groups).
This script adds the sweep over α, the law, the log-log figure and the report.

The law for naive SGLDLP-L (the paper's Theorem 2), valid when √(2α) ≪ Δ: stationary
variance ≈ Δ/√(πα) (2.23 at α = 1e-3, 7.05 at 1e-4). VC and F: 1. At α = 1e-2,
√(2α) = 0.14 > Δ = 0.125, so the law does not apply there (and at 3e-3, √(2α) = 0.077,
only marginally).

``--family sghmc`` runs the SGHMC family instead (Wang, Chen, Song & Zhang 2024; the optax
face ``lps.sghmc(η, friction=3, inverse_mass=2, ...)``, their Gaussian settings, time step
η = α) with naive SGLDLP-L at the same step value beside it, and writes its own figure and
fragment (``gaussian_variance_sghmc.png``, ``RESULTS_gaussian_sghmc.md``).

Run::

    python benchmarks/reproduce_gaussian.py            # full run (< 10 min on 2 cores)
    python benchmarks/reproduce_gaussian.py --quick    # smoke run (seconds)
    python benchmarks/reproduce_gaussian.py --family sghmc

Writes the table to stdout, the figure to ``benchmarks/figures/gaussian_variance.png`` and,
unless ``--quick`` (or with ``--write``), the report to ``benchmarks/RESULTS_gaussian.md``.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import sys
import time
from pathlib import Path

import jax
import numpy as np
from _machine import machine_line  # a sibling module: benchmarks/ is on sys.path

import lpsampling as lps
from lpsampling.atomic import atomic_open, write_text_atomic

HERE = Path(__file__).resolve().parent
FMT = lps.FixedPoint(8, 3)
DELTA = FMT.gap
SIGMA = 0.1
ALPHAS = (1e-2, 3e-3, 1e-3, 3e-4, 1e-4)
ACCUMULATORS = (("low", "naive"), ("vc", "VC"), ("full", "F"))
# --family sghmc: (gaussian_experiment method, column label)
SGHMC_METHODS = (("low", "naive SGLDLP-L"), ("hmc-low", "naive SGHMCLP-L"),
                 ("hmc-vc", "VC SGHMCLP-L"), ("hmc-full", "SGHMCLP-F"))
SGHMC_ALPHAS = (3e-2, 1e-2, 3e-3, 1e-3)


def naive_law(alpha: float) -> float:
    """Stationary variance of naive SGLDLP-L when √(2α) ≪ Δ (Theorem 2)."""
    return DELTA / math.sqrt(math.pi * alpha)


def simulate(alpha: float, *, num_chains: int, steps: int, seed: int, index: int,
             methods=ACCUMULATORS) -> dict:
    """The samplers at one α, through
    :func:`lpsampling.experiments.gaussian.gaussian_experiment` (vmapped chains, one jit
    and ``lax.scan`` per sampler, the first half burn-in)."""
    from lpsampling.experiments.gaussian import gaussian_experiment

    t0 = time.perf_counter()
    res = gaussian_experiment(
        alphas=(alpha,), methods=tuple(a for a, _ in methods), fmt=FMT,
        num_chains=num_chains, num_steps=steps, grad_noise=SIGMA,
        key=jax.random.fold_in(jax.random.key(seed), index), burn_in=0.5,
        max_samples_per_chain=1)
    seconds = time.perf_counter() - t0
    out = {}
    for acc, _ in methods:
        r = res.get(acc, alpha)
        out[acc] = {"steps": r.num_steps, "burn_in": r.num_steps - r.kept_steps,
                    "chain_variances": np.asarray(r.chain_variances, np.float64),
                    "variance": r.variance, "seconds": seconds / len(methods),
                    "finite": bool(np.all(np.isfinite(r.chain_variances)))}
    return out


def batch_means_se(chain_variances: np.ndarray, batches: int) -> tuple[float, float]:
    """The variance (mean of the per-chain second moments about the pooled mean) and its
    standard error from batch means: the chains split into ``batches`` groups."""
    v = np.asarray(chain_variances, np.float64)
    b = max(2, min(batches, len(v)))
    means = np.array([g.mean() for g in np.array_split(v, b)])
    return float(v.mean()), float(means.std(ddof=1) / math.sqrt(b))




def save_figure(results: dict, alphas, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    grid = np.geomspace(min(alphas) / 1.5, max(alphas) * 1.5, 100)
    ax.plot(grid, [naive_law(a) for a in grid], "k--", lw=1,
            label=r"law $\Delta/\sqrt{\pi\alpha}$ (naive)")
    ax.axhline(1.0, color="0.5", lw=1, ls=":", label="target variance 1")
    styles = {"low": ("o", "C3"), "vc": ("s", "C0"), "full": ("^", "C2")}
    for acc, label in ACCUMULATORS:
        v = [results[(a, acc)]["var"] for a in alphas]
        e = [results[(a, acc)]["se"] for a in alphas]
        m, c = styles[acc]
        ax.errorbar(alphas, v, yerr=e, fmt=m + "-", color=c, ms=5, capsize=3,
                    label="SGLDLP-F" if acc == "full" else f"{label} SGLDLP-L")
    ax.axvspan(DELTA**2 / 2 / 4, max(grid), color="0.92", zorder=0,
               label=r"$\sqrt{2\alpha} > \Delta/2$: law not asymptotic")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ticks = [0.6, 1, 2, 3, 4, 6, 8]
    ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel(r"step size $\alpha$")
    ax.set_ylabel("stationary variance")
    ax.set_title(r"N(0,1), FixedPoint(8,3) ($\Delta$=1/8), stochastic rounding")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    try:
        with atomic_open(path, "wb") as fh:
            fig.savefig(fh, format="png", dpi=120)
    finally:
        plt.close(fig)


def save_sghmc_figure(results: dict, alphas, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    ax.axhline(1.0, color="0.5", lw=1, ls=":", label="target variance 1")
    styles = {"low": ("o--", "C3"), "hmc-low": ("o-", "C1"), "hmc-vc": ("s-", "C0"),
              "hmc-full": ("^-", "C2")}
    for m, label in SGHMC_METHODS:
        v = [results[(a, m)]["var"] for a in alphas]
        e = [results[(a, m)]["se"] for a in alphas]
        f, c = styles[m]
        ax.errorbar(alphas, v, yerr=e, fmt=f, color=c, ms=5, capsize=3, label=label)
    ax.set_xscale("log")
    ax.set_xlabel(r"step size $\alpha$ (SGLD) = time step $\eta$ (SGHMC, u=2, $\gamma$=3)")
    ax.set_ylabel("stationary variance")
    ax.set_title(r"SGHMC vs SGLD on N(0,1), FixedPoint(8,3) ($\Delta$=1/8)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    try:
        with atomic_open(path, "wb") as fh:
            fig.savefig(fh, format="png", dpi=120)
    finally:
        plt.close(fig)


def run_sghmc(args, steps_for) -> int:
    """``--family sghmc``: the SGHMC family and naive SGLDLP-L at the same step values."""
    alphas = sorted(args.alphas or SGHMC_ALPHAS, reverse=True)
    t_start = time.perf_counter()
    results = {}
    for i, a in enumerate(alphas):
        runs = simulate(a, num_chains=args.chains, steps=steps_for(a), seed=args.seed,
                        index=100 + i, methods=SGHMC_METHODS)
        for m, _ in SGHMC_METHODS:
            r = runs[m]
            r["var"], r["se"] = batch_means_se(r["chain_variances"], args.batches)
            results[(a, m)] = r
            print(f"  α={a:g} {m:>8}: {r['steps']} steps, var {r['var']:.3f} ± {r['se']:.3f}",
                  file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - t_start
    lines = ["| α = η | steps (burn-in) | " + " | ".join(lab for _, lab in SGHMC_METHODS)
             + " | excess ratio SGHMC/SGLD (naive) |",
             "|---:|---:|" + "---:|" * (len(SGHMC_METHODS) + 1)]
    for a in alphas:
        r = {m: results[(a, m)] for m, _ in SGHMC_METHODS}
        cells = [f"{r[m]['var']:.3f} ± {r[m]['se']:.3f}" for m, _ in SGHMC_METHODS]
        ratio = (r["hmc-low"]["var"] - 1) / (r["low"]["var"] - 1)
        lines.append(f"| {a:g} | {r['low']['steps']:,} ({r['low']['burn_in']:,}) | "
                     + " | ".join(cells) + f" | {ratio:.2f} |")
    table = "\n".join(lines)
    print(table)
    fig_path = Path(args.figure if args.figure_given else
                    HERE / "figures" / "gaussian_variance_sghmc.png")
    save_sghmc_figure(results, alphas, fig_path)
    print(f"figure: {fig_path}")
    if args.write:
        cmd = " ".join(["python", "benchmarks/reproduce_gaussian.py"] + sys.argv[1:])
        md = [
            "## Low-precision SGHMC on N(0, 1) (issue 13)\n",
            f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
            f"- machine: {machine_line()} (shared with other jobs while it ran)",
            f"- versions: Python {platform.python_version()}, jax {jax.__version__}, "
            f"numpy {np.__version__}, lpsampling {lps.__version__}",
            f"- command: `{cmd}` ({elapsed:.0f} s in all)",
            f"- setup: as Figure 1 (N(0,1), gradient θ + {SIGMA}·ξ, θ₀ = 0, {FMT!r}, "
            "stochastic rounding), SGHMC through the optax face `lps.sghmc(η, num_data=1, "
            "friction=3, inverse_mass=2, ...)` (the follow-up paper's Gaussian settings; the "
            "exact Ornstein–Uhlenbeck step, the θ drift with the exact solution's minus "
            "sign) with time step η equal to SGLD's α; naive SGLDLP-L at the same step "
            f"value beside it. {args.chains} chains per cell, {args.scale:g}/α steps, the "
            f"first half burn-in; ± one standard error from batch means over {args.batches} "
            "batches of chains.",
            "",
            table,
            "",
            "Mechanisms (the numbers are above): SGHMCLP-F has the discretisation bias of "
            "the exact-OU step with a frozen gradient (the exact stationary variance of the "
            "linear chain is 1.031 at η = 0.09, 1.010 at 0.03, 1.003 at 0.01). VC "
            "SGHMCLP-L as the paper defines it drops the ξˣ/ξᵛ correlation (≈ 0.87; without "
            "it the linear chain's variance is 0.82 at η = 0.09, 0.93 at 0.03, 0.97 at 0.01) "
            "and its x noise, Var ξˣ ≈ (2/3)uγη³, lies far below Δ²/4 = 0.0039, where Q_vc "
            "is stochastic rounding with excess variance, growing as η shrinks. The last "
            "column is naive SGHMCLP-L's excess over 1 divided by naive SGLDLP-L's at the "
            "same step value (below 1: SGHMC suffers less).",
            "",
            f"Figure: `{os.path.relpath(fig_path, HERE.parent)}`.",
            "",
        ]
        out = write_text_atomic(args.write, "\n".join(md))
        print(f"report: {out}")
    bad = [k for k, r in results.items() if not r["finite"]]
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--alphas", type=float, nargs="+", default=None,
                   help="step sizes (default: 1e-2 3e-3 1e-3 3e-4 1e-4; --quick: 1e-2 1e-3)")
    p.add_argument("--chains", type=int, default=512)
    p.add_argument("--scale", type=float, default=20.0, help="steps per chain = scale/α")
    p.add_argument("--batches", type=int, default=16, help="batches of chains for the SE")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--figure", default=str(HERE / "figures" / "gaussian_variance.png"))
    p.add_argument("--write", default=None,
                   help="markdown report path (default: benchmarks/RESULTS_gaussian.md, "
                        "none with --quick)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: α ∈ {1e-2, 1e-3}, 64 chains, 2000 steps each")
    p.add_argument("--family", choices=("sgld", "sghmc"), default="sgld",
                   help="sgld: Figure 1 (default); sghmc: the SGHMC family beside naive "
                        "SGLDLP-L (own figure and RESULTS_gaussian_sghmc.md)")
    args = p.parse_args(argv)
    args.figure_given = args.figure != p.get_default("figure")
    if args.family == "sghmc" and args.write is None and not args.quick:
        args.write = str(HERE / "RESULTS_gaussian_sghmc.md")
    if args.quick:
        args.alphas = args.alphas or [1e-2, 1e-3]
        args.chains, args.batches = 64, 8
        steps_for = lambda a: 2000  # noqa: E731
    else:
        steps_for = lambda a: int(math.ceil(args.scale / a))  # noqa: E731
        if args.write is None:
            args.write = str(HERE / "RESULTS_gaussian.md")
    if args.family == "sghmc":
        return run_sghmc(args, steps_for)
    alphas = sorted(args.alphas or ALPHAS, reverse=True)

    t_start = time.perf_counter()
    results = {}
    for i, a in enumerate(alphas):
        runs = simulate(a, num_chains=args.chains, steps=steps_for(a), seed=args.seed, index=i)
        for acc, _ in ACCUMULATORS:
            r = runs[acc]
            r["var"], r["se"] = batch_means_se(r["chain_variances"], args.batches)
            results[(a, acc)] = r
            print(f"  α={a:g} {acc:>4}: {r['steps']} steps, var {r['var']:.3f} ± {r['se']:.3f}",
                  file=sys.stderr, flush=True)
        print(f"  α={a:g}: {3 * runs['low']['seconds']:.1f} s", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - t_start

    head = ("| α | √(2α)/Δ | steps (burn-in) | law naive Δ/√(πα) | naive SGLDLP-L | "
            "VC SGLDLP-L | SGLDLP-F |")
    lines = [head, "|---:|---:|---:|---:|---:|---:|---:|"]
    for a in alphas:
        r = {acc: results[(a, acc)] for acc, _ in ACCUMULATORS}
        ratio = math.sqrt(2 * a) / DELTA
        law = f"{naive_law(a):.2f}" + (" (n/a: √(2α) ≥ Δ)" if ratio >= 1 else
                                        " (marginal)" if ratio > 0.5 else "")
        cells = [f"{r[acc]['var']:.3f} ± {r[acc]['se']:.3f}" for acc, _ in ACCUMULATORS]
        lines.append(f"| {a:g} | {ratio:.2f} | {r['low']['steps']:,} ({r['low']['burn_in']:,})"
                     f" | {law} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    print(f"\n{args.chains} chains per cell; total {elapsed:.1f} s")

    fig_path = Path(args.figure)
    save_figure(results, alphas, fig_path)
    print(f"figure: {fig_path}")

    if args.write:
        cmd = " ".join(["python", "benchmarks/reproduce_gaussian.py"] + sys.argv[1:])
        md = [
            "# Figure 1 reproduced: stationary variance on N(0, 1)\n",
            f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
            f"- machine: {machine_line()}",
            f"- versions: Python {platform.python_version()}, jax {jax.__version__}, "
            f"numpy {np.__version__}, lpsampling {lps.__version__}",
            f"- command: `{cmd}` ({elapsed:.0f} s in all)",
            f"- setup: target N(0,1), stochastic gradient θ + {SIGMA}·ξ, θ₀ = 0, "
            f"weights and gradients {FMT!r} (Δ = {DELTA}), stochastic rounding; optax face "
            "`lps.sgld(α, num_data=1, weight_format=fmt, grad_format=fmt, accumulator=...)`; "
            f"{args.chains} chains per cell (`lpsampling.gaussian.gaussian_experiment`: "
            "vmapped chains, one jit per sampler, `lax.scan`), "
            f"{args.scale:g}/α steps per chain, the first half burn-in; variance pooled over "
            f"chains and post-burn-in steps, ± one standard error from batch means over "
            f"{args.batches} batches of chains.",
            "- F: the variance is that of the grid weights Q(θ) the model runs on (θ's "
            "variance plus about Δ²/6 ≈ 0.003).",
            "",
            table,
            "",
            "The law Δ/√(πα) (Theorem 2) holds for √(2α) ≪ Δ. At α = 1e-2, √(2α) = 0.14 "
            "exceeds Δ = 0.125, so the law does not apply (the naive chain's variance is "
            "then close to, not far above, 1); at 3e-3 (√(2α)/Δ = 0.62) it is only marginal. "
            "At 1e-3 and below naive SGLDLP-L's variance grows like 1/√α as the law says, "
            "while VC SGLDLP-L and SGLDLP-F stay at 1. The paper reports 2.23 (1e-3) and "
            "7.05 (1e-4) from the law, and an independent simulation gave 2.25 and 7.05.",
            "",
            f"Figure: `{os.path.relpath(fig_path, HERE.parent)}`.",
            "",
        ]
        out = write_text_atomic(args.write, "\n".join(md))
        print(f"report: {out}")
    bad = [k for k, r in results.items() if not r["finite"]]
    if bad:
        print(f"non-finite moments in {bad}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
