"""A periodic loop component with ``start``/``stop``, the shape every plugin shares.

Example::

    class Hello(Periodic):
        name = "hello"
        async def tick(self) -> float | None:
            print("hi")
            return None          # wait the usual interval

    loop = Hello(interval=1.0); await loop.start(); ...; await loop.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["CallDb", "Periodic"]

log = logging.getLogger("errands.plugins")

#: Runs a blocking engine call off the event loop: ``await call_db(engine.stage, 100)``.
CallDb = Callable[..., Awaitable[Any]]


class Periodic:
    """Calls :meth:`tick` every ``interval`` seconds until stopped.

    ``tick`` may return a shorter delay (e.g. 0 when a batch was full and more
    work is waiting). Errors are logged and the loop goes on: a plugin must
    never take a node down. ``only_leader`` plugins skip their tick unless
    ``is_leader()`` says this node leads.
    """

    name = "periodic"
    only_leader = True

    def __init__(self, *, interval: float, is_leader: Callable[[], bool] | None = None) -> None:
        self.interval = interval
        self.is_leader = is_leader or (lambda: True)
        self.ticks = 0
        self._task: asyncio.Task[None] | None = None
        self._nudge = asyncio.Event()

    async def tick(self) -> float | None:
        """One round of work; return the delay before the next, or None for ``interval``."""
        raise NotImplementedError

    def nudge(self) -> None:
        """Run the next tick now instead of waiting."""
        self._nudge.set()

    async def start(self) -> None:
        """Start the loop; a second start does nothing."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"errands-{self.name}")

    async def stop(self) -> None:
        """Stop the loop; safe to call twice or before start."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            delay: float | None = None
            if not self.only_leader or self.is_leader():
                try:
                    delay = await self.tick()
                except Exception as exc:
                    log.warning("%s failed, trying again in %gs: %s", self.name, self.interval, exc)
                self.ticks += 1
            self._nudge.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._nudge.wait(), self.interval if delay is None else delay
                )
