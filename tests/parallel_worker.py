"""Multi-device scenarios for ``tests/test_parallel.py``, each run in its own process.

JAX fixes its device count when it starts, so every scenario that needs several (fake) CPU
devices runs here, in a subprocess started with ``--xla_force_host_platform_device_count``.
Each scenario prints one line ``RESULT <json>`` on stdout; the test asserts on it.

    python tests/parallel_worker.py dp        # 8 devices: data-parallel vs single device
    python tests/parallel_worker.py misc      # 8 devices: chains, 2-D mesh, blackjax, errors
    python tests/parallel_worker.py dist --process-id I --num-processes 2 --port P \\
        [--fail none|before_init|after_init]  # one process of a 2-process localhost job

The ``dist`` scenario is also the example of a multi-host run: on a GPU cluster or TPU pod
slice the same code runs with ``initialize_distributed()`` (no arguments) or with the real
coordinator address, and the mesh spans the devices of every host.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

DEVICES = {"dp": 8, "misc": 8, "dist": 2}


def _start_watchdog(seconds: float, label: str) -> None:
    """Exit the process with a clear message if the scenario runs past ``seconds``."""

    def watch():
        time.sleep(seconds)
        print(f"parallel_worker: {label} exceeded its deadline of {seconds:.0f}s; exiting "
              "(a peer process probably failed)", file=sys.stderr, flush=True)
        os._exit(124)

    threading.Thread(target=watch, daemon=True).start()


def _parse():
    ap = argparse.ArgumentParser()
    ap.add_argument("scenario", choices=sorted(DEVICES))
    ap.add_argument("--process-id", type=int, default=0)
    ap.add_argument("--num-processes", type=int, default=2)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--fail", choices=["none", "before_init", "after_init"], default="none")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--deadline", type=float, default=150.0)
    return ap.parse_args()


ARGS = _parse() if __name__ == "__main__" else None
if ARGS is not None:
    # JAX must start with the device count: set it before the first import of jax.
    flag = f"--xla_force_host_platform_device_count={DEVICES[ARGS.scenario]}"
    if flag not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    _start_watchdog(ARGS.deadline, f"{ARGS.scenario} process {ARGS.process_id}")

import jax  # noqa: E402


def _initialize(args) -> None:
    """Join the 2-process job. This must run before ``import lpsampling``: importing
    blackjax (which lpsampling's blackjax face does) starts the JAX backend, after which
    ``jax.distributed.initialize`` refuses to run."""
    pid, nproc = args.process_id, args.num_processes
    if args.fail == "before_init" and pid == 1:
        print("parallel_worker: process 1 failing on purpose before initialize",
              file=sys.stderr, flush=True)
        sys.exit(3)
    print(f"parallel_worker: process {pid}/{nproc} connecting to localhost:{args.port}",
          file=sys.stderr, flush=True)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        f"localhost:{args.port}", nproc, pid, initialization_timeout=15,
        heartbeat_timeout_seconds=10, shutdown_timeout_seconds=10)
    if args.fail == "after_init" and pid == 1:
        raise RuntimeError("parallel_worker: process 1 failing on purpose after initialize")


if ARGS is not None and ARGS.scenario == "dist":
    _initialize(ARGS)

import chex  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import lpsampling as lps  # noqa: E402
from lpsampling import parallel as lpp  # noqa: E402

# ------------------------------------------------------------------------------ problem

N, D = 256, 8
LR = 5e-2
MODES = {
    "FP": {},
    "LP-F fixed8": dict(weight_format=lps.FixedPoint(8, 6), grad_format=lps.FixedPoint(8, 6),
                        accumulator="full"),
    "LP-L fixed8": dict(weight_format=lps.FixedPoint(8, 6), grad_format=lps.FixedPoint(8, 6),
                        accumulator="low"),
    "VC BFP8": dict(weight_format=lps.BlockFloatingPoint(8),
                    grad_format=lps.BlockFloatingPoint(8), accumulator="vc"),
}


def data():
    """The dataset, drawn with NumPy: nothing may touch JAX before ``initialize``."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, D)).astype(np.float32)
    y = (x @ rng.standard_normal(D).astype(np.float32) > 0).astype(np.float32)
    return x, y


X, Y = data()
PARAMS0 = {"w": (0.5 * np.random.default_rng(1).standard_normal(D)).astype(np.float32),
           "b": np.zeros((), np.float32)}


def loss_fn(params, batch):
    x, y = batch
    logits = x @ params["w"] + params["b"]
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, y))


def batches(num_steps: int, batch_size: int, seed: int = 5):
    idx = np.random.default_rng(seed).integers(0, N, size=(num_steps, batch_size))
    return [(X[i], Y[i]) for i in idx]


def optimizer(mode: str, kind: str = "sgld"):
    kw = MODES[mode]
    key = jax.random.key(7)
    if kind == "sgd":
        return lps.sgd(LR, key=key, **kw)
    if kind == "cyclical":
        return lps.cyclical_sgld(LR, num_data=N, num_cycles=2, total_steps=20,
                                 exploration_ratio=0.25, key=key, **kw)
    return lps.sgld(LR, num_data=N, key=key, **kw)


def init(mode: str, opt):
    fmt = MODES[mode].get("weight_format", lps.FULL)
    params = lps.init_weights(jax.tree.map(jnp.asarray, PARAMS0), fmt, key=jax.random.key(3))
    return params, opt.init(jax.tree.map(jnp.asarray, PARAMS0))


def flat(tree) -> np.ndarray:
    leaves = [jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x
              for x in jax.tree.leaves(tree)]
    return np.concatenate([np.ravel(np.asarray(x)).astype(np.float64) for x in leaves])


def _raw(x):
    return jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x


def replicas_identical(tree) -> bool:
    """Every addressable device copy of every (replicated) leaf is bitwise the same."""
    for leaf in jax.tree.leaves(tree):
        leaf = _raw(leaf)
        shards = [np.asarray(s.data) for s in leaf.addressable_shards]
        if not all(s.tobytes() == shards[0].tobytes() for s in shards[1:]):
            return False
    return True


def unreplicate(tree):
    """Replica 0 of a pmapped pytree."""
    return jax.tree.map(lambda x: x[0], tree)


def pmap_replicas_identical(tree) -> bool:
    for leaf in jax.tree.leaves(tree):
        arr = np.asarray(_raw(leaf))
        if not all(a.tobytes() == arr[0].tobytes() for a in arr[1:]):
            return False
    return True


def compare(ref: list[np.ndarray], other: list[np.ndarray]) -> dict:
    ref, other = np.stack(ref), np.stack(other)
    diff = np.abs(ref - other)
    return {"identical_fraction": float(np.mean(ref == other)),
            "max_abs_diff": float(diff.max()),
            "max_mean_abs_diff": float(diff.mean(axis=1).max())}


def specs(tree) -> list[str]:
    return [str(jax.typeof(x).sharding.spec) for x in jax.tree.leaves(tree)]


def shardings(tree) -> list[str]:
    return [repr(x.sharding) for x in jax.tree.leaves(tree)]


# ----------------------------------------------------------------------------- scenarios


def scenario_dp(num_steps: int = 100, batch_size: int = 64) -> dict:
    """Data-parallel chain over 8 devices vs the single-device chain, every mode."""
    mesh = lpp.make_mesh(data=-1)
    bs = batches(num_steps, batch_size)
    out = {"devices": jax.device_count(), "modes": {}}
    for mode in MODES:
        t0 = time.time()
        opt = optimizer(mode)
        single = lpp.data_parallel_step(opt, loss_fn, backend="vmap")
        chex.clear_trace_counter()
        traces = {"sharded": 0, "pmap": 0}

        def counted(name, traces=traces):
            def fn(params, minibatch):
                traces[name] += 1
                return loss_fn(params, minibatch)
            return fn

        # chex raises inside the step if the sharded step is traced a second time
        sharded = lpp.data_parallel_step(
            opt, chex.assert_max_traces(counted("sharded"), n=1), mesh=mesh)
        # the pmap path in two modes (each mode costs a compile on 2 shared cores)
        with_pmap = mode in ("FP", "VC BFP8")
        pmapped = lpp.data_parallel_step(opt, counted("pmap"), backend="pmap")
        p0, s0 = init(mode, opt)
        a = (p0, s0)
        b = lpp.replicate((p0, s0), mesh)
        c = lpp.replicate((p0, s0), backend="pmap")
        shard_before = shardings(b)
        ref, dp, pm = [], [], []
        rep_ok = pm_rep_ok = pmap_eq_sharded = True
        for batch in bs:
            pa, sa, _ = single(a[0], a[1], batch)
            a = (pa, sa)
            pb, sb, _ = sharded(b[0], b[1], batch)
            b = (pb, sb)
            rep_ok &= replicas_identical(b)
            ref.append(flat(pa))
            dp.append(flat(pb))
            if with_pmap:
                pc, sc, _ = pmapped(c[0], c[1], batch)
                c = (pc, sc)
                pm_rep_ok &= pmap_replicas_identical(c)
                pm.append(flat(unreplicate(pc)))
                pmap_eq_sharded &= bool(np.array_equal(dp[-1], pm[-1]))
        out["modes"][mode] = {
            "replicas_identical_sharded": bool(rep_ok),
            "replicas_identical_pmap": bool(pm_rep_ok) if with_pmap else None,
            "pmap_equals_sharded": bool(pmap_eq_sharded) if with_pmap else None,
            "vs_single": compare(ref, dp),
            "shardings_kept": shard_before == shardings(b),
            "traces": traces,
            "spec_after": specs(b[0]),
            "seconds": round(time.time() - t0, 2),
        }
    # the other optax faces: replicas stay identical, and match the single-device chain
    for kind in ("sgd", "cyclical"):
        mode = "LP-L fixed8"
        opt = optimizer(mode, kind)
        single = lpp.data_parallel_step(opt, loss_fn, backend="vmap")
        sharded = lpp.data_parallel_step(opt, loss_fn, mesh=mesh)
        a = init(mode, opt)
        b = lpp.replicate(a, mesh)
        ok, ref, dp = True, [], []
        for batch in bs[:20]:
            a = single(a[0], a[1], batch)[:2]
            b = sharded(b[0], b[1], batch)[:2]
            ok &= replicas_identical(b)
            ref.append(flat(a[0]))
            dp.append(flat(b[0]))
        out[kind] = {"replicas_identical": bool(ok), "vs_single": compare(ref, dp)}
    blackjax_data_parallel(out)
    return out


def _logdensity_grad_estimator():
    """A blackjax-style estimator of the full-data gradient of log p(θ | data)."""

    def estimator(position, minibatch):
        def logdensity(p):
            prior = -0.5 * (jnp.sum(p["w"] ** 2) + p["b"] ** 2)
            return -N * loss_fn(p, minibatch) + prior
        return jax.grad(logdensity)(position)

    return estimator


def blackjax_data_parallel(out: dict) -> None:
    """The blackjax face, data-parallel (pmap and sharded) vs the single-device kernel."""
    ge = _logdensity_grad_estimator()
    mesh = lpp.make_mesh(data=-1)
    bsd = batches(30, 64, seed=9)
    for mode in ("FP", "VC BFP8"):
        kw = MODES[mode]
        single_alg = lps.blackjax.sgld(ge, **kw)
        dp_alg = lps.blackjax.sgld(lpp.pmean_grad_estimator(ge), **kw)
        single = jax.jit(single_alg.step)
        sh = lpp.data_parallel_step(dp_alg, mesh=mesh)
        pm = lpp.data_parallel_step(dp_alg, backend="pmap")
        fmt = kw.get("weight_format", lps.FULL)
        pos0 = lps.init_weights(jax.tree.map(jnp.asarray, PARAMS0), fmt, key=jax.random.key(3))
        a, b, c = pos0, lpp.replicate(pos0, mesh), lpp.replicate(pos0, backend="pmap")
        ok = pm_ok = eq = True
        ref, dp = [], []
        for t, batch in enumerate(bsd):
            k = jax.random.fold_in(jax.random.key(21), t)
            a = single(k, a, batch, 1e-4)
            b = sh(k, b, batch, 1e-4)
            c = pm(k, c, batch, 1e-4)
            ok &= replicas_identical(b)
            pm_ok &= pmap_replicas_identical(c)
            ref.append(flat(a))
            dp.append(flat(b))
            eq &= bool(np.array_equal(dp[-1], flat(unreplicate(c))))
        out[f"blackjax_dp {mode}"] = {"replicas_identical_sharded": bool(ok),
                                      "replicas_identical_pmap": bool(pm_ok),
                                      "pmap_equals_sharded": bool(eq),
                                      "vs_single": compare(ref, dp)}


def scenario_misc() -> dict:
    out = {}
    cpu = {}
    cpu["chains"] = time.process_time()
    # --- independent chains: 16 on one device (vmap), 2 per device (pmap, sharded), and
    # one chain alone: a chain's samples must not depend on the layout
    num_chains, num_steps, bsz = 16, 30, 16
    key = jax.random.key(11)
    keys = jax.random.split(key, num_chains)

    def batch_fn(k):
        idx = jax.random.randint(k, (bsz,), 0, N)
        return jnp.asarray(X)[idx], jnp.asarray(Y)[idx]

    mode = "LP-L fixed8"
    opt = optimizer(mode)
    params = {"w": 0.5 * jax.random.normal(jax.random.key(2), (num_chains, D)),
              "b": jnp.zeros((num_chains,))}
    params = lps.init_weights(params, MODES[mode]["weight_format"], key=jax.random.key(4))
    carry = lpp.init_chains(opt, params, jax.random.split(jax.random.key(6), num_chains))

    def run(carry, keys, backend, opt=opt, **kw):
        return lpp.run_chains(opt, carry, keys, num_steps, loss_fn=loss_fn, batch_fn=batch_fn,
                              backend=backend, **kw)

    _, s_vmap = run(carry, keys, "vmap")
    _, s_pmap = run(carry, keys, "pmap")
    _, s_shard = run(carry, keys, "sharded")
    one = jax.tree.map(lambda x: x[3:4], carry)
    _, s_one = run(one, keys[3:4], "vmap")
    v, p, s, o = (flat(t) for t in (s_vmap, s_pmap, s_shard, s_one))
    chain3 = flat(jax.tree.map(lambda x: x[3:4], s_vmap))
    out["chains_optax"] = {
        "pmap_equals_vmap": bool(np.array_equal(v, p)),
        "sharded_equals_vmap": bool(np.array_equal(v, s)),
        "single_chain_equals": bool(np.array_equal(chain3, o)),
        "max_abs_diff": float(max(np.abs(v - p).max(), np.abs(v - s).max())),
        "chains_differ": bool(not np.array_equal(np.asarray(s_vmap["w"][0]),
                                                 np.asarray(s_vmap["w"][1]))),
        "sample_shape": list(s_vmap["w"].shape),
        "sample_spec": str(jax.typeof(s_shard["w"]).sharding.spec),
    }
    # blackjax face, FULL precision
    ge = _logdensity_grad_estimator()
    alg = lps.blackjax.sgld(ge)
    pos = {"w": 0.1 * jax.random.normal(jax.random.key(8), (num_chains, D)),
           "b": jnp.zeros((num_chains,))}
    pos = lpp.init_chains(alg, pos, keys)  # blackjax: vmap(alg.init), here the positions
    _, b_vmap = lpp.run_chains(alg, pos, keys, num_steps, batch_fn=batch_fn, step_args=(1e-4,),
                               backend="vmap")
    _, b_shard = lpp.run_chains(alg, pos, keys, num_steps, batch_fn=batch_fn,
                                step_args=(1e-4,))
    bv, bs_ = flat(b_vmap), flat(b_shard)
    out["chains_blackjax"] = {
        "sharded_equals_vmap": bool(np.array_equal(bv, bs_)),
        "max_abs_diff": float(np.abs(bv - bs_).max()),
    }

    cpu["chains_x_data"] = time.process_time()
    # --- chains × data on a 2-D mesh: 4 chains over "chains" (2), batch over "data" (4)
    mesh2 = lpp.make_mesh(chains=2, data=4)
    mode = "FP"
    opt = optimizer(mode)
    nc, bsz2, steps2 = 4, 32, 20
    p2 = {"w": 0.5 * jax.random.normal(jax.random.key(12), (nc, D)), "b": jnp.zeros((nc,))}
    _, s2 = lpp.init_chains(opt, p2, jax.random.split(jax.random.key(13), nc))
    idx = np.random.default_rng(3).integers(0, N, size=(steps2, nc, bsz2))
    step2 = lpp.data_parallel_step(opt, loss_fn, mesh=mesh2)
    ref_step = lpp.data_parallel_step(opt, loss_fn, mesh=mesh2, backend="vmap")
    a, b = (p2, s2), (p2, s2)
    ref, dp, row_ok = [], [], True
    spec_in = None
    for t in range(steps2):
        batch = (X[idx[t]], Y[idx[t]])
        a = ref_step(a[0], a[1], batch)[:2]
        pb, sb, loss = step2(b[0], b[1], batch)
        b = (pb, sb)
        spec_in = spec_in or specs(b)
        # the 4 "data" replicas of each chain shard hold the same bits
        for leaf in jax.tree.leaves(b):
            leaf = _raw(leaf)
            groups: dict = {}
            for sh_ in leaf.addressable_shards:
                groups.setdefault(str(sh_.index), []).append(np.asarray(sh_.data).tobytes())
            row_ok &= all(len(set(g)) == 1 for g in groups.values())
        ref.append(flat(a[0]))
        dp.append(flat(b[0]))
    out["chains_x_data"] = {"vs_single": compare(ref, dp), "replicas_identical": bool(row_ok),
                            "spec_after": specs(b[0]), "spec_kept": spec_in == specs(b),
                            "loss_shape": list(loss.shape)}

    # the blackjax face on the same 2-D mesh, low precision
    ge = _logdensity_grad_estimator()
    kw = MODES["LP-L fixed8"]
    bj2 = lpp.data_parallel_step(
        lps.blackjax.sgld(lpp.pmean_grad_estimator(ge, "data"), **kw), mesh=mesh2)
    bj_ref = jax.jit(jax.vmap(lps.blackjax.sgld(ge, **kw).step, in_axes=(0, 0, 0, None)))
    pos2 = lps.init_weights(p2, kw["weight_format"], key=jax.random.key(14))
    a, b = pos2, pos2
    ref, dp, row_ok = [], [], True
    for t in range(10):
        ks = jax.random.split(jax.random.fold_in(jax.random.key(15), t), nc)
        batch = (X[idx[t]], Y[idx[t]])
        a = bj_ref(ks, a, batch, 1e-4)
        b = bj2(ks, b, batch, 1e-4)
        for leaf in jax.tree.leaves(b):
            groups = {}
            for sh_ in leaf.addressable_shards:
                groups.setdefault(str(sh_.index), []).append(np.asarray(sh_.data).tobytes())
            row_ok &= all(len(set(g)) == 1 for g in groups.values())
        ref.append(flat(a))
        dp.append(flat(b))
    out["chains_x_data_blackjax"] = {"vs_single": compare(ref, dp),
                                     "replicas_identical": bool(row_ok),
                                     "spec_after": specs(b)}

    cpu["errors"] = time.process_time()
    # --- bad input
    errors = {}

    def expect(name, fn):
        try:
            fn()
        except ValueError as e:
            errors[name] = str(e)
        else:
            errors[name] = None

    twelve = jax.tree.map(lambda x: x[:12], carry)
    expect("chains_sharded_12_on_8", lambda: run(twelve, keys[:12], "sharded"))
    expect("chains_pmap_12_on_8", lambda: run(twelve, keys[:12], "pmap"))
    opt = optimizer("FP")
    mesh = lpp.make_mesh(data=-1)
    st = lpp.replicate(init("FP", opt), mesh)
    expect("batch_60_on_8", lambda: lpp.data_parallel_step(opt, loss_fn, mesh=mesh)(
        st[0], st[1], (X[:60], Y[:60])))
    pst = lpp.replicate(init("FP", opt), backend="pmap")
    expect("pmap_batch_60_on_8", lambda: lpp.data_parallel_step(opt, loss_fn, backend="pmap")(
        pst[0], pst[1], (X[:60], Y[:60])))
    expect("mesh_names", lambda: lpp.data_parallel_step(
        opt, loss_fn, mesh=lpp.make_mesh(chains=-1)))
    expect("chains_mesh_names", lambda: run(carry, keys, "sharded",
                                            mesh=lpp.make_mesh(data=-1)))
    step2d = lpp.data_parallel_step(opt, loss_fn, mesh=mesh2)
    expect("2d_batch_30_on_4", lambda: step2d(p2, s2, (X[idx[0]][:, :30], Y[idx[0]][:, :30])))
    expect("2d_chains_3_on_2", lambda: step2d(jax.tree.map(lambda x: x[:3], p2),
                                              jax.tree.map(lambda x: x[:3], s2),
                                              (X[idx[0]][:3], Y[idx[0]][:3])))
    expect("make_mesh_too_big", lambda: lpp.make_mesh(chains=4, data=4))
    out["errors"] = errors

    cpu["dist_reference"] = time.process_time()
    # --- the single-process reference of the 2-process run (4 devices)
    out["dist_reference"] = dist_chain(lpp.make_mesh(data=4))
    cpu["end"] = time.process_time()
    names = list(cpu)
    out["cpu_seconds"] = {a: round(cpu[b] - cpu[a], 2)
                          for a, b in zip(names[:-1], names[1:], strict=True)}
    return out


DIST_MODES = ("FP", "VC BFP8")


def dist_chain(mesh, num_steps: int = 20) -> dict:
    """A data-parallel chain on ``mesh`` (the same code in one process or in several)."""
    res = {}
    bs = batches(num_steps, 32, seed=17)
    for mode in DIST_MODES:
        opt = optimizer(mode)
        step = lpp.data_parallel_step(opt, loss_fn, mesh=mesh)
        params, state = lpp.replicate(init(mode, opt), mesh)
        traj, ok = [], True
        for batch in bs:
            params, state, loss = step(params, state, batch)
            ok &= replicas_identical((params, state))
            traj.append(flat(params).tolist())
        res[mode] = {"trajectory": traj, "replicas_identical": bool(ok),
                     "loss": float(np.asarray(loss))}
    return res


def scenario_dist(args) -> dict:
    """One process of the 2-process job (``_initialize`` already joined it)."""
    pid, nproc = args.process_id, args.num_processes
    out = {"process_index": jax.process_index(), "process_count": jax.process_count(),
           "device_count": jax.device_count(), "local_device_count": jax.local_device_count()}
    mesh = lpp.make_mesh(data=-1)  # all 4 devices of both processes
    out["chain"] = dist_chain(mesh, args.steps)
    # a pmap across both processes too: each process passes its own share of the batch
    opt = optimizer("FP")
    pstep = lpp.data_parallel_step(opt, loss_fn, backend="pmap")
    pst = lpp.replicate(init("FP", opt), backend="pmap")
    bs = batches(args.steps, 32, seed=17)
    half = 32 // nproc
    for batch in bs:
        share = jax.tree.map(lambda x: x[pid * half:(pid + 1) * half], batch)
        pst = pstep(pst[0], pst[1], share)[:2]
    out["pmap_final"] = flat(unreplicate(pst[0])).tolist()
    jax.distributed.shutdown()
    out["shutdown"] = True
    return out


def main():
    args = ARGS
    t0 = time.time()
    if args.scenario == "dp":
        result = scenario_dp()
    elif args.scenario == "misc":
        result = scenario_misc()
    else:
        result = scenario_dist(args)
    result["seconds"] = round(time.time() - t0, 2)
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
