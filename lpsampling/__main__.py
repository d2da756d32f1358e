"""``python -m lpsampling``: the command line (see :mod:`lpsampling.experiments.cli`)."""

import sys

from lpsampling.experiments.cli import main

if __name__ == "__main__":
    sys.exit(main())
