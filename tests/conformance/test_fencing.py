"""Invariants 2 and 4 at the engine level: fenced acks, rescue of silent producers.

These tests drive ``app.engine`` directly (fetch, ack, rescue) to stage the
races a running node only produces by bad luck.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace

import orjson
import pytest

import errands
from errands import JobState
from errands.engines.base import Ack, ProducerInfo

WORKER = "fence.work"


def _app_with_worker(app: errands.App, max_attempts: int = 5) -> errands.JobFunction[..., object]:
    @app.job(name=WORKER, max_attempts=max_attempts)
    def work(n: int) -> int:
        return n

    return work


def _producer(app: errands.App, name: str) -> str:
    app.engine.register_producer(ProducerInfo(name, f"node-{name}", "default", os.getpid()))
    return name


def _claim(app: errands.App, producer: str, expect: int, limit: int = 10) -> errands.Job:
    jobs = app.engine.fetch("default", limit, producer, [WORKER])
    assert [j.id for j in jobs] == [expect]
    return jobs[0]


def test_fetch_claims_and_counts_the_attempt(app: errands.App) -> None:
    work = _app_with_worker(app)
    job = work.enqueue(n=1)
    a = _producer(app, "A")
    claimed = _claim(app, a, job.id)
    assert claimed.state == JobState.EXECUTING
    assert claimed.attempt == 1
    assert claimed.attempted_by == a
    assert claimed.attempted_at is not None
    assert claimed.args == {"n": 1}
    stored = app.get_job(job.id)
    assert stored is not None and stored.state == JobState.EXECUTING and stored.attempt == 1
    # a claimed job is not claimed again
    assert app.engine.fetch("default", 10, _producer(app, "B"), [WORKER]) == []


def test_fetch_respects_limit_order_queue_and_workers(app: errands.App) -> None:
    work = _app_with_worker(app)
    low = work.options(priority=5).enqueue(n=1)
    high = work.options(priority=1).enqueue(n=2)
    mid = work.options(priority=3).enqueue(n=3)
    work.options(queue="elsewhere").enqueue(n=4)
    a = _producer(app, "A")
    assert app.engine.fetch("default", 10, a, ["someone.else"]) == []
    first = app.engine.fetch("default", 2, a, [WORKER])
    assert [j.id for j in first] == [high.id, mid.id]
    second = app.engine.fetch("default", 2, a, [WORKER])
    assert [j.id for j in second] == [low.id]
    assert app.engine.fetch("default", 2, a, [WORKER]) == []


def _ack(job: errands.Job, producer: str, attempt: int | None = None, **kw: object) -> Ack:
    fields: dict[str, object] = {"state": JobState.COMPLETED, "result": b"42"}
    fields.update(kw)
    return Ack(
        id=job.id,
        attempt=job.attempt if attempt is None else attempt,
        producer=producer,
        **fields,  # type: ignore[arg-type]
    )


def test_acks_are_fenced_by_attempt_and_producer(app: errands.App) -> None:
    work = _app_with_worker(app)
    job = work.enqueue(n=1)
    a = _producer(app, "A")
    b = _producer(app, "B")
    claimed = _claim(app, a, job.id)
    before = app.get_job(job.id)

    assert app.engine.ack([_ack(claimed, a, attempt=2)]) == 0
    assert app.engine.ack([_ack(claimed, a, attempt=0)]) == 0
    assert app.engine.ack([_ack(claimed, b)]) == 0
    error = {"type": "X", "message": "m", "traceback": None, "at": time.time(), "attempt": 1}
    assert (
        app.engine.ack(
            [
                _ack(
                    claimed,
                    b,
                    state=JobState.RETRYABLE,
                    result=None,
                    error=error,
                    scheduled_at=time.time(),
                )
            ]
        )
        == 0
    )
    assert app.get_job(job.id) == before, "a stale ack changed the row"

    # the holder's ack applies once; repeating it is stale
    assert app.engine.ack([_ack(claimed, a)]) == 1
    done = app.get_job(job.id)
    assert done is not None and done.state == JobState.COMPLETED and done.result == 42
    assert app.engine.ack([_ack(claimed, a)]) == 0
    assert app.engine.ack([_ack(claimed, a, state=JobState.DISCARDED, result=None)]) == 0
    assert app.get_job(job.id) == done


def test_mixed_batch_of_acks_counts_only_live_ones(app: errands.App) -> None:
    work = _app_with_worker(app)
    jobs = [work.enqueue(n=i) for i in range(3)]
    a = _producer(app, "A")
    claimed = app.engine.fetch("default", 10, a, [WORKER])
    assert [j.id for j in claimed] == [j.id for j in jobs]
    acks = [_ack(claimed[0], a), _ack(claimed[1], "B"), _ack(claimed[2], a, attempt=9)]
    assert app.engine.ack(acks) == 1
    states = [app.get_job(j.id).state for j in jobs]  # type: ignore[union-attr]
    assert states == [JobState.COMPLETED, JobState.EXECUTING, JobState.EXECUTING]


def test_a_batch_of_completions_keeps_each_result_exactly(app: errands.App) -> None:
    """Completions are applied together (on SQLite, one statement over the batch):
    each job keeps its own result byte for byte, a job acked twice counts once."""
    work = _app_with_worker(app)
    results: list[bytes | None] = [
        b'"quote \\" and \\\\ backslash"',
        '"ünïcode ✓ \\t tab 😀"'.encode(),
        b'{"nested": [1, 2.5, null, {"deep": "x\\ny"}]}',
        b"123456789012345678901234567890",
        b"0.30000000000000004",
        None,
    ]
    jobs = [work.enqueue(n=i) for i in range(len(results))]
    a = _producer(app, "A")
    claimed = app.engine.fetch("default", 10, a, [WORKER])
    acks = [_ack(job, a, result=result) for job, result in zip(claimed, results, strict=True)]
    acks.append(acks[0])  # the same ack again (a retried flush): stale once the first applies
    assert app.engine.ack(acks) == len(results)
    for job, result in zip(jobs, results, strict=True):
        stored = app.get_job(job.id)
        assert stored is not None and stored.state == JobState.COMPLETED
        assert stored.finished_at is not None
        expected = None if result is None else orjson.loads(result)
        assert stored.result == expected
        assert type(stored.result) is type(expected)


def test_ack_outcomes_through_the_engine(app: errands.App) -> None:
    """Every outcome in one batch, completions among them (SQLite applies those with
    a statement of their own), and a stale ack that changes nothing."""
    work = _app_with_worker(app)
    jobs = [work.enqueue(n=i) for i in range(6)]
    a = _producer(app, "A")
    claimed = app.engine.fetch("default", 10, a, [WORKER])
    due = time.time() + 100
    error = {
        "type": "ValueError",
        "message": "bad",
        "traceback": "tb",
        "at": time.time(),
        "attempt": 1,
    }
    applied = app.engine.ack(
        [
            _ack(
                claimed[0], a, state=JobState.RETRYABLE, result=None, error=error, scheduled_at=due
            ),
            _ack(
                claimed[1], a, state=JobState.SCHEDULED, result=None, scheduled_at=due, snoozed=True
            ),
            _ack(claimed[2], a, state=JobState.CANCELLED, result=None, error=error),
            _ack(claimed[3], a, state=JobState.DISCARDED, result=None, error=error),
            _ack(claimed[4], a),  # completed, result 42
            _ack(claimed[5], a, attempt=9),  # stale
        ]
    )
    assert applied == 5
    retry, snooze, cancel, discard, done, untouched = (app.get_job(j.id) for j in jobs)
    assert done is not None and (done.state, done.result, done.errors) == (
        JobState.COMPLETED,
        42,
        [],
    )
    assert done.finished_at is not None
    assert untouched is not None and untouched.state == JobState.EXECUTING
    assert untouched.result is None and untouched.finished_at is None
    assert retry is not None and snooze is not None and cancel is not None and discard is not None
    assert (retry.state, retry.attempt, retry.errors) == (JobState.RETRYABLE, 1, [error])
    assert retry.scheduled_at == pytest.approx(due, abs=0.01)
    assert retry.finished_at is None
    assert (snooze.state, snooze.attempt, snooze.errors) == (JobState.SCHEDULED, 1, [])
    assert snooze.max_attempts == jobs[1].max_attempts + 1
    assert snooze.scheduled_at == pytest.approx(due, abs=0.01)
    assert (cancel.state, cancel.errors) == (JobState.CANCELLED, [error])
    assert cancel.finished_at is not None
    assert (discard.state, discard.errors) == (JobState.DISCARDED, [error])
    assert discard.finished_at is not None


def test_rescue_returns_a_silent_producers_job_and_fences_it(app: errands.App) -> None:
    work = _app_with_worker(app)
    job = work.enqueue(n=1)
    a = _producer(app, "A")
    claimed = _claim(app, a, job.id)

    # A is alive: nothing to rescue
    assert app.engine.rescue(5.0).total == 0
    assert app.get_job(job.id).state == JobState.EXECUTING  # type: ignore[union-attr]

    time.sleep(0.3)
    counts = app.engine.rescue(0.1)  # A has been silent for 0.3 s > 0.1 s
    assert (counts.available, counts.discarded) == (1, 0)
    rescued = app.get_job(job.id)
    assert rescued is not None
    assert rescued.state == JobState.AVAILABLE
    assert rescued.attempt == 1, "rescue keeps the attempt that was spent"
    assert rescued.finished_at is None
    assert len(rescued.errors) == 1 and rescued.errors[0]["attempt"] == 1

    # the old producer's late ack is stale
    assert app.engine.ack([_ack(claimed, a)]) == 0
    assert app.get_job(job.id) == rescued

    # B claims it again (attempt 2); A's ack for attempt 1 still changes nothing
    b = _producer(app, "B")
    again = _claim(app, b, job.id)
    assert again.attempt == 2 and again.attempted_by == b
    assert app.engine.ack([_ack(claimed, a)]) == 0
    assert app.engine.ack([_ack(again, a)]) == 0
    assert app.engine.ack([_ack(again, b)]) == 1
    assert app.get_job(job.id).state == JobState.COMPLETED  # type: ignore[union-attr]


def test_heartbeat_keeps_a_producer_alive(app: errands.App) -> None:
    work = _app_with_worker(app)
    job = work.enqueue(n=1)
    a = _producer(app, "A")
    _claim(app, a, job.id)
    time.sleep(0.3)
    app.engine.heartbeat([a])
    assert app.engine.rescue(0.2).total == 0
    assert app.get_job(job.id).state == JobState.EXECUTING  # type: ignore[union-attr]


def test_unregistered_producer_job_is_rescued(app: errands.App) -> None:
    work = _app_with_worker(app)
    job = work.enqueue(n=1)
    _claim(app, "never-registered", job.id)
    assert app.engine.rescue(30.0).available == 1
    assert app.get_job(job.id).state == JobState.AVAILABLE  # type: ignore[union-attr]


def test_rescue_of_a_spent_job_discards_it(app: errands.App) -> None:
    work = _app_with_worker(app, max_attempts=1)
    job = work.enqueue(n=1)
    a = _producer(app, "A")
    claimed = _claim(app, a, job.id)
    time.sleep(0.3)
    counts = app.engine.rescue(0.1)
    assert (counts.available, counts.discarded) == (0, 1)
    dead = app.get_job(job.id)
    assert dead is not None
    assert dead.state == JobState.DISCARDED
    assert dead.attempt == 1 == dead.max_attempts
    assert dead.finished_at is not None
    assert app.engine.ack([_ack(claimed, a)]) == 0
    assert app.drain() == {}


def test_rescue_producer_hands_back_only_that_producers_jobs(app: errands.App) -> None:
    work = _app_with_worker(app)
    one = work.enqueue(n=1)
    two = work.enqueue(n=2)
    a = _producer(app, "A")
    b = _producer(app, "B")
    _claim(app, a, one.id, limit=1)
    _claim(app, b, two.id, limit=1)
    counts = app.engine.rescue_producer(a)
    assert counts.available == 1
    assert app.get_job(one.id).state == JobState.AVAILABLE  # type: ignore[union-attr]
    assert app.get_job(two.id).state == JobState.EXECUTING  # type: ignore[union-attr]


def test_cancelled_executing_job_ignores_the_late_ack(app: errands.App) -> None:
    work = _app_with_worker(app)
    job = work.enqueue(n=1)
    a = _producer(app, "A")
    claimed = _claim(app, a, job.id)
    cancelled = app.cancel_job(job.id)
    assert cancelled is not None and cancelled.state == JobState.CANCELLED
    assert app.engine.ack([_ack(claimed, a)]) == 0
    assert app.get_job(job.id) == cancelled


def test_release_makes_a_claimed_job_available_as_if_never_claimed(app: errands.App) -> None:
    work = _app_with_worker(app)
    first, second = work.options(priority=1).enqueue(n=1), work.enqueue(n=2)
    a = _producer(app, "A")
    claimed = app.engine.fetch("default", 10, a, [WORKER])
    assert {j.id for j in claimed} == {first.id, second.id}
    assert app.engine.release(claimed, a) == 2
    for job in (first, second):
        stored = app.get_job(job.id)
        assert stored is not None
        assert (stored.state, stored.attempt) == (JobState.AVAILABLE, 0)
        assert (stored.attempted_by, stored.attempted_at) == (None, None)
        assert stored.errors == []
    # Back in the same place in line: claimed again in priority order.
    b = _producer(app, "B")
    assert [j.id for j in app.engine.fetch("default", 10, b, [WORKER])] == [second.id, first.id]


def test_release_gives_a_retried_job_its_attempt_back(app: errands.App) -> None:
    work = _app_with_worker(app, max_attempts=3)
    job = work.enqueue(n=1)
    a = _producer(app, "A")
    first = _claim(app, a, job.id)
    app.engine.ack([Ack(first.id, first.attempt, a, JobState.AVAILABLE)])  # straight back
    second = _claim(app, a, job.id)
    assert second.attempt == 2
    assert app.engine.release([second], a) == 1
    stored = app.get_job(job.id)
    assert stored is not None and (stored.state, stored.attempt) == (JobState.AVAILABLE, 1)
    assert stored.attempted_by is None and stored.attempted_at is not None


def test_release_is_fenced(app: errands.App) -> None:
    """Only the holder of that attempt can hand a job back; a cancelled job stays cancelled."""
    work = _app_with_worker(app)
    kept, cancelled = work.enqueue(n=1), work.enqueue(n=2)
    a = _producer(app, "A")
    claimed = app.engine.fetch("default", 10, a, [WORKER])
    assert app.engine.release(claimed, "someone-else") == 0
    assert app.cancel_job(cancelled.id) is not None
    stale = [j for j in claimed if j.id == kept.id]
    assert app.engine.release([*claimed, replace(stale[0], attempt=7)], a) == 1
    assert app.get_job(kept.id).state == JobState.AVAILABLE  # type: ignore[union-attr]
    assert app.get_job(cancelled.id).state == JobState.CANCELLED  # type: ignore[union-attr]
    assert app.engine.release([], a) == 0
