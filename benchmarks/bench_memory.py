"""Memory of low-precision sampling, measured on real arrays of ResNet-18's shapes.

For the 11,173,962 parameters of the paper's CIFAR ResNet-18 (the leaf shapes of
``lpsampling.flax.create_model("resnet18", 10)``, BatchNorm scale/bias included, running
statistics not), in four modes — full-precision SGLD (FP), SGLDLP-F (float32 accumulator),
naive SGLDLP-L and VC SGLDLP-L (the state holds only the grid weights):

(a) bytes of the params + optimizer-state pytrees after ``init`` and after one jitted step
    (sum of ``.nbytes``), and the bytes of all live JAX arrays after the step (the
    gradients included);
(b) XLA's own view of the compiled optimizer step, ``jax.jit(step, donate_argnums=(0, 1))
    .lower(...).compile().memory_analysis()``: argument, output, aliased (donated) and
    temporary bytes;
(c) the peak resident set size of a fresh subprocess per mode that builds the arrays,
    initialises, compiles and runs three jitted steps, as a ratio to the FP run. The peak is
    the kernel's high-water mark ``VmHWM``, reset (``/proc/self/clear_refs``) after the
    imports and again after compiling, so that the run's peak counts the arrays and the
    step's temporaries alone; ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` is not used
    because in a child of a fork + exec it also counts the parent's RSS at the fork.

Then what a deployment would keep: the grid weights packed with ``lpsampling.storage.pack``
(int8 codes, plus int8 block exponents for block floating point) versus float32, and a
posterior sample bank of ``--capacity`` (50) ResNet-18 samples, packed versus float32
stacked, from real ``SampleBank`` arrays (``lps.bank.nbytes``).

Simulated low precision keeps float32 arrays inside the step: XLA has no 8-bit arithmetic
here, so the step's working memory does not shrink (SGLDLP-F even doubles the state with its
accumulator). The saving is in storage (sample banks, checkpoints) and in what could live in
int8 on hardware that computes in it.

Run::

    python benchmarks/bench_memory.py --write benchmarks/RESULTS_memory.md
    python benchmarks/bench_memory.py --quick          # small MLP, smoke run
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message=".*donated buffers.*")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from _machine import machine_line  # noqa: E402  (a sibling module: benchmarks/ is on sys.path)

import lpsampling as lps  # noqa: E402
from lpsampling.atomic import write_text_atomic  # noqa: E402

HERE = Path(__file__).resolve().parent
MODES = {  # name -> (label, low-precision formats?, accumulator)
    "fp": ("FP SGLD", False, "full"),
    "lpf": ("SGLDLP-F (float32 accumulator)", True, "full"),
    "naive": ("naive SGLDLP-L", True, "low"),
    "vc": ("VC SGLDLP-L", True, "vc"),
}
RESNET18_PARAMS = 11_173_962


def step_format() -> lps.BlockFloatingPoint:
    """8-bit block floating point, one exponent per output channel in Flax's layout
    (the last axis of kernels; a 1-D leaf has one block per element)."""
    return lps.BlockFloatingPoint(8, axis=-1)


def model_shapes(model_name: str) -> dict:
    """The params pytree of the model as ShapeDtypeStructs (no compute)."""
    from lpsampling.flax import QuantConfig, create_model

    if model_name == "resnet18":
        model = create_model("resnet18", 10, QuantConfig.full())
        x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    else:  # a small MLP for --quick
        model = create_model("mlp", 10, QuantConfig.full(), hidden=(256,))
        x = jax.ShapeDtypeStruct((1, 784), jnp.float32)
    variables = jax.eval_shape(
        functools.partial(model.init, train=False), jax.random.key(0), x)
    return variables["params"]


def real_params(shapes, seed: int = 0):
    """Real float32 arrays of the given shapes (uniform ±0.1, like PyTorch's init scale)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda s: jnp.asarray(rng.uniform(-0.1, 0.1, s.shape).astype(np.float32)), shapes)


def tree_nbytes(tree) -> int:
    return int(sum(np.prod(x.shape, dtype=np.int64) * x.dtype.itemsize
                   for x in jax.tree.leaves(tree)))


def tree_size(tree) -> int:
    return int(sum(np.prod(x.shape, dtype=np.int64) for x in jax.tree.leaves(tree)))


def live_nbytes() -> int:
    return int(sum(a.nbytes for a in jax.live_arrays()))


def make_opt(mode: str):
    _, low, acc = MODES[mode]
    fmt = step_format() if low else lps.FULL
    return lps.sgld(0.5, num_data=50_000, temperature=1e-3, weight_decay=5e-4,
                    weight_format=fmt, grad_format=fmt, accumulator=acc,
                    key=jax.random.key(1)), fmt


def make_step(opt):
    def step(params, state, grads):
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return jax.jit(step, donate_argnums=(0, 1))


@functools.partial(jax.jit, static_argnums=(1,))
def grid_weights(params, fmt, key):
    """``lps.init_weights`` in one compiled call (eagerly it compiles leaf by leaf)."""
    return lps.init_weights(params, fmt, key=key)


def start(mode: str, shapes):
    """(params on the weight grid, state, grads, step) for ``mode``."""
    opt, fmt = make_opt(mode)
    theta = real_params(shapes, 0)
    grads = jax.tree.map(lambda x: 0.1 * x, real_params(shapes, 1))
    state = opt.init(theta)
    params = grid_weights(theta, fmt, jax.random.key(2))
    del theta
    return params, state, grads, make_step(opt)


# --------------------------------------------------------------------------------------
# (a) and (b), in this process.


def measure_mode(mode: str, shapes) -> dict:
    params, state, grads, step = start(mode, shapes)
    jax.block_until_ready((params, state))
    after_init = tree_nbytes(params) + tree_nbytes(state)
    compiled = step.lower(params, state, grads).compile()
    ma = compiled.memory_analysis()
    params, state = compiled(params, state, grads)
    jax.block_until_ready((params, state))
    after_step = tree_nbytes(params) + tree_nbytes(state)
    acc_bytes = tree_nbytes(state.accumulator) if state.accumulator is not None else 0
    out = {
        "mode": mode, "params_bytes": tree_nbytes(params), "acc_bytes": acc_bytes,
        "state_plus_params_init": after_init, "state_plus_params_step": after_step,
        "live_after_step": live_nbytes(),
        "xla_argument": ma.argument_size_in_bytes, "xla_output": ma.output_size_in_bytes,
        "xla_alias": ma.alias_size_in_bytes, "xla_temp": ma.temp_size_in_bytes,
        "xla_peak": getattr(ma, "peak_memory_in_bytes", None),
    }
    del params, state, grads, step, compiled
    return out


# --------------------------------------------------------------------------------------
# (c): one fresh child per mode.


def _status_bytes(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _current_rss() -> int:
    rss = _status_bytes("VmRSS")
    return rss if rss is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _peak_rss() -> int:
    """The process's peak RSS. ``VmHWM`` where Linux has it: ``ru_maxrss`` of a process
    started by fork + exec also counts the forking parent's RSS at the fork (the kernel
    carries the old address space's high-water mark across exec), so a fresh child of a
    big parent would report the parent's size."""
    hwm = _status_bytes("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _trim_heap() -> None:
    """Give freed heap pages back to the OS (glibc ``malloc_trim``), so that what the
    compiler freed is not counted as resident afterwards."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (``VmHWM``) to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def child_main(mode: str, model_name: str, capacity: int) -> None:
    """Entry point of a measuring subprocess: prints one JSON line.

    Phases: imports, model shapes and the XLA runtime (``before`` = RSS after them); then,
    with the peak mark reset, *setup*: the arrays, ``init`` and the AOT compilation of the
    step (``peak_setup``); then, with the mark reset again, *run*: three steps with the
    compiled executable, or ``capacity`` additions to a sample bank (``peak_run``)."""
    shapes = model_shapes(model_name)
    jnp.zeros(8).block_until_ready()
    before = _current_rss()
    reset = _reset_peak_rss()
    if mode.startswith("bank-"):
        from lpsampling import bank as sample_bank

        fmt = step_format() if mode == "bank-packed" else lps.FULL
        params = grid_weights(real_params(shapes, 0), step_format(), jax.random.key(2))
        bank = sample_bank.init(params, fmt, capacity)
        add = jax.jit(sample_bank.add, donate_argnums=(0,)).lower(bank, params).compile()
        jax.block_until_ready(bank)
        peak_setup = _peak_rss()
        jax.clear_caches()  # the eager ops' executables; the compiled step is held here
        _trim_heap()
        after_setup = _current_rss()
        _reset_peak_rss()
        for _ in range(capacity):
            bank = add(bank, params)
        jax.block_until_ready(bank)
    else:
        params, state, grads, step = start(mode, shapes)
        step = step.lower(params, state, grads).compile()
        jax.block_until_ready((params, state, grads))
        peak_setup = _peak_rss()
        jax.clear_caches()  # the eager ops' executables; the compiled step is held here
        _trim_heap()
        after_setup = _current_rss()
        _reset_peak_rss()
        for _ in range(3):
            params, state = step(params, state, grads)
        jax.block_until_ready((params, state))
    print(json.dumps({"mode": mode, "before": before, "peak_setup": peak_setup,
                      "after_setup": after_setup, "peak_run": _peak_rss(), "reset": reset}))


def run_child(mode: str, model_name: str, capacity: int) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--model", model_name,
           "--capacity", str(capacity)]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"child {mode} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------
# Deployment storage: packed params and the sample bank.


def storage_rows(shapes, capacity: int, formats) -> list[dict]:
    from lpsampling import bank as sample_bank
    from lpsampling.storage import pack

    theta = real_params(shapes, 0)
    f32 = tree_nbytes(theta)
    rows = []
    for fmt in formats:
        grid = grid_weights(theta, fmt, jax.random.key(3))
        packed = jax.tree.map(lambda x, fmt=fmt: pack(x, fmt), grid)
        nb = sum(p.nbytes for p in jax.tree.leaves(
            packed, is_leaf=lambda x: hasattr(x, "codes")))
        rows.append({"what": f"params on the grid, packed ({fmt!r})", "lp": nb, "f32": f32})
        add = jax.jit(sample_bank.add, donate_argnums=(0,))
        bank = sample_bank.init(grid, fmt, capacity)
        for _ in range(capacity):
            bank = add(bank, grid)
        jax.block_until_ready(bank)
        lp_bank = sample_bank.nbytes(bank)
        del bank
        rows.append({"what": f"sample bank, {capacity} samples, packed ({fmt!r})",
                     "lp": lp_bank, "f32": None})
    bank32 = sample_bank.init(theta, lps.FULL, capacity)
    add = jax.jit(sample_bank.add, donate_argnums=(0,))
    for _ in range(capacity):
        bank32 = add(bank32, theta)
    jax.block_until_ready(bank32)
    b32 = sample_bank.nbytes(bank32)
    del bank32
    for r in rows:
        if r["f32"] is None:
            r["f32"] = b32
    return rows


def mib(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:,.1f}"




def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet18", choices=("resnet18", "mlp"))
    p.add_argument("--capacity", type=int, default=50, help="samples in the bank")
    p.add_argument("--modes", default=",".join(MODES),
                   help="samplers to measure (comma list of " + ",".join(MODES) + ")")
    p.add_argument("--no-rss", action="store_true", help="skip the subprocess RSS part (c)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: small MLP, bank of 4 (fixed point only), RSS for fp and "
                        "SGLDLP-F only")
    p.add_argument("--write", metavar="PATH", help="also write the markdown report here")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child_main(args.child, args.model, args.capacity)
        return 0
    if args.quick:
        args.model, args.capacity = "mlp", 4
    t0 = time.perf_counter()
    shapes = model_shapes(args.model)
    n = tree_size(shapes)
    if args.model == "resnet18" and n != RESNET18_PARAMS:
        print(f"warning: ResNet-18 has {n:,} parameters, expected {RESNET18_PARAMS:,}",
              file=sys.stderr)

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for m in modes:
        if m not in MODES:
            p.error(f"unknown mode {m!r}; choose from {', '.join(MODES)}")
    if "fp" not in modes:
        modes.insert(0, "fp")
    res = {m: measure_mode(m, shapes) for m in modes}
    fp = res["fp"]

    rss = {}
    if not args.no_rss:
        child_modes = ["fp", "lpf"] if args.quick else [*modes, "bank-f32", "bank-packed"]
        for m in child_modes:
            rss[m] = run_child(m, args.model, args.capacity)
            print(f"  child {m}: run peak RSS {mib(rss[m]['peak_run'])} MiB (from "
                  f"{mib(rss[m]['before'])})", file=sys.stderr, flush=True)

    store_formats = [lps.FixedPoint(8, 8)] if args.quick else [step_format(),
                                                               lps.FixedPoint(8, 8)]
    store = storage_rows(shapes, args.capacity, store_formats)
    elapsed = time.perf_counter() - t0

    L = []
    L.append(f"Model: {args.model}, {n:,} float32 parameters "
             f"({mib(4 * n)} MiB); step format {step_format()!r}; bank capacity "
             f"{args.capacity}.\n")
    L.append("(a) pytree bytes (MiB) and (b) XLA memory analysis of the jitted optimizer step "
             "(params and state donated):\n")
    L.append("| mode | params | accumulator | params+state after init | after a step | "
             "ratio to FP | all live arrays after step | XLA argument | XLA output | "
             "XLA aliased | XLA temp |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for m in modes:
        label, r = MODES[m][0], res[m]
        L.append(f"| {label} | {mib(r['params_bytes'])} | {mib(r['acc_bytes'])} | "
                 f"{mib(r['state_plus_params_init'])} | {mib(r['state_plus_params_step'])} | "
                 f"{r['state_plus_params_step'] / fp['state_plus_params_step']:.2f} | "
                 f"{mib(r['live_after_step'])} | {mib(r['xla_argument'])} | "
                 f"{mib(r['xla_output'])} | {mib(r['xla_alias'])} | {mib(r['xla_temp'])} |")
    if rss:
        reset = all(v["reset"] for v in rss.values())
        L.append("\n(c) peak RSS of a fresh process per mode, from the kernel's high-water mark "
                 "`VmHWM` (`ru_maxrss` of a child also counts its forking parent's RSS, carried "
                 "across exec). *Before*: after the imports and XLA's start. *Setup*: the "
                 "arrays, `init` and compiling the step. *Run*: 3 jitted steps (bank rows: "
                 f"{args.capacity} `lps.bank.add`s into a preallocated bank). "
                 + ("The mark is reset (`/proc/self/clear_refs`) before each phase. "
                    if reset else "The mark could not be reset: later phases include earlier "
                    "peaks. ")
                 + "After setup JAX's caches are cleared (the compiled step is kept) and freed "
                 "heap is returned to the OS (`malloc_trim`). *Held in "
                 "run* = run peak − before: the arrays, the compiled code and the step's "
                 "temporaries; *run increment* = run peak − RSS after setup.\n")
        L.append("| process | before MiB | setup peak MiB | after setup MiB | run peak MiB | "
                 "run increment MiB | held in run MiB | ratio (samplers: to FP SGLD; "
                 "packed bank: to the float32 bank) |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        names = {"bank-f32": f"sample bank float32 ({args.capacity})",
                 "bank-packed": f"sample bank packed ({args.capacity})",
                 **{m: v[0] for m, v in MODES.items()}}
        def held_of(m):
            return rss[m]["peak_run"] - rss[m]["before"] if m in rss else 0

        for m, v in rss.items():
            held = held_of(m)
            ref = held_of("bank-f32") if m == "bank-packed" else (
                None if m == "bank-f32" else held_of("fp"))
            ratio = "—" if not ref else f"{held / ref:.2f}"
            L.append(f"| {names[m]} | {mib(v['before'])} | {mib(v['peak_setup'])} | "
                     f"{mib(v['after_setup'])} | {mib(v['peak_run'])} | "
                     f"{mib(v['peak_run'] - v['after_setup'])} | {mib(held)} | {ratio} |")
    L.append("\nStorage a deployment keeps (real arrays; packed = `lpsampling.storage.pack`, "
             "bank = `SampleBank`, bytes from `lps.bank.nbytes`):\n")
    L.append("| what | low precision MiB | float32 MiB | ratio |")
    L.append("|---|---:|---:|---:|")
    for r in store:
        L.append(f"| {r['what']} | {mib(r['lp'])} | {mib(r['f32'])} | {r['lp'] / r['f32']:.4f} |")
    table = "\n".join(L)
    print(table)
    print(f"\n({elapsed:.0f} s)")

    if args.write:
        cmd = " ".join(["python", "benchmarks/bench_memory.py"] + (argv or sys.argv[1:]))
        md = [
            "# Memory: low-precision SGLD on ResNet-18 shapes\n",
            f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
            f"- machine: {machine_line()}",
            f"- versions: Python {platform.python_version()}, jax {jax.__version__}, "
            f"numpy {np.__version__}, lpsampling {lps.__version__}",
            f"- command: `{cmd}` ({elapsed:.0f} s)",
            "",
            table,
            "",
            "**What this shows, honestly.** lpsampling *simulates* low precision: inside the "
            "step every tensor is float32 (XLA on this CPU has no 8-bit arithmetic), so "
            "the step's working memory does not shrink. SGLDLP-F even holds twice the "
            "float32 state (grid weights + accumulator); naive and VC SGLDLP-L hold only the "
            "grid weights, as much as FP SGLD. The real savings are in what is *stored*: "
            "grid weights packed to int8 (plus one int8 exponent per block for block floating "
            "point) take about a quarter of float32, and so does a posterior sample bank — "
            "checkpoints and ensembles shrink 4×, and on hardware that computes in int8 the "
            "SGLDLP-L weights could live in 8 bits throughout.",
            "",
        ]
        write_text_atomic(args.write, "\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
