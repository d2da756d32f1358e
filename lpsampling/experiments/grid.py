"""The paper's method grid (Tables 1 and 2): :func:`paper_grid` rows, :func:`compare` over
seeds, and :func:`format_table` (error %, ECE %, NLL as mean ± standard error).
"""

from __future__ import annotations

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
from lpsampling.validation import positive_int

__all__ = ["paper_grid", "format_table", "compare"]


def paper_grid(formats: Sequence[str] = ("fixed8", "bfp8"),
               methods: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """Rows ``(format, method)`` of the paper's Tables 1 and 2, in their order.

    FP32: SGLDFP, SGDFP, cSGLDFP; then for each low-precision format: naive SGLDLP-L,
    VC SGLDLP-L, SGDLP-L, SGLDLP-F, SGDLP-F, VC cSGLDLP-L, cSGLD-F. ``methods`` keeps
    only the rows whose method is listed (``fp32`` rows use ``sgld``/``sgd``/``csgld``).
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
        keep = {get_method(m).name for m in methods}
        rows = [r for r in rows if r[1] in keep]
    return rows


def _pm(mean: float, se: float, scale: float, digits: int) -> str:
    return f"{mean * scale:.{digits}f} ± {se * scale:.{digits}f}"


def format_table(summary: Sequence[Mapping[str, Any]], *, title: str | None = None) -> str:
    """A markdown table in the layout of the paper's Tables 1 and 2 (rows format ×
    method; columns error %, ECE %, NLL as mean ± standard error over seeds)."""
    num_bins = summary[0]["ece_num_bins"] if summary else 15
    lines = []
    if title:
        lines += [f"### {title}", ""]
    lines += [f"| format | method | error % | ECE % ({num_bins} bins) | NLL | seeds |",
              "|---|---|---|---|---|---|"]
    for r in summary:
        lines.append(
            f"| {r['format_label']} | {r['label']} | {_pm(*r['error'], 100, 2)} | "
            f"{_pm(*r['ece'], 100, 2)} | {_pm(*r['nll'], 1, 3)} | {r['seeds']} |")
    return "\n".join(lines) + "\n"


def compare(
    base: RunConfig,
    *,
    formats: Sequence[str] = ("fixed8", "bfp8"),
    methods: Sequence[str] | None = None,
    seeds: int = 3,
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

    Every row is ``base`` with its method and format replaced; compiled functions are
    shared by the seeds of a row. With ``out_dir``: writes ``table.md``,
    ``results.json`` (summary and every run's record), one JSON per run under
    ``runs/``, and ``reliability.png`` (BMA of the first seed of every row) plus one
    ``reliability-<format>.png`` per format.

    Returns:
      ``{"summary": [...], "runs": [...], "table": markdown}``.
    """
    positive_int("seeds", seeds)
    compute = base.compute if compute is None else compute
    rows = paper_grid(formats, methods)
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
                      compute="float32" if get_format(fmt).is_full else compute)
         for s in range(seeds)]
        for fmt, method in rows
    ]
    runs, summary, curves = [], [], {}
    total = len(rows) * seeds
    t_all = time.perf_counter()
    k = 0
    for (fmt, method), row_configs in zip(rows, configs, strict=True):
        per_seed = []
        for s, cfg in enumerate(row_configs):
            k += 1
            t0 = time.perf_counter()
            res = run_experiment(cfg, dataset=ds, progress=progress)
            rec = res.record
            if out_path is not None:
                write_json_atomic(out_path / "runs" / f"{fmt}_{method}_seed{cfg.seed}.json",
                                  rec)
            per_seed.append(rec)
            runs.append(rec)
            if s == 0:
                curves[(fmt, f"{rec['format_label']} {rec['label']}")] = (res.probs,
                                                                          res.labels)
            if log is not None:
                m = rec["metrics"]
                log(f"[{k}/{total}] {rec['format_label']:>10} {rec['label']:<16} seed "
                    f"{cfg.seed}: error {100 * m['error']:.2f}%  ECE {100 * m['ece']:.2f}%  "
                    f"NLL {m['nll']:.3f}  ({time.perf_counter() - t0:.1f} s)")
        first = per_seed[0]
        summary.append({
            "format": fmt, "method": method, "label": first["label"],
            "format_label": first["format_label"], "seeds": len(per_seed),
            "ece_num_bins": first["metrics"]["ece_num_bins"],
            **{name: _metrics.summarize([r["metrics"][name] for r in per_seed])
               for name in ("error", "ece", "nll", "paper_ece")},
            "bank_ratio_vs_float32": first["bank"]["ratio_vs_float32"],
        })
    elapsed = time.perf_counter() - t_all
    title = (f"{ds.name}, {base.model}, {base.epochs} epochs, {seeds} seed(s): BMA test "
             f"metrics, mean ± standard error")
    table = format_table(summary, title=title)
    result = {"summary": summary, "runs": runs, "table": table, "elapsed_s": elapsed,
              "base_config": base.to_dict(), "compute": compute}
    if out_path is not None:
        write_text_atomic(out_path / "table.md", table)
        write_json_atomic(out_path / "results.json", result)
        _metrics.save_reliability_diagram(
            out_path / "reliability.png", {name: v for (_, name), v in curves.items()},
            num_bins=base.num_bins, title=f"{ds.name}: BMA reliability (seed {base.seed})")
        for fmt in dict.fromkeys(f for f, _ in rows):
            sub = {name: v for (f, name), v in curves.items() if f == fmt}
            _metrics.save_reliability_diagram(
                out_path / f"reliability-{fmt}.png", sub, num_bins=base.num_bins,
                title=f"{ds.name}, {get_format(fmt).label}: BMA reliability")
    return result


