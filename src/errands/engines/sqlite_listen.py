"""SQLite's cross-process wake-ups, and the caller's connection for transactional enqueue.

``PRAGMA data_version`` changes when another connection commits: polled every
few milliseconds on a connection of its own, it tells this process that some
other connection wrote. It does not say what: the commit may be another
process's insert, or only this process's own claims and outcomes, made on its
other connection. So on a change the listener asks which queues have jobs
available now (``available_queues.sql``, one index look-up per queue) and
wakes only their producers: an idle queue's producer is not woken by every
commit of a busy one (with ten idle queues beside a busy one, waking them all
made ~1,750 empty claims a second and slowed the busy queue's drain).

Example::

    listener = DataVersionListener(open_connection, wake_up, every=0.005)
    listener.stop()
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from typing import Any

from errands.engines.base import WakeUp
from errands.engines.sqlite_util import queues_with_available_jobs

__all__ = ["DataVersionListener", "driver_connection"]


def driver_connection(conn: Any) -> sqlite3.Connection:
    """The sqlite3 connection behind ``conn`` (itself, or a SQLAlchemy Connection/Session)."""
    if isinstance(conn, sqlite3.Connection):
        return conn
    module = type(conn).__module__
    if module.startswith("sqlalchemy"):
        from sqlalchemy.engine import Connection as SAConnection
        from sqlalchemy.orm import Session, scoped_session

        if isinstance(conn, (Session, scoped_session)):
            conn = conn.connection()  # joins (or begins) the session's transaction
        if isinstance(conn, SAConnection):
            if not conn.in_transaction():
                conn.begin()
            driver = conn.connection.driver_connection
            if isinstance(driver, sqlite3.Connection):
                return driver
    raise TypeError(
        "conn must be a sqlite3.Connection or a SQLAlchemy Connection/Session on sqlite, "
        f"got {module}.{type(conn).__qualname__}"
    )


class DataVersionListener:
    """Polls ``PRAGMA data_version`` on its own connection; on a change, wakes the
    queues that have jobs available (every queue, ``"*"``, if it cannot tell)."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], wake_up: WakeUp, every: float):
        self._connect = connect
        self._wake_up = wake_up
        self._every = every
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="errands-sqlite-listen", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn = self._connect()
        try:
            last = conn.execute("PRAGMA data_version").fetchone()[0]
            while not self._stopped.wait(self._every):
                try:
                    version = conn.execute("PRAGMA data_version").fetchone()[0]
                except sqlite3.Error:
                    continue
                if version != last:
                    last = version
                    self._wake_ready(conn)
        finally:
            conn.close()

    def _wake_ready(self, conn: sqlite3.Connection) -> None:
        try:
            queues = queues_with_available_jobs(conn)
        except sqlite3.Error:
            self._wake_up("*")  # a hint either way: better a needless claim than a late job
            return
        for queue in queues:
            self._wake_up(queue)

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)
