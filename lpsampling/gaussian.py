"""The paper's Figure 1 (alias): see :mod:`lpsampling.experiments.gaussian`."""

from lpsampling.experiments.gaussian import *  # noqa: F403
from lpsampling.experiments.gaussian import __all__  # noqa: F401
