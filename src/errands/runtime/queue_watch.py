"""Applies queue control to this node, and stops jobs cancelled while running.

Every node (not only the leader) runs one :class:`QueueWatch`. Each tick it

- re-reads ``errands_queues`` and applies each changed instruction (pause,
  resume, scale, start, stop) to this node's producers, once per change
  (rows carry a ``version``): a later local change such as
  ``pause_queue(name, local=True)`` stays until the next global change of the
  same setting;
- asks which of the jobs running here were cancelled from outside
  (``app.cancel_job``): async bodies are cancelled at once, sync bodies see
  ``job.cancelled()`` turn true.

It ticks every poll interval (at most every second); on PostgreSQL a NOTIFY
``'!control'`` wakes it at once. When a node starts, :meth:`QueueWatch.load`
applies the stored instructions before any producer claims a job, so a paused
queue stays paused across restarts.

Example::

    watch = QueueWatch(node, interval=1.0)
    configs = await watch.load(node.queue_configs)
    await watch.start(); ...; await watch.stop()
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from errands.config import QueueConfig
from errands.engines.base import QueueState
from errands.plugins.base import Periodic
from errands.runtime.producer import Producer

if TYPE_CHECKING:
    from errands.runtime.node import Node

__all__ = ["QueueWatch"]

log = logging.getLogger("errands.queue_watch")

T = TypeVar("T")

#: How long a call from another thread waits for the node's loop to apply a change.
_LOOP_TIMEOUT = 10.0


class QueueWatch(Periodic):
    """Keeps this node's producers in line with ``errands_queues``; stops cancelled jobs.

    Example: ``node.queue_watch.on_loop(lambda: node.queue_watch.remove_queue("mail"))``
    """

    name = "queue_watch"
    only_leader = False

    def __init__(self, node: Node, *, interval: float) -> None:
        super().__init__(interval=interval)
        self.node = node
        #: The last instruction applied per queue (its version tells what is new).
        self.applied: dict[str, QueueState] = {}
        #: Each queue's own configured limit, restored when a scale override is cleared.
        self.base_limits: dict[str, int] = {}
        #: Running jobs already told to stop.
        self.signalled: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- start-up ---------------------------------------------------------------------
    async def load(self, configs: Mapping[str, QueueConfig]) -> dict[str, QueueConfig]:
        """The queues this node starts with, stored instructions applied.

        A queue stopped everywhere is left out, one started everywhere is added,
        and a stored pause or limit override replaces the configured one.
        """
        states = await self.node.call_db(self.node.engine.queue_states)
        chosen = dict(configs)
        for state in states:
            self.applied[state.name] = state
            if state.running is False:
                chosen.pop(state.name, None)
            elif state.running is True and state.name not in chosen:
                chosen[state.name] = self.node.app.queue_config(state.name)
        by_name = {state.name: state for state in states}
        for name, config in chosen.items():
            self.base_limits[name] = config.limit
            stored = by_name.get(name)
            if stored is not None:
                chosen[name] = _with_state(config, stored)
        return chosen

    # -- the loop ---------------------------------------------------------------------
    async def tick(self) -> float | None:
        states = await self.node.call_db(self.node.engine.queue_states)
        for state in states:
            before = self.applied.get(state.name)
            if before is None or before.version != state.version:
                self.apply(state)
        await self._stop_cancelled()
        return None

    def apply(self, state: QueueState) -> None:
        """Apply what changed in ``state`` since the last one seen (on the node's loop)."""
        before = self.applied.get(state.name)
        if before is not None and before.version >= state.version:
            return
        self.applied[state.name] = state
        if before is None:  # a new row: only its non-None settings are instructions
            before = QueueState(state.name, None, None, None, 0, 0.0)
        producer = self.node.producers.get(state.name)
        if state.running is not None and before.running != state.running:
            if state.running and producer is None:
                config = _with_state(self.node.app.queue_config(state.name), state)
                self.base_limits.setdefault(
                    state.name, self.node.app.queue_config(state.name).limit
                )
                self.add_queue(config)
                return
            if not state.running and producer is not None:
                self.remove_queue(state.name)
                return
        if producer is None:
            return
        if state.paused is not None and before.paused != state.paused:
            producer.paused = state.paused
            log.info("queue %s %s on every node", state.name, _verb(state.paused))
        if before.limit != state.limit:
            base = self.base_limits.get(state.name, producer.limit)
            producer.limit = base if state.limit is None else state.limit
            log.info("queue %s now runs up to %d job(s) on this node", state.name, producer.limit)
        producer.wake()

    async def _stop_cancelled(self) -> None:
        running = {
            job_id: producer
            for producer in list(self.node.producers.values())
            for job_id in producer.held
        }
        self.signalled &= running.keys()
        ask = [job_id for job_id in running if job_id not in self.signalled]
        if not ask:
            return
        for job_id in await self.node.call_db(self.node.engine.cancelled_jobs, ask):
            producer = running[job_id]
            if producer.cancel_job(job_id):
                self.signalled.add(job_id)

    async def stop(self) -> None:
        """Stop the loop and any queue start/stop still under way. Safe twice."""
        await super().stop()
        tasks, self._tasks = self._tasks, set()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)

    # -- starting and stopping queues (on the node's loop) -----------------------------
    def add_queue(self, config: QueueConfig) -> Producer:
        """Start a producer for ``config`` on this node; it claims jobs once registered."""
        self.base_limits.setdefault(config.name, config.limit)
        producer = Producer(self.node, config)
        self.node.producers[config.name] = producer
        self._spawn(self._start(producer), f"errands-start-{config.name}")
        log.info("queue %s started on this node (limit %d)", config.name, config.limit)
        return producer

    async def _start(self, producer: Producer) -> None:
        try:
            await producer.start()
        except Exception as exc:
            log.error("could not start queue %s: %s", producer.queue, exc)
            if self.node.producers.get(producer.queue) is producer:
                del self.node.producers[producer.queue]

    def remove_queue(self, name: str) -> None:
        """Stop claiming jobs of ``name`` now; running ones get the grace period."""
        producer = self.node.producers.pop(name, None)
        if producer is None:
            return
        producer.paused = True
        # Keep it in the node's table under another key while it winds down: the
        # heartbeat keeps its running jobs alive, and node.stop still stops it.
        self.node.producers[f"{name}!stopping:{producer.id}"] = producer
        self._spawn(self._stop(producer), f"errands-stop-{name}")
        log.info("queue %s stopping on this node", name)

    async def _stop(self, producer: Producer) -> None:
        node = self.node
        try:
            await producer.stop(node.settings.grace_period)
            await node.completer.flush()
            await node.call_db(node.engine.rescue_producer, producer.id)
            await node.call_db(node.engine.unregister_producers, [producer.id])
        except asyncio.CancelledError:
            raise  # the node is stopping: node.stop hands this producer's jobs back
        except Exception as exc:
            # Forget it anyway: without heartbeats, the lifeline rescues its jobs.
            log.warning(
                "queue %s: could not hand jobs back; they will be rescued: %s", producer.queue, exc
            )
        for key, value in list(node.producers.items()):
            if value is producer:
                del node.producers[key]

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- calls from other threads ------------------------------------------------------
    def on_loop(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the node's loop and return its result (from any thread).

        On the loop's own thread ``fn`` runs right here; from another thread
        this waits for the loop to run it.
        """
        loop = self.node._loop
        if loop is None or loop.is_closed():
            raise RuntimeError("the node is not running")
        try:
            current = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        if current is loop:
            return fn()
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                done.set_result(fn())
            except BaseException as exc:
                done.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return done.result(timeout=_LOOP_TIMEOUT)


def _with_state(config: QueueConfig, state: QueueState) -> QueueConfig:
    """``config`` with a stored pause or limit override applied."""
    paused = config.paused if state.paused is None else state.paused
    limit = config.limit if state.limit is None else state.limit
    return dataclasses.replace(config, paused=paused, limit=limit)


def _verb(paused: bool) -> str:
    return "paused" if paused else "resumed"
