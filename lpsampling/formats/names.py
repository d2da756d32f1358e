"""Short format names (``fp32``, ``fixed8``, ``fixed8-4``, ``bfp8``) -> format objects."""

from __future__ import annotations

from lpsampling.formats._core import FORMAT_TYPES, Format

FORMAT_NAMES: tuple[str, ...] = ("fp32", "fixed8", "bfp8", "fixed<wl>-<fl>", "bfp<wl>",
                                 "bfp<wl>c")
"""The names :func:`parse_format` accepts (``<wl>``, ``<fl>``: integers)."""

ROLES: tuple[str, ...] = ("weight", "grad", "activation", "error")
"""The kinds of numbers a named precision setting places: :func:`parse_format`'s roles."""


def normalize_format_name(name: str) -> str:
    """``name`` stripped, lower case, ``_`` as ``-``; ValueError unless a string."""
    if not isinstance(name, str):
        raise ValueError(f"format must be a string, got {name!r}")
    return name.strip().lower().replace("_", "-")


def parse_format(name: str, role: str = "weight") -> Format:
    """The format that the named precision setting ``name`` gives to ``role``.

    Names (case-insensitive, ``_`` read as ``-``), as in the paper's experiments:

    * ``fp32`` (also ``full``, ``float32``): ``FULL`` for every role;
    * ``fixed<wl>-<fl>``, ``fixed<wl>`` (= ``fixed<wl>-<wl>``, so ``fixed8`` is
      ``FixedPoint(8, 8)``): ``FixedPoint(wl, fl)`` for weights and gradients, ``FULL``
      for activations and errors;
    * ``bfp<wl>``: ``BlockFloatingPoint(wl, axis=-1)`` for weights and gradients,
      ``BlockFloatingPoint(wl, axis=0)`` (one exponent per example) for activations and
      errors;
    * ``bfp<wl>c``: the same with ``carry=True`` (stochastic rounding mean-exact at the
      top of a block: it carries into the block's next exponent instead of saturating).

    Args:
      name: the format name.
      role: one of :data:`ROLES`: ``"weight"``, ``"grad"``, ``"activation"``, ``"error"``.

    Returns:
      The format; its ``name`` and ``label`` properties give the canonical name
      (``fixed8-8`` -> ``fixed8``) and the paper's label (``8-bit fixed``).

    Raises:
      ValueError: not a string, unknown name, or an invalid word length; the message lists
        the valid names.
    """
    key = normalize_format_name(name)
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    valid = f"valid formats: {', '.join(FORMAT_NAMES)}"
    for cls in FORMAT_TYPES.values():
        try:
            fmt = cls._parse_name(key, role)
        except ValueError as err:
            raise ValueError(f"invalid format {name!r}: {err}; {valid}") from None
        if fmt is not None:
            return fmt
    raise ValueError(f"unknown format {name!r}; {valid}")
