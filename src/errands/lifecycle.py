"""Running an app's workers: start, stop, run until a signal, or drain in place.

A mixin of :class:`errands.App`. :meth:`~Lifecycle.start` and
:meth:`~Lifecycle.stop` run a :class:`~errands.runtime.node.Node` in the
caller's event loop; :meth:`~Lifecycle.run` blocks until SIGTERM or SIGINT;
:meth:`~Lifecycle.drain` runs the jobs available now and returns (for tests
and scripts).

Example::

    app.run()                       # blocking, until SIGTERM / SIGINT

    node = await app.start(["mail"])   # inside a running event loop
    await app.stop(grace=5)

    assert app.drain() == {"completed": 2}
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from errands.runtime.drain import drain as run_drain
from errands.runtime.node import Node
from errands.runtime.startup import start_when_reachable

if TYPE_CHECKING:
    from errands.app import App

__all__ = ["Lifecycle"]


class Lifecycle:
    """Start, stop, run and drain methods of :class:`errands.App` (see the module docs).

    Example: ``node = await app.start(); ...; await app.stop()``
    """

    if TYPE_CHECKING:
        _node: Node | None

        def ensure_schema(self) -> None: ...

    @property
    def node(self) -> Node | None:
        """The running node, between :meth:`start` and :meth:`stop`."""
        return self._node

    async def start(self, queues: list[str] | None = None) -> Node:
        """Start working the queues in the running event loop; returns the node.

        Raises at once if the database cannot be reached (no retry, unlike :meth:`run`).
        """
        return await self._start(queues)

    async def _start(
        self,
        queues: list[str] | None,
        on_ready: Callable[[], object] | None = None,
        *,
        grace: float | None = None,
    ) -> Node:
        """:meth:`start`, calling ``on_ready`` right before the node claims its first job.

        By then the schema is checked and the queues loaded. ``errands worker``
        tells its supervisor (see :mod:`errands.runtime.ready`). ``grace``: the
        seconds jobs get if the start is cancelled (None: the app's
        ``grace_period``), as :meth:`stop` would give them after a full start.

        Example: ``node = await app._start(None, on_ready=lambda: print("claiming"))``
        """
        if self._node is not None:
            raise RuntimeError("this app is already running; call stop() first")
        # Node takes the whole App; this mixin is only ever part of App.
        node = Node(cast("App", self), queues=queues, on_ready=on_ready)
        self._node = node
        try:
            await node.start()
        except asyncio.CancelledError:
            # Stopped (SIGTERM) mid-start: its producers may already run jobs, which
            # get the grace period as after a full start, not abandoned to the lifeline.
            self._node = None
            await node.stop(grace)
            raise
        except BaseException:
            self._node = None
            await node.stop(grace=0)
            raise
        return node

    async def stop(self, grace: float | None = None) -> None:
        """Stop gracefully: no new jobs, running ones get ``grace`` seconds. Safe twice."""
        node, self._node = self._node, None
        if node is not None:
            await node.stop(grace)

    def run(self, queues: list[str] | None = None) -> None:
        """Work the queues until SIGTERM or SIGINT, then stop gracefully (blocking).

        Like ``errands worker``, it waits for a database that cannot be reached
        at start-up, logging a warning per attempt; other errors (a missing
        schema, bad configuration) are raised. :meth:`start` raises at once.
        """
        asyncio.run(self._run_until_signal(queues))

    async def _run_until_signal(self, queues: list[str] | None) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            if await start_when_reachable(lambda: self.start(queues), stop) is not None:
                await stop.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await self.stop()

    def drain(self, queue: str | None = None, *, with_scheduled: bool = False) -> dict[str, int]:
        """Run available jobs now, in this thread; return counts by outcome state.

        Example: ``assert app.drain() == {"completed": 2}``
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self.ensure_schema()
            # run_drain takes the whole App; this mixin is only ever part of App.
            return asyncio.run(run_drain(cast("App", self), queue, with_scheduled=with_scheduled))
        raise RuntimeError("app.drain() cannot run inside an event loop: use await app.adrain()")

    async def adrain(
        self, queue: str | None = None, *, with_scheduled: bool = False
    ) -> dict[str, int]:
        """The async twin of :meth:`drain`."""
        await asyncio.to_thread(self.ensure_schema)
        return await run_drain(cast("App", self), queue, with_scheduled=with_scheduled)
