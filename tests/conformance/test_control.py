"""Inspection and control: get_job, list_jobs, retry_job, cancel_job, delete_job, queue_counts."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest

import errands
from errands import JobState
from errands.engines.base import ProducerInfo


def _later() -> dt.datetime:
    return dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)


def _setup(
    app: errands.App,
) -> tuple[errands.JobFunction[..., object], errands.JobFunction[..., object]]:
    @app.job(name="ctl.ok")
    def ok(n: int) -> int:
        return n

    @app.job(name="ctl.fail", max_attempts=1)
    def fail(n: int) -> None:
        raise ValueError(f"fail {n}")

    return ok, fail


def test_get_job(app: errands.App) -> None:
    ok, _ = _setup(app)
    job = ok.enqueue(n=1)
    stored = app.get_job(job.id)
    assert stored is not None
    assert stored == job
    assert app.get_job(job.id + 1000) is None


def test_list_jobs_filters_and_order(app: errands.App) -> None:
    ok, fail = _setup(app)
    a = ok.enqueue(n=1)
    b = ok.options(queue="mail").enqueue(n=2)
    c = fail.enqueue(n=3)
    d = ok.options(scheduled_at=_later()).enqueue(n=4)
    app.drain(queue="default")  # a completes, c is discarded

    everything = app.list_jobs()
    assert [j.id for j in everything] == [d.id, c.id, b.id, a.id]  # newest first
    assert [j.id for j in app.list_jobs(state="completed")] == [a.id]
    assert [j.id for j in app.list_jobs(state="discarded")] == [c.id]
    assert [j.id for j in app.list_jobs(state="scheduled")] == [d.id]
    assert [j.id for j in app.list_jobs(queue="mail")] == [b.id]
    assert [j.id for j in app.list_jobs(worker="ctl.fail")] == [c.id]
    assert [j.id for j in app.list_jobs(worker="ctl.ok", queue="default")] == [d.id, a.id]
    assert [j.id for j in app.list_jobs(state="available", queue="default")] == []
    assert [j.id for j in app.list_jobs(limit=2)] == [d.id, c.id]
    assert app.list_jobs(queue="nope") == []
    assert app.list_jobs(state=JobState.AVAILABLE) == [app.get_job(b.id)]


@pytest.mark.parametrize("bad", [{"state": "running"}, {"limit": 0}, {"limit": -1}, {"limit": "5"}])
def test_list_jobs_bad_filters(app: errands.App, bad: dict[str, object]) -> None:
    with pytest.raises(errands.InvalidJobError):
        app.list_jobs(**bad)  # type: ignore[arg-type]


def test_retry_a_discarded_job_bumps_max_attempts(app: errands.App) -> None:
    _, fail = _setup(app)
    job = fail.enqueue(n=1)
    assert app.drain() == {"discarded": 1}

    retried = app.retry_job(job.id)
    assert retried is not None
    assert retried.state == JobState.AVAILABLE
    assert retried.attempt == 1
    assert retried.max_attempts == 2, "a spent job gets one more attempt"
    assert retried.finished_at is None
    assert len(retried.errors) == 1  # history is kept
    assert app.get_job(job.id) == retried

    assert app.drain() == {"discarded": 1}
    again = app.get_job(job.id)
    assert again is not None and again.attempt == 2 and len(again.errors) == 2


def test_retry_a_retryable_job_keeps_max_attempts(app: errands.App) -> None:
    @app.job(max_attempts=5)
    def flaky() -> None:
        raise ValueError("x")

    job = flaky.enqueue()
    assert app.drain() == {"retryable": 1}
    retried = app.retry_job(job.id)
    assert retried is not None and retried.state == JobState.AVAILABLE
    assert retried.max_attempts == 5 and retried.attempt == 1


def test_retry_completed_and_cancelled_jobs(app: errands.App) -> None:
    ok, _ = _setup(app)
    done = ok.enqueue(n=1)
    app.drain()
    cancelled = ok.enqueue(n=2)
    app.cancel_job(cancelled.id)

    for job_id in (done.id, cancelled.id):
        retried = app.retry_job(job_id)
        assert retried is not None and retried.state == JobState.AVAILABLE
    assert app.drain() == {"completed": 2}
    assert app.get_job(done.id).attempt == 2  # type: ignore[union-attr]
    assert app.get_job(cancelled.id).attempt == 1  # type: ignore[union-attr]


def test_retry_job_refuses_live_jobs(app: errands.App) -> None:
    ok, _ = _setup(app)
    available = ok.enqueue(n=1)
    scheduled = ok.options(scheduled_at=_later()).enqueue(n=2)
    assert app.retry_job(available.id) is None
    assert app.retry_job(scheduled.id) is None
    assert app.get_job(scheduled.id).state == JobState.SCHEDULED  # type: ignore[union-attr]
    assert app.retry_job(10_000) is None


def test_cancel_job(app: errands.App) -> None:
    ok, _ = _setup(app)
    available = ok.enqueue(n=1)
    scheduled = ok.options(scheduled_at=_later()).enqueue(n=2)
    done = ok.enqueue(n=3)
    app.drain()  # runs available and done
    fresh = ok.enqueue(n=4)

    cancelled = app.cancel_job(fresh.id)
    assert cancelled is not None
    assert cancelled.state == JobState.CANCELLED
    assert cancelled.finished_at is not None
    assert app.get_job(fresh.id) == cancelled

    cancelled_scheduled = app.cancel_job(scheduled.id)
    assert cancelled_scheduled is not None and cancelled_scheduled.state == JobState.CANCELLED

    # finished jobs cannot be cancelled and stay as they are
    before = app.get_job(done.id)
    assert app.cancel_job(done.id) is None
    assert app.get_job(done.id) == before
    assert app.cancel_job(available.id) is None
    assert app.cancel_job(fresh.id) is None  # already cancelled
    assert app.cancel_job(10_000) is None

    # a cancelled job never runs
    assert app.drain(with_scheduled=True) == {}
    assert app.get_job(fresh.id).attempt == 0  # type: ignore[union-attr]


def test_cancel_a_retryable_job(app: errands.App) -> None:
    @app.job()
    def flaky() -> None:
        raise ValueError("x")

    job = flaky.enqueue()
    app.drain()
    cancelled = app.cancel_job(job.id)
    assert cancelled is not None and cancelled.state == JobState.CANCELLED
    assert cancelled.errors and cancelled.attempt == 1


def test_delete_job(app: errands.App) -> None:
    ok, _ = _setup(app)
    one = ok.enqueue(n=1)
    two = ok.enqueue(n=2)
    assert app.delete_job(one.id) is True
    assert app.get_job(one.id) is None
    assert app.delete_job(one.id) is False
    assert app.delete_job(10_000) is False
    assert app.get_job(two.id) is not None
    assert app.drain() == {"completed": 1}
    assert app.delete_job(two.id) is True
    assert app.list_jobs() == []


def test_delete_refuses_an_executing_job(app: errands.App) -> None:
    ok, _ = _setup(app)
    job = ok.enqueue(n=1)
    app.engine.register_producer(ProducerInfo("p1", "n", "default", 1))
    claimed = app.engine.fetch("default", 1, "p1", ["ctl.ok"])
    assert [j.id for j in claimed] == [job.id]
    assert app.delete_job(job.id) is False
    assert app.get_job(job.id).state == JobState.EXECUTING  # type: ignore[union-attr]


def test_queue_counts(app: errands.App, make_app: Callable[..., errands.App]) -> None:
    assert app.queue_counts() == {}
    ok, fail = _setup(app)
    ok.enqueue(n=1)
    ok.enqueue(n=2)
    fail.enqueue(n=3)
    ok.options(queue="mail").enqueue(n=4)
    ok.options(queue="mail", scheduled_at=_later()).enqueue(n=5)
    assert app.queue_counts() == {
        "default": {"available": 3},
        "mail": {"available": 1, "scheduled": 1},
    }
    app.drain(queue="default")
    assert app.queue_counts() == {
        "default": {"completed": 2, "discarded": 1},
        "mail": {"available": 1, "scheduled": 1},
    }
    # another app on the same database sees the same counts
    assert make_app().queue_counts() == app.queue_counts()


def test_migrate_is_idempotent_and_keeps_jobs(app: errands.App) -> None:
    ok, _ = _setup(app)
    job = ok.enqueue(n=1)
    version = app.migrate()
    assert version >= 1
    assert app.migrate() == version
    assert app.get_job(job.id) == job


def test_missing_schema_without_auto_migrate(make_app: Callable[..., errands.App]) -> None:
    strict = make_app(auto_migrate=False)
    with pytest.raises(errands.SchemaError, match="migrate"):
        strict.get_job(1)
    with pytest.raises(errands.SchemaError):
        strict.list_jobs()
    make_app().migrate()
    fresh = make_app(auto_migrate=False)
    assert fresh.get_job(1) is None
    assert fresh.list_jobs() == []


def test_close_then_use_again_reconnects(app: errands.App) -> None:
    ok, _ = _setup(app)
    job = ok.enqueue(n=1)
    app.close()
    app.close()  # twice is fine
    assert app.get_job(job.id) == job
    assert app.drain() == {"completed": 1}
    app.close()
    assert app.get_job(job.id).state == JobState.COMPLETED  # type: ignore[union-attr]


def test_retry_job_refuses_an_executing_job(app: errands.App) -> None:
    ok, _ = _setup(app)
    job = ok.enqueue(n=1)
    app.engine.register_producer(ProducerInfo("p1", "n", "default", 1))
    app.engine.fetch("default", 1, "p1", ["ctl.ok"])
    assert app.retry_job(job.id) is None
    assert app.get_job(job.id).state == JobState.EXECUTING  # type: ignore[union-attr]


def test_large_args_round_trip(app: errands.App) -> None:
    @app.job(name="ctl.size")
    def size(blob: str, items: list[int]) -> int:
        return len(blob) + len(items)

    blob = "x" * 1_000_000
    job = size.enqueue(blob=blob, items=list(range(10_000)))
    stored = app.get_job(job.id)
    assert stored is not None and stored.args["blob"] == blob
    assert app.drain() == {"completed": 1}
    assert app.get_job(job.id).result == 1_010_000  # type: ignore[union-attr]


def test_ids_that_cannot_exist(app: errands.App) -> None:
    """An id no row can have is simply not found, on every engine (no driver error)."""
    ok, _ = _setup(app)
    ok.enqueue(n=1)
    for job_id in (0, -1, 2**63 - 1, 2**70):
        assert app.get_job(job_id) is None
        assert app.cancel_job(job_id) is None
        assert app.retry_job(job_id) is None
        assert app.delete_job(job_id) is False
    assert len(app.list_jobs()) == 1
