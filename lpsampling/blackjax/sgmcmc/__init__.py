"""Low-precision stochastic-gradient MCMC kernels, laid out as ``blackjax.sgmcmc``."""

from lpsampling.blackjax.sgmcmc import cyclical_sgld, sghmc, sgld

__all__ = ["cyclical_sgld", "sghmc", "sgld"]
