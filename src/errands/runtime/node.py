"""A node: the queues, plugins and liveness of one worker process.

``start`` registers producers, starts the completer, the heartbeat thread, the
leader-only plugins and the engine's listener. ``stop`` shuts down in the one
order that loses nothing: stop fetching, wait for running jobs up to the
grace period, flush the acks, hand the unfinished jobs back, then leave.

Example::

    node = Node(app)
    await node.start()
    ...
    await node.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from errands.engines.base import CONTROL_WAKE, Ack, Listener, LoopPath
from errands.plugins.base import Periodic
from errands.plugins.cron import Cron
from errands.plugins.lifeline import Lifeline
from errands.plugins.pruner import Pruner
from errands.plugins.stager import Stager
from errands.runtime.completer import Completer
from errands.runtime.executor import RunawayCounter
from errands.runtime.heartbeat import Heartbeat
from errands.runtime.process_pool import ProcessPool, close_pools, start_pools
from errands.runtime.producer import Producer
from errands.runtime.queue_watch import QueueWatch
from errands.runtime.threads import JobThreads

if TYPE_CHECKING:
    from errands.app import App

__all__ = ["Node"]

log = logging.getLogger("errands.node")

T = TypeVar("T")


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


def _call_into(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Any],
    fn: Callable[..., Any],
    args: tuple[Any, ...],
) -> None:
    """On a database thread: run ``fn(*args)`` and settle ``future`` on its loop."""
    try:
        result, error = fn(*args), None
    except BaseException as exc:
        result, error = None, exc
    with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
        loop.call_soon_threadsafe(_settle, future, result, error)


def default_node_name() -> str:
    """``host-pid-random``: unique per process, readable in the producers table."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}"


class Node:
    """Runs an app's queues in this process."""

    def __init__(
        self,
        app: App,
        *,
        queues: list[str] | None = None,
        on_ready: Callable[[], object] | None = None,
    ) -> None:
        self.app = app
        #: Called once in start(), right before the producers begin claiming jobs.
        self.on_ready = on_ready
        self.engine = app.engine
        self.registry = app.registry
        self.settings = app.settings
        self.name = app.node_name or default_node_name()
        self.poll_interval = self.settings.poll_interval or self.engine.default_poll_interval
        chosen = app.queues if queues is None else {q: app.queue_config(q) for q in queues}
        self.queue_configs = chosen
        self.worker_names: tuple[str, ...] = tuple(self.registry.names())
        self.threads = JobThreads(unpinned=True)  # job bodies may use every core
        self.runaways = RunawayCounter()
        self.outcomes: Counter[str] = Counter()
        self.producers: dict[str, Producer] = {}
        #: One pool of worker processes per queue whose executor is "process".
        self.process_pools: dict[str, ProcessPool] = {}
        self._db = JobThreads("errands-db", max_threads=4)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: Listener | None = None
        #: The engine's claim and ack on this loop, where it offers them (start()).
        self.loop_path: LoopPath | None = None
        self.completer = Completer(self.ack)
        self.heartbeat = Heartbeat(
            self.engine,
            node=self.name,
            producers=lambda: [p.id for p in list(self.producers.values())],
            interval=self.settings.effective_heartbeat,
            lease=self.settings.rescue_after,
        )
        self.plugins: list[Periodic] = []
        #: Applies pause/scale/start/stop from errands_queues; stops cancelled running jobs.
        self.queue_watch = QueueWatch(self, interval=min(self.poll_interval, 1.0))
        self.started = False

    async def call_db(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking engine call on the node's database threads.

        The thread resolves an asyncio future directly, and the call reaches
        it through a queue put: ``run_in_executor`` would add a
        ``concurrent.futures`` future and a work item, which cost more than a
        claim of a few rows on SQLite.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._db.run(_call_into, loop, future, fn, args)
        return await future

    async def ack(self, acks: Sequence[Ack]) -> int:
        """Apply a batch of outcomes: on the loop where the engine can, else on a thread."""
        path = self.loop_path
        if path is not None:
            return await path.ack(acks)
        return await self.call_db(self.engine.ack, acks)

    async def _close_loop_path(self) -> None:
        path, self.loop_path = self.loop_path, None
        if path is not None:
            try:
                await path.close()
            except Exception as exc:  # stopping anyway; its connections die with the process
                log.warning("could not close the claim and ack connections: %s", exc)

    def _is_leader(self) -> bool:
        return self.heartbeat.is_leader

    def _build_plugins(self) -> list[Periodic]:
        settings = self.settings
        plugins: list[Periodic] = [
            Stager(
                self.engine,
                self.call_db,
                wake=self.wake,
                interval=settings.stage_interval,
                is_leader=self._is_leader,
            ),
            Lifeline(
                self.engine,
                self.call_db,
                rescue_after=settings.rescue_after,
                wake=self.wake_all,
                is_leader=self._is_leader,
            ),
        ]
        if settings.prune_after is not None:
            plugins.append(
                Pruner(
                    self.engine,
                    self.call_db,
                    max_age=settings.prune_after,
                    limit=settings.prune_limit,
                    interval=settings.prune_interval,
                    is_leader=self._is_leader,
                )
            )
        if self.app.cron:
            plugins.append(Cron.for_node(self))  # checks the entries: ConfigError naming one
        return plugins

    # -- wake-ups (callable from any thread) ---------------------------------------
    def wake(self, queue: str) -> None:
        """Tell the producer of ``queue`` (``"*"``: every producer) to look for work now."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if queue == CONTROL_WAKE:
            loop.call_soon_threadsafe(self.queue_watch.nudge)
            return
        if queue == "*":
            loop.call_soon_threadsafe(self._wake_all_now)
            return
        producer = self.producers.get(queue)
        if producer is not None:
            loop.call_soon_threadsafe(producer.wake)

    def _wake_all_now(self) -> None:
        for producer in self.producers.values():
            producer.wake()

    def wake_all(self) -> None:
        """Wake every producer of this node."""
        self.wake("*")

    def finished(self, ack: Ack) -> None:
        """Count one attempt's outcome (shown by ``errands demo`` and ``errands worker``)."""
        self.outcomes[ack.state.value] += 1

    # -- lifecycle -----------------------------------------------------------------
    async def start(self) -> None:
        """Start every queue and plugin of this node."""
        if self.started:
            return
        self._loop = asyncio.get_running_loop()
        make_path: Callable[[], LoopPath | None] | None = getattr(self.engine, "loop_path", None)
        self.loop_path = None if make_path is None else make_path()
        # Set first, so that stop() after a failed start cleans up what did start.
        self.started = True
        await self.call_db(self.app.ensure_schema)
        self.worker_names = tuple(self.registry.names())
        self.queue_configs = await self.queue_watch.load(self.queue_configs)
        self.process_pools = await start_pools(self.app, self.queue_configs.values())
        if self.on_ready is not None:  # started as far as jobs can tell: none ran yet
            self.on_ready()
        for config in self.queue_configs.values():
            producer = Producer(self, config)
            await producer.start()
            self.producers[config.name] = producer
        await self.completer.start()
        await self.call_db(self.heartbeat.start)
        self.plugins = [*self._build_plugins(), self.queue_watch]
        for plugin in self.plugins:
            await plugin.start()
        self._listener = self.engine.listen(self.wake)
        log.info(
            "node %s started: queues %s",
            self.name,
            ", ".join(f"{q}({c.limit})" for q, c in self.queue_configs.items()),
        )

    async def stop(self, grace: float | None = None) -> None:
        """Stop without losing a job. Safe to call twice or before start."""
        if not self.started:
            return
        self.started = False
        try:
            await self._stop(grace)
        finally:
            await self._close_loop_path()
            self.threads.shutdown(wait=False)
            self._db.shutdown(wait=True)  # every call was awaited: the threads are idle
        log.info("node %s stopped", self.name)

    async def _stop(self, grace: float | None) -> None:
        grace = self.settings.grace_period if grace is None else grace
        if self._listener is not None:
            self._listener.stop()
            self._listener = None
        results = await asyncio.gather(*(p.stop(grace) for p in self.producers.values()))
        await close_pools(self.process_pools)
        unfinished = sum(len(ids) for ids in results)
        for plugin in self.plugins:
            await plugin.stop()
        try:
            await self.completer.stop()
        except Exception as exc:
            log.error(
                "could not record %d outcome(s) at shutdown; those jobs will be rescued: %s",
                len(self.completer.pending),
                exc,
            )
        ids = [p.id for p in self.producers.values()]
        # A sync body still running in a thread cannot be stopped: handing its job
        # back now would let another node run it while it still runs here. Leave
        # such jobs executing; once this process stops heart-beating, the
        # lifeline rescues them (rescue_after), like after a crash.
        busy = self.threads.busy
        try:
            if not busy:
                for producer_id in ids:
                    await self.call_db(self.engine.rescue_producer, producer_id)
        except Exception as exc:
            log.error("could not hand jobs back at shutdown; they will be rescued: %s", exc)
        finally:
            # Never leave a heartbeat running for producers that are gone: their
            # jobs could then never be rescued.
            await self.call_db(self.heartbeat.stop)
        if not busy:
            try:
                await self.call_db(self.engine.unregister_producers, ids)
            except Exception as exc:
                log.warning("could not unregister producers at shutdown: %s", exc)
        if busy:
            log.warning(
                "%d sync job(s) still running in threads after the %gs grace period; their jobs "
                "stay executing and are rescued %gs after this process stops heart-beating",
                busy,
                grace,
                self.settings.rescue_after,
            )
        elif unfinished:
            log.warning(
                "%d job(s) did not finish within the %gs grace period; handed back",
                unfinished,
                grace,
            )
        self.producers.clear()
