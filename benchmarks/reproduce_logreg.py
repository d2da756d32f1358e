"""A posterior with a ground truth: low-precision SGLD on Bayesian logistic regression,
measured against NUTS, as a function of the grid gap Δ.

Problem (:mod:`lpsampling.experiments.logreg`): scikit-learn's bundled breast_cancer data
(569 × 30, standardized, plus an intercept: P = 31), prior θ ~ N(0, I). Gold standard:
``blackjax.nuts`` in float64 (window adaptation, dense mass matrix, 4 chains), with split-R̂
and bulk ESS reported.

Samplers (the optax face ``lps.sgld`` / ``lps.sgd``, full-batch gradients, ``jax.vmap``
over chains), step α = η/N = 1e-3 in U units (η = 0.569 on the mean loss; noise variance
2α), chains started at NUTS draws (independent, already near stationarity), a burn-in,
then draws every ``--thin`` steps:

* SGLD (full precision), the floor every low-precision run shares (its discretization bias
  at this α and its Monte-Carlo error);
* SGLDLP-F, naive SGLDLP-L, VC SGLDLP-L with weights *and* gradients on the same format
  (the paper's Figure-1 rule); SGLDLP-F also with full-precision gradients
  ("weights only"), which isolates Theorem 1's Δ_W terms;
* SGD, SGDLP-F, SGDLP-L: point estimates (the last iterate's model weights), measured as
  the distance to the exact MAP;

on fixed point ``FixedPoint(wl, wl − 3)`` (range [−4, 4), Δ = 2^(3−wl)) and block floating
point ``BlockFloatingPoint(wl, axis=None)`` (one exponent for the 31 weights, one for the
gradient; Δ = 2^(e+2−wl) with e the median block exponent of the NUTS draws), wl = 4 … 10.

Metrics (standardized by the NUTS marginals; see
:func:`lpsampling.experiments.logreg.posterior_errors`): RMS error of the posterior mean,
RMS relative error of the marginal standard deviations, sliced W₂, MMD (Gaussian kernel,
median-heuristic bandwidth), and the mean/std differences against the full-precision SGLD
chains run with the same keys. Slopes: weighted least squares of log10(error) on
log10(Δ) over the points clearly above the floor (rule in the report).

Run::

    python benchmarks/reproduce_logreg.py            # full run: 33 min wall on 2 cores shared
                                                     # with ~5 other jobs (it got ~1/4 core)
    python benchmarks/reproduce_logreg.py --quick    # smoke run (< 1 min)

Writes the tables to stdout, figures to ``benchmarks/figures/logreg_*.png`` and, unless
``--quick`` (or with ``--write``), the report to ``benchmarks/RESULTS_logreg.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
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
from lpsampling.experiments import logreg as L

HERE = Path(__file__).resolve().parent
ALPHA = 1e-3
FINE = lps.FixedPoint(24, 20)  # Δ ≈ 1e-6: the paired metrics' numerical floor
SAMPLERS = ("sgld_f", "sgld_naive", "sgld_vc")
POINT = ("sgd_f", "sgd_l")
METRICS = {
    "mean": "posterior mean, RMS error / posterior sd",
    "std": "marginal sd, RMS relative error",
    "sw": "sliced W2 to NUTS (standardized)",
    "mmd": "MMD to NUTS (Gaussian kernel)",
    "mean_vs_paired": "mean, RMS diff. vs FP SGLD (same keys)",
    "std_vs_paired": "sd, RMS diff. vs FP SGLD (same keys)",
}
LABELS = {**{k: v[0] for k, v in L.LOGREG_METHODS.items()},
          "sgld_f_gfull": "SGLDLP-F, weights only"}
STYLE = {"sgld_f": ("^", "C2"), "sgld_naive": ("o", "C3"), "sgld_vc": ("s", "C0"),
         "sgld_f_gfull": ("v", "C8"), "sgd_f": ("D", "C4"), "sgd_l": ("x", "C1")}


def fmt_for(family: str, wl: int) -> lps.Format:
    if family == "fixed":
        return lps.FixedPoint(wl, wl - 3)
    return lps.BlockFloatingPoint(wl, axis=None)


def gap_for(family: str, wl: int, block_exp: int) -> float:
    return 2.0 ** (3 - wl) if family == "fixed" else 2.0 ** (block_exp + 2 - wl)


def fit_slope(deltas, values, ses, floor: float | None) -> dict:
    """WLS fit of log10(value) = a + s·log10(Δ) over the points with value ≥ 2·floor and
    value ≥ 3·SE (clearly above the full-precision floor and the noise); weights from
    SE(log10 v) = SE/(v ln 10). The slope's SE is the WLS one, inflated by the Birge ratio
    sqrt(χ²/dof) when that exceeds 1. Needs ≥ 3 points."""
    d, v, e = (np.asarray(a, np.float64) for a in (deltas, values, ses))
    ok = (v > 0) & (v >= 3 * e) & np.isfinite(v)
    if floor is not None:
        ok &= v >= 2 * floor
    if ok.sum() < 3:
        return {"slope": None, "se": None, "n": int(ok.sum()), "deltas": d[ok].tolist()}
    x, y = np.log10(d[ok]), np.log10(v[ok])
    sy = np.maximum(e[ok] / (v[ok] * math.log(10)), 1e-3)
    w = 1 / sy**2
    a = np.vstack([np.ones_like(x), x]).T
    cov = np.linalg.inv(a.T @ (a * w[:, None]))
    coef = cov @ (a.T @ (w * y))
    chi2 = float(np.sum(w * (y - a @ coef) ** 2))
    dof = len(x) - 2
    scale = max(1.0, math.sqrt(chi2 / dof)) if dof > 0 else 1.0
    return {"slope": float(coef[1]), "se": float(math.sqrt(cov[1, 1]) * scale),
            "intercept": float(coef[0]), "n": int(ok.sum()),
            "deltas": d[ok].tolist()}


def slope_text(fit: dict) -> str:
    if fit["slope"] is None:
        return f"n/a ({fit['n']} pts)"
    return f"{fit['slope']:.2f} ± {fit['se']:.2f} ({fit['n']} pts)"


def save_figure(rows, fits, floors, family, path: Path, *, quick: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [*METRICS, "point"]
    fig, axes = plt.subplots(2, 4, figsize=(17, 7.8))
    axes = axes.ravel()
    for ax, metric in zip(axes, panels, strict=False):
        methods = ([*SAMPLERS, "sgld_f_gfull"] if metric != "point" else list(POINT))
        for m in methods:
            rs = sorted((r for r in rows if r["family"] == family and r["method"] == m),
                        key=lambda r: r["delta"])
            rs = [r for r in rs if metric in r["metrics"]]
            if not rs:
                continue
            d = [r["delta"] for r in rs]
            v = [r["metrics"][metric][0] for r in rs]
            e = [r["metrics"][metric][1] for r in rs]
            fit = fits.get((family, m, metric))
            label = LABELS[m] + (f": slope {slope_text(fit).split(' (')[0]}" if fit else "")
            mk, c = STYLE[m]
            ax.errorbar(d, v, yerr=e, fmt=mk + "-", color=c, ms=4, capsize=2, lw=1,
                        label=label)
            if fit and fit["slope"] is not None:
                xs = np.array(fit["deltas"])
                ax.plot(xs, 10 ** (fit["intercept"] + fit["slope"] * np.log10(xs)), ":",
                        color=c, lw=2)
        if floors.get(metric) is not None and metric != "point":
            f, fe = floors[metric]
            ax.axhspan(max(f - fe, 1e-6), f + fe, color="0.85", zorder=0)
            ax.axhline(f, color="0.4", ls="--", lw=1,
                       label=f"floor: SGLDLP-F on {FINE!r}" if metric.endswith("_paired")
                       else "SGLD full precision")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(r"grid gap $\Delta$")
        ax.set_title(METRICS.get(metric, "SGD: last iterate, RMS dist. to MAP / sd "
                                 f"(float32 SGD: {floors['point'][0]:.0e})"),
                     fontsize=9)
        ax.legend(fontsize=6.5, loc="best")
    axes[-1].axis("off")
    what = ("FixedPoint(wl, wl-3), range [-4, 4)" if family == "fixed"
            else "BlockFloatingPoint(wl, axis=None)")
    fig.suptitle(f"Bayesian logistic regression (breast_cancer, P=31) vs NUTS: {what}, "
                 f"wl = {', '.join(sorted({str(r['wl']) for r in rows}, key=int))}; "
                 r"$\alpha$ = 1e-3" + (" [--quick]" if quick else ""), fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_open(path, "wb") as fh:
            fig.savefig(fh, format="png", dpi=100)
    finally:
        plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--wls", type=int, nargs="+", default=None,
                   help="word lengths (default 4 5 6 7 8 9 10; --quick: 4 7)")
    p.add_argument("--families", nargs="+", default=None, choices=("fixed", "bfp"),
                   help="formats (default both; --quick: fixed)")
    p.add_argument("--chains", type=int, default=128)
    p.add_argument("--burn", type=int, default=1500, help="burn-in steps per chain")
    p.add_argument("--kept", type=int, default=100, help="draws per chain after burn-in")
    p.add_argument("--thin", type=int, default=15, help="steps between draws")
    p.add_argument("--sgd-chains", type=int, default=16)
    p.add_argument("--sgd-steps", type=int, default=1500)
    p.add_argument("--nuts-chains", type=int, default=4)
    p.add_argument("--nuts-warmup", type=int, default=1000)
    p.add_argument("--nuts-samples", type=int, default=2000)
    p.add_argument("--no-gfull", action="store_true",
                   help="skip the SGLDLP-F runs with full-precision gradients")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--figure-dir", default=str(HERE / "figures"))
    p.add_argument("--write", default=None,
                   help="markdown report (default benchmarks/RESULTS_logreg.md; none with "
                        "--quick)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: fixed point, wl 4 and 7, 16 chains, short NUTS")
    args = p.parse_args(argv)
    if args.quick:
        args.wls = args.wls or [4, 7]
        args.families = args.families or ["fixed"]
        args.chains, args.burn, args.kept, args.thin = 16, 200, 16, 5
        args.sgd_chains, args.sgd_steps = 8, 200
        args.nuts_chains, args.nuts_warmup, args.nuts_samples = 2, 300, 200
        args.no_gfull = True
    elif args.write is None:
        args.write = str(HERE / "RESULTS_logreg.md")
    wls = sorted(args.wls or range(4, 11))
    families = args.families or ["fixed", "bfp"]
    key = jax.random.key(args.seed)
    k_nuts, k_chains, k_metric, k_sgd = jax.random.split(key, 4)
    t_start = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - t_start:7.1f} s] {msg}", file=sys.stderr, flush=True)

    problem = L.breast_cancer_problem(prior_std=1.0)
    theta_map = L.map_estimate(problem)
    eta = ALPHA * problem.num_data
    t0 = time.perf_counter()
    ref = L.nuts_reference(problem, key=k_nuts, num_chains=args.nuts_chains,
                           num_warmup=args.nuts_warmup, num_samples=args.nuts_samples)
    nuts_s = time.perf_counter() - t0
    log(f"NUTS: {ref.summary()}")
    block_exp = int(np.median(np.floor(np.log2(np.abs(ref.flat).max(1)))))
    # odd-indexed NUTS draws: posterior_errors scores against even-indexed ones
    odd = ref.flat[1::2]
    starts = odd[np.linspace(0, len(odd) - 1, args.chains).astype(int)]
    run_kw = dict(learning_rate=eta, num_chains=args.chains, num_burn=args.burn,
                  num_kept=args.kept, thin=args.thin, init=starts)
    metric_kw = dict(key=k_metric, num_groups=8 if args.chains >= 16 else 2)
    if args.quick:
        metric_kw.update(num_points=200, num_reference_points=300, num_projections=64)

    fp = L.run_chains(problem, "sgld", key=k_chains, **run_kw)
    floor_metrics = L.posterior_errors(fp, ref, **metric_kw)
    # the numerical floor of the paired differences: SGLDLP-F on a grid of gap 2^-20 (no
    # visible quantization) still drifts from the float32 full-precision chain, since
    # float32 rounding differences accumulate over thousands of steps
    fine = L.run_chains(problem, "sgld_f", key=k_chains, weight_format=FINE,
                        grad_format=lps.FULL, **run_kw)
    paired_floor = L.posterior_errors(fine, ref, paired=fp, **metric_kw)
    for k in ("mean_vs_paired", "std_vs_paired"):
        floor_metrics[k] = paired_floor[k]
    # the NUTS-vs-NUTS value of the per-group distances (held-out NUTS draws, same sizes):
    # what a perfect sampler with independent draws would score
    log(f"SGLD FP: {floor_metrics}")
    rows = []
    runs = [(fam, wl, m, None) for fam in families for wl in wls for m in SAMPLERS]
    if not args.no_gfull:
        runs += [("fixed", wl, "sgld_f_gfull", lps.FULL) for wl in wls
                 if "fixed" in families]
    for fam, wl, m, gfmt in runs:
        fmt = fmt_for(fam, wl)
        t0 = time.perf_counter()
        method = "sgld_f" if m == "sgld_f_gfull" else m
        s = L.run_chains(problem, method, key=k_chains, weight_format=fmt,
                         grad_format=gfmt, **run_kw)
        sec = time.perf_counter() - t0
        # VC's quantizer draws its own noise, so its chains are not coupled to the
        # full-precision ones: a paired difference would be Monte-Carlo noise
        met = L.posterior_errors(s, ref, paired=None if method == "sgld_vc" else fp,
                                 **metric_kw)
        clamp = float(np.mean(np.abs(s) >= 4.0 - 2.0 ** (3 - wl))) if fam == "fixed" else 0.0
        rows.append({"family": fam, "wl": wl, "method": m, "format": repr(fmt),
                     "delta": gap_for(fam, wl, block_exp), "metrics": met, "seconds": sec,
                     "at_range_edge": clamp})
        log(f"{fam} wl={wl} {m}: {sec:.1f} s, " + ", ".join(
            f"{k} {v[0]:.4f}±{v[1]:.4f}" for k, v in met.items()))
    # SGD: point estimates from the MAP; distance of the last iterate to the exact MAP
    sgd_kw = dict(learning_rate=eta, num_chains=args.sgd_chains,
                  num_burn=args.sgd_steps - 1, num_kept=1, init=theta_map)
    sd = ref.std
    sgd_fp = L.run_chains(problem, "sgd", key=k_sgd, **sgd_kw)[:, -1]
    sgd_floor = L.point_error(sgd_fp, theta_map, sd)
    for fam in families:
        for wl in wls:
            fmt = fmt_for(fam, wl)
            for m in POINT:
                pts = L.run_chains(problem, m, key=k_sgd, weight_format=fmt, **sgd_kw)[:, -1]
                rows.append({"family": fam, "wl": wl, "method": m, "format": repr(fmt),
                             "delta": gap_for(fam, wl, block_exp),
                             "metrics": {"point": L.point_error(pts, theta_map, sd)},
                             "seconds": None, "at_range_edge": 0.0})
    elapsed = time.perf_counter() - t_start
    log(f"done in {elapsed:.0f} s")

    floors = {k: floor_metrics.get(k) for k in METRICS}
    floors["point"] = sgd_floor
    fits = {}
    for fam in families:
        for m in (*SAMPLERS, "sgld_f_gfull", *POINT):
            for metric in (*METRICS, "point"):
                rs = [r for r in rows if r["family"] == fam and r["method"] == m
                      and metric in r["metrics"]]
                if len(rs) < 2:
                    continue
                floor = floors[metric][0] if floors.get(metric) else None
                fits[(fam, m, metric)] = fit_slope(
                    [r["delta"] for r in rs], [r["metrics"][metric][0] for r in rs],
                    [r["metrics"][metric][1] for r in rs], floor)

    fig_paths = {}
    for fam in families:
        path = Path(args.figure_dir) / f"logreg_{fam}{'_quick' if args.quick else ''}.png"
        save_figure(rows, fits, floors, fam, path, quick=args.quick)
        fig_paths[fam] = path
        print(f"figure: {path}")

    # -- tables ----------------------------------------------------------------------
    def cell(v):
        return f"{v[0]:.4f} ± {v[1]:.4f}"

    out = []
    out.append("| format | wl | Δ | method | " + " | ".join(METRICS) + " |")
    out.append("|---|---:|---:|---|" + "---:|" * len(METRICS))
    out.append("| full | — | 0 | SGLD (full precision) | "
               + " | ".join("—" if k.endswith("_paired") else cell(floors[k])
                            for k in METRICS) + " |")
    out.append(f"| {FINE!r} | 24 | {FINE.gap:.1g} | SGLDLP-F, weights only (numerical "
               "floor of the paired columns) | "
               + " | ".join(cell(paired_floor[k]) for k in METRICS) + " |")
    for r in rows:
        if r["method"] in POINT:
            continue
        out.append(f"| {r['family']} | {r['wl']} | {r['delta']:.4g} | {LABELS[r['method']]} | "
                   + " | ".join(cell(r["metrics"][k]) if k in r["metrics"] else "—"
                                for k in METRICS) + " |")
    table = "\n".join(out)
    pt = ["| format | wl | Δ | " + " | ".join(LABELS[m] for m in POINT) + " |",
          "|---|---:|---:|" + "---:|" * len(POINT),
          f"| full | — | 0 | SGD (full precision): {cell(sgd_floor)} |"]
    for fam in families:
        for wl in wls:
            cells = [cell(next(r for r in rows if r["family"] == fam and r["wl"] == wl
                               and r["method"] == m)["metrics"]["point"]) for m in POINT]
            pt.append(f"| {fam} | {wl} | {gap_for(fam, wl, block_exp):.4g} | "
                      + " | ".join(cells) + " |")
    point_table = "\n".join(pt)
    st = ["| format | method | " + " | ".join([*METRICS, "point"]) + " |",
          "|---|---|" + "---|" * (len(METRICS) + 1)]
    for fam in families:
        for m in (*SAMPLERS, "sgld_f_gfull", *POINT):
            if not any((fam, m, k) in fits for k in (*METRICS, "point")):
                continue
            st.append(f"| {fam} | {LABELS[m]} | " + " | ".join(
                slope_text(fits[(fam, m, k)]) if (fam, m, k) in fits else "—"
                for k in (*METRICS, "point")) + " |")
    slope_table = "\n".join(st)
    print(table)
    print()
    print(point_table)
    print()
    print(slope_table)
    print(f"\nNUTS: {json.dumps(ref.summary())}; total {elapsed:.0f} s")

    if args.write:
        cmd = " ".join(["python", "benchmarks/reproduce_logreg.py"] + sys.argv[1:])
        nuts = ref.summary()
        md = [
            "# A posterior with a ground truth: Bayesian logistic regression vs NUTS\n",
            f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
            f"- machine: {machine_line()} (shared with other jobs while this ran: the "
            "times are not benchmarks)",
            f"- command: `{cmd}`",
            f"- software: jax {jax.__version__}, Python {platform.python_version()}, "
            f"pid {os.getpid()}; total {elapsed / 60:.1f} min (NUTS {nuts_s:.0f} s)",
            "",
            "**Problem.** scikit-learn's bundled breast_cancer (N = 569, 30 features "
            "standardized, plus an intercept: P = 31), labels 1 = benign; prior θ ~ N(0, I) "
            "on all 31 coefficients; U(θ) = Σ log(1 + e^{x·θ}) − y·x·θ + |θ|²/2. "
            "The posterior's Hessian at the MAP has eigenvalues 1.0 … 85 (m ≈ 1, M ≈ 85).",
            "",
            f"**Gold standard.** blackjax NUTS in float64 (`jax.enable_x64` only inside the "
            f"call), window adaptation with a dense mass matrix, {nuts['chains']} chains × "
            f"{nuts['draws']} draws after {args.nuts_warmup} warm-up steps, started at the "
            f"MAP + N(0, I): max split-R̂ {nuts['max_rhat']:.4f}, min bulk ESS "
            f"{nuts['min_ess_bulk']:.0f}, step sizes "
            f"{', '.join(f'{s:.3f}' for s in nuts['step_sizes'])}, divergences "
            f"{nuts['divergent']}, mean leapfrog steps per draw "
            f"{', '.join(f'{s:.1f}' for s in nuts['mean_leapfrog_steps'])}.",
            "",
            f"**Samplers.** `lps.sgld` (optax face), full-batch gradients, α = η/N = {ALPHA:g} "
            f"(η = {eta:.3f} on the mean loss, noise variance 2α; α·M ≈ 0.085), prior as "
            f"weight decay 1/N in full precision; {args.chains} chains per method started at "
            "evenly spaced odd-indexed NUTS draws (rounded onto the grid; the distances use "
            f"the even-indexed ones), {args.burn} burn-in steps, "
            f"then {args.kept} draws every {args.thin} steps; draws are the model weights "
            "(on the grid). All methods use the same chain keys, so SGLDLP-F and naive "
            "SGLDLP-L share the full-precision chains' Gaussian noise draws (VC's quantizer "
            "draws its own). Weights and gradients on the same format unless "
            "\"weights only\" (gradients in float32). Fixed point: FixedPoint(wl, wl−3), "
            "range [−4, 4), Δ = 2^(3−wl); BFP: BlockFloatingPoint(wl, axis=None), one "
            f"exponent for the weight vector (median e = {block_exp} on the NUTS draws, "
            "Δ = 2^(e+2−wl), the same gaps as fixed point) and one for the gradient "
            "(whose exponent follows the gradient, so its gap is much finer).",
            "",
            "**Metrics** (NUTS-standardized coordinates z = (θ − m)/s): `mean` = "
            "sqrt(mean_i ẑ_i²) of the chains' posterior mean; `std` = RMS of ŝ_i/s_i − 1; "
            "`sw` = sliced W₂ over 256 random directions; `mmd` = sqrt of the V-statistic "
            "MMD² with the Gaussian kernel exp(−|a−b|²/(2h²)), h the median pairwise "
            "distance of the standardized NUTS draws; `*_vs_paired` = the same mean/std "
            "errors measured against the full-precision SGLD chains with the same keys "
            "(the quantization error alone; not for VC, whose quantizer draws its own noise, so "
            "its chains are not coupled). SEs: delete-one-group jackknife over 8 groups "
            "of chains (mean, std, paired) or the spread over the 8 groups (sw, mmd, each "
            "group's 1000 evenly spaced draws against 2000 NUTS draws: both have a "
            "finite-sample floor that the full-precision row shows). SGD: last iterate of "
            f"{args.sgd_chains} chains × {args.sgd_steps} steps from the MAP, RMS distance "
            "to the exact MAP in posterior sd; SE over chains.",
            "",
            "**Slopes**: weighted least squares of log10(error) on log10(Δ), over the "
            "points with error ≥ 2× the full-precision value of the same metric (for the "
            "paired metrics: ≥ 2× their numerical floor, the paired difference of SGLDLP-F "
            f"on {FINE!r}, Δ ≈ 1e-6, against the float32 chains) and ≥ 3 SE; SE of the slope "
            "from the fit, inflated by sqrt(χ²/dof) when above 1; n/a below 3 points.",
            "",
            "## Fitted slopes d log(error) / d log(Δ)\n",
            slope_table,
            "",
            "## Errors against NUTS\n",
            table,
            "",
            "## SGD point estimates: distance to the MAP\n",
            point_table,
            "",
        ]
        for fam, path in fig_paths.items():
            rel = os.path.relpath(path, HERE)
            md.append(f"![{fam}]({rel})\n")
        write_text_atomic(Path(args.write), "\n".join(md) + "\n")
        json_path = Path(args.write).with_suffix(".json")
        write_text_atomic(json_path, json.dumps({
            "nuts": ref.summary(), "alpha": ALPHA, "rows": rows,
            "floors": floors,
            "fits": {"|".join(k): v for k, v in fits.items()}}, indent=1) + "\n")
        print(f"wrote {args.write} and {json_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
