"""lpsampling versus QPyTorch, side by side, on the CPU.

Times, in one process and interleaved, the same quantizations in both libraries on the
same float32 array (2**22 elements by default):

* fixed point ``FixedPoint(8, 3)`` (QPyTorch ``fixed_point_quantize(x, 8, 3)``),
* block floating point ``BlockFloatingPoint(8, axis=0)`` on a 2-D array
  (QPyTorch ``block_quantize(x, 8, dim=0)``),
* small floats ``FloatingPoint(4, 3)`` and ``FloatingPoint(8, 7)``
  (QPyTorch ``float_quantize(x, exp, man)``),

each with stochastic and nearest rounding, and one low-precision SGLD step on a
~1M-parameter set of tensors with 8-bit fixed point ``FixedPoint(8, 8)``:

* QPyTorch: what the paper's released code (``bnn/optim.py``, ``OptimLP.step``) does per
  step, tensor by tensor: quantize the gradient, add weight decay, take the step, add the
  Langevin noise, quantize the weight (SGLDLP-L naive); for SGLDLP-F the step runs on the
  float32 accumulator and the weight is the quantized accumulator. The VC row ports the
  paper's fixed-point ``Q_vc`` (written for ``device='cuda'``) to the CPU.
* lpsampling: the jitted optax step ``opt.update`` + ``optax.apply_updates`` of
  ``lps.sgld(..., accumulator="low" | "full" | "vc")`` (params and state donated).

Also timed: the random numbers alone (``jax.random.bits`` against ``torch.rand``, which
QPyTorch's fixed point draws), and every random lpsampling case a second time under
``jax.threefry_partitionable(False)`` (JAX's older threefry layout, about twice as cheap per
32-bit word on the CPU).

Reported: medians of ``--repeats`` timings per case (after one warm-up call each; the
contenders alternate within every repeat, and their order flips every repeat), the ratio
lpsampling/QPyTorch and the speed-up QPyTorch/lpsampling, and a summary computed from the
table. JAX calls end with
``block_until_ready``; PyTorch on the CPU is synchronous. PyTorch's intra-op threads are set
to the machine's cores (``--threads``, default ``os.cpu_count()``); XLA uses all cores.

QPyTorch (``pip install qtorch==0.3.0``) compiles its C++ kernels when first imported
(``torch.utils.cpp_extension``: needs ``g++`` and ``ninja`` on ``PATH``). If PyTorch or
QPyTorch cannot be imported, or with ``--backend numpy``, the reference is a NumPy
transcription of QPyTorch's CPU kernels (same formulas, ``np.random`` uniforms), and the
report says why.

Run (see benchmarks/README.md for the venv)::

    source .venv-bench/bin/activate    # ninja on PATH for the first import
    python benchmarks/bench_vs_qtorch.py --write benchmarks/RESULTS_qtorch.md
    python benchmarks/bench_vs_qtorch.py --quick --backend numpy      # smoke run, no torch
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore", message=".*donated buffers.*")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from _machine import cpu_model  # noqa: E402  (a sibling module: benchmarks/ is on sys.path)

import lpsampling as lps  # noqa: E402
from lpsampling.atomic import write_text_atomic  # noqa: E402

# --------------------------------------------------------------------------------------
# The reference backends.


def load_qtorch():
    """(torch, qtorch.quant, None) or (None, None, reason)."""
    try:
        import torch
    except Exception as err:  # ImportError, or a broken install
        return None, None, f"PyTorch not importable: {type(err).__name__}: {err}"
    try:
        import qtorch.quant as qq
    except Exception as err:  # the C++ build runs inside this import
        return torch, None, (f"QPyTorch not importable (its C++ build runs at import): "
                             f"{type(err).__name__}: {err}")
    return torch, qq, None


class NumpyQ:
    """QPyTorch's CPU kernels (``quant_cpu.cpp``, ``sim_helper.cpp``, ``bit_helper.cpp``),
    transcribed to NumPy: the same bit manipulations and the same rounding formulas."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)

    # fixed point: round(a, r, sigma) = ldexp(nearbyint(ldexp(a, -sigma) + r - 0.5), sigma)
    def fixed_point_quantize(self, a, wl, fl, rounding="stochastic"):
        t_min = -np.ldexp(np.float32(1), wl - fl - 1)
        t_max = -t_min - np.ldexp(np.float32(1), -fl)
        r = self.rng.random(a.shape, dtype=np.float32) if rounding == "stochastic" else 0.5
        o = np.ldexp(np.rint(np.ldexp(a, fl) + r - np.float32(0.5)), -fl).astype(np.float32)
        return np.clip(o, t_min, t_max)

    def _round_bitwise(self, target, man_bits, rounding):
        mask = np.uint32((1 << (23 - man_bits)) - 1)
        if rounding == "stochastic":
            rand = self.rng.integers(0, 2**31 - 1, target.shape, dtype=np.uint32,
                                     endpoint=True) & mask
        else:
            rand = np.uint32(1 << (23 - man_bits - 1))
        return (target + rand) & ~mask

    @staticmethod
    def _clip_max_exponent(man_bits, max_exponent, q):
        qe = (q << np.uint32(1)) >> np.uint32(24) << np.uint32(23)
        max_man = np.uint32(0xFFFFFFFF) << np.uint32(9) >> np.uint32(9) \
            >> np.uint32(23 - man_bits) << np.uint32(23 - man_bits)
        clipped = max_exponent | max_man | (q >> np.uint32(31) << np.uint32(31))
        return np.where(qe > max_exponent, clipped, q)

    def block_quantize(self, a, wl, dim=0, rounding="stochastic"):
        assert dim == 0
        m = np.abs(a.reshape(a.shape[0], -1)).max(axis=1)
        m = np.broadcast_to(m.reshape((-1,) + (1,) * (a.ndim - 1)), a.shape)
        max_exp = (m.view(np.uint32) << np.uint32(1)) >> np.uint32(24) << np.uint32(23)
        base = max_exp.view(np.float32) * np.float32(6)
        target = (a + base).astype(np.float32).view(np.uint32)
        q = self._round_bitwise(target, wl, rounding).view(np.float32) - base
        q = self._clip_max_exponent(wl - 2, max_exp, q.astype(np.float32).view(np.uint32))
        return q.view(np.float32)

    def float_quantize(self, a, exp_bits, man_bits, rounding="stochastic"):
        target = a.view(np.uint32)
        t_exp = ((target << np.uint32(1)) >> np.uint32(24)).astype(np.int32) - 127
        min_exp = -((1 << (exp_bits - 1)) - 2)
        sub = t_exp < min_exp
        # normal path
        q = self._round_bitwise(target, man_bits, rounding)
        qe = ((q << np.uint32(1)) >> np.uint32(24)).astype(np.int64)
        max_store = (1 << (exp_bits - 1)) + 127
        max_man = np.uint32(0xFFFFFFFF) << np.uint32(9) >> np.uint32(9) \
            >> np.uint32(23 - man_bits) << np.uint32(23 - man_bits)
        max_num = np.uint32(max_store << 23) | max_man
        clipped = (target >> np.uint32(31) << np.uint32(31)) | max_num
        q = np.where((q != 0) & (qe > max_store), clipped, q)
        out = q.view(np.float32)
        if sub.any():  # subnormal path: shift into a normal binade, round, shift back
            shift_bits = (np.uint32((127 + min_exp) << 23)
                          | (target[sub] >> np.uint32(31) << np.uint32(31)))
            shift = shift_bits.view(np.float32)
            val = (a[sub] + shift).astype(np.float32).view(np.uint32)
            qs = self._round_bitwise(val, man_bits, rounding).view(np.float32) - shift
            out = out.copy()
            out[sub] = qs
        return out


# --------------------------------------------------------------------------------------
# Timing.


def _sync_jax(out):
    jax.block_until_ready(out)
    return out


def median_ms(ts: list[float]) -> float:
    return float(np.median(ts) * 1e3)


def machine_info() -> dict[str, str]:
    cpu = cpu_model()
    try:
        load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "n/a"
    return {"cpu": cpu, "cores": str(os.cpu_count()), "load": load,
            "platform": platform.platform()}


# --------------------------------------------------------------------------------------
# The SGLD step in both libraries.

# A ~1M-parameter set of tensors (PyTorch layouts; elementwise work, so layout is moot).
SGLD_SHAPES = [
    (64, 3, 3, 3), (64,), (64,),
    (64, 64, 3, 3), (64, 64, 3, 3),
    (128, 64, 3, 3), (128, 128, 3, 3), (128,), (128,),
    (256, 128, 3, 3), (256,), (256,),
    (512, 256), (512, 512), (512,), (10, 512), (10,),
]
SGLD_SHAPES_QUICK = [(64, 3, 3, 3), (64,), (128, 64), (10, 128), (10,)]
LR, WD, NUM_DATA, TEMPERATURE = 0.5, 5e-4, 50_000, 1e-3
SGLD_FMT = lps.FixedPoint(8, 8)


def torch_sgld_step(torch, qfix, mode: str):
    """One step of the paper's ``OptimLP.step`` with SGD (no momentum) + noise, per tensor."""
    wl, fl = SGLD_FMT.wl, SGLD_FMT.fl
    std = (2.0 * LR * TEMPERATURE / NUM_DATA) ** 0.5
    var = std**2
    D = 2.0**-fl
    var_fix = D * D / 4.0
    t_min, t_max = -(2.0 ** (wl - fl - 1)), 2.0 ** (wl - fl - 1) - D

    def q_vc(mu):  # the paper's fixed-point Q_vc (vectorised torch ops, device moved to CPU)
        if var > var_fix:
            x = mu + (var - var_fix) ** 0.5 * torch.randn(mu.size())
            qx = qfix(x, wl, fl, rounding="nearest")
            r = x - qx
            ar = torch.abs(r)
            p1 = (var_fix + ar**2 + ar * D) / (2 * D**2)
            p2 = (var_fix + ar**2 - ar * D) / (2 * D**2)
            u = torch.rand(mu.size())
            s = torch.zeros(mu.size())
            s[(u < p1).nonzero(as_tuple=True)] = D
            u[(u < p1).nonzero(as_tuple=True)] = 10.0
            s[(u < (p1 + p2)).nonzero(as_tuple=True)] = -D
            theta = qx + torch.sign(r) * s
        else:
            qm = qfix(mu, wl, fl, rounding="stochastic")
            r = mu - qm
            p1 = torch.abs(r) / D
            var_s = (1.0 - p1) * r**2 + p1 * (-r + torch.sign(r) * D) ** 2
            v = var - var_s
            v[(v < 0).nonzero(as_tuple=True)] = 0
            pp = v / (2 * D**2)
            u = torch.rand(v.size())
            s = torch.zeros(v.size())
            s[(u < pp).nonzero(as_tuple=True)] = D
            u[(u < pp).nonzero(as_tuple=True)] = 10.0
            s[(u < (2 * pp)).nonzero(as_tuple=True)] = -D
            theta = qm + s
        return torch.clamp(theta, min=t_min, max=t_max)

    def step(params, accs, grads):
        for i, (p, g) in enumerate(zip(params, grads, strict=True)):
            d = qfix(g * 1.0, wl, fl, rounding="stochastic")  # grad_quant(grad * grad_scaling)
            theta = accs[i] if mode == "full" else p            # p.data = weight_acc[p]
            d.add_(theta, alpha=WD)
            theta.add_(d, alpha=-LR)
            if mode == "vc":
                params[i] = q_vc(theta)
                continue
            theta.add_(torch.randn(theta.size()) * std)
            params[i] = qfix(theta, wl, fl, rounding="stochastic")  # weight_quant
        return params

    return step


def numpy_sgld_step(npq: NumpyQ, mode: str):
    """The same per-tensor step as :func:`torch_sgld_step` (naive and F), in NumPy."""
    wl, fl = SGLD_FMT.wl, SGLD_FMT.fl
    std = np.float32((2.0 * LR * TEMPERATURE / NUM_DATA) ** 0.5)

    def step(params, accs, grads):
        for i, (p, g) in enumerate(zip(params, grads, strict=True)):
            d = npq.fixed_point_quantize(g * np.float32(1.0), wl, fl)
            theta = accs[i] if mode == "full" else p
            d += np.float32(WD) * theta
            theta -= np.float32(LR) * d
            theta += npq.rng.standard_normal(theta.shape, dtype=np.float32) * std
            params[i] = npq.fixed_point_quantize(theta, wl, fl)
        return params

    return step


def make_lps_step(mode: str, params, key_impl: str | None = None):
    opt = lps.sgld(LR, num_data=NUM_DATA, temperature=TEMPERATURE, weight_decay=WD,
                   weight_format=SGLD_FMT, grad_format=SGLD_FMT, accumulator=mode,
                   key=jax.random.key(1, impl=key_impl))
    state = opt.init(params)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(params, state, grads):
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return step, state


# --------------------------------------------------------------------------------------


def _non_partitionable(call):
    """``call`` run under ``jax.threefry_partitionable(False)`` (its own jit cache entry)."""

    def wrapped():
        with jax.threefry_partitionable(False):
            return call()

    return wrapped


def build_cases(args, backend: str, torch, qq):
    """A list of (name, elements, lps_call, lps_call_np, ref_call); each call runs once,
    synchronised. ``lps_call_np`` is the same lpsampling call traced with
    ``jax.threefry_partitionable(False)`` (None where nothing random is drawn)."""
    rng = np.random.default_rng(0)
    n = 2**args.log2n
    x1 = rng.standard_normal(n).astype(np.float32)
    rows = 2 ** (args.log2n // 2)
    x2 = rng.standard_normal((rows, n // rows)).astype(np.float32)
    key_impl = args.key_impl
    keys = [jax.random.key(i, impl=key_impl) for i in range(args.repeats + 2)]
    npq = NumpyQ(0)

    if backend == "qtorch":
        t1, t2 = torch.from_numpy(x1.copy()), torch.from_numpy(x2.copy())
        ref = {
            "fixed": lambda r: qq.fixed_point_quantize(t1, 8, 3, rounding=r),
            "bfp": lambda r: qq.block_quantize(t2, 8, dim=0, rounding=r),
            "f43": lambda r: qq.float_quantize(t1, 4, 3, rounding=r),
            "f87": lambda r: qq.float_quantize(t1, 8, 7, rounding=r),
        }
    else:
        ref = {
            "fixed": lambda r: npq.fixed_point_quantize(x1, 8, 3, rounding=r),
            "bfp": lambda r: npq.block_quantize(x2, 8, dim=0, rounding=r),
            "f43": lambda r: npq.float_quantize(x1, 4, 3, rounding=r),
            "f87": lambda r: npq.float_quantize(x1, 8, 7, rounding=r),
        }
    j1, j2 = jnp.asarray(x1), jnp.asarray(x2)
    fmts = {
        "fixed": ("FixedPoint(8,3)", lps.FixedPoint(8, 3), j1),
        "bfp": (f"BFP(8, axis=0) {x2.shape[0]}x{x2.shape[1]}",
                lps.BlockFloatingPoint(8, axis=0), j2),
        "f43": ("FloatingPoint(4,3)", lps.FloatingPoint(4, 3), j1),
        "f87": ("FloatingPoint(8,7)", lps.FloatingPoint(8, 7), j1),
    }
    cases = []
    for rounding in ("stochastic", "nearest"):
        for tag, (label, fmt, xj) in fmts.items():
            if tag not in args.formats:
                continue
            f = jax.jit(functools.partial(lps.quantize, fmt=fmt, rounding=rounding))
            counter = iter(range(10**9))
            if rounding == "stochastic":
                lps_call = (lambda f=f, xj=xj, c=counter:
                            _sync_jax(f(xj, key=keys[next(c) % len(keys)])))
            else:
                lps_call = lambda f=f, xj=xj: _sync_jax(f(xj))
            ref_call = functools.partial(ref[tag], rounding)
            np_call = (_non_partitionable(lps_call)
                       if rounding == "stochastic" and args.nonpartitionable else None)
            cases.append((f"{label} {rounding}", n, lps_call, np_call, ref_call))

    # Where the stochastic time goes: the random bits alone, in both libraries.
    bits = jax.jit(lambda k: jax.random.bits(k, (n,), jnp.uint32))
    counter = iter(range(10**9))
    bits_call = lambda c=counter: _sync_jax(bits(keys[next(c) % len(keys)]))  # noqa: E731
    if backend == "qtorch":
        ref_bits = lambda: torch.rand(n)  # noqa: E731  (QPyTorch's fixed point: rand_like)
    else:
        ref_bits = lambda: npq.rng.random(n, dtype=np.float32)  # noqa: E731
    ref_rng = "torch.rand" if backend == "qtorch" else "np.random float32"
    cases.append((f"random bits only: jax.random.bits uint32 / {ref_rng}", n, bits_call,
                  _non_partitionable(bits_call) if args.nonpartitionable else None, ref_bits))

    shapes = SGLD_SHAPES_QUICK if args.quick else SGLD_SHAPES
    nparams = int(sum(np.prod(s) for s in shapes))
    init = [(rng.uniform(-0.4, 0.4, s)).astype(np.float32) for s in shapes]
    grads = [(0.05 * rng.standard_normal(s)).astype(np.float32) for s in shapes]
    init = [np.round(p * 256) / 256 for p in init]  # start on the grid
    modes = (("low", "SGLDLP-L naive"), ("full", "SGLDLP-F"), ("vc", "SGLDLP-L VC"))
    for mode, label in modes:
        if mode not in args.sgld_modes:
            continue
        if backend == "qtorch":
            t_params = [torch.from_numpy(p.copy()) for p in init]
            t_accs = [torch.from_numpy(p.copy()) for p in init]
            t_grads = [torch.from_numpy(g.copy()) for g in grads]
            tstep = torch_sgld_step(torch, qq.fixed_point_quantize, mode)
        else:
            if mode == "vc":
                continue
            t_params = [p.copy() for p in init]
            t_accs = [p.copy() for p in init]
            t_grads = [g.copy() for g in grads]
            tstep = numpy_sgld_step(npq, mode)
        jstep, jstate = make_lps_step(mode, [jnp.asarray(p) for p in init], args.key_impl)
        jgrads = [jnp.asarray(g) for g in grads]
        box = {"p": [jnp.asarray(p) for p in init], "s": jstate, "tp": t_params}

        def lps_call(box=box, jstep=jstep, jgrads=jgrads):
            box["p"], box["s"] = jstep(box["p"], box["s"], jgrads)
            _sync_jax(box["p"])

        def ref_call(box=box, tstep=tstep, t_accs=t_accs, t_grads=t_grads):
            box["tp"] = tstep(box["tp"], t_accs, t_grads)

        cases.append((f"SGLD step {label}, FixedPoint(8,8), {len(shapes)} tensors",
                      nparams, lps_call,
                      _non_partitionable(lps_call) if args.nonpartitionable else None, ref_call))
    return cases


def summarize(rows: list[dict], ref_name: str, info: dict, target: float = 8.0) -> list[str]:
    """Plain-language conclusions computed from the table (so a rerun keeps them true)."""
    stoch = [r for r in rows if r["case"].endswith("stochastic")]
    near = [r for r in rows if r["case"].endswith("nearest")]
    bits = next((r for r in rows if r["case"].startswith("random bits")), None)
    sgld = [r for r in rows if r["case"].startswith("SGLD step")]
    out = []
    if stoch:
        lo, hi = min(r["speedup"] for r in stoch), max(r["speedup"] for r in stoch)
        met = sum(r["speedup"] >= target for r in stoch)
        out.append(f"- Stochastic quantization, JAX defaults: speed-up of lpsampling over "
                   f"{ref_name} {lo:.1f}–{hi:.1f}×; the {target:g}× target is met in {met} of "
                   f"{len(stoch)} formats.")
        nps = [r["np_speedup"] for r in stoch if r["np_speedup"] is not None]
        if nps:
            met_np = sum(x >= target for x in nps)
            out.append(f"- With `jax.threefry_partitionable(False)`: speed-up {min(nps):.1f}–"
                       f"{max(nps):.1f}× (target met in {met_np} of {len(nps)}).")
    if bits and stoch:
        share = bits["lps_ms"] / float(np.median([r["lps_ms"] for r in stoch]))
        out.append(f"- Where lpsampling's time goes: drawing the 32 random bits per element "
                   f"alone (`jax.random.bits`) takes {bits['lps_ms']:.1f} ms "
                   f"({bits['lps_ns']:.1f} ns/element), against "
                   f"{float(np.median([r['lps_ms'] for r in stoch])):.1f} ms (median) for a "
                   f"whole stochastic quantization and "
                   f"{min(r['lps_ms'] for r in near):.1f}–{max(r['lps_ms'] for r in near):.1f} "
                   f"ms for nearest rounding (the same arithmetic without random bits); the "
                   f"reference's uniforms take {bits['ref_ms']:.1f} ms."
                   + (" The random-number generator, not the rounding, bounds the speed-up "
                      "on the CPU." if share > 0.5 else ""))
    if near:
        out.append(f"- Nearest rounding: speed-up {min(r['speedup'] for r in near):.1f}–"
                   f"{max(r['speedup'] for r in near):.1f}× (XLA fuses and vectorises the "
                   f"arithmetic; QPyTorch's CPU kernels are scalar loops).")
    for r in sgld:
        extra = "" if r["np_speedup"] is None else (
            f" ({r['np_speedup']:.1f}× with non-partitionable threefry)")
        out.append(f"- {r['case']}: speed-up {r['speedup']:.1f}×{extra}.")
    out.append(f"- Timings were taken on a shared machine (load average {info['load']}); both "
               f"libraries were interleaved, so the ratios are fairer than the absolute "
               f"times.")
    return out


def run(args) -> tuple[str, list[dict]]:
    torch = qq = None
    reason = None
    backend = args.backend
    if backend in ("auto", "qtorch"):
        torch, qq, reason = load_qtorch()
        if qq is None:
            if backend == "qtorch":
                raise SystemExit(f"--backend qtorch: {reason}")
            backend = "numpy"
        else:
            backend = "qtorch"
    if backend == "qtorch":
        torch.set_num_threads(args.threads)
    cases = build_cases(args, backend, torch, qq)
    ref_name = "QPyTorch" if backend == "qtorch" else "NumPy-QPyTorch"
    times = {name: ([], [], []) for name, *_ in cases}
    for _name, _n, lc, lnp, rc in cases:  # warm-up: compile, allocate, build kernels
        lc()
        if lnp is not None:
            lnp()
        rc()
    for r in range(args.repeats):
        for name, _n, lc, lnp, rc in cases:
            calls = [(0, lc), (2, lnp), (1, rc)] if lnp is not None else [(0, lc), (1, rc)]
            for which, call in (calls if r % 2 == 0 else calls[::-1]):
                t = time.perf_counter()
                call()
                times[name][which].append(time.perf_counter() - t)
    rows = []
    for name, n, *_ in cases:
        tl, tr = median_ms(times[name][0]), median_ms(times[name][1])
        tnp = median_ms(times[name][2]) if times[name][2] else None
        rows.append({"case": name, "n": n, "lps_ms": tl, "ref_ms": tr, "np_ms": tnp,
                     "ratio": tl / tr, "speedup": tr / tl,
                     "np_speedup": None if tnp is None else tr / tnp,
                     "lps_ns": tl * 1e6 / n, "ref_ns": tr * 1e6 / n})

    info = machine_info()
    versions = [f"Python {platform.python_version()}", f"jax {jax.__version__}",
                f"jaxlib {jax.lib.__version__ if hasattr(jax.lib, '__version__') else '?'}",
                f"numpy {np.__version__}", f"lpsampling {lps.__version__}"]
    if torch is not None:
        versions.append(f"torch {torch.__version__}")
    if qq is not None:
        import importlib.metadata as md
        versions.append(f"qtorch {md.version('qtorch')}")
    lines = []
    lines.append("# lpsampling vs QPyTorch on the CPU\n")
    lines.append(f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}")
    lines.append(f"- machine: {info['cpu']}, {info['cores']} cores ({info['platform']})")
    lines.append(f"- load average (1/5/15 min) at the end of the run: {info['load']}")
    lines.append(f"- versions: {', '.join(versions)}")
    lines.append(f"- command: `{' '.join([Path(sys.executable).name] + sys.argv)}`")
    lines.append(f"- reference: {ref_name}"
                 + (f" (fallback: {reason})" if reason and backend == "numpy" else ""))
    if backend == "qtorch":
        lines.append(f"- torch intra-op threads: {torch.get_num_threads()} "
                     f"(set to --threads={args.threads}); XLA: all {info['cores']} cores")
    lines.append(f"- JAX PRNG key implementation for lpsampling's stochastic rounding: "
                 f"`{args.key_impl}`")
    lines.append(f"- array: 2^{args.log2n} = {2**args.log2n:,} float32 elements; medians of "
                 f"{args.repeats} interleaved repeats after one warm-up")
    lines.append("")
    lines.append(f"| case | elements | {ref_name} ms | lpsampling ms | ratio lps/ref | "
                 f"speed-up | lps ns/elem | ref ns/elem | lps, non-partitionable threefry ms "
                 f"| its speed-up |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        npc = ("—", "—") if r["np_ms"] is None else (f"{r['np_ms']:.2f}",
                                                      f"{r['np_speedup']:.1f}x")
        lines.append(f"| {r['case']} | {r['n']:,} | {r['ref_ms']:.2f} | {r['lps_ms']:.2f} | "
                     f"{r['ratio']:.3f} | {r['speedup']:.1f}x | {r['lps_ns']:.2f} | "
                     f"{r['ref_ns']:.2f} | {npc[0]} | {npc[1]} |")
    lines.append("")
    lines.append("*lpsampling ms*: JAX's defaults (`jax_threefry_partitionable=True` since JAX "
                 "0.5). *non-partitionable threefry*: the same jitted call traced under "
                 "`jax.threefry_partitionable(False)`, which draws 32-bit words at half the "
                 "threefry cost on the CPU (the partitionable path computes a full "
                 "threefry2x32 block per 32-bit word and XORs the halves). Ratio < 1 and "
                 "speed-up > 1 mean lpsampling is faster. *—*: nothing random is drawn.")
    lines.extend(["", "## Summary", ""] + summarize(rows, ref_name, info))
    return "\n".join(lines) + "\n", rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--log2n", type=int, default=22, help="array size 2**log2n (22 or 24)")
    p.add_argument("--repeats", type=int, default=7, help="timed repeats per case (>= 5)")
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="torch.set_num_threads (default: all cores)")
    p.add_argument("--backend", choices=("auto", "qtorch", "numpy"), default="auto",
                   help="reference: QPyTorch, or its kernels in NumPy (auto: QPyTorch if "
                        "importable)")
    p.add_argument("--key-impl", default="threefry2x32",
                   help="JAX PRNG implementation of the keys passed to lps.quantize "
                        "(threefry2x32 is JAX's default; also rbg, unsafe_rbg)")
    p.add_argument("--formats", default="fixed,bfp,f43,f87",
                   help="quantization cases to time (comma list of fixed,bfp,f43,f87)")
    p.add_argument("--sgld-modes", default="low,full,vc",
                   help="SGLD steps to time (comma list of low,full,vc; empty for none)")
    p.add_argument("--no-nonpartitionable", dest="nonpartitionable", action="store_false",
                   help="skip the lpsampling timings under jax.threefry_partitionable(False)")
    p.add_argument("--quick", action="store_true", help="smoke run: 2**14 elements, 2 repeats")
    p.add_argument("--write", metavar="PATH", help="also write the report (markdown) here")
    args = p.parse_args(argv)
    args.formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    args.sgld_modes = [m.strip() for m in args.sgld_modes.split(",") if m.strip()]
    if args.quick:
        args.log2n, args.repeats = 14, min(args.repeats, 2)
    text, _ = run(args)
    print(text)
    if args.write:
        write_text_atomic(args.write, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
