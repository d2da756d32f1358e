"""The paper's method grid (Tables 1 and 2): :func:`paper_grid` rows, :func:`compare` over
seeds with noise-free controls and a verdict per row, :func:`format_table` (error %, ECE %,
NLL as mean ± standard error, the verdict against the row's reference) and the figures
(:func:`save_summary_figure`, :func:`save_reliability_grid`).

Verdicts: every row is compared with its *reference* row (:func:`reference_row`) on
error, NLL and ECE by :func:`lpsampling.experiments.stats.compare_samples`, paired by seed
(all rows of a grid share the seeds ``base.seed, base.seed + 1, ...``: the same
initialisation and data order), two-sided paired t test at α = 0.05 per comparison.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lpsampling import metrics as _metrics
from lpsampling.atomic import write_json_atomic, write_text_atomic
from lpsampling.data import Dataset
from lpsampling.experiments.config import RunConfig, prepare_data
from lpsampling.experiments.evaluation import run_experiment
from lpsampling.experiments.registry import get_format, get_method
from lpsampling.experiments.stats import ALPHA, compare_samples
from lpsampling.validation import positive_int

__all__ = ["paper_grid", "format_table", "compare", "reference_row", "summarize_rows",
           "save_summary_figure", "save_reliability_grid", "VERDICT_METRICS"]

#: The metrics every verdict covers (all: lower is better).
VERDICT_METRICS = ("error", "nll", "ece")

# a row of a grid: (format, method, control) — control: the same method at T = 0
Row = tuple[str, str, bool]


def paper_grid(formats: Sequence[str] = ("fixed8", "bfp8"),
               methods: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """Rows ``(format, method)`` of the paper's Tables 1 and 2, in their order.

    FP32: SGLDFP, SGDFP, cSGLDFP; then for each low-precision format: naive SGLDLP-L,
    VC SGLDLP-L, SGDLP-L, SGLDLP-F, SGDLP-F, VC cSGLDLP-L, cSGLD-F. ``methods`` keeps
    only the rows whose method is listed (``fp32`` rows use ``sgld``/``sgd``/``csgld``);
    listed methods outside the paper's grid (the SGHMC family) add rows after them: an
    ``fp32`` row for a method that runs in full precision (``sghmc``, ``csghmc``), else
    one row per low-precision format.
    """
    rows = [("fp32", "sgld"), ("fp32", "sgd"), ("fp32", "csgld")]
    lp = ("sgldlp-l", "vc-sgldlp-l", "sgdlp-l", "sgldlp-f", "sgdlp-f", "vc-csgldlp-l",
          "csgld-f")
    for f in formats:
        fname = get_format(f).name
        if fname == "fp32":
            continue
        rows += [(fname, m) for m in lp]
    if methods is not None:
        wanted = list(dict.fromkeys(get_method(m).name for m in methods))
        in_grid = {"sgld", "sgd", "csgld", *lp}
        rows = [r for r in rows if r[1] in wanted]
        lp_formats = [get_format(f).name for f in formats if get_format(f).name != "fp32"]
        for m in wanted:
            if m in in_grid:
                continue
            if get_method(m).fp_label is not None:
                rows.append(("fp32", m))
            else:
                rows += [(f, m) for f in lp_formats]
    return rows


def reference_row(row: Row, rows: Sequence[Row]) -> Row | None:
    """The row that ``row`` is judged against, among ``rows`` (None: no reference).

    * a noise-free control → the same method with noise (does the noise matter?);
    * a variance-corrected sampler → the naive sampler of the same kind and format;
    * any other sampler → the SGD row of its format with the same accumulator (full
      precision: SGDLP-F / SGDFP; low: SGDLP-L), as in the paper's claims;
    * SGDLP-L → SGDLP-F of its format; SGDLP-F → SGDFP.
    """
    fmt, method, control = row
    spec = get_method(method)
    present = [r for r in rows if r != row and not r[2]]

    def find(f, pred):
        return next((r for r in present if r[0] == f and pred(get_method(r[1]))), None)

    if control:
        return (fmt, method, False) if (fmt, method, False) in rows else None
    if spec.noise:
        if spec.accumulator == "vc":
            ref = find(fmt, lambda s: s.kind == spec.kind and s.accumulator == "low")
            if ref is not None:
                return ref
        acc = "full" if spec.accumulator == "full" else "low"
        return find(fmt, lambda s: s.kind == "sgd" and s.accumulator == acc)
    if spec.accumulator == "low":
        return find(fmt, lambda s: s.kind == "sgd" and s.accumulator == "full")
    if not get_format(fmt).is_full:
        return find("fp32", lambda s: s.kind == "sgd")
    return None


def _pm(mean: float, se: float, scale: float, digits: int) -> str:
    return f"{mean * scale:.{digits}f} ± {se * scale:.{digits}f}"


_SHORT = {"better": "better", "worse": "**worse**", "no detectable difference": "n.d."}


def _verdict_cell(r: Mapping[str, Any]) -> str:
    v = r.get("verdict")
    if not v:
        return "(reference)"
    return f"vs {v['vs']}: " + " / ".join(_SHORT[v[m]["outcome"]] for m in VERDICT_METRICS)


def format_table(summary: Sequence[Mapping[str, Any]], *, title: str | None = None) -> str:
    """A markdown table in the layout of the paper's Tables 1 and 2 (rows format ×
    method; columns error %, ECE %, NLL as mean ± standard error over seeds; samples
    and their diversity; the verdict against the row's reference in error / NLL / ECE),
    followed by the table of differences behind each verdict."""
    num_bins = summary[0]["ece_num_bins"] if summary else 15
    lines = []
    if title:
        lines += [f"### {title}", ""]
    lines += [f"| format | method | error % | ECE % ({num_bins} bins) | NLL | samples | "
              f"disagreement % | seeds | verdict (error / NLL / ECE) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in summary:
        dis = r.get("disagreement")
        lines.append(
            f"| {r['format_label']} | {r['label']} | {_pm(*r['error'], 100, 2)} | "
            f"{_pm(*r['ece'], 100, 2)} | {_pm(*r['nll'], 1, 3)} | {r.get('num_samples', '')} "
            f"| {'' if dis is None else _pm(*dis, 100, 2)} | {r['seeds']} | "
            f"{_verdict_cell(r)} |")
    judged = [r for r in summary if r.get("verdict")]
    if judged:
        first = judged[0]["verdict"]
        lines += ["", f"Verdicts: row − reference, mean ± SE of the per-seed difference, "
                  f"{first['error']['test']} test over seeds (two-sided, α = "
                  f"{first['error']['alpha']:g} per comparison, no multiplicity "
                  f"correction); n.d. = no detectable difference.", "",
                  "| row | vs | Δ error (pp) | Δ NLL | Δ ECE (pp) |", "|---|---|---|---|---|"]
        for r in judged:
            v = r["verdict"]
            cells = []
            for m, scale, d in (("error", 100, 2), ("nll", 1, 3), ("ece", 100, 2)):
                c = v[m]
                p = "p n/a" if c["p_value"] != c["p_value"] else f"p={c['p_value']:.2g}"
                cells.append(f"{c['diff'] * scale:+.{d}f} ± {c['se_diff'] * scale:.{d}f} "
                             f"({p}) {_SHORT[c['outcome']]}")
            lines.append(f"| {r['format_label']} {r['label']} | {v['vs']} | "
                         + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def save_summary_figure(path: str | os.PathLike, summary: Sequence[Mapping[str, Any]], *,
                        title: str | None = None,
                        metrics: Sequence[str] = VERDICT_METRICS) -> Path:
    """One panel per metric, one point per row: mean ± standard error over seeds (the
    controls hollow, each format in its own colour). Written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from lpsampling.atomic import atomic_open

    if not summary:
        raise ValueError("`summary` is empty")
    units = {"error": ("test error %", 100), "nll": ("NLL", 1), "ece": ("ECE %", 100),
             "paper_ece": ("paper's ECE %", 100)}
    n = len(summary)
    fig = Figure(figsize=(3.2 * len(metrics) + 2.2, 0.32 * n + 1.4))
    FigureCanvasAgg(fig)
    fmts = list(dict.fromkeys(r["format_label"] for r in summary))
    colours = {f: f"C{i}" for i, f in enumerate(fmts)}
    ys = list(range(n))[::-1]
    for j, m in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), j + 1)
        label, scale = units[m]
        for y, r in zip(ys, summary, strict=True):
            mean, se = r[m]
            c = colours[r["format_label"]]
            ax.errorbar(mean * scale, y, xerr=se * scale, fmt="o", color=c, capsize=3,
                        markerfacecolor="white" if r.get("control") else c)
        ax.set_xlabel(label)
        ax.set_yticks(ys)
        ax.set_yticklabels([f"{r['format_label']} {r['label']}" for r in summary]
                           if j == 0 else [])
        ax.grid(axis="x", alpha=0.3)
    if title:
        fig.suptitle(title, fontsize="medium")
    fig.tight_layout()
    path = Path(path)
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=100)
    return path


def save_reliability_grid(path: str | os.PathLike,
                          curves: Mapping[str, tuple[Any, Any]], *, num_bins: int = 15,
                          title: str | None = None) -> Path:
    """Reliability diagrams, one small panel per method (``{name: (probs, labels)}``):
    accuracy against confidence per non-empty bin, the diagonal, the ECE."""
    import math

    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from lpsampling.atomic import atomic_open

    if not curves:
        raise ValueError("`curves` is empty")
    n = len(curves)
    cols = min(4, n)
    nrows = math.ceil(n / cols)
    fig = Figure(figsize=(2.6 * cols, 2.6 * nrows + 0.4))
    FigureCanvasAgg(fig)
    for i, (name, (probs, labels)) in enumerate(curves.items()):
        ax = fig.add_subplot(nrows, cols, i + 1)
        data = _metrics.reliability_diagram_data(probs, labels, num_bins)
        ece = float(_metrics.expected_calibration_error(probs, labels, num_bins))
        keep = np.asarray(data.counts) > 0
        ax.plot([0, 1], [0, 1], "--", color="0.6", linewidth=1)
        ax.plot(np.asarray(data.confidence)[keep], np.asarray(data.accuracy)[keep], "o-",
                markersize=3)
        ax.set_title(f"{name}\nECE {100 * ece:.2f}%", fontsize="small")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.tick_params(labelsize="x-small")
    if title:
        fig.suptitle(title, fontsize="medium")
    fig.tight_layout()
    path = Path(path)
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=90)
    return path


def compare(
    base: RunConfig,
    *,
    formats: Sequence[str] = ("fixed8", "bfp8"),
    methods: Sequence[str] | None = None,
    seeds: int = 3,
    controls: bool = False,
    alpha: float = ALPHA,
    out_dir: str | os.PathLike | None = None,
    dataset: Dataset | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
    compute: str | None = None,
) -> dict[str, Any]:
    """Run the paper's method grid over ``seeds`` seeds (``base.seed``, +1, ...).

    ``compute`` (default ``base.compute``) applies to the low-precision rows (``"int8"``
    needs formats with 8-bit weights and activations, e.g. ``bfp8``); the FP32 rows, the
    reference, run in float32.

    Every row is ``base`` with its method and format replaced; with ``controls``, every
    sampler row is followed by its noise-free control (the same run at ``T = 0``: same
    schedule, quantization and sample averaging). Compiled functions are shared by the
    seeds of a row. Each row gets a verdict against its :func:`reference_row` on
    error, NLL and ECE (paired t over seeds, two-sided, level ``alpha``).

    With ``out_dir``: writes ``table.md``, ``results.json`` (summary and every run's
    record), one JSON per run under ``runs/``, ``summary.png`` (each metric per row,
    mean ± SE) and ``reliability.png`` (one reliability diagram per row, first seed).

    Returns:
      ``{"summary": [...], "runs": [...], "table": markdown, ...}``.
    """
    positive_int("seeds", seeds)
    compute = base.compute if compute is None else compute
    rows: list[Row] = []
    for fmt, method in paper_grid(formats, methods):
        rows.append((fmt, method, False))
        if controls and get_method(method).noise:
            rows.append((fmt, method, True))
    if not rows:
        raise ValueError("no rows to run: check formats and methods")
    ds = prepare_data(base.replace(train_subset=None, test_subset=None), dataset)
    out_path = Path(out_dir) if out_dir is not None else None
    if out_path is not None:
        (out_path / "runs").mkdir(parents=True, exist_ok=True)
    # build (and so validate) every configuration before running anything
    base_sched = None if base.method_spec.cyclical else base.schedule
    configs = [
        # the FP32 rows (the reference) have no 8-bit operands: they run in float32
        [base.replace(format=fmt, method=method, seed=base.seed + s, checkpoint_dir=None,
                      schedule=None if get_method(method).cyclical else base_sched,
                      compute="float32" if get_format(fmt).is_full else compute,
                      temperature=0.0 if control else base.temperature)
         for s in range(seeds)]
        for fmt, method, control in rows
    ]
    runs, curves, per_row = [], {}, {}
    total = len(rows) * seeds
    t_all = time.perf_counter()
    k = 0
    for row, row_configs in zip(rows, configs, strict=True):
        fmt, method, control = row
        per_seed = []
        for s, cfg in enumerate(row_configs):
            k += 1
            t0 = time.perf_counter()
            res = run_experiment(cfg, dataset=ds, progress=progress)
            rec = res.record
            if out_path is not None:
                tag = "_T0" if control else ""
                write_json_atomic(
                    out_path / "runs" / f"{fmt}_{method}{tag}_seed{cfg.seed}.json", rec)
            per_seed.append(rec)
            runs.append(rec)
            if s == 0:
                curves[f"{rec['format_label']} {rec['label']}"] = (res.probs, res.labels)
            if log is not None:
                m = rec["metrics"]
                log(f"[{k}/{total}] {rec['format_label']:>10} {rec['label']:<22} seed "
                    f"{cfg.seed}: error {100 * m['error']:.2f}%  ECE {100 * m['ece']:.2f}%  "
                    f"NLL {m['nll']:.3f}  ({time.perf_counter() - t0:.1f} s)")
        per_row[row] = per_seed
    summary = summarize_rows(rows, per_row, alpha=alpha)
    elapsed = time.perf_counter() - t_all
    title = (f"{ds.name}, {base.model}, {base.epochs} epochs, T = {base.temperature:g}, "
             f"{seeds} seed(s): BMA test metrics, mean ± standard error")
    table = format_table(summary, title=title)
    result = {"summary": summary, "runs": runs, "table": table, "elapsed_s": elapsed,
              "base_config": base.to_dict(), "compute": compute}
    if out_path is not None:
        write_text_atomic(out_path / "table.md", table)
        write_json_atomic(out_path / "results.json", result)
        save_summary_figure(out_path / "summary.png", summary,
                            title=f"{ds.name}, {base.model}, T = {base.temperature:g}: mean "
                                  f"± SE over {seeds} seed(s) (hollow: T = 0 control)")
        save_reliability_grid(out_path / "reliability.png", curves, num_bins=base.num_bins,
                              title=f"{ds.name}: BMA reliability (seed {base.seed})")
    return result


def summarize_rows(rows: Sequence[Row],
                   per_row: Mapping[Row, Sequence[Mapping[str, Any]]], *,
                   alpha: float = ALPHA) -> list[dict[str, Any]]:
    """The summary of a grid from its run records (``{row: [record per seed]}``): mean ±
    SE per metric and row, and each row's verdict against its :func:`reference_row`
    (paired t over the seeds both rows hold). Rows without records are left out (a grid
    cut short is summarized from the rows it finished)."""
    rows = [r for r in rows if per_row.get(r)]
    summary = []
    for row in rows:
        fmt, method, control = row
        per_seed = per_row[row]
        first = per_seed[0]
        summary.append({
            "format": fmt, "method": method, "control": control,
            "temperature": first["config"]["temperature"], "label": first["label"],
            "format_label": first["format_label"], "seeds": len(per_seed),
            "ece_num_bins": first["metrics"]["ece_num_bins"],
            "num_samples": first["metrics"]["num_samples"],
            **{name: _metrics.summarize([r["metrics"][name] for r in per_seed])
               for name in ("error", "ece", "nll", "paper_ece", "member_error",
                            "disagreement")},
            "bank_ratio_vs_float32": first["bank"]["ratio_vs_float32"],
        })
    for row, entry in zip(rows, summary, strict=True):
        ref = reference_row(row, rows)
        entry["verdict"] = None if ref is None else _verdict(per_row[row], per_row[ref],
                                                             summary[rows.index(ref)],
                                                             alpha)
    return summary


def _verdict(a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]],
             ref: Mapping[str, Any], alpha: float) -> dict[str, Any] | None:
    """Row ``a`` against reference ``b``: paired by seed on the seeds both hold."""
    va = {r["config"]["seed"]: r["metrics"] for r in a}
    vb = {r["config"]["seed"]: r["metrics"] for r in b}
    common = [s for s in sorted(set(va) & set(vb))
              if all(isinstance(x[m], float) and math.isfinite(x[m])
                     for x in (va[s], vb[s]) for m in VERDICT_METRICS)]
    out: dict[str, Any] = {"vs": f"{ref['label']}" + (
        "" if ref["format"] == a[0]["format"] else f" ({ref['format_label']})")}
    if not common:
        return None
    for m in VERDICT_METRICS:
        xa = [va[s][m] for s in common]
        xb = [vb[s][m] for s in common]
        out[m] = compare_samples(xa, xb, paired=True, metric=m, alpha=alpha).to_dict()
    return out
