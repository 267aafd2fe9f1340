"""Numbers as pages show them: a missing value (None, NaN) is an em dash, never 'None' or 'nan'."""
from __future__ import annotations

import math

DASH = "—"


def num(v, spec: str = ".3f") -> str:
    """``format(v, spec)``, or ``DASH`` for a missing value; non-numbers as text."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return DASH
    try:
        return format(v, spec)
    except (TypeError, ValueError):
        return str(v)
