"""Run the available jobs now, one at a time, and report what became of them.

For tests and scripts: no background loops, deterministic order (priority,
then due time, then id). Jobs a drained job enqueues are drained too, since
each round fetches again until nothing is left. Bodies run as a worker runs
them: ``async def`` ones on the loop, ``def`` ones on a pool thread through
the worker's own :class:`~errands.runtime.sync_runner.SyncRunner` (same
context, timeout and ``job.cancelled()`` handling), one job at a time.

Example::

    counts = app.drain()             # {"completed": 3, "retryable": 1}
    counts = app.drain(queue="mail", with_scheduled=True)
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections import Counter
from typing import TYPE_CHECKING

from errands.engines.base import Ack, ProducerInfo
from errands.job import Job
from errands.runtime.executor import RunawayCounter, execute
from errands.runtime.heartbeat import Heartbeat
from errands.runtime.sync_runner import SyncRunner
from errands.runtime.threads import JobThreads

if TYPE_CHECKING:
    from errands.app import App

__all__ = ["drain"]

_BATCH = 100


async def drain(
    app: App, queue: str | None = None, *, with_scheduled: bool = False
) -> dict[str, int]:
    """Run available jobs of ``queue`` (every queue when None) until none is left.

    Without a running node nothing stages jobs, so ``with_scheduled=True``
    first makes due ``scheduled`` and ``retryable`` jobs available (those whose
    time or backoff has passed); future ones are left alone.
    """
    engine = app.engine
    names = app.registry.names()
    producer = f"drain-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    threads = JobThreads(name="errands-drain")
    outcomes: dict[tuple[int, int], asyncio.Future[Ack]] = {}

    def deliver(done: list[tuple[Job, Ack]]) -> None:
        for job, ack in done:
            waiting = outcomes.pop((job.id, job.attempt), None)
            if waiting is not None and not waiting.done():
                waiting.set_result(ack)

    runner = SyncRunner(threads, RunawayCounter(), deliver)
    counts: Counter[str] = Counter()
    engine.register_producer(ProducerInfo(producer, "drain", queue or "*", os.getpid()))
    # A long job in a drain must not look orphaned to a node running beside it.
    heartbeat = Heartbeat(
        engine,
        node=producer,
        producers=lambda: [producer],
        interval=app.settings.effective_heartbeat,
        lease=app.settings.rescue_after,
        lead=False,
    )
    heartbeat.start()
    try:
        while True:
            if with_scheduled:
                engine.stage(10_000)
            queues = [queue] if queue is not None else engine.available_queues()
            ran = 0
            for name in queues:
                for job in engine.fetch(name, _BATCH, producer, names):
                    worker_cls = app.registry.get(job.worker)
                    assert worker_cls is not None
                    if worker_cls.is_async():
                        ack = await execute(job, worker_cls, producer)
                    else:
                        outcome = outcomes[(job.id, job.attempt)] = (
                            asyncio.get_running_loop().create_future()
                        )
                        runner.submit(job, worker_cls, producer)
                        ack = await outcome
                    if engine.ack([ack]):
                        counts[ack.state.value] += 1
                    else:
                        counts["stale"] += 1
                    ran += 1
            if ran == 0:
                return dict(counts)
    finally:
        heartbeat.stop()
        engine.unregister_producers([producer])
        threads.shutdown(wait=False)
