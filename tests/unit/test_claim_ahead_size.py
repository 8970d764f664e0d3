"""How many jobs a producer claims ahead of its free slots, and when it claims again."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from errands.config import QueueConfig
from errands.job import Job, JobState
from errands.runtime.claim_ahead import AHEAD, AHEAD_MAX, AHEAD_ROWS, BRIEF, HOLD, QUICK
from errands.runtime.executor import RunawayCounter
from errands.runtime.producer import Producer
from errands.runtime.threads import JobThreads


def _producer(limit: int = 10, job_time: float = 0.001, **config: object) -> Producer:
    node = SimpleNamespace(name="node", threads=JobThreads(), runaways=RunawayCounter())
    producer = Producer(node, QueueConfig("default", limit=limit, **config))  # type: ignore[arg-type]
    producer._job_time = job_time
    return producer


def _job(job_id: int) -> Job:
    return Job(id=job_id, worker="w", queue="default", args={}, state=JobState.EXECUTING)


@pytest.mark.parametrize(
    ("limit", "job_time", "ahead"),
    [
        (10, 0.001, 50),  # 5 ms of work at 1 ms a job, 10 slots
        (3, 0.002, 7),  # 2.5 batches of 3
        (10, QUICK * 0.98, 10),  # barely quick: at least one batch
        (10, 0.00001, 10 * AHEAD_MAX),  # tiny jobs: capped
        (100, 0.001, 500),  # 5 batches of 100 would be 500: at the row cap
        (200, 0.001, 500),  # a wide queue: capped at AHEAD_ROWS...
        (800, 0.001, 800),  # ...but never less than one batch
        (10, QUICK, 10),  # not quick but brief: one batch
        (2, 0.01, 2),  # 10 ms jobs, two slots (a process executor's child each)
        (10, BRIEF * 0.98, 10),  # barely brief: still one batch
        (10, BRIEF, 0),  # not brief: nothing ahead
        (10, 1.0, 0),  # a fresh producer, before jobs prove quick
    ],
)
def test_it_claims_ahead_a_few_milliseconds_of_work(
    limit: int, job_time: float, ahead: int
) -> None:
    # The table above assumes these.
    assert (AHEAD, AHEAD_MAX, AHEAD_ROWS, QUICK, BRIEF) == (0.005, 10, 500, 0.005, 0.025)
    producer = _producer(limit, job_time)
    assert producer._ahead() == ahead
    assert producer.demand == limit + ahead


def test_a_job_claimed_ahead_of_brief_jobs_waits_well_within_hold() -> None:
    # One batch ahead: each waits for one running job, under BRIEF; HOLD hands it back.
    assert BRIEF * 2 <= HOLD


def test_a_queue_with_global_limits_claims_nothing_ahead() -> None:
    producer = _producer(10, 0.0001, global_limit=20)
    assert producer._ahead() == 0
    assert producer.demand == 10


def test_it_claims_again_only_once_the_jobs_claimed_ahead_run_low() -> None:
    producer = _producer(limit=10, job_time=0.001)  # 50 ahead
    producer.running = {i: _job(i) for i in range(10)}
    producer._ready = [_job(100 + i) for i in range(11)]
    assert producer.demand == 39 and not producer._should_claim()  # 11 waiting > 10 slots
    producer._ready.pop()
    assert producer._should_claim()  # 10 left: claim the next 40 at once
    producer._ready = [_job(100 + i) for i in range(50)]
    assert producer.demand == 0 and not producer._should_claim()
