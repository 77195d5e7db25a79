"""Declarative ranges for config fields: ``lr: PosFloat = 2e-4``.

A field annotated ``Annotated[T, Range(...)]`` is checked when its config is built
(:func:`check_ranges`, called by :func:`ganstack.config.build` before the config's own
``validate``), with a message made from the bounds: ``model.lr must be > 0 and finite, got 0``.
A list is checked value by value; None (an optional field left unset) passes. A float bounded on
one side only must also be finite (NaN fails every bound).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Annotated, Any

from ganstack.errors import ConfigError


@dataclass(frozen=True)
class Range:
    """Bounds of a number: ``ge``/``gt`` below, ``le``/``lt`` above; ``note`` says what a
    special value means (``0: never``)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    note: str = ""

    def holds(self, v: float) -> bool:
        return (
            (self.ge is None or v >= self.ge)
            and (self.gt is None or v > self.gt)
            and (self.le is None or v <= self.le)
            and (self.lt is None or v < self.lt)
            and (isinstance(v, int) or math.isfinite(v))
        )

    def says(self, integral: bool) -> str:
        lo, hi = (self.ge, self.gt), (self.le, self.lt)
        note = f" ({self.note})" if self.note else ""
        if any(b is not None for b in lo) and any(b is not None for b in hi):
            if integral:  # closed: 1..65536
                first = self.ge if self.ge is not None else self.gt + 1  # type: ignore[operator]
                last = self.le if self.le is not None else self.lt - 1  # type: ignore[operator]
                return f"in {_num(first)}..{_num(last)}{note}"
            left = f"[{_num(self.ge)}" if self.ge is not None else f"({_num(self.gt)}"
            right = f"{_num(self.le)}]" if self.le is not None else f"{_num(self.lt)})"
            return f"in {left}, {right}{note}"
        bound = (
            f">= {_num(self.ge)}"
            if self.ge is not None
            else f"> {_num(self.gt)}"
            if self.gt is not None
            else f"<= {_num(self.le)}"
            if self.le is not None
            else f"< {_num(self.lt)}"
        )
        return f"{bound}{'' if integral else ' and finite'}{note}"


def _num(x: Any) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


PosInt = Annotated[int, Range(gt=0)]
NonNegInt = Annotated[int, Range(ge=0)]
PosFloat = Annotated[float, Range(gt=0)]
NonNegFloat = Annotated[float, Range(ge=0)]
Unit = Annotated[float, Range(ge=0, lt=1)]  # betas, momenta, dropout rates


def _ranges(cls: type) -> dict[str, tuple[Range, bool]]:
    """Each ranged field of ``cls``: its Range and whether its numbers are integers."""
    out = {}
    for name, hint in typing.get_type_hints(cls, include_extras=True).items():
        args = typing.get_args(hint)
        found = [r for r in args[1:] if isinstance(r, Range)]
        if typing.get_origin(hint) is Annotated and found:
            out[name] = (found[0], int in _leaves(args[0]))
    return out


def _leaves(tp: Any) -> set:
    """The plain types inside ``tp`` (``list[int] | None`` -> {int, NoneType})."""
    args = typing.get_args(tp)
    return set().union(*map(_leaves, args)) if args else {tp}


def check_ranges(obj: Any, where: str) -> None:
    """Raise :class:`ConfigError` for the first field of dataclass ``obj`` out of its range."""
    ranges = _ranges(type(obj))
    for f in dataclasses.fields(obj):
        spec = ranges.get(f.name)
        value = getattr(obj, f.name)
        if spec is None or value is None:
            continue
        rng, integral = spec
        values = value if isinstance(value, (list, tuple)) else [value]
        if not all(rng.holds(v) for v in values if v is not None):
            raise ConfigError(f"{where}.{f.name} must be {rng.says(integral)}, got {value}")
