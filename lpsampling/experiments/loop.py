"""The training loop: :func:`train` runs one configuration, collects its posterior samples
(at the steps of :func:`~lpsampling.experiments.config.sample_steps`, packed in the weight
format) and checkpoints it.

Data order is a pure function of ``(seed, epoch)`` and every random draw of a step a pure
function of ``(seed, step)``, so a run resumed from a checkpoint continues bit-identically.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np

from lpsampling.data import Dataset, batches
from lpsampling.experiments.checkpoint import (
    Checkpointer,
    Resumed,
    checkpoint_meta,
    resume_from,
)
from lpsampling.experiments.config import RunConfig, prepare_data, sample_epochs, sample_steps
from lpsampling.experiments.engine import Engine, TrainState, get_engine, run_keys, zero_sums

__all__ = ["TrainOutput", "epoch_rng", "nonfinite_count", "train"]


@dataclasses.dataclass
class TrainOutput:
    """The result of :func:`train`.

    Attributes:
      config: the configuration.
      state: the final :class:`~lpsampling.experiments.engine.TrainState` (params,
        BatchNorm statistics, optimizer state, sample banks).
      step: steps done (``total_steps`` when complete).
      total_steps: ``epochs × steps_per_epoch``.
      steps_per_epoch: optimizer steps per epoch.
      history: one dict per finished epoch (loss, accuracy, lr, phase, samples).
      sample_epochs: the epochs during which a sample is (to be) taken.
      sample_steps: the steps after which a sample is (to be) taken (1-based counts).
      resumed_from: the checkpoint step training resumed from, or None.
      train_time_s: wall time of this call's training loop (compilation included).
    """

    config: RunConfig
    state: TrainState
    step: int
    total_steps: int
    steps_per_epoch: int
    history: list[dict[str, Any]]
    sample_epochs: list[int]
    sample_steps: list[int]
    resumed_from: int | None
    train_time_s: float
    engine: Any = dataclasses.field(repr=False, default=None)

    @property
    def nonfinite_count(self) -> int:
        """Steps the sampler skipped because the gradients were not finite (all steps of
        the run, checkpointed ones included)."""
        return nonfinite_count(self.state.opt_state)

    @property
    def complete(self) -> bool:
        return self.step >= self.total_steps

    @property
    def num_samples(self) -> int:
        return int(min(int(self.state.bank.count), self.state.bank.capacity))


def nonfinite_count(opt_state: Any) -> int:
    """``nonfinite_count`` of the lpsampling sampler state inside ``opt_state``."""
    import jax

    from lpsampling.optax import SGMCMCState

    found = [x for x in jax.tree_util.tree_leaves(
        opt_state, is_leaf=lambda x: isinstance(x, SGMCMCState))
        if isinstance(x, SGMCMCState)]
    return int(sum(int(x.nonfinite_count) for x in found))


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The data order of an epoch: a pure function of (seed, epoch)."""
    return np.random.default_rng([int(seed), int(epoch), 0x0DA7A])


def train(
    config: RunConfig,
    *,
    dataset: Dataset | None = None,
    resume: bool = False,
    progress: bool = True,
    on_step: Callable[[int], None] | None = None,
) -> TrainOutput:
    """Train / sample one configuration and collect its posterior samples.

    Args:
      config: the run.
      dataset: the loaded dataset (default: ``load_dataset(config.dataset,
        config.data_dir)``); ``train_subset`` / ``test_subset`` are applied to it.
      resume: continue from the latest checkpoint in ``config.checkpoint_dir`` if there
        is one (without a checkpoint, start afresh). Without ``resume`` an existing
        checkpoint is an error (nothing is overwritten).
      progress: show a tqdm progress bar (loss, accuracy, step size, phase).
      on_step: called with the step count after every step (and after any checkpoint
        of that step); an exception it raises aborts training (tests use it to simulate
        a crash).

    Raises:
      ValueError: invalid configuration, or a checkpoint of another configuration.
    """
    if resume and not config.checkpoint_dir:
        raise ValueError("resume needs a checkpoint directory (checkpoint_dir / "
                         "--checkpoint-dir)")
    ds = prepare_data(config, dataset)
    engine = get_engine(config, ds)
    keys = run_keys(config.seed)
    spe, total = engine.steps_per_epoch, engine.total_steps
    plan = sample_epochs(config, spe)
    at_steps = sample_steps(config, spe)

    state = engine.initial_state(config, ds, keys)
    ckpt = Checkpointer(config.checkpoint_dir) if config.checkpoint_dir else None
    try:
        start = (resume_from(ckpt, config, spe, state, resume=resume) if ckpt is not None
                 else Resumed(state))
        history = start.history

        def save(at: int, state: TrainState) -> None:
            if ckpt is not None:
                ckpt.save(at, state, checkpoint_meta(config, at, spe, total, history))

        t0 = time.perf_counter()
        loop = _Loop(engine=engine, config=config, ds=ds, data_key=keys.data,
                     plan=set(plan), at_steps=frozenset(at_steps), history=history,
                     save=save, on_step=on_step)
        state, step = loop.run(start.state, start.step, progress=progress)
        train_time = time.perf_counter() - t0
        if step == total:
            save(step, state)
    finally:
        if ckpt is not None:
            ckpt.close()
    return TrainOutput(config=config, state=state, step=step, total_steps=total,
                       steps_per_epoch=spe, history=history, sample_epochs=plan,
                       sample_steps=at_steps,
                       resumed_from=start.from_step,
                       train_time_s=train_time, engine=engine)


def _phase(epoch: int, plan: set[int]) -> str:
    return "sample" if epoch in plan else "explore"


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Loop:
    """What the loop of one run reads: the engine, the data, the sampling plan, the
    history it appends to and the per-step hooks."""

    engine: Engine
    config: RunConfig
    ds: Dataset
    data_key: Any
    plan: set[int]
    at_steps: frozenset[int]
    history: list[dict[str, Any]]
    save: Callable[[int, TrainState], None]
    on_step: Callable[[int], None] | None

    def run(self, state: TrainState, step: int, *, progress: bool) -> tuple[TrainState, int]:
        from tqdm.auto import tqdm

        engine, config, ds, plan = self.engine, self.config, self.ds, self.plan
        spe, total = engine.steps_per_epoch, engine.total_steps
        refresh = max(1, spe // 4)
        bar = tqdm(total=total, initial=step, disable=not progress, leave=False,
                   desc=f"{config.label} [{config.format_spec.label}] seed {config.seed}",
                   unit="step", dynamic_ncols=True, file=sys.stderr)
        params, bstats, opt_state, sums = (state.params, state.batch_stats, state.opt_state,
                                           state.sums)
        bank, stats_bank = state.bank, state.stats_bank
        temperature = engine.temperature(config)
        aux = None
        try:
            it = None
            while step < total:
                epoch, pos = divmod(step, spe)
                if it is None or pos == 0:
                    it = batches(epoch_rng(config.seed, epoch), ds.x_train, ds.y_train,
                                 config.batch_size)
                    for _ in range(pos):  # resume mid-epoch: skip the batches already done
                        next(it)
                x, y = next(it)
                params, bstats, opt_state, sums, aux = engine.step(
                    params, bstats, opt_state, sums, x, y, jnp.asarray(step, jnp.int32),
                    self.data_key, temperature)
                step += 1
                bar.update(1)
                end_of_epoch = step % spe == 0
                if end_of_epoch or step % refresh == 0:
                    loss_s, corr_s, seen = (float(v) for v in sums)
                    bar.set_postfix(loss=f"{loss_s / seen:.4f}", acc=f"{corr_s / seen:.3f}",
                                    lr=f"{float(aux[0]):.3g}", phase=_phase(epoch, plan),
                                    refresh=False)
                if step in self.at_steps:
                    bank = engine.bank_add(bank, params)
                    if stats_bank is not None:
                        stats_bank = engine.bank_add(stats_bank, bstats)
                if end_of_epoch:
                    loss_s, corr_s, seen = (float(v) for v in sums)
                    self.history.append({
                        "epoch": epoch, "loss": loss_s / seen, "accuracy": corr_s / seen,
                        "lr": float(aux[0]), "noise": bool(aux[1]),
                        "phase": _phase(epoch, plan), "samples": int(bank.count),
                    })
                    sums = zero_sums()
                state = TrainState(params, bstats, opt_state, bank, stats_bank, sums)
                if config.checkpoint_every and step % config.checkpoint_every == 0:
                    self.save(step, state)
                if self.on_step is not None:
                    self.on_step(step)
        finally:
            bar.close()
        return TrainState(params, bstats, opt_state, bank, stats_bank, sums), step
