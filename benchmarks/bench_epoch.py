"""Training-step speed of every precision mode relative to full-precision SGD, and the
bytes of a 50-sample posterior bank packed versus float32.

For each method the real training step of :mod:`lpsampling.experiments` (Flax CNN forward and
backward with its activation/error quantizers, the optax sampler with its weight and
gradient quantizers) runs on Fashion-MNIST batches of 128. Compilation is excluded (each
step function is compiled and warmed up first); the methods are timed in interleaved
rounds (the order rotates every round), each round times ``--steps`` steps per method,
and the reported ratio is the median over rounds of ``time(method) / time(SGDFP)`` in the
same round — so a shared, noisy machine slows numerator and denominator alike.

A full Fashion-MNIST epoch (468 steps of the CNN) takes minutes per method on two
shared CPU cores, so by default a fixed number of steps is timed (``--steps 0``: a whole
epoch). Falls back to scikit-learn's digits (8×8 images) when the Fashion-MNIST files are
missing, and says so.

Usage::

    python benchmarks/bench_epoch.py [--steps 20] [--rounds 5] [--out benchmarks/RESULTS_epoch.md]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from lpsampling import bank as sample_bank
from lpsampling.atomic import write_text_atomic
from lpsampling.data import load_dataset
from lpsampling.experiments import RunConfig, cross_entropy, make_train_step
from lpsampling.formats import Full

# (row label, method, format); the first row is the baseline
ROWS = [
    ("SGDFP", "sgd", "fp32"),
    ("SGLDFP", "sgld", "fp32"),
    ("SGLDLP-F", "sgldlp-f", "fixed8"),
    ("SGLDLP-F", "sgldlp-f", "bfp8"),
    ("naive SGLDLP-L", "sgldlp-l", "fixed8"),
    ("naive SGLDLP-L", "sgldlp-l", "bfp8"),
    ("VC SGLDLP-L", "vc-sgldlp-l", "fixed8"),
    ("VC SGLDLP-L", "vc-sgldlp-l", "bfp8"),
    ("SGDLP-L", "sgdlp-l", "fixed8"),
    ("SGDLP-L", "sgdlp-l", "bfp8"),
]


def _load():
    try:
        return load_dataset("fashion_mnist"), None
    except FileNotFoundError as err:
        return load_dataset("digits"), f"Fashion-MNIST not found ({err}); used digits instead"


class _Runner:
    """One method's compiled step and its evolving state."""

    def __init__(self, label, method, fmt, ds, batch_size, xs, ys):
        self.label, self.method, self.fmt = label, method, fmt
        self.config = RunConfig(dataset=ds.name, model="cnn", method=method, format=fmt,
                                epochs=1, batch_size=batch_size, lr=0.05, temperature=1.0,
                                samples=1, schedule=None if method.startswith("c") else
                                "constant")
        self.train_step = make_train_step(self.config, ds)
        self.engine = self.train_step.engine
        self.state = self.train_step.state
        self.xs, self.ys = xs, ys
        self.step_idx = 0
        self.times: list[float] = []

    def run(self, n: int) -> float:
        s = self.state
        t0 = time.perf_counter()
        for _ in range(n):
            i = self.step_idx % len(self.xs)
            s, _aux = self.train_step(s, self.xs[i], self.ys[i], self.step_idx)
            self.step_idx += 1
        jax.block_until_ready((s.params, s.opt_state, s.sums))
        dt = time.perf_counter() - t0
        self.state = s
        return dt


def _breakdown(runners, x, y, rounds):
    """Median ms of the model's forward+backward alone and of the sampler update alone,
    per runner (interleaved rounds)."""
    fns = {}
    for r in runners:
        model, opt = r.engine.model, r.engine.make_optimizer(jax.random.key(0),
                                                   r.config.temperature)
        params = r.state.params
        opt_state = opt.init(params)

        def fb(p, k, model=model):
            def loss(p):
                logits = model.apply({"params": p}, x, train=True, rngs={"quantize": k})
                return jnp.mean(cross_entropy(logits, y))
            return jax.grad(loss)(p)

        def upd(p, s, opt=opt):
            u, s = opt.update(jax.tree.map(lambda a: 1e-3 * a, p), s, p)
            return u, s

        fb, upd = jax.jit(fb), jax.jit(upd)
        k = jax.random.key(1)
        jax.block_until_ready(fb(params, k))
        jax.block_until_ready(upd(params, opt_state))
        fns[id(r)] = (lambda fb=fb, p=params, k=k: fb(p, k),
                      lambda upd=upd, p=params, s=opt_state: upd(p, s))
    times = {id(r): ([], []) for r in runners}
    for _ in range(rounds):
        for r in runners:
            for j, f in enumerate(fns[id(r)]):
                t0 = time.perf_counter()
                jax.block_until_ready(f())
                times[id(r)][j].append(time.perf_counter() - t0)
    return {i: tuple(1e3 * float(np.median(v)) for v in t) for i, t in times.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=20,
                    help="steps timed per method per round (0: one full epoch)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--samples", type=int, default=50, help="bank capacity for the bytes")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__),
                                                  "RESULTS_epoch.md"))
    args = ap.parse_args(argv)
    load_start = os.getloadavg()
    started = datetime.datetime.now(datetime.UTC)

    ds, note = _load()
    bsz = args.batch_size
    spe = ds.num_train // bsz
    steps = args.steps if args.steps > 0 else spe
    # pre-gathered device batches: host data loading is the same for every method
    nb = min(spe, max(steps, 8))
    rng = np.random.default_rng(0)
    perm = rng.permutation(ds.num_train)[: nb * bsz]
    xs = [jnp.asarray(ds.x_train[perm[i * bsz:(i + 1) * bsz]]) for i in range(nb)]
    ys = [jnp.asarray(ds.y_train[perm[i * bsz:(i + 1) * bsz]]) for i in range(nb)]

    runners = []
    compile_s = {}
    for label, method, fmt in ROWS:
        t0 = time.perf_counter()
        r = _Runner(label, method, fmt, ds, bsz, xs, ys)
        r.run(2)  # compile + warm up
        compile_s[(label, fmt)] = time.perf_counter() - t0
        runners.append(r)
        print(f"compiled {label} [{fmt}] in {compile_s[(label, fmt)]:.1f} s", flush=True)

    ratios = {id(r): [] for r in runners}
    for k in range(args.rounds):
        order = runners[k % len(runners):] + runners[: k % len(runners)]
        times = {}
        for r in order:
            times[id(r)] = r.run(steps)
            r.times.append(times[id(r)])
        base = times[id(runners[0])]
        for r in runners:
            ratios[id(r)].append(times[id(r)] / base)
        print(f"round {k + 1}/{args.rounds}: SGDFP {1e3 * base / steps:.1f} ms/step", flush=True)

    print("breakdown: forward+backward alone and sampler update alone", flush=True)
    parts = _breakdown(runners, xs[0], ys[0], args.rounds)

    # bytes of a bank of `samples` real samples (the CNN's current weights)
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(runners[0].state.params))
    f32_bytes = 4 * n_params * args.samples
    bank_rows = []
    add = jax.jit(sample_bank.add)
    for r in runners:
        key = r.fmt
        if key in {b[0] for b in bank_rows}:
            continue
        params = r.state.params
        bank = sample_bank.init(params, r.engine.fspec.weight, args.samples)
        for _ in range(args.samples):
            bank = add(bank, params)
        jax.block_until_ready(bank)
        nbytes = sample_bank.nbytes(bank)
        bank_rows.append((key, repr(r.engine.fspec.weight), nbytes, nbytes / f32_bytes))

    load_end = os.getloadavg()
    lines = [
        "## Training-step speed and sample-bank bytes (`benchmarks/bench_epoch.py`)",
        "",
        "- command: `" + " ".join(["python benchmarks/bench_epoch.py",
                                   *(sys.argv[1:] if argv is None else argv)]) + "`",
        f"- date: {started:%Y-%m-%d %H:%M} UTC; jax {jax.__version__} "
        f"({jax.default_backend()}, {jax.device_count()} device(s)); "
        f"machine: {' '.join(filter(None, [platform.machine(), platform.processor()]))}, "
        f"{os.cpu_count()} CPU cores, {platform.system()} {platform.release()}",
        f"- load average (1 min) at start / end: {load_start[0]:.1f} / {load_end[0]:.1f} "
        f"(the cores are shared with other work: absolute times are noisy, ratios less so)",
        f"- data: {ds.name}, CNN (`lpsampling.flax.SmallCNN`, {n_params:,} parameters), "
        f"batch {bsz}, {spe} steps per epoch",
        f"- timed: {'one full epoch' if steps == spe else f'{steps} steps (not a full epoch)'}"
        f" per method per round, {args.rounds} interleaved rounds (order rotated), "
        "compilation and warm-up excluded; ratio = median over rounds of "
        "time(method) / time(SGDFP) in the same round",
    ]
    if note:
        lines.append(f"- NOTE: {note}")
    lines += [
        "",
        "| method | format | ms / step (median) | × SGDFP (median) | range over rounds | ≤ 1.5× |",
        "|---|---|---|---|---|---|",
    ]
    for r in runners:
        rs = ratios[id(r)]
        med_ms = 1e3 * float(np.median(r.times)) / steps
        med = float(np.median(rs))
        lp = r.fmt != "fp32"
        ok = ("yes" if med <= 1.5 else "**no**") if lp else "—"
        lines.append(f"| {r.label} | {r.fmt} | {med_ms:.1f} | {med:.2f} | "
                     f"{min(rs):.2f}–{max(rs):.2f} | {ok} |")
    lines += [
        "",
        "Where the time goes (median ms, interleaved, same batch): the model's forward + "
        "backward alone (activation/error quantizers included) and the sampler's update "
        "alone (weight/gradient quantizers, noise, VC):",
        "",
        "| method | format | forward+backward ms | sampler update ms |",
        "|---|---|---|---|",
    ]
    for r in runners:
        fb_ms, up_ms = parts[id(r)]
        lines.append(f"| {r.label} | {r.fmt} | {fb_ms:.1f} | {up_ms:.1f} |")
    base_fb = parts[id(runners[0])][0]
    act = [parts[id(r)][0] / base_fb for r in runners
           if not isinstance(r.engine.fspec.activation, Full)]
    upd = max(parts[id(r)][1] for r in runners)
    if act:
        lines += [
            "",
            f"Reading: with activations and errors quantized (bfp8) the model's forward + "
            f"backward alone costs {min(act):.2f}–{max(act):.2f}× the unquantized one — the "
            f"activation/error quantizers (`lpsampling.quantizer` in the `Quantize` layers), "
            f"not the sampler: every sampler update takes ≤ {upd:.0f} ms, "
            f"≤ {upd / base_fb:.2f}× the full-precision forward + backward.",
        ]
    lines += [
        "",
        f"Sample bank of {args.samples} samples of the CNN's weights, bytes actually held "
        "(`lpsampling.bank.nbytes` on a filled bank; codes + block exponents):",
        "",
        "| format | weight format | bank bytes | × float32 | ≤ 0.26× |",
        "|---|---|---|---|---|",
    ]
    for key, wf, nbytes, ratio in bank_rows:
        ok = "—" if key == "fp32" else ("yes" if ratio <= 0.26 else "**no**")
        lines.append(f"| {key} | `{wf}` | {nbytes:,} | {ratio:.4f} | {ok} |")
    lines.append("")
    text = "\n".join(lines)
    print(text)
    write_text_atomic(args.out, text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
