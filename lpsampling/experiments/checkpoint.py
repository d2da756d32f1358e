"""Orbax checkpoints of a training run (format version 1): item ``state`` (the arrays of a
:class:`~lpsampling.experiments.engine.TrainState`, PRNG keys as ``key_data``) and item
``meta`` (JSON: version, training config, step, epoch/batch position, history).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lpsampling.experiments.config import RunConfig
from lpsampling.experiments.engine import TrainState

__all__ = ["CHECKPOINT_VERSION", "Checkpointer", "Resumed", "checkpoint_meta", "resume_from"]

CHECKPOINT_VERSION = 1


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


class Checkpointer:
    """Orbax checkpoints of a run: item ``state`` (arrays) and ``meta`` (JSON).

    Orbax writes each step into a temporary directory and renames it when complete (an
    atomic rename on POSIX filesystems); unfinished temporaries are never listed as steps.
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

    def save(self, step: int, state: TrainState, meta: dict[str, Any]) -> None:
        ocp = self._ocp
        if step in self.manager.all_steps():
            return
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(_to_storable(state)),
            meta=ocp.args.JsonSave(meta)), force=True)
        self.manager.wait_until_finished()

    def restore_meta(self, step: int) -> dict[str, Any]:
        ocp = self._ocp
        return self.manager.restore(step, args=ocp.args.Composite(
            meta=ocp.args.JsonRestore()))["meta"]

    def restore_state(self, step: int, template: TrainState) -> TrainState:
        ocp = self._ocp
        target = _to_storable(template)
        got = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target)))["state"]
        return _from_storable(got, template)

    def close(self) -> None:
        self.manager.close()


def _config_mismatch(saved: Mapping[str, Any], config: RunConfig) -> list[str]:
    now = config.training_dict()
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
    """The latest checkpoint of ``ckpt`` restored onto ``template`` (with ``resume``), or
    ``template`` at step 0 when there is none.

    Raises:
      ValueError: a checkpoint exists but ``resume`` is false; or it has another version,
        configuration, steps per epoch or array layout.
    """
    latest = ckpt.latest_step()
    if latest is not None and not resume:
        raise ValueError(
            f"{ckpt.directory} already holds a checkpoint (step {latest}); pass "
            "resume=True (--resume) to continue it, or use another checkpoint_dir")
    if latest is None:
        return Resumed(template)
    meta = ckpt.restore_meta(latest)
    if meta.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{ckpt.directory}: unsupported checkpoint version "
                         f"{meta.get('version')!r}")
    diff = _config_mismatch(meta["config"], config)
    if diff:
        raise ValueError(f"the checkpoint in {ckpt.directory} belongs to another "
                         "configuration: " + "; ".join(diff))
    if meta.get("steps_per_epoch") != steps_per_epoch:
        raise ValueError(
            f"the checkpoint in {ckpt.directory} was made with "
            f"{meta.get('steps_per_epoch')} steps per epoch, now {steps_per_epoch} (another "
            "dataset size?)")
    try:
        state = ckpt.restore_state(latest, template)
    except ValueError as err:
        raise ValueError(f"the checkpoint in {ckpt.directory} (step {latest}) does not match "
                         f"this configuration: {err}") from err
    return Resumed(state, int(meta["step"]), list(meta["history"]), latest)
