"""SQLite's cross-process wake-ups, and the caller's connection for transactional enqueue.

``PRAGMA data_version`` changes when another connection commits: polled every
few milliseconds on a connection of its own, it wakes the producers of this
process when another process inserts, at the cost of a tiny read.

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
    """Polls ``PRAGMA data_version`` on its own connection; wakes every queue on a change."""

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
                    self._wake_up("*")
        finally:
            conn.close()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)
