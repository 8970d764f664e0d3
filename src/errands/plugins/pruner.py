"""Deletes finished jobs older than ``prune_after`` in bounded batches (leader only).

Bounded batches keep each delete short, so the pruner never holds the
SQLite write lock, or a PostgreSQL table's rows, for long.

Example: ``Pruner(engine, call_db, max_age=7 * 86400, limit=10_000, interval=60)``
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from errands.engines.base import Engine
from errands.plugins.base import CallDb, Periodic

__all__ = ["Pruner"]

log = logging.getLogger("errands.pruner")


class Pruner(Periodic):
    """Deletes up to ``limit`` finished jobs per tick; runs again at once if more remain."""

    name = "pruner"

    def __init__(
        self,
        engine: Engine,
        call_db: CallDb,
        *,
        max_age: float,
        limit: int,
        interval: float,
        is_leader: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__(interval=interval, is_leader=is_leader)
        self.engine = engine
        self.call_db = call_db
        self.max_age = max_age
        self.limit = limit
        self.pruned = 0

    async def tick(self) -> float | None:
        deleted: int = await self.call_db(self.engine.prune, self.max_age, self.limit)
        self.pruned += deleted
        if deleted:
            log.info("pruned %d finished job(s)", deleted)
        return 0.0 if deleted >= self.limit else None
