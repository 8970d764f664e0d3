"""Jobs in a queue for workers this node does not know: said once per name.

Such jobs stay for a node that registers their worker (a rolling deploy, a
node serving part of an app). While they wait, every claim of their queue by
this node reads past them (the claim's index orders a queue's jobs by priority
and time, not by worker), so the warning also says to give such nodes
queues of their own. A producer whose claim found nothing asks the
database, at most every :data:`CHECK_EVERY` seconds, which unknown workers
its queue holds jobs for, and logs each name once, so a misspelt worker name
does not go unnoticed and a deliberate split does not flood the log.

Example::

    unknown = UnknownWorkers("emails")
    await unknown.check(node)  # after an empty claim
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from errands.runtime.node import Node

__all__ = ["CHECK_EVERY", "UnknownWorkers"]

log = logging.getLogger("errands.producer")

#: Seconds between two looks for jobs of unknown workers in one queue.
CHECK_EVERY = 30.0


class UnknownWorkers:
    """Warns once per worker name that ``queue`` holds jobs this node cannot run."""

    def __init__(self, queue: str) -> None:
        self.queue = queue
        self._checked = 0.0
        self._logged: set[str] = set()

    async def check(self, node: Node) -> None:
        """Look (at most every CHECK_EVERY s) and log names not logged yet; never raises."""
        now = time.monotonic()
        if now - self._checked < CHECK_EVERY:
            return
        self._checked = now
        try:
            names = await node.call_db(node.engine.unknown_workers, self.queue, node.worker_names)
        except Exception:
            return
        for name in names:
            if name not in self._logged:
                self._logged.add(name)
                log.warning(
                    "queue %s has jobs for worker %r, which this node does not know; "
                    "they are left for a node that registers it. Each claim of this "
                    "queue reads past them: nodes that run different workers should "
                    "use different queues",
                    self.queue,
                    name,
                )
