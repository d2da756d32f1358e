"""Many processes: ``jax.distributed.initialize`` with CPU collectives and timeouts."""

from __future__ import annotations

from collections.abc import Sequence

import jax


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None, *,
                           local_device_ids: int | Sequence[int] | None = None,
                           initialization_timeout: int = 300,
                           heartbeat_timeout_seconds: int = 100,
                           shutdown_timeout_seconds: int = 300,
                           cpu_collectives: str | None = "gloo") -> None:
    """``jax.distributed.initialize`` with CPU collectives enabled and bounded timeouts.

    Call it in every process before anything starts the JAX backend. With no address,
    count or id (TPU pod slices, SLURM, Open MPI, ...) JAX detects them. ``cpu_collectives``
    (``"gloo"``, ``"mpi"``, or None to leave the setting alone) sets
    ``jax_cpu_collectives_implementation`` so that the CPU devices of different processes
    can run collectives. When a process dies, JAX's coordination service ends the others
    after about ``heartbeat_timeout_seconds`` (``initialization_timeout`` while
    connecting, ``shutdown_timeout_seconds`` at exit).

    Raises ``RuntimeError`` when the backend is already running. Importing blackjax starts
    it (blackjax 1.7), and lpsampling imports blackjax for its blackjax face: in that case
    call ``jax.distributed.initialize`` yourself before ``import lpsampling`` (see
    ``docs/parallel.md``).
    """
    import sys

    from jax._src import xla_bridge  # private, only to give a clear error

    if xla_bridge.backends_are_initialized():
        hint = ""
        if "blackjax" in sys.modules:
            hint = (" blackjax is imported, and importing it starts the backend (blackjax "
                    "1.7 runs jnp.log at import; lpsampling imports blackjax for its "
                    "blackjax face): call jax.distributed.initialize(...) before importing "
                    "lpsampling or blackjax.")
        raise RuntimeError(
            "initialize_distributed must run before any JAX computation or device query "
            "(jax.devices(), jnp arrays, ...), but the JAX backend is already running." + hint)
    if cpu_collectives is not None:
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    jax.distributed.initialize(
        coordinator_address, num_processes, process_id,
        local_device_ids=local_device_ids, initialization_timeout=initialization_timeout,
        heartbeat_timeout_seconds=heartbeat_timeout_seconds,
        shutdown_timeout_seconds=shutdown_timeout_seconds)
