"""The ``lpsampling`` console script: see :mod:`lpsampling.experiments.cli`."""

from lpsampling.experiments.cli import EPILOG, build_parser, main  # noqa: F401

__all__ = ["EPILOG", "build_parser", "main"]
