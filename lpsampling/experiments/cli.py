"""Command line: ``lpsampling {run,compare,gaussian,demo}`` (also ``python -m lpsampling``;
the console script is ``lpsampling.cli:main``, a re-export of this module's :func:`main`).

* ``run``      — train / sample one configuration, write a JSON result;
* ``compare``  — the paper's method grid over seeds with noise-free controls: a table like
  the paper's Tables 1 and 2 with a verdict per row (markdown + JSON), a summary figure
  (metric per method, mean ± SE) and per-method reliability diagrams;
* ``gaussian`` — the paper's Figure 1 (low-precision SGLD on N(0, 1)) as a PNG, with the
  variances printed against the law ``Δ/sqrt(πα)``;
* ``demo``     — quantize a tensor in every format: grid, error and packed bytes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

EPILOG = """\
examples:
  # the quick default (embedded scikit-learn digits, MLP, harsh 4-bit fixed point,
  # 5 seeds, noise-free controls, verdicts; about a minute on 2 idle CPU cores)
  lpsampling compare

  # the paper's 8-bit grid with the cyclical methods
  lpsampling compare --formats fixed8,bfp8 --methods all --seeds 3

  # one configuration, with checkpoints every 200 steps and resume after a crash
  lpsampling run --method vc-sgldlp-l --format bfp8 --out vc.json \\
      --checkpoint-dir ckpt/vc --checkpoint-every 200 --resume

  # Fashion-MNIST (IDX files in /usr/share/datasets/fashion-mnist or --data-dir), CNN
  # (suggested settings, not tuned; one CNN epoch takes minutes per method on a CPU)
  lpsampling compare --dataset fashion_mnist --model cnn --epochs 20 --batch-size 128 \\
      --lr 0.1 --temperature 0.01 --num-cycles 2 --out-dir runs/compare-fmnist

  # CIFAR-10 as in the paper's released scripts: ResNet-18, 245 epochs, batch 128,
  # lr 0.5 with the decay schedule, weight decay 5e-4, temperature 1e-3, crop + flip,
  # 50 samples (cyclical: 7 cycles of 35 epochs, 5 samples per cycle); needs a GPU
  lpsampling run --preset paper-cifar10 --data-dir ~/data --method vc-sgldlp-l \\
      --format bfp8 --out c10-vc-bfp8.json --checkpoint-dir ckpt/c10 \\
      --checkpoint-every 2000 --resume
  lpsampling compare --preset paper-cifar10 --data-dir ~/data --seeds 3 \\
      --out-dir runs/compare-cifar10
  (same with --preset paper-cifar100 for CIFAR-100)

  # Figure 1 and the quantization demo
  lpsampling gaussian --out fig1.png
  lpsampling demo
"""

# config flags shared by run and compare: (flag, RunConfig field, type, help)
_CONFIG_FLAGS = [
    ("--dataset", "dataset", str, "digits | fashion_mnist | cifar10 | cifar100 | imdb"),
    ("--data-dir", "data_dir", str, "directory holding the dataset files"),
    ("--model", "model", str,
     "logreg | mlp | cnn | resnet18 | resnet-mini | lstm (default: per dataset)"),
    ("--compute", "compute", str,
     "float32 (default: the simulated low-precision path) | int8: layers fed by quantized "
     "activations multiply 8-bit codes as int8 (needs 8-bit weights and activations: bfp8)"),
    ("--epochs", "epochs", int, "training epochs"),
    ("--batch-size", "batch_size", int, "minibatch size"),
    ("--lr", "lr", float, "step size on the mean minibatch loss (initial value)"),
    ("--schedule", "schedule", str,
     "constant | decay (SGLD/SGD methods; default decay) — cyclical methods use cyclical"),
    ("--temperature", "temperature", float, "posterior temperature T"),
    ("--weight-decay", "weight_decay", float, "Gaussian prior (weight decay) per datum"),
    ("--friction", "friction", float, "SGHMC methods: friction γ (default 2)"),
    ("--inverse-mass", "inverse_mass", float, "SGHMC methods: inverse mass u (default 2)"),
    ("--num-cycles", "num_cycles", int, "cycles of the cyclical methods"),
    ("--exploration-ratio", "exploration_ratio", float,
     "noise-free fraction at the start of each cycle (cyclical methods)"),
    ("--samples", "samples", int,
     "SGLD: posterior samples, spread evenly over the sampling window (default "
     "max(20, 2 per window epoch))"),
    ("--sample-start", "sample_start", float,
     "SGLD: start of the sampling window as a fraction of training (default 0.8)"),
    ("--cycle-samples", "cycle_samples", int,
     "cyclical: samples per cycle over its last epochs (default ≈ cycle epochs / 7)"),
    ("--seed", "seed", None, "random seed in [0, 2**62] (compare: the first seed)"),
    ("--num-bins", "num_bins", int, "ECE bins (default 15)"),
    ("--eval-batch-size", "eval_batch_size", int, "test-time batch size"),
    ("--train-subset", "train_subset", int, "use only the first N training examples"),
    ("--test-subset", "test_subset", int, "use only the first N test examples"),
]

#: seeds the key function accepts (``jax.random.key``: a 64-bit integer; kept signed)
MAX_SEED = 2**62  # the validation module's largest int
#: the largest tensor ``demo --shape`` quantizes (elements; 64 MiB of float32)
MAX_DEMO_SIZE = 2**24


def _seed(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid seed {text!r}: not an integer") from None
    if not 0 <= v <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"seed {v} out of range [0, 2**62]")
    return v


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid shape {text!r}: comma-separated positive integers, e.g. 16,64"
        ) from None
    if not shape or any(d <= 0 for d in shape):
        raise argparse.ArgumentTypeError(
            f"invalid shape {text!r}: every dimension must be a positive integer")
    size = 1
    for d in shape:
        size *= d
    if size > MAX_DEMO_SIZE:
        raise argparse.ArgumentTypeError(
            f"shape {text!r} has {size} elements, more than the demo's limit of "
            f"{MAX_DEMO_SIZE} (2**24)")
    return shape


def check_writable(path: str | Path, *, directory: bool, flag: str) -> Path:
    """Check, before any work, that ``path`` can be written: a file path (``directory``
    false) must not be a directory and its parent must be (or be creatable as) a writable
    directory; a directory path must be (or be creatable as) a writable directory. The
    missing directories are created. Raises ``ValueError`` with a one-line message."""
    import tempfile

    p = Path(path).expanduser()
    if not directory and p.is_dir():
        raise ValueError(f"{flag} {p}: is a directory, expected a file path")
    d = p if directory else (p.parent if str(p.parent) else Path("."))
    if d.exists() and not d.is_dir():
        raise ValueError(f"{flag} {p}: {d} is not a directory")
    try:
        d.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".lpsampling-write-test-", dir=d)
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        why = err.strerror or str(err)
        raise ValueError(f"{flag} {p}: cannot write to {d} ({why})") from None
    return p


#: methods of the default ``compare`` (the paper's non-cyclical rows)
DEFAULT_COMPARE_METHODS = ("sgld", "sgd", "sgldlp-l", "vc-sgldlp-l", "sgdlp-l", "sgldlp-f",
                           "sgdlp-f")

# defaults of the quick digits setting (see RunConfig) and per-dataset models
DEFAULT_MODELS = {"digits": "mlp", "fashion_mnist": "cnn", "cifar10": "resnet18",
                  "cifar100": "resnet18", "imdb": "lstm"}


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    from lpsampling.experiments.config import PRESETS

    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="the paper's settings (flags given explicitly override them)")
    for flag, dest, typ, help_ in _CONFIG_FLAGS:
        p.add_argument(flag, dest=dest, type=typ or _seed, default=None, help=help_)
    p.add_argument("--augment", dest="augment", action=argparse.BooleanOptionalAction,
                   default=None, help="random crop + horizontal flip of training images")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bars")


def _config_from_args(args: argparse.Namespace, **fixed):
    from lpsampling.experiments.config import PRESETS, RunConfig
    from lpsampling.experiments.registry import normalize_name

    values: dict = {}
    if getattr(args, "preset", None):
        values.update(PRESETS[args.preset])
    for _, dest, _, _ in _CONFIG_FLAGS:
        v = getattr(args, dest, None)
        if v is not None:
            values[dest] = v
    if args.augment is not None:
        values["augment"] = args.augment
    values.update({k: v for k, v in fixed.items() if v is not None})
    if "model" not in values:
        ds = normalize_name(str(values.get("dataset", RunConfig.dataset)), "dataset", sep="_")
        values["model"] = DEFAULT_MODELS.get(ds, RunConfig.model)
    return RunConfig(**values)


# --------------------------------------------------------------------------------------
# subcommands


def _cmd_run(args: argparse.Namespace) -> int:
    from lpsampling.experiments.evaluation import run_experiment

    config = _config_from_args(args, method=args.method, format=args.format,
                               checkpoint_dir=args.checkpoint_dir,
                               checkpoint_every=args.checkpoint_every)
    out = args.out
    if out is None:
        out = (f"runs/{config.dataset}-{config.model}-{config.format}-{config.method}-"
               f"seed{config.seed}.json")
    check_writable(out, directory=False, flag="--out")
    if config.checkpoint_dir:
        check_writable(config.checkpoint_dir, directory=True, flag="--checkpoint-dir")
    t0 = time.perf_counter()
    res = run_experiment(config, out=out, resume=args.resume, progress=args.progress)
    m, rec = res.record["metrics"], res.record
    print(f"{rec['format_label']} {rec['label']} on {config.dataset} ({config.model}, "
          f"{config.epochs} epochs, seed {config.seed}): error {100 * m['error']:.2f}%  "
          f"ECE {100 * m['ece']:.2f}% ({m['ece_num_bins']} bins; paper's 9-bin "
          f"{100 * m['paper_ece']:.2f}%)  NLL {m['nll']:.4f}  samples {m['num_samples']}  "
          f"bank {rec['bank']['nbytes']} B ({rec['bank']['ratio_vs_float32']:.3f}× float32)"
          f"  [{time.perf_counter() - t0:.1f} s]")
    print(f"wrote {out}")
    if rec.get("failed"):
        print(f"lpsampling run: error: the run failed: {rec['failed']} (recorded in {out} "
              'with "complete": false)', file=sys.stderr)
        return 3
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from lpsampling.experiments.grid import compare

    # --compute applies to the low-precision rows; the base (and FP32 rows) run in float32
    compute = args.compute
    args.compute = None
    base = _config_from_args(args)
    out_dir = args.out_dir or f"runs/compare-{base.dataset}"
    check_writable(out_dir, directory=True, flag="--out-dir")
    if base.seed + max(args.seeds, 1) - 1 > MAX_SEED:
        raise ValueError(f"--seed {base.seed} with --seeds {args.seeds} exceeds the largest "
                         "seed 2**62")
    formats = [f for f in args.formats.split(",") if f.strip()]
    methods = ([m for m in args.methods.split(",") if m.strip()]
               if args.methods else None)
    if methods in (["all"], ["ALL"]):
        methods = None
    t0 = time.perf_counter()
    res = compare(base, formats=formats, methods=methods, seeds=args.seeds,
                  controls=args.controls, out_dir=out_dir, progress=args.progress,
                  compute=compute)
    print()
    print(res["table"])
    print(f"wrote {out_dir}/table.md, results.json, summary.png (metrics per method, "
          f"mean ± SE), reliability.png (one diagram per method) "
          f"[{time.perf_counter() - t0:.1f} s]")
    failed = [r for r in res["runs"] if r.get("failed")]
    if failed:
        for r in failed:
            print(f"lpsampling compare: FAILED {r['format_label']} {r['label']} seed "
                  f"{r['config']['seed']}: {r['failed']}", file=sys.stderr)
        print(f"lpsampling compare: {len(failed)} of {len(res['runs'])} runs failed; "
              "their rows in the table are not valid results", file=sys.stderr)
        return 3
    return 0


def _floats(text: str) -> list[float]:
    return [float(t) for t in text.split(",") if t.strip()]


def _cmd_gaussian(args: argparse.Namespace) -> int:
    import jax

    from lpsampling.atomic import write_json_atomic
    from lpsampling.experiments.gaussian import gaussian_experiment, plot_gaussian
    from lpsampling.formats import FixedPoint

    check_writable(args.out, directory=False, flag="--out")
    if args.json:
        check_writable(args.json, directory=False, flag="--json")
    t0 = time.perf_counter()
    alphas = _floats(args.alphas)
    fmt = FixedPoint(args.wl, args.fl)
    res = gaussian_experiment(alphas=alphas, methods=tuple(args.methods.split(",")), fmt=fmt,
                              num_chains=args.chains, num_steps=args.steps,
                              key=jax.random.key(args.seed))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    plot_gaussian(res, args.out)
    print(f"Low-precision SGLD on N(0, 1) with {fmt!r} (Δ = {2.0 ** -args.fl:g}), "
          f"{args.chains} chains, second half of each chain kept")
    print(res.table())
    print(f"wrote {args.out}")
    if args.json:
        write_json_atomic(args.json, res.to_dict())
        print(f"wrote {args.json}")
    print(f"[{time.perf_counter() - t0:.1f} s]")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from lpsampling.formats import (
        FULL,
        BlockFloatingPoint,
        FixedPoint,
        FloatingPoint,
        describe,
        grid_gap,
    )
    from lpsampling.quantize import quantize
    from lpsampling.storage import pack, unpack

    key = jax.random.key(args.seed)
    kx, kq = jax.random.split(key)
    shape = args.shape
    x = 0.5 * jax.random.normal(kx, shape, jnp.float32)
    fmts = [
        FixedPoint(8, 8), FixedPoint(8, 6), FixedPoint(8, 3), FixedPoint(4, 2),
        BlockFloatingPoint(8, axis=0), BlockFloatingPoint(8, axis=-1),
        BlockFloatingPoint(8, axis=None), BlockFloatingPoint(8, block_size=shape[-1] // 2 or 1),
        BlockFloatingPoint(4, axis=0),
        FloatingPoint(4, 3), FloatingPoint(5, 2), FloatingPoint(8, 7), FULL,
    ]
    f32 = x.size * 4
    print(f"x: {shape} float32, N(0, 0.5²) — stochastic rounding (seed {args.seed}); "
          f"float32 storage {f32} B")
    print(f"{'format':<40} {'rms err':>9} {'max err':>9} {'bias':>10} {'clamped':>8} "
          f"{'packed B':>9} {'× f32':>6}  grid")
    for fmt in fmts:
        try:
            q = quantize(x, fmt, key=kq)
            p = pack(q, fmt)
            assert bool(jnp.all(unpack(p) == q)) or not isinstance(fmt, FixedPoint)
        except ValueError as err:
            print(f"{fmt!r:<40} skipped: {err}")
            continue
        err = np.asarray(q - x, np.float64)
        gap = np.broadcast_to(np.asarray(grid_gap(x, fmt), np.float64), err.shape)
        clamped = float(np.mean((gap > 0) & (np.abs(err) >= gap)))  # beyond one grid gap
        print(f"{fmt!r:<40} {np.sqrt(np.mean(err**2)):>9.2e} {np.abs(err).max():>9.2e} "
              f"{err.mean():>+10.1e} {100 * clamped:>7.1f}% {p.nbytes:>9d} "
              f"{p.nbytes / f32:>6.3f}  {describe(fmt)}")
    print("(clamped: values saturated at the format's range, e.g. FixedPoint(8, 8) keeps "
          "only [-0.5, 0.496]; packed bytes: real integer codes from lpsampling.storage.pack, "
          "block exponents included)")
    return 0


# --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from lpsampling.experiments.registry import FORMAT_NAMES, METHODS

    parser = argparse.ArgumentParser(
        prog="lpsampling",
        description="Low-precision SGLD experiments (Zhang, Wilson & De Sa, ICML 2022).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="{run,compare,gaussian,demo}")
    sub.required = True

    p = sub.add_parser("run", help="train / sample one configuration, write a JSON result",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", default="sgld", help=f"one of: {', '.join(METHODS)}")
    p.add_argument("--format", default="fp32",
                   help=f"one of: {', '.join(FORMAT_NAMES)} (default fp32)")
    _add_config_flags(p)
    p.add_argument("--out", help="JSON result path (default runs/<config>.json)")
    p.add_argument("--checkpoint-dir", dest="checkpoint_dir",
                   help="orbax checkpoint directory")
    p.add_argument("--checkpoint-every", dest="checkpoint_every", type=int, default=None,
                   help="steps between checkpoints (default: only at the end)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the latest checkpoint in --checkpoint-dir")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("compare", help="the paper's method grid over seeds (Tables 1-2)",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_config_flags(p)
    p.add_argument("--seeds", type=int, default=5, help="number of seeds (default 5)")
    p.add_argument("--formats", default="fixed4",
                   help="low-precision formats, comma-separated (default fixed4: 4-bit "
                        "fixed point, harsh enough to separate the methods; the paper's "
                        "are fixed8,bfp8); the FP32 rows are always included")
    p.add_argument("--methods", default=",".join(DEFAULT_COMPARE_METHODS),
                   help="keep only these methods (comma-separated; 'all': every method "
                        "of the paper's tables, cyclical ones included); default: "
                        + ",".join(DEFAULT_COMPARE_METHODS))
    p.add_argument("--controls", action=argparse.BooleanOptionalAction, default=True,
                   help="add the noise-free control (T = 0) of every sampler row "
                        "(default: on)")
    p.add_argument("--out-dir", dest="out_dir",
                   help="output directory (default runs/compare-<dataset>)")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("gaussian", help="the paper's Figure 1: low-precision SGLD on N(0,1)")
    p.add_argument("--out", default="gaussian.png", help="PNG path (default gaussian.png)")
    p.add_argument("--json", default=None, help="also write the variances as JSON")
    p.add_argument("--alphas", default="1e-3,1e-4", help="step sizes (default 1e-3,1e-4)")
    p.add_argument("--methods", default="low,vc,full",
                   help="low (naive) | vc | full (SGLDLP-F), comma-separated")
    p.add_argument("--chains", type=int, default=256, help="chains per configuration")
    p.add_argument("--steps", type=int, default=None,
                   help="steps per chain (default max(20000, 10/α))")
    p.add_argument("--wl", type=int, default=8, help="fixed-point word length (default 8)")
    p.add_argument("--fl", type=int, default=3, help="fractional bits (default 3: Δ = 1/8)")
    p.add_argument("--seed", type=_seed, default=0, help="seed in [0, 2**62]")
    p.set_defaults(func=_cmd_gaussian)

    p = sub.add_parser("demo", help="quantize a tensor in every format: grid, error, bytes")
    p.add_argument("--shape", type=_shape, default=(16, 64),
                   help="tensor shape, positive integers (default 16,64; at most 2**24 "
                        "elements)")
    p.add_argument("--seed", type=_seed, default=0, help="seed in [0, 2**62]")
    p.set_defaults(func=_cmd_demo)
    return parser


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lpsampling`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ValueError as err:
        print(f"lpsampling {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except OSError as err:  # FileNotFoundError, PermissionError, disk full, ...
        print(f"lpsampling {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
