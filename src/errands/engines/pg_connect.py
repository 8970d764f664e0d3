"""Connection and value helpers for the PostgreSQL engine.

Kept out of :mod:`errands.engines.postgres` so the engine stays a
list of queries:

- :class:`PgPool`: the engine's lazily opened connection pool (autocommit,
  a short connect timeout so a dead host fails fast, fork-aware), whose
  psycopg errors come out as :class:`~errands.errors.DatabaseError`;
- :func:`connection_error`: a :class:`~errands.errors.DatabaseError` that names
  the URL (password masked) and what to check, from a psycopg error;
- :func:`check_storable`, :func:`storable_json`, :func:`storable_time`: values
  PostgreSQL cannot hold (NUL in jsonb, times past year 9999, NaN).

Example::

    pool = PgPool(url, label="errands", min_size=1, max_size=4, connect_timeout=5, pool_timeout=30)
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import re
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg.abc import Buffer
from psycopg.adapt import Loader
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg.types.datetime import TimestamptzLoader
from psycopg_pool import ConnectionPool, PoolTimeout

from errands.config import mask_url
from errands.errors import DatabaseError, InvalidJobError
from errands.job import NewJob

__all__ = [
    "PgPool",
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

#: Seconds a pooled connection may sit idle before it is pinged on checkout.
_IDLE_CHECK = 1.0

#: Pools this process opened and has not closed (see _close_at_exit).
_OPEN: weakref.WeakSet[PgPool] = weakref.WeakSet()


@atexit.register
def _close_at_exit() -> None:
    """Close the pools an app left open, while their threads can still stop.

    A pool closed later, by garbage collection during interpreter shutdown,
    cannot join its worker threads on Python 3.13: each join times out after
    5 s, and a process that ran ``app.run()`` without ``app.close()`` took
    ~21 s to exit. atexit callbacks run before daemon threads are frozen.
    """
    for pool in list(_OPEN):
        try:
            pool.close()
        except Exception as exc:  # exiting anyway: say so, never raise
            log.debug("closing %s at exit: %s", pool.label, exc)


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


class PgPool:
    """A ``psycopg_pool.ConnectionPool`` opened on first use; thread-safe, fork-aware.

    The first open makes one direct connection first, so a wrong password, a
    missing database or a dead host fails at once with a precise message
    instead of a pool timeout.
    """

    def __init__(
        self,
        url: str,
        *,
        label: str,
        min_size: int,
        max_size: int,
        connect_timeout: float,
        pool_timeout: float,
    ) -> None:
        self.url = url
        self.label = label
        self.min_size = min_size
        self.max_size = max_size
        self.connect_timeout = connect_timeout
        self.pool_timeout = pool_timeout
        self._lock = threading.Lock()
        self._pool: ConnectionPool[psycopg.Connection[Any]] | None = None
        self._pid = os.getpid()
        self._returned: weakref.WeakKeyDictionary[psycopg.Connection[Any], float] = (
            weakref.WeakKeyDictionary()
        )

    def kwargs(self, **extra: Any) -> dict[str, Any]:
        """Keyword arguments for one of our own ``psycopg.connect`` calls."""
        return connect_kwargs(self.url, self.connect_timeout, **extra)

    def probe(self) -> None:
        """Open and close one connection; a failure becomes a precise DatabaseError."""
        try:
            psycopg.connect(self.url, **self.kwargs()).close()
        except psycopg.Error as exc:
            raise connection_error(exc, self.url) from exc

    def _get(self) -> ConnectionPool[psycopg.Connection[Any]]:
        pool = self._pool
        if pool is not None and self._pid == os.getpid():
            return pool
        with self._lock:
            # A forked child must not use its parent's pool (its threads did not fork).
            if self._pool is None or self._pid != os.getpid():
                self.probe()
                self._pool = ConnectionPool(
                    self.url,
                    kwargs=self.kwargs(autocommit=True),
                    min_size=self.min_size,
                    max_size=self.max_size,
                    timeout=self.pool_timeout,
                    name=f"errands {self.label}",
                    check=self._check_idle,
                    open=False,
                )
                self._pool.open(wait=False)
                self._pid = os.getpid()
                _OPEN.add(self)
            return self._pool

    def _check_idle(self, conn: psycopg.Connection[Any]) -> None:
        """Ping a connection that sat idle: after a server restart it is dead.

        A busy connection is handed out unchecked (no extra round trip on the
        hot path); one idle for a while may have been cut off meanwhile, and
        the pool replaces it when the ping fails, so the caller never sees it.
        """
        returned = self._returned.get(conn)
        if returned is None or time.monotonic() - returned > _IDLE_CHECK:
            conn.execute("")

    def failed(self, exc: psycopg.Error, doing: str) -> DatabaseError:
        """The DatabaseError to raise for ``exc``, raised while ``doing`` something."""
        if isinstance(exc, PoolTimeout):
            try:
                self.probe()
            except DatabaseError as down:
                return down
            return DatabaseError(
                f"{self.label}: {doing} failed: no pooled connection was free within "
                f"{self.pool_timeout:g} s (max_size={self.max_size}); raise max_size or "
                "lower the queues' concurrency"
            )
        message = " ".join(str(exc).split())
        return DatabaseError(f"{self.label}: {doing} failed: {message}")

    @contextmanager
    def connection(self, doing: str) -> Iterator[psycopg.Connection[Any]]:
        """A pooled autocommit connection; psycopg errors become DatabaseError."""
        pool = self._get()
        try:
            with pool.connection() as conn:
                try:
                    yield conn
                finally:
                    self._returned[conn] = time.monotonic()
        except psycopg.Error as exc:
            raise self.failed(exc, doing) from exc

    def close(self) -> None:
        """Close the pool (if this process opened it); safe to call twice."""
        with self._lock:
            pool, self._pool = self._pool, None
        _OPEN.discard(self)
        if pool is not None and self._pid == os.getpid():
            pool.close(timeout=5)
