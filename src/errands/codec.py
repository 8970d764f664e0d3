"""Strict JSON for job args, meta, tags and results.

Args are JSON, never pickle. orjson does the work; on top of it errands
refuses values that JSON cannot carry faithfully (NaN and infinities, which
orjson would silently turn into ``null``), so a job never runs with args other
than the ones it was given.

Example::

    >>> encode({"to": "a@b.c"}, "args")
    b'{"to":"a@b.c"}'
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from errands.errors import InvalidJobError

__all__ = ["decode", "encode"]


def _check_finite(value: Any, field: str) -> None:
    # Walk only containers and floats; everything else orjson validates itself.
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidJobError(f"{field} must be JSON: {value!r} is not a finite number")
    elif isinstance(value, dict):
        for item in value.values():
            _check_finite(item, field)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check_finite(item, field)


def encode(value: Any, field: str) -> bytes:
    """Encode ``value`` as JSON, or raise :class:`InvalidJobError` naming ``field``."""
    try:
        data = orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise InvalidJobError(f"{field} must be JSON-serialisable: {exc}") from None
    _check_finite(value, field)
    return data


def encode_str(value: Any, field: str) -> str:
    """Like :func:`encode`, as text (for drivers that bind ``str``)."""
    return encode(value, field).decode()


def decode(data: str | bytes | None) -> Any:
    """Decode JSON stored by errands; ``None`` stays ``None``."""
    if data is None:
        return None
    if isinstance(data, (dict, list)):  # drivers that already decoded jsonb
        return data
    return orjson.loads(data)
