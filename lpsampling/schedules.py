r"""Step-size schedules for posterior sampling.

* :func:`cyclical_schedule` — cyclical SGLD (Zhang et al., ICLR 2020):
  ``η_k = η₀/2 · (cos(π·(k mod L)/L) + 1)`` with cycle length ``L = ⌈K/M⌉`` for ``M``
  cycles of ``K`` steps in all. One closed form: its cost does not grow with the number
  of cycles.
* :func:`is_sampling_step` — the sampling stage of a cycle: ``(k mod L)/L ≥ β``; the first
  ``β`` of each cycle is SGD exploration.
* :func:`paper_decay_schedule` — the low-precision paper's "decay" schedule: constant for
  the first half, then linear down to ``final_fraction·η₀`` at 90% of training, then
  constant.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

from lpsampling.validation import positive_int

__all__ = [
    "cyclical_schedule",
    "cycle_length",
    "is_sampling_step",
    "paper_decay_schedule",
]


def cycle_length(total_steps: int, num_cycles: int) -> int:
    """``L = ⌈K/M⌉``, with the argument checks of :func:`lpsampling.cyclical_sgld`."""
    num_cycles = positive_int("num_cycles", num_cycles)
    total_steps = positive_int("total_steps", total_steps)
    if total_steps < num_cycles:
        raise ValueError(
            f"total_steps ({total_steps}) must be at least num_cycles ({num_cycles}): "
            "each cycle needs at least one step"
        )
    return math.ceil(total_steps / num_cycles)


def cyclical_schedule(init_value: float, cycle_length: int) -> optax.Schedule:
    """Cosine cyclical step size ``η_k = init_value/2·(cos(π·(k mod L)/L) + 1)``.

    Args:
      init_value: ``η₀``, the step size at the start of every cycle.
      cycle_length: ``L`` steps per cycle (``⌈total_steps / num_cycles⌉``).
    """
    cycle_length = positive_int("cycle_length", cycle_length)

    def schedule(count: jax.Array) -> jax.Array:
        phase = jnp.mod(jnp.asarray(count, jnp.int32), cycle_length) / cycle_length
        return init_value / 2 * (jnp.cos(jnp.pi * phase) + 1)

    return schedule


def _first_sampling_index(cycle_length: int, exploration_ratio: float) -> int:
    """The smallest ``j`` in ``[0, L]`` with ``j/L ≥ β``, evaluated as written in float64."""
    j = min(max(math.ceil(exploration_ratio * cycle_length), 0), cycle_length)
    while j > 0 and (j - 1) / cycle_length >= exploration_ratio:
        j -= 1
    while j < cycle_length and j / cycle_length < exploration_ratio:
        j += 1
    return j


def is_sampling_step(count: jax.Array, cycle_length: int, exploration_ratio: float) -> jax.Array:
    """Whether step ``count`` is in the sampling stage: ``(count mod L)/L ≥ β``.

    For a concrete ``β`` the test is done on integers (``count mod L ≥ j₀`` with ``j₀`` the
    first sampling index of a cycle), so it is exact at stage boundaries: a float32
    ``(count mod L)/L`` may be rounded below ``β`` (XLA turns the division by the constant
    ``L`` into a multiplication by its inexact reciprocal).
    """
    k = jnp.mod(jnp.asarray(count, jnp.int32), cycle_length)
    try:
        beta = float(exploration_ratio)
    except (TypeError, jax.errors.ConcretizationTypeError):
        return k / cycle_length >= exploration_ratio
    return k >= _first_sampling_index(cycle_length, beta)


def paper_decay_schedule(
    init_value: float,
    total_steps: int,
    final_fraction: float = 0.01,
    decay_start: float = 0.5,
    decay_end: float = 0.9,
) -> optax.Schedule:
    """The paper's "decay" schedule: ``η₀`` until ``decay_start·K``, linear to
    ``final_fraction·η₀`` at ``decay_end·K``, then constant."""
    if not 0.0 <= decay_start <= decay_end <= 1.0:
        raise ValueError(
            f"need 0 <= decay_start <= decay_end <= 1, got {decay_start}, {decay_end}"
        )
    start = decay_start * total_steps
    span = max((decay_end - decay_start) * total_steps, 1e-12)

    def schedule(count: jax.Array) -> jax.Array:
        t = jnp.clip((jnp.asarray(count, jnp.float32) - start) / span, 0.0, 1.0)
        return init_value * (1.0 - t * (1.0 - final_fraction))

    return schedule
