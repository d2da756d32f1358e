"""How error grows as bits shrink: a word-length sweep (3/4/5/6/8 bits, fixed point and
block floating point) on Fashion-MNIST with the MLP and a small CNN, for SGDLP-L, naive
and VC SGLDLP-L, SGLDLP-F, SGDLP-F and the noise-free controls (T = 0) of the three
samplers, at T = 1e-3 and T = 1; plus the temperature at which Langevin noise starts to
matter against the grid gap Δ.

Every run is :func:`lpsampling.experiments.run_experiment` (the code of ``lpsampling
run``); each writes its JSON record under ``<out-dir>/runs/`` and an existing record is
skipped, so a killed sweep resumes where it stopped. ``--jobs n`` runs n worker processes
(``--worker i/n`` each) and times the whole; a worker takes every n-th *compiled group*
(model, format, method: the runs of all seeds and temperatures of a group share one
compilation, the temperature being an argument of the compiled step). ``--budget-min``
stops starting new configurations after that many minutes: the report then says which
ran.

Scaling, so that the whole sweep runs in under an hour on 2 CPU cores (the paper trains
ResNet-18 on CIFAR for 245 epochs): the MLP on the first ``--train-subset`` training and
``--test-subset`` test images with ``--seeds`` seeds, the CNN on ``--cnn-train-subset`` /
``--cnn-test-subset`` with ``--cnn-seeds``; ``--epochs`` epochs of batch 128, the paper's
decay schedule, 20 samples spread evenly over the last ``1 − sample_start`` of the steps
(the same plan as every SGLD run of the library), seeds paired across methods. The CNN is
``cnn-mini`` (:class:`lpsampling.flax.SmallCNN` with 8/16 channels, 64 dense units).

Fixed point ``fixed<wl>`` is ``FixedPoint(wl, wl)``: range ±0.5, Δ = 2^-wl, on weights and
gradients; BFP ``bfp<wl>`` quantizes weights, gradients, activations and errors.

The temperature study: VC SGLDLP-L and naive SGLDLP-L on the MLP in fixed point at each
word length in ``--tstudy-wls`` and T in ``--tstudy-temps``; noise "matters" at the
smallest T whose NLL differs from the T = 0 control's (paired t over seeds, α = 0.05).
The prediction: the Langevin variance per step ``2ηT/N`` reaches the mean
stochastic-rounding variance ``Δ²/6`` at ``T* = N Δ² / (12 η)`` (η the step size where
sampling happens: ``--lr`` × the decay schedule's final 1%... and up to ``--lr``).

Usage::

    python benchmarks/reproduce_bitwidth.py --jobs 2             # the sweep + report
    python benchmarks/reproduce_bitwidth.py --report-only        # report from the JSONs
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import time
from pathlib import Path

import jax
import numpy as np
from _machine import machine_line  # a sibling module: benchmarks/ is on sys.path

from lpsampling.atomic import atomic_open, write_text_atomic
from lpsampling.experiments import RunConfig, run_experiment
from lpsampling.experiments.stats import compare_samples

HERE = Path(__file__).resolve().parent
WORD_LENGTHS = (3, 4, 5, 6, 8)
FAMILIES = ("fixed", "bfp")
SAMPLERS = ("sgldlp-l", "vc-sgldlp-l", "sgldlp-f")
SGDS = ("sgdlp-l", "sgdlp-f")
TEMPS = (1e-3, 1.0)
LABELS = {"sgdlp-l": "SGDLP-L", "sgldlp-l": "naive SGLDLP-L", "vc-sgldlp-l": "VC SGLDLP-L",
          "sgldlp-f": "SGLDLP-F", "sgdlp-f": "SGDLP-F"}
METRICS = (("error", "test error %", 100.0), ("nll", "test NLL", 1.0),
           ("ece", "ECE % (15 bins)", 100.0))


def _configs(args) -> list[tuple[str, dict]]:
    """(tag, RunConfig fields) of every configuration, in priority order: the MLP grid,
    the temperature study, the CNN grid."""
    out = []

    def grid(model):
        # in tiers, each over every format, so that a sweep cut short by its budget still
        # draws whole curves: the methods at T = 1e-3, then the controls, then T = 1
        fmts = [f"{fam}{wl}" for fam in args.families for wl in args.word_lengths]
        tiers = [[(m, 0.0) for m in SGDS] + [(m, TEMPS[0]) for m in SAMPLERS],
                 [(m, 0.0) for m in SAMPLERS],
                 [(m, t) for t in TEMPS[1:] for m in SAMPLERS]]
        for tier in tiers:
            for fmt in fmts:
                for m, t in tier:
                    out.append(("grid", dict(model=model, format=fmt, method=m,
                                             temperature=t)))

    grid("mlp")
    for wl in args.tstudy_wls:
        for m in ("vc-sgldlp-l", "sgldlp-l"):
            for t in args.tstudy_temps:
                if t not in TEMPS:
                    out.append(("tstudy", dict(model="mlp", format=f"fixed{wl}", method=m,
                                               temperature=t)))
    if not args.no_cnn:
        grid("cnn-mini")
    return out


def _base(args, model: str) -> dict:
    mlp = model == "mlp"
    return dict(dataset="fashion_mnist", data_dir=args.data_dir, epochs=args.epochs,
                batch_size=128, lr=args.lr if mlp else args.cnn_lr,
                weight_decay=5e-4, samples=args.samples, sample_start=args.sample_start,
                train_subset=args.train_subset if mlp else args.cnn_train_subset,
                test_subset=args.test_subset if mlp else args.cnn_test_subset)


def _groups(todo: list[tuple[str, dict]]) -> list[int]:
    """The compiled group of each configuration (numbered in order of first appearance):
    the runs of one model, format and method share a compiled engine at every
    temperature, so a worker owns whole groups."""
    ids: dict[tuple, int] = {}
    return [ids.setdefault((f["model"], f["format"], f["method"]), len(ids))
            for _, f in todo]


def _name(fields: dict, seed: int) -> str:
    return (f"{fields['model']}_{fields['format']}_{fields['method']}_"
            f"T{fields['temperature']:g}_seed{seed}.json")


def run_sweep(args) -> None:
    from lpsampling.data import load_dataset

    runs = Path(args.out_dir) / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    ds = load_dataset("fashion_mnist", args.data_dir)
    t0 = time.perf_counter()
    todo = _configs(args)
    w, n = args.worker
    for i, ((_, fields), group) in enumerate(zip(todo, _groups(todo), strict=True)):
        if group % n != w:
            continue
        seeds = args.seeds if fields["model"] == "mlp" else args.cnn_seeds
        for seed in range(seeds):
            path = runs / _name(fields, seed)
            if path.exists():
                continue
            if (time.perf_counter() - t0) / 60 > args.budget_min:
                print(f"budget of {args.budget_min} min spent: stopping", flush=True)
                return
            cfg = RunConfig(**_base(args, fields["model"]), **fields, seed=seed)
            t = time.perf_counter()
            res = run_experiment(cfg, dataset=ds, out=path, progress=False)
            m = res.record["metrics"]
            print(f"[{i + 1}/{len(todo)}] {path.name}: error {100 * m['error']:.2f}% NLL "
                  f"{m['nll']:.3f} ({time.perf_counter() - t:.1f} s)", flush=True)


def run_jobs(args, argv: list[str]) -> None:
    """``--jobs n``: the sweep in n worker processes (this script with ``--worker i/n``);
    a worker that fails fails the sweep."""
    import subprocess

    base, skip = [], False
    for a in argv:
        if skip or a.startswith("--jobs="):
            skip = False
        elif a == "--jobs":
            skip = True
        else:
            base.append(a)
    procs = [subprocess.Popen([sys.executable, __file__, *base, "--worker", f"{i}/{args.jobs}"])
             for i in range(args.jobs)]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"reproduce_bitwidth: worker exit codes {codes}: the sweep is "
                         "incomplete (rerun to resume)")


# ---------------------------------------------------------------------------- report


def _load(out_dir: Path) -> dict:
    recs = {}
    for p in sorted((out_dir / "runs").glob("*.json")):
        r = json.loads(p.read_text())
        c = r["config"]
        fmt = c["format"]
        if fmt.startswith("fixed") and "-" in fmt:  # fixed4-4 (canonical) -> fixed4
            wl, fl = fmt[5:].split("-")
            fmt = f"fixed{wl}" if wl == fl else fmt
        recs[(c["model"], fmt, c["method"], float(c["temperature"]), c["seed"])] = r
    return recs


def _values(recs, model, fmt, method, temp, metric):
    return {k[4]: r["metrics"][metric] for k, r in recs.items()
            if k[:4] == (model, fmt, method, temp) and r["metrics"].get(metric) is not None}


def _paired(a: dict, b: dict):
    common = sorted(set(a) & set(b))
    return [a[s] for s in common], [b[s] for s in common]


def _rows(recs, model):
    """(label, method, temperature) of the lines of the figures and tables."""
    rows = [(LABELS[m], m, 0.0) for m in SGDS]
    for m in SAMPLERS:
        rows.append((f"{LABELS[m]} (T=0)", m, 0.0))
        rows += [(f"{LABELS[m]} T={t:g}", m, t) for t in TEMPS]
    return [r for r in rows if any(k[:4] == (model, f"{fam}{wl}", r[1], r[2])
                                   for k in recs for fam in FAMILIES for wl in WORD_LENGTHS)]


def _fmt_pm(vals, scale, digits):
    if not vals:
        return "—"
    v = np.asarray(list(vals), float) * scale
    se = v.std(ddof=1) / math.sqrt(v.size) if v.size > 1 else 0.0
    return f"{v.mean():.{digits}f} ± {se:.{digits}f}"


def _figures(recs, models, fig_dir: Path) -> list[str]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = []
    for metric, ylabel, scale in METRICS:
        for model in models:
            rows = _rows(recs, model)
            if not rows:
                continue
            fig = Figure(figsize=(12, 4.2))
            FigureCanvasAgg(fig)
            axes = [fig.add_subplot(1, 2, j + 1) for j in range(2)]
            for ax, fam in zip(axes, FAMILIES, strict=True):
                for j, (label, method, temp) in enumerate(rows):
                    xs, ms, ses = [], [], []
                    for wl in WORD_LENGTHS:
                        v = list(_values(recs, model, f"{fam}{wl}", method, temp,
                                         metric).values())
                        if v:
                            a = np.asarray(v) * scale
                            xs.append(wl + 0.04 * (j - len(rows) / 2))
                            ms.append(a.mean())
                            ses.append(a.std(ddof=1) / math.sqrt(a.size) if a.size > 1
                                       else 0.0)
                    if xs:
                        style = "--" if "(T=0)" in label else ("-" if "T=" in label
                                                               else ":")
                        ax.errorbar(xs, ms, yerr=ses, marker="o", markersize=3,
                                    capsize=2, linestyle=style, label=label,
                                    color=f"C{j % 10}")
                ax.set_xlabel("word length (bits)")
                ax.set_xticks(WORD_LENGTHS)
                ax.set_title(f"{model}, {'fixed point' if fam == 'fixed' else 'BFP'}")
                ax.set_ylabel(ylabel)
                if metric != "ece":
                    ax.set_yscale("log")
            handles = {}
            for ax in axes:
                for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
                    handles.setdefault(lab, h)
            fig.legend(list(handles.values()), list(handles), fontsize="x-small",
                       loc="center right")
            fig.suptitle(f"Fashion-MNIST: {ylabel} vs word length (mean ± SE over seeds; "
                         f"dotted: SGD, dashed: T = 0 controls)")
            fig.tight_layout(rect=(0, 0, 0.8, 1))
            name = f"bitwidth_{model}_{metric}.png"
            with atomic_open(fig_dir / name, "wb") as fh:
                fig.savefig(fh, format="png", dpi=90)
            names.append(name)
    return names


def _table(recs, model, metric, scale, digits) -> list[str]:
    rows = _rows(recs, model)
    fmts = [f"{fam}{wl}" for fam in FAMILIES for wl in WORD_LENGTHS]
    fmts = [f for f in fmts if any(k[:2] == (model, f) for k in recs)]
    if not rows or not fmts:
        return []
    lines = ["| method | " + " | ".join(fmts) + " |", "|---|" + "---|" * len(fmts)]
    for label, method, temp in rows:
        cells = [_fmt_pm(_values(recs, model, f, method, temp, metric).values(), scale,
                         digits) for f in fmts]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def _contrasts(recs, model) -> list[str]:
    """Claim-by-claim verdicts per format (paired t over seeds on NLL and error)."""
    pairs = [
        ("VC SGLDLP-L vs naive SGLDLP-L", ("vc-sgldlp-l", None), ("sgldlp-l", None)),
        ("naive SGLDLP-L vs SGDLP-L", ("sgldlp-l", None), ("sgdlp-l", 0.0)),
        ("VC SGLDLP-L vs SGDLP-L", ("vc-sgldlp-l", None), ("sgdlp-l", 0.0)),
        ("SGLDLP-F vs SGDLP-F", ("sgldlp-f", None), ("sgdlp-f", 0.0)),
        ("VC SGLDLP-L vs its T=0 control", ("vc-sgldlp-l", None), ("vc-sgldlp-l", 0.0)),
        ("SGLDLP-F vs its T=0 control", ("sgldlp-f", None), ("sgldlp-f", 0.0)),
        ("SGLDLP-F (T=0) vs SGDLP-F (averaging alone)", ("sgldlp-f", 0.0),
         ("sgdlp-f", 0.0)),
    ]
    fmts = [f"{fam}{wl}" for fam in FAMILIES for wl in WORD_LENGTHS]
    fmts = [f for f in fmts if any(k[:2] == (model, f) for k in recs)]
    lines = ["| contrast | T | metric | " + " | ".join(fmts) + " |",
             "|---|---|---|" + "---|" * len(fmts)]
    for title, (ma, ta), (mb, tb) in pairs:
        for temp in TEMPS:
            if ta is not None and tb is not None and temp != TEMPS[0]:
                continue  # neither side depends on T
            for metric, _, scale in METRICS[:2]:
                cells = []
                for f in fmts:
                    a = _values(recs, model, f, ma, temp if ta is None else ta, metric)
                    b = _values(recs, model, f, mb, temp if tb is None else tb, metric)
                    xa, xb = _paired(a, b)
                    if len(xa) < 2:
                        cells.append("—")
                        continue
                    c = compare_samples(xa, xb, paired=True, metric=metric)
                    mark = {"better": "**better**", "worse": "*worse*"}.get(c.outcome, "n.d.")
                    cells.append(f"{c.diff * scale:+.2f}±{c.se_diff * scale:.2f} {mark}")
                tshow = "—" if ta is not None and tb is not None else f"{temp:g}"
                lines.append(f"| {title} | {tshow} | {metric} | " + " | ".join(cells) + " |")
    return lines


def _tstudy(recs, args) -> list[str]:
    n = args.train_subset
    lines = ["| method | word length | Δ | T* predicted (η = lr … lr/100) | "
             "ΔNLL vs T=0 at each T (paired t) | T where noise matters (measured) |",
             "|---|---|---|---|---|---|"]
    temps = sorted({k[3] for k in recs if k[0] == "mlp" and k[3] > 0})
    any_row = False
    for m in ("vc-sgldlp-l", "sgldlp-l"):
        for wl in args.tstudy_wls:
            fmt, delta = f"fixed{wl}", 2.0 ** -wl
            ctl = _values(recs, "mlp", fmt, m, 0.0, "nll")
            cells, differs = [], []
            for t in temps:
                a = _values(recs, "mlp", fmt, m, t, "nll")
                xa, xb = _paired(a, ctl)
                if len(xa) < 2:
                    continue
                c = compare_samples(xa, xb, paired=True, metric="nll")
                short = {"better": "better", "worse": "worse"}.get(c.outcome, "n.d.")
                cells.append(f"T={t:g}: {c.diff:+.3f} ({short})")
                differs.append((t, c.outcome != "no detectable difference"))
            # the onset: the smallest T from which every hotter T differs from the control
            # (one isolated difference at a cold T is what 5 % false positives look like)
            first = None
            for t, d in reversed(differs):
                if not d:
                    break
                first = t
            if not cells:
                continue
            any_row = True
            hi = n * delta**2 / (12 * args.lr)
            onset = (f"> {differs[-1][0]:g}" if first is None
                     else f"≤ {first:g}" if first == differs[0][0] else f"{first:g}")
            lines.append(f"| {LABELS[m]} | {wl} | {delta:g} | {hi:.3g} … {100 * hi:.3g} | "
                         f"{'; '.join(cells)} | {onset} |")
    return lines if any_row else []


def _write_sweep_record(args, argv: list[str], elapsed_min: float) -> None:
    """``<out-dir>/sweep.json``: how the runs were made (command, wall time, the load at
    the end), for reports written later with ``--report-only``."""
    record = dict(command=" ".join(["python", os.path.relpath(__file__, HERE.parent), *argv]),
                  elapsed_min=round(elapsed_min, 2),
                  finished=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                  loadavg_end=[round(x, 2) for x in os.getloadavg()])
    write_text_atomic(Path(args.out_dir) / "sweep.json", json.dumps(record, indent=1))


def report(args, elapsed_min: float | None) -> str:
    out_dir = Path(args.out_dir)
    recs = _load(out_dir)
    fig_dir = Path(args.fig_dir)
    fig_dir.mkdir(parents=True, exist_ok=True)
    models = [m for m in ("mlp", "cnn-mini") if any(k[0] == m for k in recs)]
    missing_models = {"cnn-mini"} - set(models)
    figs = _figures(recs, models, fig_dir)
    total_cfg = len(_configs(args))
    done_cfg = len({k[:4] for k in recs})
    busy = {m: sum(r["timing"]["train_s"] + r["timing"]["eval_s"] for k, r in recs.items()
                   if k[0] == m) / 60 for m in models}
    runs = {m: sum(k[0] == m for k in recs) for m in models}
    cmd = "python " + " ".join([os.path.relpath(__file__, HERE.parent)] + sys.argv[1:])
    sweep_file = out_dir / "sweep.json"
    sweep = json.loads(sweep_file.read_text()) if sweep_file.exists() else None
    lines = [
        "# Error against word length on Fashion-MNIST (issue 12)",
        "",
        f"- date: {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}; "
        f"machine: {machine_line()}; jax {jax.__version__}",
        *([f"- the sweep: `{sweep['command']}`, {sweep['elapsed_min']:.1f} min wall "
           f"(finished {sweep['finished']}; load average 1/5/15 min at its end "
           + "/".join(f"{x:.1f}" for x in sweep["loadavg_end"]) + ")"] if sweep else []),
        f"- report: `{cmd}`"
        + (f" ({elapsed_min:.1f} min wall)" if elapsed_min is not None else ""),
        f"- {len(recs)} runs, {done_cfg} of {total_cfg} configurations; training + "
        f"evaluation time summed over runs (compilation included): "
        + ", ".join(f"{m} {runs[m]} runs, {busy[m]:.1f} min" for m in models)
        + ".",
        f"- scaling (the paper: ResNet-18, CIFAR, 245 epochs), for 2 CPU cores: MLP on "
        f"the first {args.train_subset} training and {args.test_subset} test images, "
        f"{args.seeds} seeds; cnn-mini on the "
        f"first {args.cnn_train_subset} training and {args.cnn_test_subset} test images, "
        f"{args.cnn_seeds} seeds; {args.epochs} epochs of batch 128 "
        f"({args.train_subset // 128} / {args.cnn_train_subset // 128} steps each), lr "
        f"{args.lr} (MLP) / {args.cnn_lr} (cnn-mini) with the paper's decay schedule, "
        f"weight decay 5e-4, {args.samples} samples spread evenly over the last "
        f"{100 * (1 - args.sample_start):.0f}% of the steps (SGD: the final weights); seeds "
        f"paired across methods (same initialisation and data order). Models: MLP "
        f"784-100-10; cnn-mini = SmallCNN(8, 16 channels, 64 dense units).",
        "- formats: `fixed<wl>` = FixedPoint(wl, wl) (Δ = 2^-wl, range ±0.5) on weights and "
        "gradients; `bfp<wl>` = BlockFloatingPoint(wl) on weights, gradients, activations "
        "and errors. Controls `(T=0)`: the same method, schedule, quantization and "
        "sample averaging without Langevin noise.",
        *([f"- not run in this session: {', '.join(sorted(missing_models))} (the grid is "
           f"resumable: rerun the command without --no-cnn / --budget-min to add it)."]
          if missing_models else []),
        *(["- missing cells (—): configurations the time budget did not reach; the tiers "
           "run in order (all methods at T = 1e-3 and SGD, then the T = 0 controls, then "
           "T = 1)."] if done_cfg < total_cfg else []),
        "- verdicts: paired t test over seeds, two-sided, α = 0.05 per cell, no multiplicity "
        "correction; `n.d.` = no detectable difference; cells give the difference of "
        "means ± its SE (error in pp).",
        "",
    ]
    for model in models:
        lines += [f"## {model}", ""]
        for metric, label, scale in METRICS:
            t = _table(recs, model, metric, scale, 3 if metric == "nll" else 2)
            if t:
                lines += [f"### {label}, mean ± SE over seeds", ""] + t + [""]
        c = _contrasts(recs, model)
        if len(c) > 2:
            lines += ["### Contrasts (a − b; lower is better)", ""] + c + [""]
    ts = _tstudy(recs, args)
    if ts:
        lines += [
            "## When does the Langevin noise matter? (MLP, fixed point)", "",
            "The noise of one step has variance 2ηT/N; stochastic rounding of a weight at "
            "distance a from the grid point below has variance a(Δ − a), Δ²/6 on average. "
            "Below T* = NΔ²/(12η) the rounding swamps the noise (VC then *is* stochastic "
            "rounding). With the decay schedule η runs from lr to lr/100, so T* is given "
            "for both ends. Measured onset: the smallest T from which the NLL at every "
            "hotter T differs from the T = 0 control (paired t, α = 0.05 each; an isolated "
            "difference at a colder T is not counted).", ""] + ts + [""]
    shown = os.path.relpath(fig_dir, HERE.parent)
    lines += ["Figures (one per metric and model, both families, error bars = SE over "
              "seeds): " + ", ".join(f"`{shown}/{f}`" for f in figs), ""]
    return "\n".join(lines)


def _choices(kind, allowed, name):
    def parse(text: str) -> list:
        try:
            vals = [kind(x) for x in text.split(",")]
        except ValueError:
            vals = None
        if not vals or any(v not in allowed for v in vals):
            raise argparse.ArgumentTypeError(
                f"{name} takes a comma-separated subset of {','.join(map(str, allowed))}, "
                f"got {text!r}")
        return vals
    return parse


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--train-subset", type=int, default=10000, help="MLP training images")
    p.add_argument("--test-subset", type=int, default=2000, help="MLP test images")
    p.add_argument("--cnn-train-subset", type=int, default=5000)
    p.add_argument("--cnn-test-subset", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--seeds", type=int, default=5, help="seeds per MLP configuration")
    p.add_argument("--cnn-seeds", type=int, default=3)
    p.add_argument("--samples", type=int, default=20)
    p.add_argument("--sample-start", type=float, default=0.5)
    p.add_argument("--lr", type=float, default=0.5)
    p.add_argument("--cnn-lr", type=float, default=0.2)
    p.add_argument("--tstudy-wls", type=lambda s: [int(x) for x in s.split(",")],
                   default=[4, 6, 8])
    p.add_argument("--tstudy-temps", type=lambda s: [float(x) for x in s.split(",")],
                   default=[1e-3, 1e-2, 1e-1, 1.0, 10.0])
    p.add_argument("--no-cnn", action="store_true")
    p.add_argument("--word-lengths", type=_choices(int, WORD_LENGTHS, "--word-lengths"),
                   default=list(WORD_LENGTHS), help="a subset of 3,4,5,6,8")
    p.add_argument("--families", type=_choices(str, FAMILIES, "--families"),
                   default=list(FAMILIES), help="a subset of fixed,bfp")
    p.add_argument("--budget-min", type=float, default=float("inf"),
                   help="start no new configuration after this many minutes")
    p.add_argument("--jobs", type=int, default=1,
                   help="worker processes (each --worker i/n), timed together")
    p.add_argument("--worker", type=lambda s: tuple(int(x) for x in s.split("/")),
                   default=(0, 1), help="i/n: run every n-th compiled group from i (no "
                   "report: run --report-only when all workers are done)")
    p.add_argument("--out-dir", default=str(HERE / "out" / "bitwidth"))
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--elapsed-min", type=float, default=None,
                   help="wall time of the sweep, for the report (with --report-only)")
    p.add_argument("--write", default=str(HERE / "RESULTS_bitwidth.md"),
                   help="the report's file ('' to only print it)")
    p.add_argument("--fig-dir", default=str(HERE / "figures"))
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error(f"--jobs must be >= 1, got {args.jobs}")
    t0 = time.perf_counter()
    given = list(sys.argv[1:] if argv is None else argv)
    if not args.report_only:
        if args.jobs > 1:
            run_jobs(args, given)
        else:
            run_sweep(args)
    if args.worker[1] > 1:
        return 0
    if not args.report_only:
        _write_sweep_record(args, given, (time.perf_counter() - t0) / 60)
    text = report(args, args.elapsed_min)
    print(text)
    if args.write:
        write_text_atomic(args.write, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
