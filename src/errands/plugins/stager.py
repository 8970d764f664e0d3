"""Moves due ``scheduled`` and ``retryable`` jobs to ``available`` (leader only).

Keeping future jobs out of ``available`` means the claim never scans them.

Example: ``Stager(engine, call_db, wake=node.wake, interval=1.0)``
"""

from __future__ import annotations

from collections.abc import Callable

from errands.engines.base import Engine
from errands.plugins.base import CallDb, Periodic

__all__ = ["Stager"]


class Stager(Periodic):
    """Stages due jobs in batches of ``limit`` and wakes the queues it touched."""

    name = "stager"

    def __init__(
        self,
        engine: Engine,
        call_db: CallDb,
        *,
        wake: Callable[[str], None],
        interval: float,
        limit: int = 5_000,
        is_leader: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__(interval=interval, is_leader=is_leader)
        self.engine = engine
        self.call_db = call_db
        self.wake = wake
        self.limit = limit

    async def tick(self) -> float | None:
        queues = await self.call_db(self.engine.stage, self.limit)
        for queue in queues:
            self.wake(queue)
        return None
