"""Run the available jobs now, one at a time, and report what became of them.

For tests and scripts: no background loops, deterministic order (priority,
then due time, then id). Jobs a drained job enqueues are drained too, since
each round fetches again until nothing is left.

Example::

    counts = app.drain()             # {"completed": 3, "retryable": 1}
    counts = app.drain(queue="mail", with_scheduled=True)
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from typing import TYPE_CHECKING

from errands.engines.base import ProducerInfo
from errands.runtime.executor import execute
from errands.runtime.heartbeat import Heartbeat
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
            queues = [queue] if queue is not None else sorted(engine.queue_counts())
            ran = 0
            for name in queues:
                for job in engine.fetch(name, _BATCH, producer, names):
                    worker_cls = app.registry.get(job.worker)
                    assert worker_cls is not None
                    ack = await execute(job, worker_cls, producer, threads)
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
