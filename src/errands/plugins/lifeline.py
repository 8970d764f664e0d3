"""Rescues jobs whose producer stopped heart-beating (leader only).

A job left ``executing`` by a killed worker goes back to ``available`` (or
``discarded`` when its attempts are spent) within ``rescue_after`` seconds of
the producer's last heartbeat, plus at most one lifeline interval.

Example: ``Lifeline(engine, call_db, rescue_after=30, wake=node.wake_all)``
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from errands.engines.base import Engine
from errands.plugins.base import CallDb, Periodic

__all__ = ["Lifeline"]

log = logging.getLogger("errands.lifeline")


class Lifeline(Periodic):
    """Calls ``engine.rescue`` every ``interval`` seconds."""

    name = "lifeline"

    def __init__(
        self,
        engine: Engine,
        call_db: CallDb,
        *,
        rescue_after: float,
        wake: Callable[[], None],
        interval: float | None = None,
        is_leader: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__(interval=interval or max(0.2, rescue_after / 4), is_leader=is_leader)
        self.engine = engine
        self.call_db = call_db
        self.rescue_after = rescue_after
        self.wake = wake
        self.rescued = 0

    async def tick(self) -> float | None:
        counts = await self.call_db(self.engine.rescue, self.rescue_after)
        if counts.total:
            self.rescued += counts.total
            log.warning(
                "rescued %d orphaned job(s): %d available again, %d discarded (attempts spent)",
                counts.total,
                counts.available,
                counts.discarded,
            )
            self.wake()
        return None
