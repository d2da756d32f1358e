"""Tests of ``lpsampling.parallel``: chains across devices, data-parallel chains, many hosts.

JAX fixes its device count when it starts, so every multi-device scenario runs in a
subprocess (``tests/parallel_worker.py``) started with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (2 per process for the two-process
``jax.distributed`` run) that prints its measurements as JSON; this process keeps its single
CPU device, so the rest of the suite is unaffected. The subprocesses are started together,
once per module, and run while the single-device tests below run here.

**How low-precision trajectories are compared.** A data-parallel step averages 8 per-device
mean gradients where the single-device step takes one mean over the whole minibatch: the
same number up to float32 reduction order (~1e-7 relative). In full precision (FP) that is
all that differs, so the trajectories are compared to 1e-5. With stochastic rounding a
difference of ~1e-7 flips a rounding only when the random threshold falls inside it
(probability ~1e-7/Δ per element and step, Δ = 2^-6 here), and a flip changes a weight by a
whole grid step. Because both chains use the same random draws they stay coupled, so the
low-precision modes are compared by the fraction of bit-identical elements over the 100
steps (≥ 0.95; in practice 1.0) and by the mean absolute difference (a few grid steps at
most), which a real bug (wrong averaging, replicated noise drawn per device, a lost
gradient share) would break at once. The replicas of one data-parallel chain are compared
bitwise at every step: they must never differ.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lpsampling as lps
from lpsampling import parallel as lpp

WORKER = Path(__file__).with_name("parallel_worker.py")
JAX_FATAL = "Terminating process because the JAX distributed service detected fatal errors"
JOB_TIMEOUT = 400  # seconds: a last resort; the workers bound themselves far below this


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


class Job:
    """One worker subprocess, its output captured in temporary files."""

    def __init__(self, name: str, args: list[str], devices: int, deadline: float = 300):
        self.name = name
        self._out = tempfile.TemporaryFile(mode="w+")
        self._err = tempfile.TemporaryFile(mode="w+")
        env = helpers.fake_devices_env(devices, PYTHONUNBUFFERED="1")
        self.start = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), *args, "--deadline", str(deadline)],
            stdout=self._out, stderr=self._err, env=env, cwd=WORKER.parent.parent)
        self.end: float | None = None
        self._result = None
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        """Record when the process ends (the tests wait on the jobs one after another)."""
        self.proc.wait()
        self.end = time.monotonic()

    def wait(self) -> dict:
        """``{"rc", "seconds", "stdout", "stderr", "result"}`` once the process ended."""
        if self._result is None:
            try:
                self.proc.wait(timeout=max(1.0, JOB_TIMEOUT - (time.monotonic() - self.start)))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            seconds = (self.end or time.monotonic()) - self.start
            self._out.seek(0)
            self._err.seek(0)
            out, err = self._out.read(), self._err.read()
            result = None
            for line in out.splitlines():
                if line.startswith("RESULT "):
                    result = json.loads(line[len("RESULT "):])
            self._result = {"rc": self.proc.returncode, "seconds": seconds, "stdout": out,
                            "stderr": err, "result": result}
        return self._result

    def ok(self) -> dict:
        r = self.wait()
        assert r["rc"] == 0 and r["result"] is not None, (
            f"worker {self.name} failed (rc={r['rc']}, {r['seconds']:.0f}s):\n"
            f"{_tail(r['stderr'])}")
        return r["result"]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _tail(text: str, n: int = 40) -> str:
    lines = [x for x in text.splitlines() if not x.startswith("    @")]
    return "\n".join(lines[-n:])


def _pair(tag: str, fail: str = "none") -> list[Job]:
    port = str(_free_port())
    return [Job(f"{tag}[{i}]", ["dist", "--process-id", str(i), "--num-processes", "2",
                                "--port", port, "--fail", fail], devices=2, deadline=200)
            for i in range(2)]


@pytest.fixture(scope="module", autouse=True)
def _workers(request):
    """Start every worker at once, when the module starts (they are mostly compiling, or
    waiting on each other), if any selected test of this module needs them."""
    wanted = any("jobs" in item.fixturenames and getattr(item, "module", None) is request.module
                 for item in request.session.items)
    if not wanted:
        yield None
        return
    started = {
        "dp": Job("dp", ["dp"], devices=8),
        "misc": Job("misc", ["misc"], devices=8),
        "dist": _pair("dist"),
        "fail_before_init": _pair("fail_before_init", "before_init"),
        "fail_after_init": _pair("fail_after_init", "after_init"),
    }
    yield started
    for job in started.values():
        for j in job if isinstance(job, list) else [job]:
            j.kill()


@pytest.fixture
def jobs(_workers):
    """The multi-device worker subprocesses (see :class:`Job`)."""
    return _workers


# --------------------------------------------------------------- single device, in-process

N, D = 64, 4


def _problem():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, D)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.float32)
    return x, y


def _loss(params, batch):
    x, y = batch
    return jnp.mean(optax.sigmoid_binary_cross_entropy(x @ params["w"] + params["b"], y))


def test_meshes_have_the_named_axes():
    assert lpp.make_mesh(chains=-1).axis_names == ("chains",)
    assert lpp.make_mesh(data=-1).axis_names == ("data",)
    mesh = lpp.make_mesh(1, 1)
    assert mesh.axis_names == ("chains", "data")
    assert dict(mesh.shape) == {"chains": 1, "data": 1}
    assert dict(lpp.make_mesh(chains=1, data=-1).shape) == {"chains": 1, "data": 1}


def test_public_names():
    assert sorted(lpp.__all__) == sorted([
        "make_mesh", "shard", "replicate", "init_chains", "run_chains", "data_parallel_step",
        "pmean_grad_estimator", "initialize_distributed"])
    for name in lpp.__all__:
        assert callable(getattr(lpp, name)), name


def test_single_device_layouts_agree():
    """On one device the sharded chain runner and the data-parallel step reduce to the
    plain vmap / single-device computation, bit for bit."""
    x, y = _problem()
    opt = lps.sgld(1e-2, num_data=N, weight_format=lps.FixedPoint(8, 6),
                   grad_format=lps.FixedPoint(8, 6), accumulator="vc", key=jax.random.key(0))

    def batch_fn(key):
        idx = jax.random.randint(key, (8,), 0, N)
        return jnp.asarray(x)[idx], jnp.asarray(y)[idx]

    c = 2
    params = {"w": jnp.zeros((c, D)), "b": jnp.zeros((c,))}
    carry = lpp.init_chains(opt, params, jax.random.split(jax.random.key(1), c))
    keys = jax.random.split(jax.random.key(2), c)
    kw = dict(loss_fn=_loss, batch_fn=batch_fn)
    _, a = lpp.run_chains(opt, carry, keys, 5, backend="vmap", **kw)
    _, s = lpp.run_chains(opt, carry, keys, 5, **kw)
    assert a["w"].shape == (c, 5, D)
    np.testing.assert_array_equal(np.asarray(a["w"]), np.asarray(s["w"]))
    assert not np.array_equal(np.asarray(a["w"][0]), np.asarray(a["w"][1]))

    p0 = {"w": jnp.zeros(D), "b": jnp.zeros(())}
    single = lpp.data_parallel_step(opt, _loss, backend="vmap")
    dp = lpp.data_parallel_step(opt, _loss, mesh=lpp.make_mesh(data=-1))
    s1, s2 = (p0, opt.init(p0)), (p0, opt.init(p0))
    for t in range(3):
        batch = (x[8 * t:8 * t + 8], y[8 * t:8 * t + 8])
        s1 = single(*s1, batch)[:2]
        s2 = dp(*s2, batch)[:2]
    np.testing.assert_array_equal(np.asarray(s1[0]["w"]), np.asarray(s2[0]["w"]))


def test_bad_input_single_device():
    x, y = _problem()
    opt = lps.sgld(1e-2, num_data=N, key=jax.random.key(0))
    kw = dict(loss_fn=_loss, batch_fn=lambda k: (x[:8], y[:8]))
    params = {"w": jnp.zeros((3, D)), "b": jnp.zeros((3,))}
    carry = lpp.init_chains(opt, params, jax.random.split(jax.random.key(1), 3))
    keys3 = jax.random.split(jax.random.key(0), 3)
    with pytest.raises(ValueError, match=r"3 chains \(keys\) but init_carry leaf .* \(2,\)"):
        lpp.run_chains(opt, jax.tree.map(lambda v: v[:2], carry), keys3, 4, backend="vmap",
                       **kw)
    with pytest.raises(ValueError, match=r"one PRNG key per chain.*\(3, 2, 2\)"):
        lpp.run_chains(opt, carry, jax.random.split(jax.random.PRNGKey(0), (3, 2)), 4, **kw)
    with pytest.raises(ValueError, match="num_steps must be a positive int, got 0"):
        lpp.run_chains(opt, carry, keys3, 0, backend="vmap", **kw)
    with pytest.raises(ValueError, match=r"axis names \('chains',\).*has axes \('data',\)"):
        lpp.run_chains(opt, carry, keys3, 2, mesh=lpp.make_mesh(data=-1), **kw)
    with pytest.raises(ValueError, match=r"axis names \('data',\).*has axes \('chains',\)"):
        lpp.data_parallel_step(opt, _loss, mesh=lpp.make_mesh(chains=-1))
    with pytest.raises(ValueError, match="backend must be one of"):
        lpp.run_chains(opt, carry, keys3, 2, backend="jit", **kw)
    with pytest.raises(ValueError, match="backend='pmap' takes a 1-D mesh"):
        lpp.data_parallel_step(opt, _loss, mesh=lpp.make_mesh(1, 1), backend="pmap")
    with pytest.raises(TypeError, match="optax sampler needs loss_fn"):
        lpp.data_parallel_step(opt)
    with pytest.raises(TypeError, match="make_mesh needs chains= and/or data="):
        lpp.make_mesh()
    with pytest.raises(ValueError, match=r"split evenly over 1 devices of mesh axis 'data'"
                       r"|has no axis 1"):
        lpp.shard(jnp.zeros(3), lpp.make_mesh(1, 1), ("chains", "data"))
    n = jax.device_count()
    with pytest.raises(ValueError, match=rf"make_mesh\(2, {n}\) needs {2 * n} devices"):
        lpp.make_mesh(2, n)
    with pytest.raises(ValueError, match=rf"make_mesh\({n + 1}\) needs {n + 1} devices"):
        lpp.make_mesh(chains=n + 1)
    with pytest.raises(RuntimeError, match="before any JAX computation"):
        lpp.initialize_distributed("localhost:1", 2, 0)


def test_batch_size_mismatch_is_refused_in_every_backend():
    """x and y of one batch with different leading sizes (y of size 1 used to broadcast
    silently): ValueError naming both sizes, in every backend and the old aliases."""
    x, y = _problem()
    opt = lps.sgld(1e-2, num_data=N, key=jax.random.key(0))
    p0 = {"w": jnp.zeros(D), "b": jnp.zeros(())}
    s0 = opt.init(p0)
    steps = {
        "vmap": lpp.data_parallel_step(opt, _loss, backend="vmap"),
        "sharded": lpp.data_parallel_step(opt, _loss, mesh=lpp.make_mesh(data=1)),
        "pmap": lpp.data_parallel_step(opt, _loss, backend="pmap", mesh=lpp.make_mesh(data=1)),
    }
    with pytest.warns(DeprecationWarning):
        steps["alias"] = lpp.data_parallel_step_sharded(opt, _loss, lpp.make_mesh(data=1))
    pmap_state = lpp.replicate((p0, s0), lpp.make_mesh(data=1), backend="pmap")
    for name, step in steps.items():
        state = pmap_state if name == "pmap" else (p0, s0)
        for ny in (1, 4):
            with pytest.raises(ValueError, match=rf"\[0\] has 8 but \[1\] has {ny}"):
                step(*state, (x[:8], y[:ny]))
        step(*state, (x[:8], y[:8]))  # matching sizes still work
    # chains x data: the batch axis is axis 1 of (C, B, ...)
    mesh = lpp.make_mesh(1, 1)
    carry = lpp.init_chains(opt, {"w": jnp.zeros((1, D)), "b": jnp.zeros((1,))},
                            jax.random.split(jax.random.key(1), 1))
    for backend in ("sharded", "vmap"):
        step = lpp.data_parallel_step(opt, _loss, mesh=mesh, backend=backend)
        with pytest.raises(ValueError, match=r"axis 1.*has 8 but .* has 1"):
            step(*carry, (x[None, :8], y[None, :1]))


def test_shard_and_replicate_place_the_leaves():
    mesh = lpp.make_mesh(1, 1)
    x = lpp.shard({"a": jnp.zeros((2, 3))}, mesh, ("chains", "data"))["a"]
    assert x.sharding.spec == jax.sharding.PartitionSpec("chains", "data")
    r = lpp.replicate(jnp.ones(3), mesh)
    assert r.sharding.spec == jax.sharding.PartitionSpec(None)
    p = lpp.replicate(jnp.ones(3), backend="pmap")
    assert p.shape == (jax.local_device_count(), 3)


OLD_NAMES = {
    "CHAINS": "'chains'", "DATA": "'data'", "make_chain_mesh": "make_mesh(chains=-1)",
    "make_data_mesh": "make_mesh(data=-1)", "shard_chains": "shard(", "shard_batch": "shard(",
    "pmap_replicate": "replicate(", "pmap_unreplicate": "x[0]",
    "init_chain_states": "init_chains(", "optax_chain_step": "run_chains(",
    "blackjax_chain_step": "run_chains(", "run_chains_vmap": "backend='vmap'",
    "run_chains_pmap": "backend='pmap'", "run_chains_sharded": "backend='sharded'",
    "make_optax_step": "data_parallel_step(", "data_parallel_step_pmap": "backend='pmap'",
    "data_parallel_step_sharded": "data_parallel_step(",
    "data_parallel_kernel_pmap": "backend='pmap'",
    "data_parallel_kernel_sharded": "data_parallel_step(",
    "chains_data_parallel_step_sharded": "make_mesh(chains, data)",
    "chains_data_parallel_kernel_sharded": "make_mesh(chains, data)",
}


@pytest.mark.parametrize("name", sorted(OLD_NAMES))
def test_old_names_are_deprecated_aliases(name):
    assert name not in lpp.__all__
    with pytest.warns(DeprecationWarning, match=rf"parallel\.{name} is deprecated.*use "):
        value = getattr(lpp, name)
    with pytest.warns(DeprecationWarning) as record:
        exec(f"from lpsampling.parallel import {name}", {})
    assert OLD_NAMES[name] in str(record[0].message)
    assert value is not None
    with pytest.raises(AttributeError):
        lpp.no_such_name  # noqa: B018


def test_old_names_keep_their_behaviour():
    """The aliases run the new code: same numbers as the new names, on one device."""
    x, y = _problem()
    opt = lps.sgld(1e-2, num_data=N, weight_format=lps.FixedPoint(8, 6),
                   grad_format=lps.FixedPoint(8, 6), accumulator="low", key=jax.random.key(0))
    batch_fn = lambda k: (x[:8], y[:8])
    params = {"w": jnp.zeros((2, D)), "b": jnp.zeros((2,))}
    ck, rk = jax.random.split(jax.random.key(1), 2), jax.random.split(jax.random.key(2), 2)
    with pytest.warns(DeprecationWarning):
        states = lpp.init_chain_states(opt, params, ck)
        step_fn = lpp.optax_chain_step(opt, _loss, batch_fn)
        _, old = lpp.run_chains_vmap(step_fn, (params, states), rk, 4)
        _, old_sh = lpp.run_chains_sharded(step_fn, (params, states), rk, 4,
                                           mesh=lpp.make_chain_mesh())
        single = jax.jit(lpp.make_optax_step(opt, _loss))
        dp_old = lpp.data_parallel_step_sharded(opt, _loss, lpp.make_data_mesh())
        rep = lpp.pmap_unreplicate(lpp.pmap_replicate(params))
    carry = lpp.init_chains(opt, params, ck)
    _, new = lpp.run_chains(opt, carry, rk, 4, loss_fn=_loss, batch_fn=batch_fn)
    for a in (old, old_sh):
        np.testing.assert_array_equal(np.asarray(a["w"]), np.asarray(new["w"]))
    np.testing.assert_array_equal(np.asarray(rep["w"]), np.asarray(params["w"]))
    p0 = {"w": jnp.zeros(D), "b": jnp.zeros(())}
    new_dp = lpp.data_parallel_step(opt, _loss)
    a = single(p0, opt.init(p0), (x[:8], y[:8]))
    b = dp_old(p0, opt.init(p0), (x[:8], y[:8]))
    c = new_dp(p0, opt.init(p0), (x[:8], y[:8]))
    for out in (b, c):
        np.testing.assert_array_equal(np.asarray(a[0]["w"]), np.asarray(out[0]["w"]))


# -------------------------------------------------------------- 8 fake devices, subprocess


def test_data_parallel_matches_single_device_every_mode(jobs):
    res = jobs["dp"].ok()
    assert res["devices"] == 8
    assert set(res["modes"]) == {"FP", "LP-F fixed8", "LP-L fixed8", "VC BFP8"}
    for mode, r in res["modes"].items():
        assert r["replicas_identical_sharded"], mode
        if mode in ("FP", "VC BFP8"):  # the pmap path runs in these two modes
            assert r["replicas_identical_pmap"], mode
            assert r["pmap_equals_sharded"], mode
        cmp = r["vs_single"]
        if mode == "FP":
            assert cmp["max_abs_diff"] < 1e-5, (mode, cmp)
        else:
            assert cmp["identical_fraction"] >= 0.95, (mode, cmp)
            assert cmp["max_mean_abs_diff"] < 0.05, (mode, cmp)
    for kind in ("sgd", "cyclical"):
        assert res[kind]["replicas_identical"], kind
        assert res[kind]["vs_single"]["identical_fraction"] >= 0.95, (kind, res[kind])


def test_shardings_survive_the_update_without_retracing(jobs):
    res = jobs["dp"].ok()
    for mode, r in res["modes"].items():
        assert r["shardings_kept"], mode
        assert r["spec_after"] == ["P()", "P(None,)"], (mode, r["spec_after"])  # b, w
        pmap_traces = 1 if mode in ("FP", "VC BFP8") else 0
        assert r["traces"] == {"sharded": 1, "pmap": pmap_traces}, (mode, r["traces"])


def test_chains_same_samples_under_pmap_sharding_and_vmap(jobs):
    res = jobs["misc"].ok()
    r = res["chains_optax"]
    assert r["pmap_equals_vmap"] and r["sharded_equals_vmap"], r
    assert r["single_chain_equals"], r
    assert r["chains_differ"], r
    assert r["sample_shape"] == [16, 30, 8]
    assert r["sample_spec"] == "P('chains', None, None)"
    b = res["chains_blackjax"]
    assert b["sharded_equals_vmap"], b


def test_blackjax_face_data_parallel(jobs):
    res = jobs["dp"].ok()
    for mode in ("FP", "VC BFP8"):
        r = res[f"blackjax_dp {mode}"]
        assert r["replicas_identical_sharded"] and r["replicas_identical_pmap"], (mode, r)
        assert r["pmap_equals_sharded"], (mode, r)
        if mode == "FP":
            assert r["vs_single"]["max_abs_diff"] < 1e-5, r
        else:
            assert r["vs_single"]["identical_fraction"] >= 0.95, r


def test_chains_and_data_on_a_2d_mesh(jobs):
    r = jobs["misc"].ok()["chains_x_data"]
    assert r["replicas_identical"], r
    assert r["vs_single"]["max_abs_diff"] < 1e-5, r
    assert r["spec_kept"], r
    assert r["spec_after"] == ["P('chains',)", "P('chains', None)"], r
    assert r["loss_shape"] == [4]
    b = jobs["misc"].ok()["chains_x_data_blackjax"]
    assert b["replicas_identical"], b
    assert b["vs_single"]["identical_fraction"] >= 0.95, b
    assert b["spec_after"] == ["P('chains',)", "P('chains', None)"], b


def test_bad_input_errors_name_the_numbers(jobs):
    e = jobs["misc"].ok()["errors"]
    missing = [k for k, v in e.items() if v is None]
    assert not missing, f"no ValueError for {missing}"
    assert "12 chains" in e["chains_sharded_12_on_8"] and "8 devices" in e[
        "chains_sharded_12_on_8"]
    assert "12 chains" in e["chains_pmap_12_on_8"] and "8 devices" in e["chains_pmap_12_on_8"]
    assert "has 60 along axis 0" in e["batch_60_on_8"] and "8 devices" in e["batch_60_on_8"]
    assert "has 60" in e["pmap_batch_60_on_8"] and "8 local devices" in e["pmap_batch_60_on_8"]
    assert "('data',)" in e["mesh_names"] and "('chains',)" in e["mesh_names"]
    assert "('chains',)" in e["chains_mesh_names"] and "('data',)" in e["chains_mesh_names"]
    assert "30 along axis 1" in e["2d_batch_30_on_4"] and "'data'" in e["2d_batch_30_on_4"]
    assert "3 along axis 0" in e["2d_chains_3_on_2"] and "'chains'" in e["2d_chains_3_on_2"]
    assert "needs 16 devices but only 8" in e["make_mesh_too_big"]


# -------------------------------------------------------- two processes on localhost


def test_two_process_run_agrees_and_shuts_down(jobs):
    p0, p1 = (j.ok() for j in jobs["dist"])
    for i, r in enumerate((p0, p1)):
        assert (r["process_index"], r["process_count"]) == (i, 2)
        assert (r["device_count"], r["local_device_count"]) == (4, 2)
        assert r["shutdown"]
    # both processes hold the same chain, bit for bit
    assert p0["chain"] == p1["chain"]
    assert p0["pmap_final"] == p1["pmap_final"]
    ref = jobs["misc"].ok()["dist_reference"]  # the same code in one process, 4 devices
    for mode in ("FP", "VC BFP8"):
        assert p0["chain"][mode]["replicas_identical"], mode
        a = np.asarray(ref[mode]["trajectory"])
        b = np.asarray(p0["chain"][mode]["trajectory"])
        if mode == "FP":
            np.testing.assert_allclose(b, a, rtol=0, atol=1e-5)
        else:
            assert np.mean(a == b) >= 0.95, (mode, np.mean(a == b))
    np.testing.assert_allclose(p0["pmap_final"], p0["chain"]["FP"]["trajectory"][-1],
                               rtol=0, atol=1e-5)


@pytest.mark.parametrize("fail", ["before_init", "after_init"])
def test_two_process_failure_ends_the_survivor(jobs, fail):
    """Process 1 dies (before ``initialize``, or raising right after it): process 0 must
    not hang but end with JAX's fatal error within the configured timeouts."""
    survivor, failed = (j.wait() for j in jobs[f"fail_{fail}"])
    assert failed["rc"] != 0
    assert survivor["result"] is None
    assert survivor["rc"] != 0, _tail(survivor["stderr"])
    assert survivor["rc"] != 124, "the survivor hung until the worker's own deadline"
    assert JAX_FATAL in survivor["stderr"], _tail(survivor["stderr"])
    # timeouts: initialization 15 s, heartbeat 10 s, shutdown 10 s (+ start-up on 2 busy cores)
    assert survivor["seconds"] < 120, survivor["seconds"]
