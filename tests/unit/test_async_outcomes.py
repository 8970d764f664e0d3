"""Outcomes of async jobs are recorded once per turn of the event loop, together.

Each finished ``async def`` job used to record its outcome and start the next
waiting job on its own; jobs that finish in the same turn now share one
recording (one start of waiting jobs, one wake-up of the producer's loop).
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from errands.config import QueueConfig
from errands.engines.base import Ack
from errands.job import Job, JobState
from errands.runtime import producer as producer_module
from errands.runtime.executor import RunawayCounter
from errands.runtime.producer import Producer
from errands.runtime.threads import JobThreads
from errands.worker import Worker


def _producer() -> Producer:
    node = SimpleNamespace(name="node", threads=JobThreads(), runaways=RunawayCounter())
    return Producer(node, QueueConfig("default", limit=10))  # type: ignore[arg-type]


def _job(job_id: int) -> Job:
    return Job(id=job_id, worker="w", queue="default", args={}, state=JobState.EXECUTING)


async def _done_at_once(job: Job, worker_cls: Any, producer: str, processes: Any) -> Ack:
    return Ack(job.id, job.attempt, producer, JobState.COMPLETED)


def test_jobs_finishing_in_one_turn_are_recorded_in_one_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    producer = _producer()
    batches: list[list[int]] = []
    monkeypatch.setattr(
        producer, "_finish_batch", lambda done: batches.append([job.id for job, _ in done])
    )
    monkeypatch.setattr(producer_module, "execute", _done_at_once)

    async def main() -> None:
        await asyncio.gather(*(producer._run(_job(i), Worker, None) for i in range(3)))
        await asyncio.sleep(0)
        await producer._run(_job(3), Worker, None)
        await asyncio.sleep(0)

    asyncio.run(main())
    assert batches == [[0, 1, 2], [3]]


def test_stopping_records_finished_jobs_before_naming_the_unfinished(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A job whose body returned must never be handed back as unfinished: its
    outcome would then be fenced out and the job run again."""
    producer = _producer()
    monkeypatch.setattr(producer_module, "execute", _done_at_once)
    finished: list[int] = []

    def record(done: list[tuple[Job, Ack]]) -> None:
        for job, _ in done:
            finished.append(job.id)
            producer._forget(job.id)

    monkeypatch.setattr(producer, "_finish_batch", record)

    async def main() -> list[int]:
        producer.running = {1: _job(1), 2: _job(2)}
        producer._idle.clear()
        await producer._run(_job(1), Worker, None)  # finished; its recording is pending
        return await producer.stop(grace=0.0)

    assert asyncio.run(main()) == [2]
    assert finished == [1]
