"""Type checks for values read from users' files, shared by every reader that names a bad field.

JSON and TOML hand back ``True`` where a number was meant and ``NaN``/``Infinity`` where a finite one was;
these predicates refuse both, so each reader does not write its own (slightly different) version.
"""

from __future__ import annotations

import math
from typing import Any


def is_integer(value: Any, minimum: int | None = None) -> bool:
    """An ``int`` that is not a ``bool``, at least ``minimum`` when given."""
    return isinstance(value, int) and not isinstance(value, bool) and (minimum is None or value >= minimum)


def is_finite_number(value: Any) -> bool:
    """An ``int`` or ``float`` that is not a ``bool``, NaN or infinite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
