"""Chain-steps per second of ``lpsampling.parallel`` on 1, 2, 4, 8 (fake) devices.

    python benchmarks/bench_parallel.py                       # writes RESULTS_parallel.md
    python benchmarks/bench_parallel.py --devices 1 2 --steps 100 --out /tmp/r.md

JAX fixes its device count when it starts, so the script re-launches itself once per
device count with ``XLA_FLAGS=--xla_force_host_platform_device_count=D`` (``--child D``)
and collects the JSON each child prints. Two workloads, one sampler (VC SGLDLP-L on
8-bit block floating point by default; ``--mode``):

* independent chains: ``--chains`` chains of ``--steps`` steps, one ``lax.scan`` each,
  with ``run_chains`` on each backend (``"vmap"`` on one device, ``"pmap"``,
  ``"sharded"``); reported in chain-steps per second and as a ratio to ``"vmap"`` on 1
  device;
* one data-parallel chain: a ``--batch`` minibatch split over the devices,
  ``data_parallel_step`` with ``backend="pmap"`` / ``"sharded"`` called once per step from
  Python (on CPU each call waits for its result, see ``docs/parallel.md``); reported in
  steps per second and as a ratio to the single-device jitted step (``backend="vmap"``).

Times are the best of ``--repeats`` runs after a compile-and-warm-up run; the compile time
of the first call is reported too.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from _machine import cpu_model  # a sibling module: benchmarks/ is on sys.path

HERE = Path(__file__).resolve().parent
MODES = ("fp", "lpl-fixed8", "vc-bfp8")


def _args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--chains", type=int, default=16, help="a multiple of every device count")
    ap.add_argument("--steps", type=int, default=1000, help="steps per chain")
    ap.add_argument("--dp-steps", type=int, default=100, help="data-parallel steps timed")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--features", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--mode", choices=MODES, default="vc-bfp8")
    ap.add_argument("--out", type=Path, default=HERE / "RESULTS_parallel.md")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


# ----------------------------------------------------------------------------- child


def _child(args) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import lpsampling as lps
    from lpsampling import parallel as lpp

    assert jax.device_count() == args.child, (jax.device_count(), args.child)
    n, d, b = 4096, args.features, args.batch
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((n, d)), jnp.float32)
    y = (x @ jnp.asarray(rng.standard_normal(d), jnp.float32) > 0).astype(jnp.float32)
    fmt = {"fp": lps.FULL, "lpl-fixed8": lps.FixedPoint(8, 6),
           "vc-bfp8": lps.BlockFloatingPoint(8)}[args.mode]
    acc = {"fp": "full", "lpl-fixed8": "low", "vc-bfp8": "vc"}[args.mode]
    opt = lps.sgld(1e-2, num_data=n, weight_format=fmt, grad_format=fmt, accumulator=acc,
                   key=jax.random.key(0))

    def loss_fn(params, batch):
        xb, yb = batch
        return jnp.mean(optax.sigmoid_binary_cross_entropy(xb @ params["w"] + params["b"], yb))

    def batch_fn(key):
        idx = jax.random.randint(key, (b,), 0, n)
        return x[idx], y[idx]

    def timed(fn):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        compile_s = time.perf_counter() - t0
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            best = min(best, time.perf_counter() - t0)
        return best, compile_s

    out = {"devices": args.child, "chains": {}, "data_parallel": {}}
    c = args.chains
    params = lps.init_weights({"w": jnp.zeros((c, d)), "b": jnp.zeros((c,))}, fmt,
                              key=jax.random.key(1))
    carry = lpp.init_chains(opt, params, jax.random.split(jax.random.key(2), c))
    keys = jax.random.split(jax.random.key(3), c)
    no_samples = lambda carry: ()
    backends = ("vmap", "pmap", "sharded") if args.child == 1 else ("pmap", "sharded")
    for name in backends:
        best, comp = timed(lambda name=name: lpp.run_chains(
            opt, carry, keys, args.steps, loss_fn=loss_fn, batch_fn=batch_fn,
            sample_fn=no_samples, backend=name))
        out["chains"][name] = {"chain_steps_per_s": c * args.steps / best, "compile_s": comp}

    params0 = lps.init_weights({"w": jnp.zeros(d), "b": jnp.zeros(())}, fmt,
                               key=jax.random.key(1))
    batches = [batch_fn(k) for k in jax.random.split(jax.random.key(4), 8)]
    mesh = lpp.make_mesh(data=-1)
    steps = {
        "pmap": (lpp.data_parallel_step(opt, loss_fn, backend="pmap"),
                 lpp.replicate((params0, opt.init(params0)), backend="pmap")),
        "sharded": (lpp.data_parallel_step(opt, loss_fn, mesh=mesh),
                    lpp.replicate((params0, opt.init(params0)), mesh)),
    }
    if args.child == 1:
        steps = {"single": (lpp.data_parallel_step(opt, loss_fn, backend="vmap"),
                            (params0, opt.init(params0))), **steps}
    for name, (step, state) in steps.items():
        def loop(step=step, state=state):
            p, s = state
            for t in range(args.dp_steps):
                p, s, _ = step(p, s, batches[t % len(batches)])
            return p
        best, comp = timed(loop)
        out["data_parallel"][name] = {"steps_per_s": args.dp_steps / best,
                                      "first_loop_s": comp}
    return out


# ---------------------------------------------------------------------------- parent


def _machine() -> str:
    cpu = cpu_model()
    return f"{cpu}, {os.cpu_count()} cores visible, {platform.system()} {platform.release()}"


def _run_child(args, devices: int) -> dict:
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
           "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, __file__, "--child", str(devices), "--chains", str(args.chains),
           "--steps", str(args.steps), "--dp-steps", str(args.dp_steps), "--batch",
           str(args.batch), "--features", str(args.features), "--repeats", str(args.repeats),
           "--mode", args.mode]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"child with {devices} devices failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _table(results: list[dict]) -> list[str]:
    base_c = results[0]["chains"]["vmap"]["chain_steps_per_s"]
    base_d = results[0]["data_parallel"]["single"]["steps_per_s"]
    rows = ["| devices | chains: pmap chain-steps/s (× vmap) | chains: sharded chain-steps/s "
            "(× vmap) | data-parallel: pmap steps/s (× single) | data-parallel: sharded "
            "steps/s (× single) |",
            "|---:|---:|---:|---:|---:|"]
    first = results[0]
    rows.append(f"| 1, reference | vmap {base_c:,.0f} (1.00) | | single jit step "
                f"{base_d:,.0f} (1.00) | |")
    for r in results:
        ch, dp = r["chains"], r["data_parallel"]
        cells = [f"{ch[k]['chain_steps_per_s']:,.0f} ({ch[k]['chain_steps_per_s'] / base_c:.2f})"
                 for k in ("pmap", "sharded")]
        cells += [f"{dp[k]['steps_per_s']:,.0f} ({dp[k]['steps_per_s'] / base_d:.2f})"
                  for k in ("pmap", "sharded")]
        rows.append(f"| {r['devices']} | " + " | ".join(cells) + " |")
    rows += ["", "Compile time of the chain runners (s, first call):", "",
             "| devices | " + " | ".join(first["chains"]) + " |",
             "|---:|" + "---:|" * len(first["chains"])]
    for r in results:
        rows.append(f"| {r['devices']} | " + " | ".join(
            f"{r['chains'].get(k, {}).get('compile_s', float('nan')):.2f}"
            for k in first["chains"]) + " |")
    return rows


def main(argv=None) -> None:
    args = _args(argv)
    if args.child is not None:
        print(json.dumps(_child(args)))
        return
    bad = [n for n in args.devices if args.chains % n or args.batch % n]
    if bad:
        raise SystemExit(f"--chains {args.chains} and --batch {args.batch} must split evenly "
                         f"over every device count; they do not for {bad}")
    devices = sorted(set(args.devices) | {1})
    import jax

    t0 = time.time()
    results = [_run_child(args, n) for n in devices]
    cmd = "python " + " ".join([str(Path(__file__).relative_to(HERE.parent))] + sys.argv[1:])
    lines = [
        "# lpsampling.parallel: chain-steps per second on fake CPU devices",
        "",
        f"- command: `{cmd}`",
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- machine: {_machine()}",
        f"- jax {jax.__version__}, python {platform.python_version()}; "
        f"load average at the end {os.getloadavg()[0]:.1f} (the cores are shared)",
        f"- workload: logistic regression, {args.features} features, N = 4096, sampler "
        f"{args.mode}; chains: {args.chains} chains × {args.steps} steps in one `lax.scan`, "
        f"minibatch {args.batch}; data-parallel: one chain, minibatch {args.batch} split over "
        f"the devices, {args.dp_steps} steps called from Python; best of {args.repeats} after "
        f"a warm-up; total {time.time() - t0:.0f} s",
        "",
        *_table(results),
        "",
        "## What fake devices on 2 cores can and cannot show",
        "",
        "`--xla_force_host_platform_device_count=D` makes one process see D CPU \"devices\" "
        "that all run on the same (here 2, shared) cores. So the table shows no real "
        "speed-up and is not meant to: D devices share the same cores, and the ratios "
        "measure the *overhead* of each layout (per-device dispatch, the thread hand-offs of "
        "the in-process all-reduce, the reshapes of the pmap path, the CPU-side wait after "
        "each data-parallel step) against the one-device run of the same computation. What "
        "it does show: that each layout runs, compiles once, and gives the same numbers "
        "(checked in `tests/test_parallel.py`, not here), and how the per-step overhead of "
        "pmap and of jit + sharding compare. Real scaling needs real devices (GPUs/TPUs, or "
        "several hosts under `jax.distributed`); on those, independent chains need no "
        "communication at all and a data-parallel step one all-reduce of the gradient "
        "(the size of the params) per step.",
        "",
        "Reading the numbers: the chain runners do the same total work on every layout (the "
        "chains are independent), so their ratios stay near 1 until the per-device threads "
        "and dispatch outweigh the small per-device share. The data-parallel step of this "
        "tiny model does ~0.1 ms of arithmetic, so its rate is set by the per-step costs: "
        "putting the minibatch on the devices, the rendezvous of D threads in the all-reduce "
        "and the wait after each step; it falls with D here, and pays off on real devices "
        "only when the per-device gradient work is much larger than one all-reduce.",
        "",
    ]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
