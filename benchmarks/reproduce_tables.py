"""Tables 1 and 2 of the paper on real data: every method × {8-bit fixed, 8-bit BFP} on
Fashion-MNIST with the noise-free control (T = 0) of every sampler, 5 seeds, test error /
ECE / NLL (mean ± standard error), and a verdict from a stated test on each of the
paper's claims as measured here (:func:`judge_claims`).

The grid and every run come from :func:`lpsampling.experiments.compare` (the same code as
``lpsampling compare``); this script only fixes the configuration, judges the claims with
the criteria stated below and writes ``benchmarks/RESULTS_tables.md`` plus reliability
diagrams under ``benchmarks/figures/``.

Configuration (the paper's CIFAR hyperparameters, scaled to a 2-core CPU budget): MLP with
100 hidden units (activations and errors quantized in the BFP rows), batch 128, lr 0.5 with
the paper's decay schedule (constant for half of training, linear to 1% at 90%), weight
decay 5e-4, temperature 1e-3 (the paper's cold posterior), the first ``--train-subset``
training images; SGLD takes 20 samples spread evenly over the last 40% of the steps
(most while the step size decays, as the paper's 50 over its last 50 of 245 epochs);
cyclical runs 4 cycles with noise on every step (the low-precision paper's cyclical
setting) and one sample at the end of each cycle.

Usage::

    python benchmarks/reproduce_tables.py --train-subset 10000 --test-subset 5000
    python benchmarks/reproduce_tables.py                 # 20k images: ~1 h on 2 busy cores
    python benchmarks/reproduce_tables.py --quick         # smoke run on a subset
    python benchmarks/reproduce_tables.py --methods sgld,sghmc,sgldlp-l,sghmclp-l \
        --write benchmarks/RESULTS_tables_sghmc.md         # chosen rows (e.g. SGHMC)
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
from pathlib import Path

import jax
from _machine import machine_line  # a sibling module: benchmarks/ is on sys.path

from lpsampling.experiments import RunConfig, compare
from lpsampling.experiments.stats import compare_samples

ROOT = Path(__file__).resolve().parent

# Claim criteria, fixed before the run (percentage points of test error / ECE).
MATCH_PP = 0.5  # "matches" / "is close to": error within 0.5 pp (paper, BFP: 4.58 vs 4.65)


def _runs(result, fmt, method, control=False):
    """Per-seed metrics of one row of a compare result: {seed: metrics}."""
    out = {}
    for r in result["runs"]:
        c = r["config"]
        if (c["format"], c["method"]) == (fmt, method) and \
                (float(c["temperature"]) == 0.0) == control:
            out[c["seed"]] = r["metrics"]
    return out


def _label(result, fmt, method, control=False):
    for r in result["summary"]:
        if (r["format"], r["method"], r.get("control", False)) == (fmt, method, control):
            return r["label"]
    return method


def _cmp(a, b, metric):
    seeds = sorted(set(a) & set(b))
    return compare_samples([a[s][metric] for s in seeds], [b[s][metric] for s in seeds],
                           paired=True, metric=metric)


def _equivalent(c):
    """Equivalence within MATCH_PP (two one-sided tests at α = 0.05, i.e. the 90% CI of the
    paired difference inside ±MATCH_PP): "holds" / "fails" (the CI outside) /
    "inconclusive"."""
    from scipy import stats as sps

    n = c.n_a
    half = (sps.t.ppf(0.95, n - 1) * c.se_diff if n > 1 else math.inf) * 100
    lo, hi = 100 * c.diff - half, 100 * c.diff + half
    if -MATCH_PP < lo and hi < MATCH_PP:
        return "holds", lo, hi
    if lo > MATCH_PP or hi < -MATCH_PP:
        return "fails", lo, hi
    return "inconclusive", lo, hi


def judge_claims(result, formats):
    """Each claim of the paper, per format and metric, as a row
    ``(claim, a, b, metric, Comparison or equivalence text, verdict)``.

    Differences are paired by seed (every row of the grid shares the seeds): paired t
    test, two-sided, α = 0.05 per comparison (no multiplicity correction). "Matches"
    claims are equivalence tests (TOST at α = 0.05 with a ±MATCH_PP pp margin)."""
    rows = []
    fp = _runs(result, "fp32", "sgld")
    for fmt in formats:
        for m in ("sgldlp-f", "vc-sgldlp-l"):
            lp = _runs(result, fmt, m)
            if fp and lp:
                c = _cmp(lp, fp, "error")
                v, lo, hi = _equivalent(c)
                rows.append((f"{_label(result, fmt, m)} ({fmt}) matches SGLDFP (error within "
                             f"±{MATCH_PP} pp)", "error",
                             f"{100 * c.diff:+.2f} ± {100 * c.se_diff:.2f} pp, 90% CI "
                             f"[{lo:+.2f}, {hi:+.2f}] (TOST, n={c.n_a})", v))
    claims = [("{a} beats {b}", ("sgldlp-f", False), ("sgdlp-f", False)),
              ("{a} beats {b}", ("vc-sgldlp-l", False), ("sgdlp-l", False)),
              ("{a} beats {b}", ("sgldlp-l", False), ("sgdlp-l", False)),
              ("{a} beats {b}", ("vc-sgldlp-l", False), ("sgldlp-l", False)),
              ("{a} beats {b}", ("vc-csgldlp-l", False), ("sgdlp-l", False)),
              ("{a} beats {b}", ("csgld-f", False), ("sgdlp-f", False)),
              ("noise matters: {a} differs from {b}", ("sgldlp-f", False), ("sgldlp-f", True)),
              ("noise matters: {a} differs from {b}", ("vc-sgldlp-l", False),
               ("vc-sgldlp-l", True)),
              ("noise matters: {a} differs from {b}", ("sgldlp-l", False),
               ("sgldlp-l", True)),
              ("averaging alone: {a} beats {b}", ("sgldlp-f", True), ("sgdlp-f", False)),
              ("averaging alone: {a} beats {b}", ("vc-sgldlp-l", True), ("sgdlp-l", False))]
    fp_claims = [("{a} beats {b}", ("sgld", False), ("sgd", False)),
                 ("noise matters: {a} differs from {b}", ("sgld", False), ("sgld", True)),
                 ("averaging alone: {a} beats {b}", ("sgld", True), ("sgd", False))]
    for fmt, todo in [("fp32", fp_claims)] + [(f, claims) for f in formats]:
        for text, (ma, ca), (mb, cb) in todo:
            a, b = _runs(result, fmt, ma, ca), _runs(result, fmt, mb, cb)
            if not a or not b:
                continue
            la, lb = _label(result, fmt, ma, ca), _label(result, fmt, mb, cb)
            for metric in ("error", "nll", "ece"):
                c = _cmp(a, b, metric)
                scale, unit = (1, "") if metric == "nll" else (100, " pp")
                rows.append((text.format(a=la, b=lb) + f" ({fmt})", metric,
                             c.describe(scale, 3 if metric == "nll" else 2, unit).rsplit(
                                 ":", 1)[0], c.outcome))
    return rows


def _result_from_runs(base, formats, methods, out_dir, elapsed_s):
    """The compare result of the runs recorded under ``out_dir/runs`` (rows with no
    record left out), with the summary figure; as :func:`compare` would return."""
    from lpsampling.experiments import paper_grid
    from lpsampling.experiments.grid import format_table, save_summary_figure, summarize_rows

    records = [json.loads(p.read_text()) for p in sorted((out_dir / "runs").glob("*.json"))]
    rows, per_row = [], {}
    for fmt, m in paper_grid(formats, methods):
        for control in (False, True):
            got = sorted((r for r in records if (r["config"]["format"], r["config"]["method"])
                          == (fmt, m) and (r["config"]["temperature"] == 0.0) == control
                          and (control or r["config"]["temperature"] == base.temperature)),
                         key=lambda r: r["config"]["seed"])
            if got:
                rows.append((fmt, m, control))
                per_row[(fmt, m, control)] = got
    summary = summarize_rows(rows, per_row)
    seeds = max(r["seeds"] for r in summary)
    title = (f"fashion_mnist, {base.model}, {base.epochs} epochs, T = {base.temperature:g}, "
             f"{seeds} seed(s): BMA test metrics, mean ± standard error")
    save_summary_figure(out_dir / "summary.png", summary,
                        title=f"Fashion-MNIST, MLP, T = {base.temperature:g}: mean ± SE over "
                              f"{seeds} seeds (hollow: T = 0 control)")
    return {"summary": summary, "runs": [r for rs in per_row.values() for r in rs],
            "table": format_table(summary, title=title), "elapsed_s": elapsed_s}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--temperature", type=float, default=1e-3,
                   help="posterior temperature T (the paper's CIFAR runs: 1e-3)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--formats", default="fixed8,bfp8",
                   help="comma-separated low-precision formats (the FP32 rows always run)")
    p.add_argument("--methods", default=None,
                   help="comma-separated methods (default: the paper's grid); methods "
                        "outside it, e.g. the SGHMC family, add their rows")
    p.add_argument("--train-subset", type=int, default=20000)
    p.add_argument("--test-subset", type=int, default=None)
    p.add_argument("--samples", type=int, default=20)
    p.add_argument("--sample-start", type=float, default=0.6)
    p.add_argument("--quick", action="store_true", help="smoke run: 4 epochs, 2 seeds, subset")
    p.add_argument("--from-results", action="store_true",
                   help="rewrite the report from <out-dir>/results.json (no runs)")
    p.add_argument("--from-runs", action="store_true",
                   help="write the report from the per-run records in <out-dir>/runs/ (a "
                        "grid cut short: the rows it finished)")
    p.add_argument("--elapsed-min", type=float, default=None,
                   help="with --from-runs: the wall time the runs took")
    p.add_argument("--out-dir", default=str(ROOT / "out" / "tables"))
    p.add_argument("--write", default=str(ROOT / "RESULTS_tables.md"),
                   help="markdown report ('' to skip)")
    args = p.parse_args(argv)
    epochs, seeds, subset, test_subset = (args.epochs, args.seeds, args.train_subset,
                                          args.test_subset)
    samples = args.samples
    if args.quick:
        epochs, seeds, subset, test_subset, samples = 4, 2, 2000, 2000, 4
    cycles = 4 if epochs % 4 == 0 else 2
    base = RunConfig(
        dataset="fashion_mnist", data_dir=args.data_dir, model="mlp", epochs=epochs,
        batch_size=128, lr=0.5, temperature=args.temperature, weight_decay=5e-4,
        num_cycles=cycles, samples=samples, sample_start=args.sample_start,
        cycle_samples=1, train_subset=subset, test_subset=test_subset,
    )
    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    methods = [m for m in args.methods.split(",") if m.strip()] if args.methods else None
    if args.from_results:
        result = json.loads((Path(args.out_dir) / "results.json").read_text())
    elif args.from_runs:
        result = _result_from_runs(base, formats, methods, Path(args.out_dir),
                                   60 * (args.elapsed_min or 0.0))
    else:
        result = compare(base, formats=formats, methods=methods, seeds=seeds,
                         controls=True, out_dir=args.out_dir, progress=False)
    elapsed = result["elapsed_s"]
    claims = judge_claims(result, formats)
    script = os.path.relpath(__file__, ROOT.parent)
    cmd = "python " + " ".join([script] + list(argv or sys.argv[1:]))
    spe = (subset or 60000) // 128
    lines = [
        "# Tables 1 and 2 reproduced on Fashion-MNIST"
        + (f" (methods: {', '.join(methods)})" if methods else ""),
        "",
        f"- date: {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {machine_line()}; the 2 cores were shared with 5 other jobs (load "
        f"average {os.getloadavg()[0]:.1f} at the end)",
        f"- versions: Python {platform.python_version()}, jax {jax.__version__}",
        f"- command: `{cmd}` ({elapsed / 60:.1f} min)",
        f"- configuration (scaled to fit a busy 2-core CPU: the first {subset or 60000} "
        f"training images, {epochs} epochs of {spe} steps): {base.model} (100 hidden "
        f"units), batch 128, lr 0.5 with the paper's decay schedule (constant to 50%, "
        f"linear to 1% at 90%), weight decay 5e-4, T = {base.temperature:g}, {seeds} "
        f"seeds shared by every row; SGLD: {samples} samples spread evenly over the last "
        f"{100 * (1 - args.sample_start):.0f}% of the steps "
        f"({samples / (epochs * (1 - args.sample_start)):.1f} per epoch, "
        f"from epoch {epochs * args.sample_start:g}; most of them while the step "
        f"size decays); SGHMC (if any): time step = lr, friction {base.friction:g}, "
        f"inverse mass {base.inverse_mass:g}, samples as SGLD; cyclical: {cycles} cycles, "
        f"noise on every step, 1 sample per "
        f"cycle; SGD: the final weights. Every sampler row has its noise-free control "
        f"`(T=0)`: the same schedule, quantization and averaging without Langevin noise. "
        f"Fixed point: weights and gradients FixedPoint(8, 8) (range ±0.5), activations "
        f"and errors full precision. BFP: weights, gradients, activations and errors "
        f"BlockFloatingPoint(8). ECE with {base.num_bins} equal-width bins; test set: "
        f"{test_subset or 10000} images.",
        "",
        result["table"].replace("### ", "#### "),
        "",
        "## The paper's claims, as measured here",
        "",
        "Each verdict: paired t test over the seeds (every row shares them), two-sided, "
        "α = 0.05 per comparison, no multiplicity correction; `better`/`worse` refer to the "
        "first method named (lower error / NLL / ECE is better; for \"noise matters\", "
        "`better` means the noisy run beats its T = 0 control). \"Matches\" claims: "
        f"equivalence (TOST, α = 0.05, margin ±{MATCH_PP} pp).",
        "",
        "| claim | metric | difference (a − b) ± SE (test, n, p) | verdict |",
        "|---|---|---|---|",
    ]
    lines += [f"| {c} | {m} | {ev} | {v} |" for c, m, ev, v in claims]
    lines += [
        "",
        "Results that contradict the paper are reported as measured, not tuned away. "
        f"Figures: `{os.path.relpath(args.out_dir, ROOT.parent)}/summary.png` (metrics per "
        "row, mean ± SE) and `reliability.png` (one diagram per row), copied to "
        "`benchmarks/figures/`.",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.write:
        Path(args.write).write_text(report)
        figs = ROOT / "figures"
        figs.mkdir(exist_ok=True)
        tag = "" if base.temperature == 1e-3 else f"_T{base.temperature:g}"
        if methods:  # chosen rows never overwrite the paper grid's figures
            tag += "_sghmc" if any("hmc" in m for m in methods) else "_selected"
        for name in ("summary", "reliability"):
            src = Path(args.out_dir) / f"{name}.png"
            if src.exists():
                (figs / f"fashion_mnist_{name}{tag}.png").write_bytes(src.read_bytes())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
