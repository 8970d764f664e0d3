"""Unique jobs (invariant 5) through the public API, on every engine.

A duplicate enqueue inserts nothing and returns the existing job with
``conflict=True``; a key is free again once its job leaves the unique states.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import Any

import pytest
from tests.support import wait_for

import errands
from errands import InvalidJobError, JobState, Unique
from errands.engines.base import Ack, ProducerInfo


def _count(app: errands.App) -> int:
    return sum(n for states in app.queue_counts().values() for n in states.values())


def _claim(app: errands.App, worker: str) -> errands.Job:
    app.engine.register_producer(ProducerInfo("p1", "node-1", "default", os.getpid()))
    jobs = app.engine.fetch("default", 1, "p1", [worker])
    assert len(jobs) == 1
    return jobs[0]


def test_duplicate_returns_the_existing_job_and_inserts_nothing(app: errands.App) -> None:
    @app.job(unique=Unique())
    def sync(account: int) -> int:
        return account

    first = sync.enqueue(account=1)
    again = sync.enqueue(account=1)
    other = sync.enqueue(account=2)
    assert first.conflict is False and other.conflict is False
    assert again.conflict is True
    assert again.id == first.id and again.args == {"account": 1}
    assert again.state == JobState.AVAILABLE
    assert other.id != first.id
    assert _count(app) == 2
    assert app.get_job(first.id).conflict is False  # type: ignore[union-attr]


def test_key_is_free_again_once_the_job_leaves_the_unique_states(app: errands.App) -> None:
    @app.job(unique=Unique())
    def sync(account: int) -> int:
        return account

    first = sync.enqueue(account=1)
    assert app.drain() == {"completed": 1}
    second = sync.enqueue(account=1)
    assert second.conflict is False and second.id != first.id
    assert sync.enqueue(account=1).id == second.id

    cancelled = app.cancel_job(second.id)
    assert cancelled is not None and cancelled.state == JobState.CANCELLED
    third = sync.enqueue(account=1)
    assert third.conflict is False and third.id not in (first.id, second.id)


def test_every_incomplete_state_holds_the_key(app: errands.App) -> None:
    @app.job(unique=Unique(), name="u.flaky", max_attempts=3)
    def flaky() -> None:
        raise RuntimeError("boom")

    scheduled = flaky.options(schedule_in=3600).enqueue()
    assert scheduled.state == JobState.SCHEDULED
    assert flaky.enqueue().id == scheduled.id  # scheduled holds it

    app.delete_job(scheduled.id)
    job = flaky.enqueue()
    executing = _claim(app, "u.flaky")
    assert executing.id == job.id and executing.state == JobState.EXECUTING
    assert flaky.enqueue().id == job.id  # executing holds it

    error = {"type": "RuntimeError", "message": "boom", "traceback": None, "at": 0, "attempt": 1}
    ack = Ack(job.id, 1, "p1", JobState.RETRYABLE, error=error, scheduled_at=time.time() + 3600)
    assert app.engine.ack([ack]) == 1
    assert app.get_job(job.id).state == JobState.RETRYABLE  # type: ignore[union-attr]
    assert flaky.enqueue().id == job.id  # retryable holds it


def test_finished_states_can_hold_the_key_too(app: errands.App) -> None:
    once = Unique(states=("scheduled", "available", "executing", "retryable", "completed"))

    @app.job(unique=once)
    def welcome(user: int) -> None: ...

    first = welcome.enqueue(user=1)
    assert app.drain() == {"completed": 1}
    again = welcome.enqueue(user=1)
    assert again.conflict is True and again.id == first.id
    assert again.state == JobState.COMPLETED
    assert _count(app) == 1


def test_period_windows_are_aligned_to_multiples_of_the_period(app: errands.App) -> None:
    period = 0.5

    @app.job(unique=Unique(period=period))
    def ping() -> None: ...

    def window() -> int:
        return math.floor(time.time() / period)

    for _ in range(20):  # two enqueues inside one window (retry if a boundary fell between)
        wait_for(lambda: time.time() / period % 1 < 0.5, timeout=5)
        start = window()
        first = ping.enqueue()
        again = ping.enqueue()
        if window() == start:
            break
        app.engine.delete_job(first.id)
    assert again.conflict is True and again.id == first.id

    wait_for(lambda: window() > start, timeout=5)
    later = ping.enqueue()
    assert later.conflict is False and later.id != first.id


def test_keys_pick_the_args_that_count(app: errands.App) -> None:
    @app.job(unique=Unique(keys=["account"]))
    def sync(account: int, reason: str) -> None: ...

    first = sync.enqueue(account=1, reason="signup")
    assert sync.enqueue(account=1, reason="login").id == first.id
    assert sync.enqueue(account=2, reason="signup").id != first.id
    assert _count(app) == 2


def test_fields_choose_queue_and_meta(app: errands.App) -> None:
    @app.job(unique=Unique())
    def by_queue() -> None: ...

    @app.job(unique=Unique(fields=("worker", "args")))
    def any_queue() -> None: ...

    @app.job(unique=Unique(fields=("worker", "meta"), keys=["tenant"]))
    def by_tenant(n: int) -> None: ...

    a = by_queue.options(queue="a").enqueue()
    assert by_queue.options(queue="b").enqueue().id != a.id
    b = any_queue.options(queue="a").enqueue()
    moved = any_queue.options(queue="b").enqueue()
    assert moved.conflict and moved.id == b.id and moved.queue == "a"

    t1 = by_tenant.options(meta={"tenant": 1, "trace": "x"}).enqueue(n=1)
    same = by_tenant.options(meta={"tenant": 1, "trace": "y"}).enqueue(n=2)
    assert same.conflict and same.id == t1.id and same.args == {"n": 1}
    assert by_tenant.options(meta={"tenant": 2}).enqueue(n=1).conflict is False


def test_worker_class_default_and_per_call_unique(app: errands.App) -> None:
    @app.register
    class Sync(errands.Worker, unique=Unique(keys=["id"]), name="u.Sync"):
        def perform(self, job: errands.Job) -> None: ...

    @app.job(name="u.plain")
    def plain(n: int) -> None: ...

    first = app.enqueue(Sync, args={"id": 1})
    assert app.enqueue("u.Sync", args={"id": 1, "x": 2}).id == first.id
    # unique=False turns the class default off for one call.
    assert app.enqueue(Sync, args={"id": 1}, unique=False).conflict is False
    # and a plain worker can be made unique per call, by .options or app.enqueue.
    p = plain.options(unique=Unique()).enqueue(n=1)
    assert app.enqueue(plain, args={"n": 1}, unique=Unique()).id == p.id
    assert plain.enqueue(n=1).id != p.id
    assert _count(app) == 4


def test_replace_debounces_the_due_time(app: errands.App) -> None:
    @app.job(unique=Unique())
    def rebuild(page: int) -> None: ...

    debounce = rebuild.options(replace=("scheduled_at",))
    first = debounce.options(schedule_in=60).enqueue(page=1)
    assert first.state == JobState.SCHEDULED
    later = time.time() + 120
    again = debounce.options(schedule_in=120).enqueue(page=1)
    assert again.conflict and again.id == first.id
    assert again.scheduled_at == pytest.approx(later, abs=2)
    assert app.get_job(first.id).scheduled_at == pytest.approx(later, abs=2)  # type: ignore[union-attr]

    # Without replace the due time stays; with a due time now it becomes available.
    assert rebuild.options(schedule_in=999).enqueue(page=1).scheduled_at == again.scheduled_at
    now = debounce.enqueue(page=1)
    assert now.state == JobState.AVAILABLE and now.scheduled_at <= time.time() + 1
    assert app.drain() == {"completed": 1}
    assert _count(app) == 1


def test_replace_other_fields_and_never_a_running_job(app: errands.App) -> None:
    @app.job(unique=Unique(keys=["page"]), name="u.render")
    def render(page: int, size: int = 0) -> None: ...

    first = render.options(priority=5, meta={"v": 1}, max_attempts=3).enqueue(page=1)
    updated = render.options(
        replace=["priority", "args", "meta", "max_attempts"],
        priority=1,
        meta={"v": 2},
        max_attempts=9,
    ).enqueue(page=1, size=10)
    assert updated.id == first.id and updated.conflict
    stored = app.get_job(first.id)
    assert stored is not None
    assert (stored.priority, stored.args, stored.meta, stored.max_attempts) == (
        1,
        {"page": 1, "size": 10},
        {"v": 2},
        9,
    )

    running = _claim(app, "u.render")
    blocked = render.options(replace=["priority"], priority=7).enqueue(page=1)
    assert blocked.conflict and blocked.id == running.id
    assert blocked.state == JobState.EXECUTING and blocked.priority == 1
    assert app.get_job(first.id).priority == 1  # type: ignore[union-attr]


def test_bulk_mixes_unique_and_plain_and_first_in_batch_wins(app: errands.App) -> None:
    @app.job(unique=Unique())
    def sync(account: int) -> int:
        return account

    @app.job()
    def plain(n: int) -> int:
        return n

    stored = sync.enqueue(account=0)
    batch = [
        sync.new(account=1),
        plain.new(n=1),
        sync.new(account=1),
        sync.new(account=0),
        plain.new(n=1),
        sync.new(account=2),
        sync.options(replace=["priority"], priority=4).new(account=2),
    ]
    jobs = app.enqueue_many(batch)
    assert [job.conflict for job in jobs] == [False, False, True, True, False, False, True]
    assert [job.worker for job in jobs] == [b.worker for b in batch]
    assert jobs[2].id == jobs[0].id and jobs[3].id == stored.id and jobs[6].id == jobs[5].id
    assert jobs[1].id != jobs[4].id
    assert len({job.id for job in jobs}) == 5
    assert _count(app) == 5
    assert app.get_job(jobs[5].id).priority == 4  # type: ignore[union-attr]
    assert app.drain() == {"completed": 5}


def test_big_bulk_of_duplicates(app: errands.App) -> None:
    @app.job(unique=Unique())
    def sync(account: int) -> None: ...

    jobs = app.enqueue_many([sync.new(account=n % 50) for n in range(2_500)])
    assert len(jobs) == 2_500
    assert sum(not job.conflict for job in jobs) == 50
    assert all(jobs[n].id == jobs[n % 50].id for n in range(2_500))
    assert _count(app) == 50


def test_transactional_unique_enqueue(app: errands.App, transactions: Any) -> None:
    app.migrate()
    transactions.create_table()

    @app.job(unique=Unique())
    def ship(order: int) -> None: ...

    committed = ship.enqueue(order=1)
    conn = transactions.open()
    transactions.add_order(conn, 1)
    dup = ship.enqueue(order=1, conn=conn)
    fresh = ship.enqueue(order=2, conn=conn)
    fresh_again = ship.enqueue(order=2, conn=conn)
    assert dup.conflict and dup.id == committed.id
    assert fresh.conflict is False and fresh_again.conflict and fresh_again.id == fresh.id
    transactions.rollback(conn)
    assert app.get_job(fresh.id) is None

    # The rolled-back job held no key: a new one takes it, and commits with the order.
    conn = transactions.open()
    transactions.add_order(conn, 2)
    kept = ship.enqueue(order=2, conn=conn)
    assert kept.conflict is False
    transactions.commit(conn)
    assert transactions.orders() == [2]
    assert ship.enqueue(order=2).id == kept.id
    assert _count(app) == 2


def test_scheduled_duplicates_survive_staging(app: errands.App) -> None:
    @app.job(unique=Unique())
    def later() -> None: ...

    job = later.options(scheduled_at=time.time() + 0.2).enqueue()
    wait_for(lambda: time.time() > job.scheduled_at, timeout=5)
    app.engine.stage(100)
    staged = app.get_job(job.id)
    assert staged is not None and staged.state == JobState.AVAILABLE
    assert later.enqueue().id == job.id


def test_retrying_a_finished_job_whose_key_is_taken_fails_and_changes_nothing(
    app: errands.App,
) -> None:
    @app.job(unique=Unique())
    def sync() -> None: ...

    old = sync.enqueue()
    assert app.drain() == {"completed": 1}
    new = sync.enqueue()
    assert new.id != old.id
    with pytest.raises(errands.DatabaseError):
        app.retry_job(old.id)
    assert app.get_job(old.id).state == JobState.COMPLETED  # type: ignore[union-attr]
    assert app.get_job(new.id).state == JobState.AVAILABLE  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (lambda: {"unique": Unique(period=-1)}, "Unique period"),
        (lambda: {"unique": Unique(fields=("worker", "size"))}, "Unique fields"),
        (lambda: {"unique": Unique(states=("available", "lost"))}, "Unique states"),
        (lambda: {"unique": Unique(keys="id")}, "Unique keys must be a list of strings"),
        (lambda: {"unique": "yes"}, "unique must be an errands.Unique"),
        (
            lambda: {"replace": ("scheduled_at",), "unique": False},
            "replace=['scheduled_at'] needs unique=",
        ),
        (lambda: {"replace": ("queue",), "unique": Unique()}, "replace must name only"),
    ],
)
def test_bad_unique_options_raise_at_the_call_and_insert_nothing(
    app: errands.App, options: Callable[[], dict[str, Any]], fragment: str
) -> None:
    @app.job(unique=Unique())
    def work(n: int) -> None: ...

    kept = work.enqueue(n=1)
    with pytest.raises(InvalidJobError) as info:
        app.enqueue(work, {"n": 1}, **options())
    assert fragment in str(info.value)
    assert [job.id for job in app.list_jobs()] == [kept.id]
    assert app.get_job(kept.id).state == JobState.AVAILABLE  # type: ignore[union-attr]
