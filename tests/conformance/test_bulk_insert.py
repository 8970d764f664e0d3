"""Bulk enqueue on every engine: the returned jobs are the stored ones, in order,
all or nothing, and they wake other processes' workers.

Batches here are big enough for each engine's bulk path (PostgreSQL COPY from 24
jobs, SQLite multi-row INSERTs of up to 512 rows, so several statements from 513)
and sizes straddle those thresholds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from typing import Any

import pytest

import errands
from errands import JobState
from errands.errors import DatabaseError, ErrandsError, InvalidJobError

BIG = 1_500


def _jobs(app: errands.App) -> tuple[Any, Any]:
    @app.job(name="bulk.plain")
    def plain(i: int, text: str = "") -> int:
        return i

    @app.job(name="bulk.tuned", queue="other", priority=3, max_attempts=4, timeout=7)
    def tuned(i: int) -> int:
        return i

    return plain, tuned


def _mixed_batch(plain: Any, tuned: Any, n: int) -> list[errands.NewJob]:
    """Plain jobs, tuned ones, future and past due times, awkward text, in one batch."""
    now = time.time()
    batch = []
    for i in range(n):
        kind = i % 5
        if kind == 0:
            batch.append(plain.new(i=i, text='tab\tnew\nline \\ "quote" é ✓'))
        elif kind == 1:
            batch.append(tuned.options(tags=["a", "b"], meta={"m": i}).new(i=i))
        elif kind == 2:
            # A due time with sub-microsecond digits: stored rounded to the microsecond.
            batch.append(plain.options(scheduled_at=now + 3600 + i * 1e-7).new(i=i))
        elif kind == 3:
            batch.append(tuned.options(scheduled_at=now - 60 - i * 1e-7).new(i=i))
        else:
            batch.append(plain.new(i=i))
    return batch


def _expected_state(new: errands.NewJob) -> JobState:
    future = new.scheduled_at is not None and new.scheduled_at > time.time()
    return JobState.SCHEDULED if future else JobState.AVAILABLE


@pytest.mark.parametrize("n", [2, 23, 24, 25, 511, 512, 513, 1100])
def test_sizes_around_the_bulk_thresholds_return_the_stored_jobs(app: errands.App, n: int) -> None:
    plain, tuned = _jobs(app)
    batch = _mixed_batch(plain, tuned, n)
    jobs = app.enqueue_many(batch)

    assert len(jobs) == n
    ids = [job.id for job in jobs]
    assert ids == sorted(ids) and len(set(ids)) == n, "ids grow in input order"
    assert [job.args for job in jobs] == [new.args for new in batch]
    assert [job.state for job in jobs] == [_expected_state(new) for new in batch]
    for job in jobs:
        assert app.get_job(job.id) == job


def test_big_batch_equals_get_job_in_order(app: errands.App) -> None:
    plain, tuned = _jobs(app)
    batch = _mixed_batch(plain, tuned, BIG)
    before = time.time()
    jobs = app.enqueue_many(batch)

    assert [(job.worker, job.queue) for job in jobs] == [(new.worker, new.queue) for new in batch]
    assert [job.id for job in jobs] == sorted(job.id for job in jobs)
    stored = [app.get_job(job.id) for job in jobs]
    assert stored == jobs
    for new, job in zip(batch, jobs, strict=True):
        assert job.attempt == 0 and job.errors == [] and job.result is None
        assert abs(job.inserted_at - before) < 60, "the database's clock, as a float"
        if new.scheduled_at is None:
            assert job.scheduled_at == job.inserted_at
        else:
            assert abs(job.scheduled_at - new.scheduled_at) < 1e-5
    tuned_job = jobs[1]
    assert (tuned_job.priority, tuned_job.max_attempts, tuned_job.timeout) == (3, 4, 7.0)
    assert type(tuned_job.timeout) is float
    assert tuned_job.tags == ["a", "b"] and tuned_job.meta == {"m": 1}
    counts = app.queue_counts()
    assert sum(sum(states.values()) for states in counts.values()) == BIG


def test_returned_jobs_do_not_share_objects_with_the_batch(app: errands.App) -> None:
    plain, _ = _jobs(app)
    batch = [plain.new(i=i) for i in range(200)]
    jobs = app.enqueue_many(batch)
    jobs[0].args["i"] = 99
    jobs[0].meta["x"] = 1
    assert batch[0].args == {"i": 0}
    assert jobs[1].meta == {} and app.get_job(jobs[0].id).args == {"i": 0}  # type: ignore[union-attr]


def test_a_big_batch_runs(app: errands.App) -> None:
    plain, _ = _jobs(app)
    jobs = app.enqueue_many([plain.new(i=i) for i in range(300)])
    assert app.drain() == {"completed": 300}
    assert app.get_job(jobs[-1].id).result == 299  # type: ignore[union-attr]


def test_big_batch_in_a_rolled_back_transaction_leaves_nothing(
    app: errands.App, transactions: Any
) -> None:
    plain, _ = _jobs(app)
    app.migrate()
    transactions.create_table()
    conn = transactions.open()
    transactions.add_order(conn, 1)
    jobs = app.enqueue_many([plain.new(i=i) for i in range(BIG)], conn=conn)
    assert len(jobs) == BIG
    assert app.get_job(jobs[0].id) is None and app.queue_counts() == {}, "not committed yet"
    transactions.rollback(conn)
    assert app.queue_counts() == {} and transactions.orders() == []

    conn = transactions.open()
    transactions.add_order(conn, 2)
    jobs = app.enqueue_many([plain.new(i=i) for i in range(BIG)], conn=conn)
    transactions.commit(conn)
    assert transactions.orders() == [2]
    assert app.queue_counts() == {"default": {"available": BIG}}
    assert app.get_job(jobs[-1].id) == jobs[-1]


def test_a_bulk_insert_from_another_app_wakes_an_idle_worker(
    make_app: Callable[..., errands.App], arun: Callable[..., Any]
) -> None:
    """Only the wake-up (NOTIFY on PostgreSQL, data_version on SQLite) can start
    these jobs in time: the worker polls every 30 s."""
    worker = make_app(poll_interval=30.0)
    client = make_app()
    for app in (worker, client):
        _jobs(app)

    async def main() -> float:
        await worker.start()
        try:
            await asyncio.sleep(0.5)  # idle after its first look
            sent = time.monotonic()
            plain = client.registry.resolve("bulk.plain")
            batch = [client.new_job(plain, {"i": i}) for i in range(200)]
            jobs = await client.aenqueue_many(batch)
            last = jobs[-1].id
            while (done := worker.get_job(last)) is None or done.state != JobState.COMPLETED:
                assert time.monotonic() - sent < 10, "no wake-up reached the worker"
                await asyncio.sleep(0.02)
            return time.monotonic() - sent
        finally:
            await worker.stop()

    assert arun(main()) < 10


def test_a_future_only_batch_runs_when_due(app: errands.App) -> None:
    plain, _ = _jobs(app)
    due = time.time() + 1.0
    jobs = app.enqueue_many([plain.options(scheduled_at=due).new(i=i) for i in range(100)])
    assert {job.state for job in jobs} == {JobState.SCHEDULED}
    assert app.drain(with_scheduled=True) == {}, "not due yet"
    time.sleep(max(0.0, due - time.time()) + 0.05)
    assert app.drain(with_scheduled=True) == {"completed": 100}


def _bad(new: errands.NewJob, how: str) -> errands.NewJob:
    if how == "json":
        return dataclasses.replace(new, args_json=b'{"i": ')  # cut short: not JSON
    return dataclasses.replace(new, priority=40)  # past the priority CHECK (0-9)


@pytest.mark.parametrize("how", ["json", "priority"])
def test_a_bad_job_in_the_middle_of_a_big_batch_inserts_nothing(app: errands.App, how: str) -> None:
    plain, _ = _jobs(app)
    batch = [plain.new(i=i) for i in range(BIG)]
    batch[BIG // 2 + 7] = _bad(batch[BIG // 2 + 7], how)
    with pytest.raises((DatabaseError, InvalidJobError)) as caught:
        app.enqueue_many(batch)
    assert str(caught.value), "a message saying what failed"
    assert app.list_jobs() == [] and app.queue_counts() == {}
    assert len(app.enqueue_many(batch[:100])) == 100, "the engine is still usable"


def test_a_non_job_in_the_middle_of_a_big_batch_is_refused_before_any_insert(
    app: errands.App,
) -> None:
    plain, _ = _jobs(app)
    batch: list[Any] = [plain.new(i=i) for i in range(BIG)]
    batch[BIG // 2] = {"i": 1}
    with pytest.raises(InvalidJobError, match="enqueue_many takes jobs"):
        app.enqueue_many(batch)
    with pytest.raises(InvalidJobError, match="JSON"):
        app.enqueue_many([*batch[:10], plain.new(i=object()), *batch[10:20]])
    assert app.list_jobs() == []


def test_a_failed_big_batch_in_a_transaction_keeps_the_callers_work_apart(
    app: errands.App, transactions: Any, engine_name: str
) -> None:
    """The failing batch leaves nothing behind; the caller decides about its own work.

    PostgreSQL aborts the whole transaction on an error (the caller rolls back);
    SQLite undoes only the failed statement, so errands undoes its earlier
    statements too, and the caller may still commit its own rows.
    """
    plain, _ = _jobs(app)
    app.migrate()
    transactions.create_table()
    conn = transactions.open()
    transactions.add_order(conn, 1)
    batch = [plain.new(i=i) for i in range(BIG)]
    batch[-3] = _bad(batch[-3], "json")
    with pytest.raises(ErrandsError):
        app.enqueue_many(batch, conn=conn)
    if engine_name == "sqlite":
        transactions.commit(conn)
        assert transactions.orders() == [1]
    else:
        transactions.rollback(conn)
        assert transactions.orders() == []
    assert app.queue_counts() == {}
