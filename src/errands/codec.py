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
import re
from typing import Any

import orjson

from errands.errors import InvalidJobError

__all__ = ["decode", "encode"]

#: A JSON ``\\u0000`` escape that is not itself an escaped backslash followed by "u0000".
_NUL = re.compile(rb"(?<!\\)((?:\\\\)*)\\u0000")


def _check(value: Any, field: str, path: str) -> None:
    # orjson would quietly turn NaN into null and datetimes, UUIDs and
    # dataclasses into strings or objects: the job would get other args than
    # it was given. Only plain JSON types pass.
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidJobError(f"{field} must be JSON: {path} is {value!r}, not a finite number")
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidJobError(
                    f"{field} must be JSON: {path} has key {key!r}; JSON object keys are strings"
                )
            _check(item, field, f"{path}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check(item, field, f"{path}[{index}]")
    else:
        raise InvalidJobError(
            f"{field} must be JSON: {path} is a {type(value).__name__} ({value!r:.80}); "
            "convert it to a string, number, list or dict first"
        )


def encode(value: Any, field: str) -> bytes:
    """Encode ``value`` as JSON, or raise :class:`InvalidJobError` naming ``field``."""
    try:
        data = orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise InvalidJobError(f"{field} must be JSON-serialisable: {exc}") from None
    _check(value, field, field.split(" ", 1)[0])
    if b"\\u0000" in data and _NUL.search(data):
        raise InvalidJobError(
            f"{field} must not contain NUL characters (\\x00): PostgreSQL cannot store them, "
            "and errands behaves the same on every engine"
        )
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
