"""The PostgreSQL engine's connections: a pool, and one warm connection beside it.

:class:`PgPool` hands out autocommit connections; their psycopg errors come
out as :class:`~errands.errors.DatabaseError` naming what was being done.

Of its ``max_size`` connections, one is kept **warm**: a caller that finds it
free (a non-blocking lock) uses it directly; the others come from a
``psycopg_pool.ConnectionPool`` of ``max_size - 1``. That pool hands out its
idle connections first in, first out, so one thread making calls one after
another, say a web process enqueueing, would visit every idle connection in
turn, each time on a server backend whose caches had gone cold, and pay the
pool's check-out and check-in on every call: 30-40 µs of a single enqueue's
450-550 µs round trip and commit on the ninth session's host
(``docs/benchmarks-history.md``). A caller that finds the warm connection busy waits
for the pool as before, and the pool never waits for the warm connection, so
the two cannot starve each other. With ``max_size=1`` there is only the pool.

The warm connection is pinged after it sat idle (as the pool's own are),
reopened when it broke, and reopened every :data:`WARM_LIFETIME` seconds (as
the pool renews its own). Each process has its own: a forked child leaves its
parent's alone.

Example::

    pool = PgPool(url, label="errands", min_size=1, max_size=4, connect_timeout=5, pool_timeout=30)
    with pool.connection("reading jobs") as conn:
        conn.execute("SELECT 1")
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import pq
from psycopg_pool import ConnectionPool, PoolTimeout

from errands.engines.pg_connect import connect_kwargs, connection_error
from errands.errors import DatabaseError

__all__ = ["IDLE_CHECK", "WARM_LIFETIME", "PgPool", "idle_too_long"]

log = logging.getLogger(__name__)

#: Seconds a pooled connection may sit idle before it is pinged on checkout.
IDLE_CHECK = 1.0

#: Seconds the warm connection is kept before it is reopened (psycopg_pool's max_lifetime).
WARM_LIFETIME = 3600.0


def idle_too_long(since: float | None) -> bool:
    """Whether a connection last used at monotonic time ``since`` (None: never)
    must be pinged before use: after a server restart an idle one is dead.

    Example: ``if idle_too_long(returned.get(conn)): conn.execute("")``
    """
    return since is None or time.monotonic() - since > IDLE_CHECK


#: Pools this process opened and has not closed (see _close_at_exit).
_OPEN: weakref.WeakSet[PgPool] = weakref.WeakSet()

Conn = psycopg.Connection[Any]

#: Warm connections a forked child inherited: its parent's, never to be closed here.
_INHERITED: list[_Warm] = []

_IDLE = pq.TransactionStatus.IDLE
_IN_TRANSACTION = pq.TransactionStatus.INTRANS


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


class _Warm:
    """The warm connection of one process; guarded by ``lock``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.conn: Conn | None = None
        self.opened = 0.0  # monotonic time it was opened
        self.used = 0.0  # monotonic time a call last finished with it

    def drop(self) -> None:
        """Close the connection (lock held)."""
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()


class PgPool:
    """Up to ``max_size`` connections, opened on first use; thread-safe, fork-aware.

    One warm connection and a ``psycopg_pool.ConnectionPool`` of the rest
    (see the module's docstring). The first open makes one direct connection
    first, so a wrong password, a missing database or a dead host fails at
    once with a precise message instead of a pool timeout.
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
        self._pool: ConnectionPool[Conn] | None = None
        self._pid = os.getpid()
        self._warm = _Warm()
        self._returned: weakref.WeakKeyDictionary[Conn, float] = weakref.WeakKeyDictionary()

    def kwargs(self, **extra: Any) -> dict[str, Any]:
        """Keyword arguments for one of our own ``psycopg.connect`` calls."""
        return connect_kwargs(self.url, self.connect_timeout, **extra)

    def probe(self) -> None:
        """Open and close one connection; a failure becomes a precise DatabaseError."""
        try:
            psycopg.connect(self.url, **self.kwargs()).close()
        except psycopg.Error as exc:
            raise connection_error(exc, self.url) from exc

    def _get(self) -> ConnectionPool[Conn]:
        pool = self._pool
        if pool is not None and self._pid == os.getpid():
            return pool
        with self._lock:
            # A forked child must not use its parent's pool (its threads did not
            # fork), nor close the parent's warm connection: that would end the
            # parent's session on the shared socket. It starts afresh.
            if self._pool is None or self._pid != os.getpid():
                if self._pid != os.getpid():
                    # Kept, not collected: collecting an open connection warns.
                    _INHERITED.append(self._warm)
                    self._warm = _Warm()
                self.probe()
                size = self.max_size - 1 if self.max_size > 1 else 1  # one is the warm one
                self._pool = ConnectionPool(
                    self.url,
                    kwargs=self.kwargs(autocommit=True),
                    min_size=min(self.min_size, size),
                    max_size=size,
                    timeout=self.pool_timeout,
                    name=f"errands {self.label}",
                    check=self._check_idle,
                    open=False,
                )
                self._pool.open(wait=False)
                self._pid = os.getpid()
                _OPEN.add(self)
            return self._pool

    def _check_idle(self, conn: Conn) -> None:
        """Ping a connection that sat idle: after a server restart it is dead.

        A busy connection is handed out unchecked (no extra round trip on the
        hot path); one idle for a while may have been cut off meanwhile, and
        the pool replaces it when the ping fails, so the caller never sees it.
        """
        if idle_too_long(self._returned.get(conn)):
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
    def connection(self, doing: str) -> Iterator[Conn]:
        """An autocommit connection, the warm one if free; psycopg errors become DatabaseError.

        A transaction the block left open is committed if the block ends well
        and rolled back if it raises (as ``psycopg_pool``'s ``connection()``).
        """
        pool = self._get()
        warm = self._warm
        try:
            if self.max_size > 1 and warm.lock.acquire(blocking=False):
                try:
                    conn = self._warm_conn(warm)
                    try:
                        yield conn
                        if conn.pgconn.transaction_status == _IN_TRANSACTION:
                            conn.commit()
                    finally:
                        warm.used = time.monotonic()
                        if self._pool is not pool:
                            warm.drop()  # close() found it busy and left it to us
                        elif not conn.closed and conn.pgconn.transaction_status != _IDLE:
                            warm.drop()  # mid-query or in a failed transaction: start clean
                finally:
                    warm.lock.release()
                return
            with pool.connection() as conn:
                try:
                    yield conn
                finally:
                    self._returned[conn] = time.monotonic()
        except psycopg.Error as exc:
            raise self.failed(exc, doing) from exc

    def _warm_conn(self, warm: _Warm) -> Conn:
        """The warm connection, checked or opened afresh (lock held)."""
        now = time.monotonic()
        conn = warm.conn
        if conn is not None and (conn.closed or now - warm.opened > WARM_LIFETIME):
            warm.drop()
            conn = None
        if conn is not None and idle_too_long(warm.used):
            try:
                conn.execute("")  # as _check_idle: it may have been cut off meanwhile
            except psycopg.Error as exc:
                log.info("%s: the warm connection failed its check (%s); reopened", self.label, exc)
                warm.drop()
                conn = None
        if conn is None:
            conn = psycopg.connect(self.url, **self.kwargs(autocommit=True))
            warm.conn, warm.opened = conn, time.monotonic()
        return conn

    def close(self) -> None:
        """Close the pool and the warm connection (if this process opened them); safe to call twice.

        A call still using the warm connection closes it when it ends; the
        next call after a close opens everything again.
        """
        with self._lock:
            pool, self._pool = self._pool, None
        _OPEN.discard(self)
        if pool is None or self._pid != os.getpid():
            return
        warm = self._warm
        if warm.lock.acquire(timeout=5):
            try:
                warm.drop()
            finally:
                warm.lock.release()
        pool.close(timeout=5)
