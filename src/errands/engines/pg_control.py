"""The PostgreSQL engine's limited claim, queue control and bulk changes.

A mixin of :class:`~errands.engines.postgres.PostgresEngine`, kept apart so the
engine module stays about the hot path.

A limited claim is one short transaction of two statements: an advisory
transaction lock on the queue (``queue_lock.sql``), then ``fetch_limited.sql``,
which counts executing and recently started jobs and claims within the room
left. Claimers of one limited queue therefore take turns, and each statement's
snapshot, taken after the lock was granted, sees every earlier claim. Queues
without global options keep the lock-free ``SKIP LOCKED`` claim.

Changes to ``errands_queues`` and bulk cancels NOTIFY ``'!control'`` on the
schema's channel, so nodes apply them at once instead of at their next poll.

Example::

    engine = PostgresEngine("postgresql://localhost/app")
    engine.set_queue("mail", paused=True)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from errands.engines.base import QueueState
from errands.engines.pg_claim import id_array
from errands.engines.pg_connect import Row, dict_cursor
from errands.engines.pg_pool import PgPool
from errands.limits import QueueLimits, claim_params

__all__ = ["PgControl"]


def _state(row: Row) -> QueueState:
    return QueueState(
        name=row["name"],
        paused=row["paused"],
        limit=row["limit_override"],
        running=row["running"],
        version=int(row["version"]),
        updated_at=float(row["updated_at"]),
    )


class PgControl:
    """Limited claims, ``errands_queues`` and bulk changes for the PostgreSQL engine.

    Example: ``PostgresEngine("postgresql://localhost/app").queue_states()``
    """

    if TYPE_CHECKING:
        schema: str
        _pool: PgPool

        @property
        def _channel(self) -> str | None: ...

        def _q(self, name: str) -> bytes: ...

        def _all(self, name: str, params: Mapping[str, Any], doing: str) -> list[Row]: ...

    def _claim_limited(
        self, params: Mapping[str, Any], limits: QueueLimits
    ) -> tuple[list[Row], bool]:
        """Lock the queue for this transaction, then count and claim within its limits.

        Returns the claimed rows and ``blocked``: whether jobs are still
        available after claiming fewer than asked (checked in the same transaction).
        """
        if not self._all("has_available", params, "looking for jobs"):
            return [], False
        claim = {**params, **claim_params(limits, params["limit"])}
        del claim["keys"]
        with (
            self._pool.connection("claiming jobs") as conn,
            conn.transaction(),
            dict_cursor(conn) as cur,
        ):
            cur.execute(self._q("queue_lock"), {"key": f"{self.schema}.{params['queue']}"})
            cur.execute(self._q("fetch_limited"), claim)
            rows = cur.fetchall()
            blocked = False
            if len(rows) < params["limit"]:
                cur.execute(self._q("has_available"), params)
                blocked = cur.fetchone() is not None
        return rows, blocked

    # -- queue control ------------------------------------------------------------
    def queue_states(self) -> list[QueueState]:
        """Every queue's stored instructions, by name."""
        return [_state(row) for row in self._all("queue_states", {}, "reading queue control")]

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
        """Store an instruction for every node and wake their watches; return the new state."""
        params = {
            "name": name,
            "paused": paused,
            "limit": limit,
            "set_limit": set_limit,
            "running": running,
            "set_running": set_running,
            "channel": self._channel,
        }
        return _state(self._all("set_queue", params, "changing queue control")[0])

    def notify_control(self) -> None:
        """Wake every node's queue watch now (nothing when notifications are off)."""
        if self._channel is not None:
            self._all("notify_control", {"channel": self._channel}, "notifying nodes")

    def cancelled_jobs(self, ids: Sequence[int]) -> list[int]:
        """Which of ``ids`` are now ``cancelled``."""
        if not ids:
            return []
        rows = self._all("cancelled_jobs", {"ids": id_array(ids)}, "looking for cancelled jobs")
        return [int(row["id"]) for row in rows]

    # -- bulk changes ---------------------------------------------------------------
    def _bulk(
        self, name: str, doing: str, states: Sequence[str], queue: str | None, worker: str | None
    ) -> int:
        params = {
            "states": list(states),
            "queue": queue,
            "worker": worker,
            "channel": self._channel,
        }
        with self._pool.connection(doing) as conn, dict_cursor(conn) as cur:
            cur.execute(self._q(name), params)
            if cur.description is None:
                return max(cur.rowcount, 0)
            row = cur.fetchone()
            return 0 if row is None else int(row["n"])

    def retry_jobs(self, *, states: Sequence[str], queue: str | None, worker: str | None) -> int:
        """Make matching finished/retryable jobs available now and wake their queues."""
        return self._bulk("retry_jobs", "retrying jobs", states, queue, worker)

    def cancel_jobs(self, *, states: Sequence[str], queue: str | None, worker: str | None) -> int:
        """Cancel matching unfinished jobs; wake the nodes when executing ones were among them."""
        return self._bulk("cancel_jobs", "cancelling jobs", states, queue, worker)

    def delete_jobs(self, *, states: Sequence[str], queue: str | None, worker: str | None) -> int:
        """Delete matching jobs that are not executing; return how many."""
        return self._bulk("delete_jobs", "deleting jobs", states, queue, worker)
