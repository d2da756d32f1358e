"""Orbax checkpoints of a training run (format version 1): item ``state`` (the arrays of a
:class:`~lpsampling.experiments.engine.TrainState`, PRNG keys as ``key_data``) and item
``meta`` (JSON: version, training config, step, epoch/batch position, history).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import signal
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lpsampling.atomic import finite_json
from lpsampling.experiments.config import RunConfig
from lpsampling.experiments.engine import TrainState

__all__ = ["CHECKPOINT_VERSION", "CheckpointError", "Checkpointer", "Resumed", "checkpoint_meta",
           "resume_from"]

CHECKPOINT_VERSION = 2


def _is_key(x: Any) -> bool:
    return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _to_storable(state: TrainState) -> dict[str, np.ndarray]:
    leaves = jax.tree.leaves(state)
    return {f"leaf{i:05d}": np.asarray(jax.random.key_data(x) if _is_key(x) else x)
            for i, x in enumerate(leaves)}


def _from_storable(flat: Mapping[str, Any], template: TrainState) -> TrainState:
    leaves, treedef = jax.tree.flatten(template)
    if len(flat) != len(leaves):
        raise ValueError(f"checkpoint holds {len(flat)} arrays, this configuration "
                         f"{len(leaves)}")
    out = []
    for i, t in enumerate(leaves):
        a = flat[f"leaf{i:05d}"]
        if _is_key(t):
            a = jax.random.wrap_key_data(jnp.asarray(a), impl=jax.random.key_impl(t))
        else:
            a = jnp.asarray(a, dtype=t.dtype)
        if a.shape != t.shape:
            raise ValueError(f"checkpoint array {i} has shape {a.shape}, expected {t.shape}")
        out.append(a)
    return jax.tree.unflatten(treedef, out)


class CheckpointError(ValueError):
    """No usable checkpoint: every step in the directory is corrupt or incomplete."""


class _BadStep(Exception):
    """One checkpoint step is corrupt or incomplete (the message says why)."""


def _array_digest(a: np.ndarray) -> str:
    a = np.ascontiguousarray(a)
    h = hashlib.sha256()
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def _meta_digest(meta: Mapping[str, Any]) -> str:
    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _leaf_table(flat: Mapping[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    return {k: {"shape": list(a.shape), "dtype": np.dtype(a.dtype).str,
                "sha256": _array_digest(a)} for k, a in flat.items()}


class Checkpointer:
    """Orbax checkpoints of a run: item ``state`` (arrays) and ``meta`` (JSON).

    Orbax writes each step into a temporary directory and renames it when complete (an
    atomic rename on POSIX filesystems); unfinished temporaries are never listed as steps.
    Format version 2 adds, in ``meta``, the shape, dtype and SHA-256 of every saved array
    (``arrays``) and the SHA-256 of the metadata itself (``meta_sha256``); both are verified
    on restore. A SIGINT during a save is held until the save is complete (then raised as
    ``KeyboardInterrupt``), so an interrupted run never leaves a half-written step.
    """

    def __init__(self, directory: str | os.PathLike, keep: int = 2):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.directory = Path(directory).expanduser().absolute()
        # cleanup_tmp_directories: remove the temporaries of saves a crash interrupted
        opts = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                            enable_async_checkpointing=False,
                                            cleanup_tmp_directories=True)
        self.manager = ocp.CheckpointManager(self.directory, options=opts,
                                             item_names=("state", "meta"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def step_path(self, step: int) -> Path:
        return self.directory / str(step)

    def save(self, step: int, state: TrainState, meta: dict[str, Any]) -> None:
        if step in self.manager.all_steps():
            return
        flat = _to_storable(state)
        meta = finite_json(dict(meta))
        meta["arrays"] = _leaf_table(flat)
        meta["meta_sha256"] = _meta_digest(meta)
        with _sigint_deferred():
            try:
                self._save(step, flat, meta)
            except BaseException:
                self._remove_temporaries()
                raise

    def _save(self, step: int, flat: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        ocp = self._ocp
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(flat),
            meta=ocp.args.JsonSave(meta)), force=True)
        self.manager.wait_until_finished()

    def _remove_temporaries(self) -> None:
        for p in self.directory.glob("*.orbax-checkpoint-tmp*"):
            shutil.rmtree(p, ignore_errors=True)

    def restore_meta(self, step: int) -> dict[str, Any]:
        ocp = self._ocp
        return self.manager.restore(step, args=ocp.args.Composite(
            meta=ocp.args.JsonRestore()))["meta"]

    def restore_state(self, step: int, template: TrainState) -> TrainState:
        return _from_storable(self.restore_arrays(step, _to_storable(template)), template)

    def restore_arrays(self, step: int, target: dict[str, np.ndarray]
                       ) -> dict[str, np.ndarray]:
        ocp = self._ocp
        got = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target)))["state"]
        return {k: np.asarray(v) for k, v in got.items()}

    def set_aside(self, step: int) -> Path:
        """Rename a bad step directory to ``<step>.corrupt[-N]`` (kept for inspection,
        never listed as a step) and return the new path."""
        src = self.step_path(step)
        dst = src.with_name(f"{step}.corrupt")
        n = 1
        while dst.exists():
            dst = src.with_name(f"{step}.corrupt-{n}")
            n += 1
        if src.exists():
            os.replace(src, dst)
        self.manager.reload()
        return dst

    def close(self) -> None:
        self.manager.close()


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold SIGINT (Ctrl-C) during the block and raise ``KeyboardInterrupt`` after it
    (main thread only; elsewhere the block runs unprotected)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[Any] = []

    def handler(signum, frame):
        got.append(signum)

    old = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
    if got:
        raise KeyboardInterrupt


def _config_mismatch(saved: Mapping[str, Any], config: RunConfig) -> list[str]:
    now = config.training_dict()
    saved = {"compute": "float32", **saved}  # checkpoints from before the compute option
    keys = sorted(set(saved) | set(now))
    return [f"{k}: checkpoint {saved.get(k)!r} vs now {now.get(k)!r}"
            for k in keys if saved.get(k) != now.get(k)]


def checkpoint_meta(config: RunConfig, step: int, steps_per_epoch: int, total_steps: int,
                    history: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON item ``meta`` saved with the state of ``step``."""
    return {"version": CHECKPOINT_VERSION, "config": config.training_dict(),
            "step": step, "epoch": step // steps_per_epoch, "batch": step % steps_per_epoch,
            "steps_per_epoch": steps_per_epoch, "total_steps": total_steps,
            "history": history}


@dataclasses.dataclass
class Resumed:
    """Where a run restarts: its state, step count, history and checkpoint step."""

    state: TrainState
    step: int = 0
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    from_step: int | None = None


def resume_from(ckpt: Checkpointer, config: RunConfig, steps_per_epoch: int,
                template: TrainState, *, resume: bool) -> Resumed:
    """The newest good checkpoint of ``ckpt`` restored onto ``template`` (with
    ``resume``), or ``template`` at step 0 when there is none.

    Every step is verified before it is used: the metadata parses and matches its
    SHA-256, its step matches the directory name and its epoch/batch position matches the
    step, and every array matches its recorded SHA-256. A step that fails is reported on
    stderr with its path, renamed to ``<step>.corrupt`` and the next older step is tried.

    Raises:
      ValueError: a checkpoint exists but ``resume`` is false; or a good checkpoint has
        another version, configuration, steps per epoch or array layout.
      CheckpointError: (a ``ValueError``) steps exist but none of them is good.
    """
    steps = ckpt.all_steps()
    if steps and not resume:
        raise ValueError(
            f"{ckpt.directory} already holds a checkpoint (step {steps[-1]}); pass "
            "resume=True (--resume) to continue it, or use another checkpoint_dir")
    if not steps:
        return Resumed(template)
    target = _to_storable(template)
    bad: list[str] = []
    for step in reversed(steps):
        path = ckpt.step_path(step)
        try:
            meta = _verified_meta(ckpt, step, steps_per_epoch)
            _check_compatible(ckpt, meta, config, steps_per_epoch, target, step)
            arrays = _verified_arrays(ckpt, step, meta, target)
        except _BadStep as err:
            moved = ckpt.set_aside(step)
            bad.append(f"step {step} ({path}): {err}")
            print(f"lpsampling: checkpoint {path} is corrupt or incomplete ({err}); moved "
                  f"to {moved.name}; trying an older step", file=sys.stderr)
            continue
        if bad:
            print(f"lpsampling: resuming from the newest good checkpoint, step {step} "
                  f"({path})", file=sys.stderr)
        return Resumed(_from_storable(arrays, template), int(meta["step"]),
                       list(meta["history"]), step)
    raise CheckpointError(f"no usable checkpoint in {ckpt.directory}: " + "; ".join(bad)
                          + " (the bad steps were renamed to <step>.corrupt; remove the "
                          "directory or pass another checkpoint_dir to start afresh)")


def _short(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _verified_meta(ckpt: Checkpointer, step: int, steps_per_epoch: int) -> dict[str, Any]:
    path = ckpt.step_path(step)
    if not (path / "meta").is_dir():
        raise _BadStep("no meta/ item")
    if not (path / "state").is_dir():
        raise _BadStep("no state/ item")
    try:
        meta = ckpt.restore_meta(step)
    except Exception as err:  # noqa: BLE001 - any failure to read marks the step bad
        raise _BadStep(f"unreadable metadata: {type(err).__name__}: {_short(err)}") from err
    if not isinstance(meta, dict):
        raise _BadStep("metadata is not a JSON object")
    version = meta.get("version")
    if version == CHECKPOINT_VERSION:
        try:
            digest = _meta_digest(meta)
        except (TypeError, ValueError) as err:
            raise _BadStep(f"metadata not canonical JSON: {_short(err)}") from err
        if meta.get("meta_sha256") != digest:
            raise _BadStep("metadata SHA-256 mismatch (edited or corrupt)")
        if not isinstance(meta.get("arrays"), dict):
            raise _BadStep("metadata lists no array checksums")
    elif version != 1:  # version 1: written before checksums (verified only in structure)
        raise _BadStep(f"unsupported checkpoint version {version!r}")
    try:
        ok = (int(meta["step"]) == step and meta.get("steps_per_epoch") is not None
              and (meta["epoch"], meta["batch"]) == divmod(step, int(meta["steps_per_epoch"]))
              and isinstance(meta["history"], list) and isinstance(meta["config"], dict))
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as err:
        raise _BadStep(f"metadata incomplete: {type(err).__name__}: {_short(err)}") from err
    if not ok:
        raise _BadStep(f"metadata inconsistent: step {meta.get('step')!r}, epoch "
                       f"{meta.get('epoch')!r}, batch {meta.get('batch')!r} in directory of "
                       f"step {step}")
    if version == 1:
        print(f"lpsampling: checkpoint {path} has format version 1 (no checksums): its "
              "arrays cannot be verified", file=sys.stderr)
    return meta


def _check_compatible(ckpt: Checkpointer, meta: Mapping[str, Any], config: RunConfig,
                      steps_per_epoch: int, target: Mapping[str, np.ndarray],
                      step: int) -> None:
    """Refusals that no older step can fix (raised as ``ValueError``)."""
    diff = _config_mismatch(meta["config"], config)
    if diff:
        raise ValueError(f"the checkpoint in {ckpt.directory} belongs to another "
                         "configuration: " + "; ".join(diff))
    if meta.get("steps_per_epoch") != steps_per_epoch:
        raise ValueError(
            f"the checkpoint in {ckpt.directory} was made with "
            f"{meta.get('steps_per_epoch')} steps per epoch, now {steps_per_epoch} (another "
            "dataset size?)")
    arrays = meta.get("arrays")
    if arrays is None:
        return
    want = {k: (list(a.shape), np.dtype(a.dtype).str) for k, a in target.items()}
    have = {k: (list(v.get("shape", [])), v.get("dtype")) for k, v in arrays.items()}
    if have != want:
        detail = (f"{len(have)} arrays, this configuration {len(want)}"
                  if len(have) != len(want) else
                  "; ".join(f"{k}: {have.get(k)} vs {want[k]}" for k in sorted(want)
                            if have.get(k) != want[k])[:300])
        raise ValueError(f"the checkpoint in {ckpt.directory} (step {step}) does not match "
                         f"this configuration: {detail}")


def _verified_arrays(ckpt: Checkpointer, step: int, meta: Mapping[str, Any],
                     target: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    try:
        got = _quiet(ckpt.restore_arrays, step, target)
    except Exception as err:  # noqa: BLE001 - any failure to read marks the step bad
        raise _BadStep(f"unreadable arrays: {type(err).__name__}: {_short(err)}") from err
    if set(got) != set(target):
        raise _BadStep(f"holds arrays {len(got)}, expected {len(target)}")
    sums = meta.get("arrays")
    for k in sorted(target):
        a = got[k]
        if a.shape != target[k].shape or a.dtype != target[k].dtype:
            raise _BadStep(f"array {k} has {a.dtype}{list(a.shape)}, expected "
                           f"{target[k].dtype}{list(target[k].shape)}")
        if sums is not None and _array_digest(a) != sums[k]["sha256"]:
            raise _BadStep(f"array {k} SHA-256 mismatch")
    return got


def _quiet(fn, *args):
    """Call ``fn`` with absl/orbax logging silenced below CRITICAL (a corrupt file
    otherwise prints tracebacks from orbax's worker threads)."""
    import logging

    loggers = [logging.getLogger(n) for n in ("absl", "orbax", "jax", "asyncio")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        return fn(*args)
    finally:
        for lg, lv in zip(loggers, levels, strict=True):
            lg.setLevel(lv)
