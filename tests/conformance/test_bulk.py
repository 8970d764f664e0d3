"""Bulk helpers: retry_jobs, cancel_jobs, delete_jobs -- filters, counts, what they never touch."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest

import errands
from errands import JobState


def _later() -> dt.datetime:
    return dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)


def _setup(app: errands.App) -> dict[str, list[int]]:
    """Jobs in every state but executing, on two queues and two workers.

    Returns ids by label: ``done``, ``failed``, ``cancelled``, ``waiting``,
    ``later``, ``retrying``, ``mail_failed``.
    """

    @app.job(name="bulk.ok")
    def ok(n: int = 0) -> int:
        return n

    @app.job(name="bulk.fail", max_attempts=1)
    def fail(n: int = 0) -> None:
        raise ValueError(n)

    @app.job(name="bulk.flaky", max_attempts=5)
    def flaky(n: int = 0) -> None:
        raise ValueError(n)

    ids: dict[str, list[int]] = {}
    ids["done"] = [ok.enqueue(n=i).id for i in range(2)]
    ids["failed"] = [fail.enqueue(n=i).id for i in range(3)]
    ids["mail_failed"] = [fail.options(queue="mail").enqueue(n=9).id]
    ids["retrying"] = [flaky.enqueue().id]
    assert app.drain() == {"completed": 2, "discarded": 4, "retryable": 1}
    ids["cancelled"] = [ok.enqueue(n=5).id]
    assert app.cancel_job(ids["cancelled"][0]) is not None
    ids["waiting"] = [ok.enqueue(n=6).id, ok.options(queue="mail").enqueue(n=7).id]
    ids["later"] = [ok.options(scheduled_at=_later()).enqueue(n=8).id]
    return ids


def _states(app: errands.App, ids: list[int]) -> list[str]:
    found = [app.get_job(i) for i in ids]
    return [job.state.value if job is not None else "deleted" for job in found]


def _snapshot(app: errands.App) -> dict[int, tuple[str, int, float | None]]:
    return {j.id: (j.state.value, j.max_attempts, j.finished_at) for j in app.list_jobs(limit=500)}


def test_retry_jobs_by_state_and_queue(app: errands.App) -> None:
    ids = _setup(app)
    before = _snapshot(app)
    assert app.retry_jobs(queue="default", state="discarded") == 3
    assert _states(app, ids["failed"]) == ["available"] * 3
    job = app.get_job(ids["failed"][0])
    assert job is not None
    assert job.max_attempts == 2 and job.finished_at is None, "one more attempt, unfinished"
    after = _snapshot(app)
    untouched = set(before) - set(ids["failed"])
    assert {i: after[i] for i in untouched} == {i: before[i] for i in untouched}
    assert app.drain(queue="default") == {"discarded": 3, "completed": 1}


def test_retry_jobs_default_states_and_worker_filter(app: errands.App) -> None:
    ids = _setup(app)
    assert app.retry_jobs(worker="bulk.ok") == 3, "two completed and one cancelled"
    assert _states(app, ids["done"] + ids["cancelled"]) == ["available"] * 3
    assert _states(app, ids["waiting"] + ids["later"]) == ["available", "available", "scheduled"]
    assert app.retry_jobs() == 5, "every retryable and discarded job left"
    assert app.retry_jobs(state=["discarded", "retryable"]) == 0


def test_cancel_jobs(app: errands.App) -> None:
    ids = _setup(app)
    assert app.cancel_jobs(queue="mail") == 1, "only the waiting mail job is unfinished"
    assert _states(app, ids["waiting"]) == ["available", "cancelled"]
    assert _states(app, ids["mail_failed"]) == ["discarded"], "finished jobs stay as they are"
    assert app.cancel_jobs(state=JobState.SCHEDULED) == 1
    assert _states(app, ids["later"]) == ["cancelled"]
    assert app.cancel_jobs() == 2, "the available default job and the retryable one"
    assert app.cancel_jobs() == 0
    assert app.queue_counts()["default"].keys() == {"completed", "discarded", "cancelled"}


def test_delete_jobs_never_deletes_executing_ones(app: errands.App) -> None:
    ids = _setup(app)
    running = app.engine.fetch("default", 1, "node-1", app.registry.names())
    assert [j.id for j in running] == [ids["waiting"][0]]
    assert app.delete_jobs(worker="bulk.ok", state=["completed", "cancelled"]) == 3
    assert _states(app, ids["done"] + ids["cancelled"]) == ["deleted"] * 3
    assert app.delete_jobs(queue="default") == 5, "every default job but the executing one"
    assert app.queue_counts()["default"] == {"executing": 1}
    assert app.delete_jobs() == 2, "the mail queue's jobs"
    assert app.queue_counts() == {"default": {"executing": 1}}


def test_filters_that_match_nothing_change_nothing(app: errands.App) -> None:
    _setup(app)
    before = _snapshot(app)
    assert app.retry_jobs(queue="nope") == 0
    assert app.cancel_jobs(worker="nope") == 0
    assert app.delete_jobs(queue="mail", worker="bulk.ok", state="completed") == 0
    assert _snapshot(app) == before


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda app: app.retry_jobs(state="executing"), "retry_jobs state must be one of"),
        (lambda app: app.retry_jobs(state="available"), "got 'available'"),
        (lambda app: app.cancel_jobs(state="completed"), "cancel_jobs state must be one of"),
        (lambda app: app.delete_jobs(state="executing"), "delete_jobs state must be one of"),
        (lambda app: app.delete_jobs(state=["completed", "running"]), "got 'running'"),
        (lambda app: app.delete_jobs(state=[]), "non-empty list"),
        (lambda app: app.retry_jobs(state=5), "got 5"),
        (lambda app: app.cancel_jobs(queue=3), "cancel_jobs queue must be a non-empty str"),
        (lambda app: app.retry_jobs(worker=""), "retry_jobs worker must be a non-empty str"),
    ],
)
def test_bad_filters_are_refused_and_change_nothing(
    app: errands.App, call: Callable[[errands.App], int], match: str
) -> None:
    _setup(app)
    before = _snapshot(app)
    with pytest.raises(errands.InvalidJobError, match=match):
        call(app)
    assert _snapshot(app) == before


def test_retry_jobs_skips_unique_jobs_whose_key_is_held(app: errands.App) -> None:
    """Retrying never trips the unique index: held keys and duplicates are skipped."""

    @app.job(name="bulk.once", max_attempts=1, unique=errands.Unique(keys=["k"]))
    def once(k: int) -> None:
        raise ValueError(k)

    @app.job(name="bulk.plain", max_attempts=1)
    def plain() -> None:
        raise ValueError("plain")

    held = once.enqueue(k=1).id
    app.drain()
    holder = once.enqueue(k=1).id  # the key is free again (discarded): a new job holds it
    dup_a = once.enqueue(k=2).id
    assert app.drain() == {"discarded": 2}, "holder and dup_a fail"
    dup_b = once.enqueue(k=2).id
    other = plain.enqueue().id
    assert app.drain() == {"discarded": 2}
    assert _states(app, [held, holder, dup_a, dup_b]) == ["discarded"] * 4

    # held and holder share k=1, dup_a and dup_b k=2: one of each pair is retried.
    assert app.retry_jobs(state="discarded") == 3
    k1, k2 = _states(app, [held, holder]), _states(app, [dup_a, dup_b])
    assert sorted(k1) == sorted(k2) == ["available", "discarded"]
    assert _states(app, [other]) == ["available"]
    assert app.retry_jobs(state="discarded") == 0, "the rest are held by the retried ones"
