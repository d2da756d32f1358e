"""``python -m lpsampling``: the command line (see :mod:`lpsampling.cli`)."""

import sys

from lpsampling.cli import main

if __name__ == "__main__":
    sys.exit(main())
