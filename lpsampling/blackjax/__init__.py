"""Samplers as blackjax algorithms: drop-ins for ``blackjax.sgld`` and ``blackjax.sghmc``
in every precision mode.

Laid out as blackjax: the modules :mod:`lpsampling.blackjax.sgmcmc.sgld` and
:mod:`~lpsampling.blackjax.sgmcmc.cyclical_sgld` and :mod:`~lpsampling.blackjax.sgmcmc.sghmc`
hold ``init``, ``build_kernel`` and ``as_top_level_api``; ``sgld``, ``cyclical_sgld`` and
``sghmc`` here are the top-level algorithms
(call them like ``blackjax.sgld``; ``.init`` and ``.build_kernel`` are the lower layers).
The precision is one :class:`lpsampling.Precision` (``precision=``) or the shortcuts
``weight_format=``, ``grad_format=``, ``accumulator=``. Manual: ``docs/blackjax.md``.
"""

from __future__ import annotations

import warnings
from types import ModuleType
from typing import Any, TypedDict, Unpack

import jax
from blackjax import GenerateSamplingAPI

from lpsampling._precision import resolve_precision
from lpsampling.blackjax import sgmcmc
from lpsampling.blackjax._util import as_position
from lpsampling.blackjax.sgmcmc.cyclical_sgld import CyclicalSGLDState
from lpsampling.formats import Format
from lpsampling.update import Precision, model_weights
from lpsampling.validation import prng_key

__all__ = [
    "sgld",
    "cyclical_sgld",
    "sghmc",
    "build_kernel",
    "weights",
    "CyclicalSGLDState",
    "sgmcmc",
]


def _top_level_api(module: ModuleType) -> GenerateSamplingAPI:
    """``blackjax.generate_top_level_api_from(module)``, with the factory's signature and
    docstring (``help`` and ``inspect.signature`` show ``module.as_top_level_api``)."""
    api = GenerateSamplingAPI(module.as_top_level_api, module.init, module.build_kernel)
    api.as_top_level_api = module.as_top_level_api
    api.__wrapped__ = module.as_top_level_api
    api.__doc__ = module.as_top_level_api.__doc__
    return api


#: Low-precision SGLD, a drop-in for ``blackjax.sgld``.
#: ``sgld(grad_estimator, *, precision=None, **shortcuts)`` is
#: :func:`lpsampling.blackjax.sgmcmc.sgld.as_top_level_api`; ``sgld.init`` and
#: ``sgld.build_kernel`` are the module's lower layers.
#:
#: :meta hide-value:
sgld = _top_level_api(sgmcmc.sgld)

#: Cyclical low-precision SGLD. ``cyclical_sgld(grad_estimator, *, init_step_size,
#: num_cycles, total_steps, exploration_ratio=0.0, precision=None, **shortcuts)`` is
#: :func:`lpsampling.blackjax.sgmcmc.cyclical_sgld.as_top_level_api`; ``.init`` and
#: ``.build_kernel`` are the module's lower layers.
#:
#: :meta hide-value:
cyclical_sgld = _top_level_api(sgmcmc.cyclical_sgld)

#: Low-precision SGHMC, a drop-in for ``blackjax.sghmc``.
#: ``sghmc(grad_estimator, num_integration_steps=10, alpha=0.01, beta=0, *, precision=None,
#: **shortcuts)`` is :func:`lpsampling.blackjax.sgmcmc.sghmc.as_top_level_api`;
#: ``sghmc.init`` and ``sghmc.build_kernel`` are the module's lower layers.
#:
#: :meta hide-value:
sghmc = _top_level_api(sgmcmc.sghmc)

# The first release's name for the SGLD kernel builder.
build_kernel = sgmcmc.sgld.build_kernel


class _WeightsShortcuts(TypedDict, total=False):
    weight_format: Format
    accumulator: str


def weights(position: Any, *, rng_key: jax.Array, precision: Precision | None = None,
            **shortcuts: Unpack[_WeightsShortcuts]) -> Any:
    """The weights to run the model on for a state: ``Q_W(θ)`` for SGLDLP-F, else ``θ``.

    Args:
      position: the chain (an SGLD state, or ``CyclicalSGLDState.position``).
      rng_key: the key of the stochastic rounding (used for SGLDLP-F only).
      precision: the sampler's :class:`lpsampling.Precision`; or the shortcuts
        ``weight_format=`` and ``accumulator=`` (the gradient format plays no part), not both.
    """
    if "grad_format" in shortcuts:
        shortcuts.pop("grad_format")
        warnings.warn(
            "lpsampling.blackjax.weights() does not use grad_format; drop the argument "
            "(it will raise a TypeError in the next release)",
            DeprecationWarning, stacklevel=2)
    precision = resolve_precision(precision, shortcuts, caller="weights",
                                  allowed=("weight_format", "accumulator"))
    return model_weights(prng_key("rng_key", rng_key), as_position(position), precision)
