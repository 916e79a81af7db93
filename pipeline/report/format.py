"""Numbers and text formatted for people, for every section of the report."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np


def is_number(x: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(x, int | float | np.integer | np.floating) and not isinstance(
        x, bool | np.bool_) and math.isfinite(float(x))


def fmt_int(x: Any) -> str:
    """``1,234``; ``—`` when not a number."""
    return f"{int(x):,}" if is_number(x) else "—"


def fmt_pct(x: Any) -> str:
    """A fraction as a percentage: ``0.1234`` -> ``12.3%``."""
    if not is_number(x):
        return "—"
    v = 100 * float(x)
    return f"{v:.1f}%" if abs(v) < 99.95 or v == 100 else f"{v:.2f}%"


def share(count: int, total: int) -> str:
    return fmt_pct(count / total) if total else "—"


def fmt_number(x: Any) -> str:
    """A measured value: integers with separators, floats to 3 significant digits."""
    if isinstance(x, bool | np.bool_):
        return "yes" if x else "no"
    if not is_number(x):
        return "—" if x is None else str(x)
    f = float(x)
    if f.is_integer() and abs(f) < 1e15:
        return f"{int(f):,}"
    if abs(f) >= 1000:
        return f"{f:,.0f}"
    if abs(f) >= 0.01:
        return f"{f:.3g}"
    return f"{f:.2e}"


def fmt_seconds(x: float) -> str:
    return f"{x:.1f} s" if x < 120 else f"{x / 60:.1f} min"


def fmt_value(v: Any, limit: int = 160) -> str:
    """Any JSON value in a few words: numbers formatted, lists and dicts shortened."""
    if isinstance(v, str):
        return short(v, limit)
    if isinstance(v, list | tuple):
        items = [fmt_value(x, 40) for x in v[:8]]
        more = f" … ({len(v):,} in all)" if len(v) > 8 else ""
        return short(", ".join(items) + more, limit) if items else "none"
    if isinstance(v, Mapping):
        items = [f"{k}: {fmt_value(x, 40)}" for k, x in list(v.items())[:6]]
        more = f" … ({len(v):,} in all)" if len(v) > 6 else ""
        return short("; ".join(items) + more, limit)
    return fmt_number(v)


def short(text: str, limit: int = 300) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"
