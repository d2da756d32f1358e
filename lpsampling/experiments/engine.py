"""The training engine: the model, the sampler and the jitted step / bank / evaluation
functions of a configuration, shared by every run with the same compiled shape (all seeds).

Loss: mean cross-entropy over the minibatch; the Langevin noise variance per step is
``2ηT/N`` (``N`` training examples). :func:`make_train_step` is the public entry point.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from lpsampling import bank as sample_bank
from lpsampling.bank import SampleBank
from lpsampling.data import Dataset, random_crop_flip
from lpsampling.experiments.config import RunConfig
from lpsampling.flax import QuantConfig, ResNet, SmallCNN, create_model
from lpsampling.formats import FULL, Format
from lpsampling.optax import (
    current_learning_rate,
    cyclical_sghmc,
    cyclical_sgld,
    init_weights,
    is_sampling,
    sgd,
    sghmc,
    sgld,
)
from lpsampling.schedules import paper_decay_schedule

__all__ = [
    "PRNG_IMPL",
    "DataShape",
    "Engine",
    "RunKeys",
    "TrainState",
    "TrainStep",
    "build_model",
    "cross_entropy",
    "get_engine",
    "make_train_step",
    "run_keys",
    "zero_sums",
]

# Random bits dominate stochastic rounding on CPU; philox4x32 draws them about 3-4x faster
# than JAX's default threefry (benchmarks/RESULTS.md) and is counter-based, so results do
# not depend on how arrays are laid out or vmapped.
PRNG_IMPL = "philox4x32"


class TrainState(NamedTuple):
    """Everything that evolves during training (and is checkpointed)."""

    params: Any
    batch_stats: Any
    opt_state: Any
    bank: SampleBank
    stats_bank: SampleBank | None
    sums: tuple  # (loss sum, correct count, examples seen) of the current epoch


class RunKeys(NamedTuple):
    """The independent PRNG keys of a run (split once from the seed, in this order)."""

    init: jax.Array
    sampler: jax.Array
    weights: jax.Array
    data: jax.Array
    eval: jax.Array


def run_keys(seed: int) -> RunKeys:
    """The keys of a run with ``seed`` (:data:`PRNG_IMPL` keys)."""
    root = jax.random.key(seed, impl=PRNG_IMPL)
    return RunKeys(*jax.random.split(root, 5))


@dataclasses.dataclass(frozen=True)
class DataShape:
    """What the compiled functions need to know about a dataset."""

    num_classes: int
    input_shape: tuple[int, ...]
    input_dtype: str
    vocab_size: int | None
    num_train: int

    @classmethod
    def of(cls, ds: Dataset) -> DataShape:
        return cls(ds.num_classes, ds.input_shape, str(ds.x_train.dtype), ds.vocab_size,
                   ds.num_train)


def zero_sums() -> tuple:
    """The epoch sums ``(loss, correct, seen)`` at zero."""
    # three distinct buffers: the step donates them
    return tuple(jnp.zeros((), jnp.float32) for _ in range(3))


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example softmax cross-entropy with integer labels (the training loss)."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def build_model(name: str, num_classes: int, quant: QuantConfig,
                input_shape: tuple[int, ...], vocab_size: int | None,
                compute: str = "float32", weight_format: Format = FULL):
    """The Flax model of a model name (:data:`~lpsampling.experiments.registry.MODEL_NAMES`).

    ``compute="int8"`` (with the weights' ``weight_format``) multiplies the layers whose
    input is a quantized activation in int8 (:mod:`lpsampling.int8`)."""
    kw: dict[str, Any] = {}
    if compute == "int8":
        kw = dict(compute=compute, weight_format=weight_format)
    if name == "lstm":
        if vocab_size is None:
            raise ValueError("model 'lstm' needs a text dataset (imdb)")
        return create_model("lstm", num_classes, quant, vocab_size=vocab_size, **kw)
    if len(input_shape) != 3 and name in ("cnn", "cnn-mini", "resnet18", "resnet-mini"):
        raise ValueError(f"model {name!r} needs image inputs (H, W, C), got examples of "
                         f"shape {input_shape}")
    if name in ("resnet18", "resnet-mini"):
        strides = (1, 2, 2, 2) if name == "resnet18" else (1, 2)
        size = input_shape[0]
        for s in strides:
            size = -(-size // s)
        if name == "resnet18":
            return create_model("resnet18", num_classes, quant, pool_size=size, **kw)
        return ResNet(num_classes=num_classes, quant=quant, stage_sizes=(1, 1),
                      widths=(16, 32), strides=strides, pool_size=size, **kw)
    if name == "cnn-mini":
        return SmallCNN(num_classes=num_classes, quant=quant, channels=(8, 16), dense=64, **kw)
    return create_model(name, num_classes, quant, **kw)


class Engine:
    """The model, the sampler factory and the jitted step / bank / evaluation functions
    of ``config`` (a :meth:`RunConfig.compile_key`) on data of shape ``data``."""

    def __init__(self, config: RunConfig, data: DataShape):
        self.config, self.data = config, data
        self.spec, self.fspec = config.method_spec, config.format_spec
        self.steps_per_epoch = data.num_train // config.batch_size
        self.total_steps = config.epochs * self.steps_per_epoch
        self.model = build_model(config.model, data.num_classes, self.fspec.quant,
                                 data.input_shape, data.vocab_size, config.compute,
                                 self.fspec.weight)
        self.step = jax.jit(self._make_step(), donate_argnums=(0, 1, 2, 3))
        self.eval_logits = _eval_fn(config.model, data.num_classes, self.fspec.activation,
                                    self.fspec.error, data.input_shape, data.vocab_size,
                                    config.compute, self.fspec.weight)
        self.bank_add = _BANK_ADD
        self.bank_get = _BANK_GET
        self.init_state = jax.jit(self._init_state, static_argnums=(4,))

    def _make_step(self):
        runtime_temperature = self.config.runtime_temperature
        model, augment = self.model, self.config.augment
        shape = self.data.input_shape
        images = len(shape) == 3
        pad = max(1, shape[0] // 8) if images else 0
        bsz = float(self.config.batch_size)

        def step(params, batch_stats, opt_state, sums, x, y, step_idx, data_key, temperature):
            # only ``update`` runs here: its key lives in ``opt_state``, not in ``opt``
            opt = self.make_optimizer(jax.random.key(0, impl=PRNG_IMPL),
                                      temperature if runtime_temperature else None)
            k_q, k_aug = jax.random.split(jax.random.fold_in(data_key, step_idx))
            if augment and images:
                x = random_crop_flip(k_aug, x, padding=pad)

            def loss_fn(p):
                if batch_stats is None:
                    logits = model.apply({"params": p}, x, train=True, rngs={"quantize": k_q})
                    new_bs = None
                else:
                    logits, mut = model.apply({"params": p, "batch_stats": batch_stats}, x,
                                              train=True, mutable=["batch_stats"],
                                              rngs={"quantize": k_q})
                    new_bs = mut["batch_stats"]
                return jnp.mean(cross_entropy(logits, y)), (logits, new_bs)

            (loss, (logits, new_bs)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            updates, opt_state = opt.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            correct = jnp.sum(jnp.argmax(logits, -1) == y).astype(jnp.float32)
            loss_sum, correct_sum, seen = sums
            sums = (loss_sum + loss * bsz, correct_sum + correct, seen + bsz)
            info = (current_learning_rate(opt_state), is_sampling(opt_state))
            return params, new_bs, opt_state, sums, info

        return step

    def _init_state(self, x0, k_init, k_sampler, k_weights, capacity: int) -> TrainState:
        variables = self.model.init({"params": k_init, "quantize": k_init}, x0, train=True)
        params = variables["params"]
        batch_stats = variables.get("batch_stats")
        opt_state = self.make_optimizer(k_sampler).init(params)
        params = init_weights(params, self.fspec.weight, key=k_weights)
        bank = sample_bank.init(params, self.fspec.weight, capacity)
        stats_bank = (None if batch_stats is None
                      else sample_bank.init(batch_stats, FULL, capacity))
        return TrainState(params, batch_stats, opt_state, bank, stats_bank, zero_sums())

    def initial_state(self, config: RunConfig, ds: Dataset, keys: RunKeys) -> TrainState:
        """The state before the first step (bank capacity: the samples of ``config``)."""
        capacity = config.num_samples
        return self.init_state(jnp.asarray(ds.x_train[:2]), keys.init, keys.sampler,
                               keys.weights, capacity)

    def temperature(self, config: RunConfig) -> jax.Array:
        """The step's ``temperature`` argument for a run of ``config`` (float32; ignored
        where the temperature is compiled, see :meth:`RunConfig.compile_key`)."""
        return jnp.asarray(config.temperature, jnp.float32)

    def make_optimizer(self, key: jax.Array, temperature: float | jax.Array | None = None
                       ) -> optax.GradientTransformationExtraArgs:
        """The configuration's sampler (optax face) with its PRNG ``key`` at
        ``temperature`` (default: the engine's configuration's, which for SGLD dynamics is
        the compile key's placeholder: pass the run's)."""
        c, spec, f = self.config, self.spec, self.fspec
        temp = float(c.temperature) if temperature is None else temperature
        lr0, num_train = float(c.lr), self.data.num_train
        common = dict(weight_decay=float(c.weight_decay), weight_format=f.weight,
                      grad_format=f.grad, accumulator=spec.accumulator, key=key)
        hmc = spec.dynamics == "sghmc"
        if hmc:
            common.update(friction=float(c.friction), inverse_mass=float(c.inverse_mass))
        if spec.cyclical:
            return (cyclical_sghmc if hmc else cyclical_sgld)(
                lr0, num_data=num_train, num_cycles=c.num_cycles,
                total_steps=self.total_steps, exploration_ratio=float(c.exploration_ratio),
                temperature=temp, **common)
        lr: Any = lr0
        if c.schedule == "decay":
            lr = paper_decay_schedule(lr0, self.total_steps)
        if spec.kind == "sgd":
            return sgd(lr, **common)
        return (sghmc if hmc else sgld)(lr, num_data=num_train, temperature=temp, **common)


@functools.lru_cache(maxsize=32)
def _engine(key: RunConfig, data: DataShape) -> Engine:
    return Engine(key, data)


def get_engine(config: RunConfig, ds: Dataset) -> Engine:
    """The (cached) engine of ``config`` on the prepared dataset ``ds``.

    Raises:
      ValueError: the batch size exceeds the training examples.
    """
    if ds.num_train < config.batch_size:
        raise ValueError(f"batch_size {config.batch_size} exceeds the {ds.num_train} "
                         "training examples")
    return _engine(config.compile_key(), DataShape.of(ds))


# Shared by every engine: compiled once per bank structure (weight format and shapes).
_BANK_ADD = jax.jit(sample_bank.add)
_BANK_GET = jax.jit(sample_bank.get)


@functools.lru_cache(maxsize=32)
def _eval_fn(model_name: str, num_classes: int, activation: Format, error: Format,
             input_shape: tuple[int, ...], vocab_size: int | None,
             compute: str = "float32", weight: Format = FULL):
    """Jitted test-time logits, shared by every method and seed with the same network."""
    model = build_model(model_name, num_classes, QuantConfig(activation, error),
                        input_shape, vocab_size, compute, weight)

    def eval_logits(params, batch_stats, x, key):
        variables = {"params": params}
        if batch_stats is not None:
            variables["batch_stats"] = batch_stats
        return model.apply(variables, x, train=False, rngs={"quantize": key})

    return jax.jit(eval_logits)


@dataclasses.dataclass(frozen=True)
class TrainStep:
    """A configuration's compiled training step with its initial state and data key.

    ``state, (lr, sampling) = train_step(state, x, y, step)`` runs one optimizer step on
    the minibatch ``(x, y)`` (the input buffers of ``state`` are donated).
    """

    engine: Engine
    state: TrainState
    data_key: jax.Array
    temperature: jax.Array

    def __call__(self, state: TrainState, x: Any, y: Any, step: int | jax.Array
                 ) -> tuple[TrainState, tuple[jax.Array, jax.Array]]:
        params, bstats, opt_state, sums, info = self.engine.step(
            state.params, state.batch_stats, state.opt_state, state.sums, x, y,
            jnp.asarray(step, jnp.int32), self.data_key, self.temperature)
        return state._replace(params=params, batch_stats=bstats, opt_state=opt_state,
                              sums=sums), info


def make_train_step(config: RunConfig, ds: Dataset) -> TrainStep:
    """The jitted training step of ``config`` on the prepared dataset ``ds``, with the
    initial state and data key of ``config.seed`` (exactly those :func:`train` uses)."""
    engine = get_engine(config, ds)
    keys = run_keys(config.seed)
    return TrainStep(engine, engine.initial_state(config, ds, keys), keys.data,
                     engine.temperature(config))

