"""The SQLite engine's limited claim, queue control and bulk changes.

A mixin of :class:`~errands.engines.sqlite.SQLiteEngine`, kept apart so the
engine module stays about the hot path. Every write is one statement inside
the engine's ``BEGIN IMMEDIATE`` transaction, so SQLite's single writer already
serializes the count-then-claim of a limited queue across processes.

Example::

    engine = SQLiteEngine("jobs.db")
    engine.set_queue("mail", paused=True)
    engine.retry_jobs(states=["discarded"], queue="mail", worker=None)
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from errands.engines.base import Ack, QueueState
from errands.engines.sqlite_util import Claimed, claim, json_list, sql
from errands.job import Job
from errands.limits import MAX_KEYS, LimitedClaim, QueueLimits, claim_params

__all__ = ["SQLiteControl"]


def _flag(value: Any) -> bool | None:
    return None if value is None else bool(value)


def _clock(claim: dict[str, Any], per: float | None) -> None:
    """Read the clock into a claim's parameters: ``now``, and ``since`` for the rate window."""
    claim["now"] = now = time.time()
    claim["since"] = None if per is None else now - per


def _state(row: Sequence[Any]) -> QueueState:
    name, paused, limit, running, version, updated_at = row
    return QueueState(name, _flag(paused), limit, _flag(running), version, updated_at)


class SQLiteControl:
    """Limited claims, ``errands_queues`` and bulk changes for the SQLite engine.

    Example: ``SQLiteEngine("jobs.db").queue_states()``
    """

    if TYPE_CHECKING:

        def _read(self, doing: str) -> AbstractContextManager[sqlite3.Connection]: ...

        def _write(self, doing: str) -> AbstractContextManager[sqlite3.Connection]: ...

        def ack(self, acks: Sequence[Ack]) -> int: ...

        def _take(self, claimed: Sequence[Claimed], producer: str) -> list[Job]: ...

    def _fetch_limited(self, params: dict[str, Any], limits: QueueLimits) -> LimitedClaim:
        """Claim within the queue's global/rate limits (jobs are known to be available).

        A read first (``claimable``) checks that some job has room, so a queue
        whose limits are reached never takes the write lock to find that out.
        The claim itself runs in ``BEGIN IMMEDIATE``, with the clock read once
        the lock is held, so a claimer that waited neither records an old start
        nor counts an old window.
        """
        limited = {**params, **claim_params(limits, params["limit"])}
        # Eight JSON paths (the last one repeated): see fetch_limited.sql.
        paths = [f"$.{key}" for key in limited.pop("keys")] or ["$"]
        for i in range(1, MAX_KEYS + 1):
            del limited[f"key{i}"]
            limited[f"path{i}"] = paths[min(i, len(paths)) - 1]
        per = None if limits.rate_limit is None else limits.rate_limit.per
        with self._read("looking for jobs within limits") as conn:
            _clock(limited, per)
            if conn.execute(sql("claimable"), limited).fetchone() is None:
                return LimitedClaim(blocked=True)
        with self._write("claiming jobs") as conn:
            _clock(limited, per)
            claimed = claim(conn, sql("fetch_limited"), limited)
            blocked = len(claimed) < params["limit"] and (
                conn.execute(sql("has_available"), params).fetchone() is not None
            )
        return LimitedClaim(self._take(claimed, params["producer"]), blocked=blocked)

    # -- queue control ------------------------------------------------------------
    def queue_states(self) -> list[QueueState]:
        """Every queue's stored instructions, by name."""
        with self._read("reading queue control") as conn:
            return [_state(row) for row in conn.execute(sql("queue_states")).fetchall()]

    def set_queue(
        self,
        name: str,
        *,
        paused: bool | None = None,
        limit: int | None = None,
        set_limit: bool = False,
        running: bool | None = None,
        set_running: bool = False,
    ) -> QueueState:
        """Store an instruction for every node; return the queue's new state."""
        params = {
            "name": name,
            "paused": paused,
            "limit": limit,
            "set_limit": set_limit,
            "running": running,
            "set_running": set_running,
            "now": time.time(),
        }
        with self._write("changing queue control") as conn:
            row = conn.execute(sql("set_queue"), params).fetchone()
        return _state(row)

    def notify_control(self) -> None:
        """Nothing to do: SQLite nodes poll ``errands_queues`` every poll interval."""

    def cancelled_jobs(self, ids: Sequence[int]) -> list[int]:
        """Which of ``ids`` are now ``cancelled``."""
        if not ids:
            return []
        with self._read("looking for cancelled jobs") as conn:
            rows = conn.execute(sql("cancelled_jobs"), {"ids": json_list(ids)}).fetchall()
        return [row[0] for row in rows]

    # -- bulk changes ---------------------------------------------------------------
    def _bulk(self, name: str, doing: str, params: dict[str, Any]) -> int:
        with self._write(doing) as conn:
            return max(conn.execute(sql(name), params).rowcount, 0)

    def retry_jobs(self, *, states: Sequence[str], queue: str | None, worker: str | None) -> int:
        """Make matching finished/retryable jobs available now; return how many."""
        params = {"states": json_list(states), "queue": queue, "worker": worker, "now": time.time()}
        return self._bulk("retry_jobs", "retrying jobs", params)

    def cancel_jobs(self, *, states: Sequence[str], queue: str | None, worker: str | None) -> int:
        """Cancel matching unfinished jobs; return how many."""
        params = {"states": json_list(states), "queue": queue, "worker": worker, "now": time.time()}
        return self._bulk("cancel_jobs", "cancelling jobs", params)

    def delete_jobs(self, *, states: Sequence[str], queue: str | None, worker: str | None) -> int:
        """Delete matching jobs that are not executing; return how many."""
        params = {"states": json_list(states), "queue": queue, "worker": worker}
        return self._bulk("delete_jobs", "deleting jobs", params)
