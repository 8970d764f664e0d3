"""Connection and value helpers for the PostgreSQL engine.

Kept out of :mod:`errands.engines.postgres` so the engine stays a
list of queries:

- :func:`connect_kwargs`: what each of errands' connections is opened with
  (a short connect timeout, so a dead host fails fast);
- :func:`connection_error`: a :class:`~errands.errors.DatabaseError` that names
  the URL (password masked) and what to check, from a psycopg error;
- :func:`check_storable`, :func:`storable_json`, :func:`storable_time`: values
  PostgreSQL cannot hold (NUL in jsonb, times past year 9999, NaN).

The pool itself is :mod:`errands.engines.pg_pool`.

Example::

    conn = psycopg.connect(url, **connect_kwargs(url, connect_timeout=5))
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any, TypeVar

import psycopg
from psycopg.abc import Buffer
from psycopg.adapt import Loader
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg.types.datetime import TimestamptzLoader

from errands.config import mask_url
from errands.errors import DatabaseError, InvalidJobError
from errands.job import NewJob

__all__ = [
    "RawJsonLoader",
    "Row",
    "check_storable",
    "connect_kwargs",
    "connection_error",
    "dict_cursor",
    "job_loaders",
    "normalize_url",
    "storable_json",
    "storable_time",
]

CursorT = TypeVar("CursorT", psycopg.Cursor[Any], psycopg.AsyncCursor[Any])

log = logging.getLogger(__name__)

Row = dict[str, Any]

#: A JSON ``\\u0000`` escape that is not itself an escaped backslash followed by "u0000".
_NUL = re.compile(rb"(?<!\\)((?:\\\\)*)\\u0000")

_LAST_SECOND = 253_402_300_799.0  # 9999-12-31T23:59:59Z, the last time Python can hold

_SCHEMES = ("postgresql+psycopg://", "postgresql+psycopg3://", "postgres://")


def normalize_url(url: str) -> str:
    """``url`` with a scheme libpq understands (``postgresql://``)."""
    for scheme in _SCHEMES:
        if url.lower().startswith(scheme):
            return "postgresql://" + url[len(scheme) :]
    return url


def connect_kwargs(url: str, connect_timeout: float, **extra: Any) -> dict[str, Any]:
    """Keyword arguments for ``psycopg.connect(url, ...)``: a connect timeout unless given."""
    kwargs: dict[str, Any] = {"application_name": "errands", **extra}
    try:
        given = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        given = {}
    if "connect_timeout" not in given:
        kwargs["connect_timeout"] = max(1, round(connect_timeout))
    if "application_name" in given:
        del kwargs["application_name"]
    return kwargs


def _password(url: str) -> str | None:
    try:
        value = conninfo_to_dict(url).get("password")
    except psycopg.ProgrammingError:
        return None
    return str(value) if value else None


def connection_error(exc: BaseException, url: str) -> DatabaseError:
    """A :class:`DatabaseError` for a failed connection attempt, with what to check."""
    masked = mask_url(url)
    message = " ".join(str(exc).split()) or type(exc).__name__
    password = _password(url)
    if password:
        message = message.replace(password, "***")
    lowered = message.lower()
    if "database" in lowered and "does not exist" in lowered:
        hint = "the database does not exist: create it (createdb) or fix the name in the URL"
    elif "password" in lowered or "authentication" in lowered or "role" in lowered:
        hint = "check the user name and password in the URL (and pg_hba.conf)"
    elif "timeout" in lowered or "timed out" in lowered:
        hint = "the host did not answer in time: check the host name, port and firewall"
    else:
        hint = (
            "check that the PostgreSQL server is running and accepts TCP connections "
            "on that host and port, that the database exists, and that the credentials are right"
        )
    return DatabaseError(f"cannot connect to PostgreSQL at {masked!r}: {hint} ({message})")


class RawJsonLoader(Loader):
    """Load json/jsonb as the raw JSON bytes, for :func:`errands.codec.decode` to parse.

    psycopg's default loader would decode a jsonb string scalar to ``str``,
    which ``codec.decode`` would then try to parse a second time.
    """

    def load(self, data: Buffer) -> bytes:
        """The JSON text as bytes."""
        return bytes(data)


class EndlessTimeLoader(TimestamptzLoader):
    """timestamptz as psycopg loads it, but ``'infinity'``/``'-infinity'`` as ``±inf``.

    PostgreSQL stores the endless times (a job parked by hand with
    ``scheduled_at = 'infinity'``); ``datetime`` cannot hold them, and psycopg's
    own loader fails the whole result: one such row would make every listing
    fail. Job times are Unix seconds, so ``±inf`` is their honest value.
    """

    def load(self, data: Buffer) -> Any:
        """A datetime, or ``±inf`` for the endless times."""
        if data == b"infinity":
            return math.inf
        if data == b"-infinity":
            return -math.inf
        return super().load(data)


def check_storable(job: NewJob) -> None:
    """Refuse what PostgreSQL cannot store: NUL characters in jsonb, times past year 9999."""
    for field, data in (("args", job.args_json), ("meta", job.meta_json), ("tags", job.tags_json)):
        if b"\\u0000" in data and _NUL.search(data):
            raise InvalidJobError(
                f"{field} of {job.worker!r} contains a NUL character (\\x00), which "
                "PostgreSQL cannot store in jsonb"
            )
    if job.scheduled_at is not None and not 0 <= job.scheduled_at <= _LAST_SECOND:
        raise InvalidJobError(
            f"scheduled_at of {job.worker!r} must be a Unix time from 0 to "
            f"{_LAST_SECOND:.0f} (year 9999), got {job.scheduled_at!r}"
        )


def storable_time(at: float | None) -> float | None:
    """An ack's due time PostgreSQL can store: NaN keeps the old one, the rest is clamped."""
    if at is None or math.isnan(at):
        return None
    return min(max(at, 0.0), _LAST_SECOND)


def storable_json(data: bytes, field: str) -> str:
    """``data`` as text for a jsonb parameter, any NUL character kept as the text ``\\u0000``.

    Used for job outcomes: the attempt already ran, so refusing its result or
    error would fail a whole batch of acks.
    """
    if b"\\u0000" in data and _NUL.search(data):
        log.warning("errands: %s contains NUL characters; stored as the text \\u0000", field)
        data = _NUL.sub(rb"\1\\\\u0000", data)
    return data.decode()


def dict_cursor(conn: psycopg.Connection[Any]) -> psycopg.Cursor[Row]:
    """A dict-row cursor that hands JSON columns to errands' codec undecoded.

    The loaders are registered on the cursor only, so a caller's connection
    (transactional enqueue) keeps its own adapters.
    """
    return job_loaders(conn.cursor(row_factory=dict_row))


def job_loaders(cur: CursorT) -> CursorT:
    """``cur`` (sync or async), set to read rows of jobs.

    JSON columns come as text for errands' codec, and the endless times as
    ``±inf`` (:class:`EndlessTimeLoader`).
    """
    cur.adapters.register_loader("jsonb", RawJsonLoader)
    cur.adapters.register_loader("json", RawJsonLoader)
    cur.adapters.register_loader("timestamptz", EndlessTimeLoader)
    return cur
