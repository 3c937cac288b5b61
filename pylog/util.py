"""Two helpers every layer shares: the wall clock in ms and the integer argument check.

A leaf module: it imports nothing of pylog but :mod:`pylog.errors`, so any layer may use
it without reaching upward.

* :func:`now_ms` is the one wall clock in ms (Kafka's timestamps); components that take a
  ``clock`` argument default to it, and tests pass a fake one instead.
* :func:`check_int` is the one check of an integer argument or setting: an ``int`` that is
  not a ``bool``, within an optional range, else the caller's pylog error with a message
  naming the argument, the value given and the range allowed.
"""
from __future__ import annotations

import time
from typing import Any, Optional, Type

from pylog.errors import InvalidArgument, PylogError

__all__ = ["now_ms", "check_int", "int_range_text"]


def now_ms() -> int:
    """Wall-clock time: ms since the Unix epoch."""
    return time.time_ns() // 1_000_000


def int_range_text(min: Optional[int] = None, max: Optional[int] = None) -> str:
    """``"an integer in [1, 10]"``, ``"an integer >= 0"``, ``"an integer <= 5"`` or
    ``"an integer"``: what :func:`check_int` says is allowed."""
    if min is not None and max is not None:
        return f"an integer in [{min}, {max}]"
    if min is not None:
        return f"an integer >= {min}"
    if max is not None:
        return f"an integer <= {max}"
    return "an integer"


def check_int(name: str, value: Any, *, min: Optional[int] = None, max: Optional[int] = None,
              error: Type[PylogError] = InvalidArgument) -> int:
    """Return ``value`` if it is an ``int`` (``bool`` is not) with ``min <= value <= max``
    (either bound may be None); otherwise raise ``error`` with the message
    ``"<name> must be an integer in [min, max], got <value>"``."""
    if isinstance(value, bool) or not isinstance(value, int) \
            or (min is not None and value < min) or (max is not None and value > max):
        raise error(f"{name} must be {int_range_text(min, max)}, got {value!r}")
    return value
