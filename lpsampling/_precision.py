"""Resolve a face's precision arguments: one ``Precision`` object or its keyword shortcuts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypedDict

from lpsampling.formats import FULL, Format
from lpsampling.update import Precision

__all__ = ["PrecisionShortcuts", "SHORTCUTS", "resolve_precision"]


class PrecisionShortcuts(TypedDict, total=False):
    """The keyword shortcuts for :class:`lpsampling.update.Precision` (all optional)."""

    weight_format: Format
    grad_format: Format
    accumulator: str


# The one place the shortcuts and their defaults are declared.
SHORTCUTS: Mapping[str, Any] = {"weight_format": FULL, "grad_format": FULL,
                                "accumulator": "full"}


def resolve_precision(precision: Precision | None, shortcuts: Mapping[str, Any], *,
                      caller: str, allowed: Iterable[str] = tuple(SHORTCUTS)) -> Precision:
    """The :class:`Precision` a factory runs with.

    Either ``precision`` (a ``Precision``) or the keyword ``shortcuts`` (a subset of
    ``allowed``; missing ones take their defaults: ``FULL``, ``FULL``, ``"full"``), not both.

    Raises:
      TypeError: for an unknown keyword, or a ``precision`` that is not a ``Precision``.
      ValueError: when ``precision`` and shortcuts are both given, or (from ``Precision``)
        for an invalid combination.
    """
    allowed = tuple(allowed)
    for name in shortcuts:
        if name not in allowed:
            raise TypeError(f"{caller}() got an unexpected keyword argument {name!r} "
                            f"(precision keywords: {', '.join(allowed)})")
    if precision is None:
        return Precision(**{**SHORTCUTS, **shortcuts})
    if shortcuts:
        given = ", ".join(f"{name}=" for name in shortcuts)
        raise ValueError(
            f"{caller}(): pass the precision either as precision=Precision(...) or as the "
            f"keyword shortcuts ({', '.join(f'{n}=' for n in allowed)}), not both; got "
            f"precision= and {given}")
    if not isinstance(precision, Precision):
        hint = (" (a number format: pass it as weight_format=... or inside "
                "Precision(weight_format, grad_format, accumulator))"
                if isinstance(precision, Format) else "")
        raise TypeError(f"{caller}(): precision must be an lpsampling.Precision, got "
                        f"{type(precision).__name__}{hint}")
    return precision
