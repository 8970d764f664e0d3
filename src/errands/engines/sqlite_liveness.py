"""The SQLite engine's liveness: producers' heartbeats and the leader lease.

A mixin of :class:`~errands.engines.sqlite.SQLiteEngine`, kept apart so the
engine module stays about the hot path. Each call is one short write
transaction; the heartbeat runs on a thread of its own.

Example::

    engine = SQLiteEngine("jobs.db")
    engine.heartbeat(["node-1/default/ab12cd34"])
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from errands.engines.base import ProducerInfo
from errands.engines.sqlite_util import json_list, sql

__all__ = ["SQLiteLiveness"]


class SQLiteLiveness:
    """Producers alive and the leader lease, for the SQLite engine.

    Example: ``SQLiteEngine("jobs.db").acquire_leader("node-1", ttl=30.0)``
    """

    if TYPE_CHECKING:

        def _write(self, doing: str) -> AbstractContextManager[sqlite3.Connection]: ...

    def register_producer(self, producer: ProducerInfo) -> None:
        """Record ``producer`` as alive now."""
        params = {
            "id": producer.id,
            "node": producer.node,
            "queue": producer.queue,
            "pid": producer.pid,
            "now": time.time(),
        }
        with self._write("registering a producer") as conn:
            conn.execute(sql("register_producer"), params)

    def heartbeat(self, producers: Sequence[str]) -> None:
        """Mark ``producers`` alive now."""
        with self._write("recording a heartbeat") as conn:
            conn.execute(sql("heartbeat"), {"now": time.time(), "producers": json_list(producers)})

    def unregister_producers(self, producers: Sequence[str]) -> None:
        """Forget ``producers``."""
        with self._write("unregistering producers") as conn:
            conn.execute(sql("unregister_producers"), {"producers": json_list(producers)})

    def acquire_leader(self, node: str, ttl: float) -> bool:
        """Take or renew the lease; True if ``node`` now leads."""
        now = time.time()
        with self._write("electing a leader") as conn:
            row = conn.execute(
                sql("acquire_leader"), {"node": node, "now": now, "expires_at": now + ttl}
            ).fetchone()
        return row is not None and row[0] == node

    def release_leader(self, node: str) -> None:
        """Give the lease up if ``node`` holds it."""
        with self._write("releasing leadership") as conn:
            conn.execute(sql("release_leader"), {"node": node})
