"""Enqueue through the public API: functions, Worker classes, options, bulk, async twins."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any

import pytest

import errands
from errands import JobState


def test_function_job_sync_enqueue_returns_available_job(app: errands.App) -> None:
    @app.job()
    def add(a: int, b: int) -> int:
        return a + b

    before = time.time()
    job = add.enqueue(a=1, b=2)
    after = time.time()

    assert isinstance(job, errands.Job)
    assert isinstance(job.id, int) and job.id > 0
    assert job.state == JobState.AVAILABLE
    assert job.attempt == 0
    assert job.worker == add.name
    assert job.queue == "default"
    assert job.args == {"a": 1, "b": 2}
    assert job.priority == 0
    assert job.max_attempts == 20
    assert job.errors == [] and job.result is None
    assert before - 1 <= job.inserted_at <= after + 1
    assert job.scheduled_at <= after + 1
    assert job.finished_at is None and job.attempted_at is None

    assert app.drain() == {"completed": 1}
    done = app.get_job(job.id)
    assert done is not None
    assert done.state == JobState.COMPLETED
    assert done.result == 3
    assert done.attempt == 1
    assert done.finished_at is not None and done.finished_at >= done.inserted_at


def test_function_job_async_body_runs_and_stores_result(app: errands.App) -> None:
    @app.job()
    async def fetch(url: str) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"url": url, "ok": True}

    job = fetch.enqueue(url="https://example.test")
    assert job.state == JobState.AVAILABLE

    assert app.drain() == {"completed": 1}
    done = app.get_job(job.id)
    assert done is not None and done.state == JobState.COMPLETED
    assert done.result == {"url": "https://example.test", "ok": True}


def test_decorator_options_are_the_defaults(app: errands.App) -> None:
    @app.job(queue="mail", priority=4, max_attempts=5, tags=["email"], name="mail.send")
    def send(to: str) -> None:
        return None

    job = send.enqueue(to="a@b.c")
    assert send.name == "mail.send"
    assert (job.worker, job.queue, job.priority, job.max_attempts, job.tags) == (
        "mail.send",
        "mail",
        4,
        5,
        ["email"],
    )


def test_worker_class_enqueue_by_name_and_by_class(app: errands.App) -> None:
    seen: list[dict[str, Any]] = []

    @app.register
    class Report(errands.Worker, queue="reports", max_attempts=3, name="reports.Report"):
        def perform(self, job: errands.Job) -> str:
            seen.append(dict(job.args))
            return f"report for {job.args['day']}"

    by_name = app.enqueue("reports.Report", args={"day": "2026-01-01"})
    by_class = app.enqueue(Report, args={"day": "2026-01-02"}, priority=1)

    for job in (by_name, by_class):
        assert job.worker == "reports.Report"
        assert job.queue == "reports"
        assert job.max_attempts == 3
        assert job.state == JobState.AVAILABLE
    assert by_name.priority == 0 and by_class.priority == 1

    assert app.drain() == {"completed": 2}
    # priority 0 runs before priority 1
    assert seen == [{"day": "2026-01-01"}, {"day": "2026-01-02"}]
    done = app.get_job(by_class.id)
    assert done is not None and done.result == "report for 2026-01-02"


def test_worker_default_name_is_module_and_qualname(app: errands.App) -> None:
    @app.register
    class Plain(errands.Worker):
        def perform(self, job: errands.Job) -> None:
            return None

    assert Plain.name == f"{__name__}.{Plain.__qualname__}"
    job = app.enqueue(Plain)
    assert job.worker == Plain.name and job.queue == "default" and job.args == {}


def test_per_call_options(app: errands.App) -> None:
    @app.job(queue="mail", priority=5)
    def send(to: str) -> None:
        return None

    now = time.time()
    job = send.options(
        queue="urgent", priority=1, max_attempts=7, tags=["a", "b"], meta={"trace": "xyz", "n": 1}
    ).enqueue(to="x")

    assert job.queue == "urgent"
    assert job.priority == 1
    assert job.max_attempts == 7
    assert job.tags == ["a", "b"]
    assert job.meta == {"trace": "xyz", "n": 1}
    assert job.state == JobState.AVAILABLE
    assert job.scheduled_at <= time.time() + 1

    # options do not leak into the function's later enqueues
    plain = send.enqueue(to="y")
    assert (plain.queue, plain.priority, plain.max_attempts, plain.tags, plain.meta) == (
        "mail",
        5,
        20,
        [],
        {},
    )

    stored = app.get_job(job.id)
    assert stored is not None
    assert (stored.queue, stored.priority, stored.max_attempts, stored.tags, stored.meta) == (
        "urgent",
        1,
        7,
        ["a", "b"],
        {"trace": "xyz", "n": 1},
    )
    assert stored.inserted_at >= now - 1


def test_schedule_in_makes_a_scheduled_job(app: errands.App) -> None:
    @app.job()
    def later() -> None:
        return None

    before = time.time()
    job = later.options(schedule_in=60).enqueue()
    assert job.state == JobState.SCHEDULED
    assert before + 59 <= job.scheduled_at <= time.time() + 61
    assert job.attempt == 0

    # not due: neither drain nor drain(with_scheduled=True) runs it
    assert app.drain() == {}
    assert app.drain(with_scheduled=True) == {}
    stored = app.get_job(job.id)
    assert stored is not None and stored.state == JobState.SCHEDULED

    # the same option given to app.enqueue as a keyword
    other = app.enqueue(later, schedule_in=30)
    assert other.state == JobState.SCHEDULED
    assert other.scheduled_at == pytest.approx(time.time() + 30, abs=2)


def test_scheduled_at_datetime(app: errands.App) -> None:
    @app.job()
    def later() -> None:
        return None

    when = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    job = later.options(scheduled_at=when).enqueue()
    assert job.state == JobState.SCHEDULED
    assert job.scheduled_at == pytest.approx(when.timestamp(), abs=0.01)
    assert job.scheduled_time == pytest.approx(when, abs=dt.timedelta(milliseconds=10))

    # a time in another zone means the same instant
    tz = dt.timezone(dt.timedelta(hours=-5))
    other = later.options(scheduled_at=when.astimezone(tz)).enqueue()
    assert other.scheduled_at == pytest.approx(when.timestamp(), abs=0.01)

    # a time in the past is due now
    past = later.options(scheduled_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)).enqueue()
    assert past.state == JobState.AVAILABLE
    assert app.drain() == {"completed": 1}


def test_enqueue_keyword_options_on_app_enqueue(app: errands.App) -> None:
    @app.job()
    def work(n: int) -> int:
        return n

    when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30)
    job = app.enqueue(work, {"n": 1}, priority=3, scheduled_at=when, meta={"k": "v"})
    assert (job.priority, job.state, job.meta) == (3, JobState.SCHEDULED, {"k": "v"})
    opts = errands.JobOptions(queue="q2", max_attempts=2)
    other = app.enqueue(work.name, {"n": 2}, options=opts)
    assert (other.queue, other.max_attempts) == ("q2", 2)


def test_enqueue_many_returns_jobs_in_order_with_ids(app: errands.App) -> None:
    @app.job()
    def square(n: int) -> int:
        return n * n

    @app.job(queue="other")
    def shout(word: str) -> str:
        return word.upper()

    batch = [square.new(n=n) for n in range(5)]
    batch.insert(2, shout.new(word="hey"))
    batch.append(square.options(scheduled_at=time.time() + 60).new(n=99))
    jobs = app.enqueue_many(batch)

    assert len(jobs) == len(batch)
    ids = [job.id for job in jobs]
    assert len(set(ids)) == len(ids) and all(isinstance(i, int) for i in ids)
    assert ids == sorted(ids)
    assert [job.args for job in jobs] == [item.args for item in batch]
    assert [job.worker for job in jobs] == [item.worker for item in batch]
    assert jobs[2].queue == "other"
    assert jobs[-1].state == JobState.SCHEDULED
    assert all(job.state == JobState.AVAILABLE for job in jobs[:-1])

    assert app.enqueue_many([]) == []
    assert app.drain() == {"completed": 6}
    assert [app.get_job(i).result for i in ids[:2]] == [0, 1]  # type: ignore[union-attr]
    assert app.get_job(ids[2]).result == "HEY"  # type: ignore[union-attr]


def test_enqueue_many_bulk_of_thousands(app: errands.App) -> None:
    @app.job()
    def noop(i: int) -> None:
        return None

    jobs = app.enqueue_many([noop.new(i=i) for i in range(2500)])
    assert [job.args["i"] for job in jobs] == list(range(2500))
    assert len({job.id for job in jobs}) == 2500
    assert app.queue_counts() == {"default": {"available": 2500}}


def test_aenqueue_and_aenqueue_many(app: errands.App) -> None:
    @app.job()
    async def ping(n: int) -> int:
        return n

    async def main() -> list[errands.Job]:
        one = await ping.aenqueue(n=1)
        two = await app.aenqueue(ping, {"n": 2}, priority=2)
        more = await app.aenqueue_many([ping.new(n=3), ping.new(n=4)])
        return [one, two, *more]

    jobs = asyncio.run(main())
    assert [job.args["n"] for job in jobs] == [1, 2, 3, 4]
    assert all(job.state == JobState.AVAILABLE and job.attempt == 0 for job in jobs)
    assert jobs[1].priority == 2
    assert app.drain() == {"completed": 4}
    assert sorted(app.get_job(j.id).result for j in jobs) == [1, 2, 3, 4]  # type: ignore[union-attr]


ROUND_TRIP_ARGS: dict[str, Any] = {
    "text": "héllo wörld ✓ 日本",
    "emoji": "🎉",
    "int": 2**62,
    "neg": -(2**53) - 1,
    "float": 0.1,
    "tiny": 5e-324,
    "big": 1.7976931348623157e308,
    "bool": True,
    "none": None,
    "list": [1, "two", 3.5, None, [], {}],
    "nested": {"a": {"b": {"c": [1, 2, {"d": "e"}]}}},
    "quote": 'he said "hi" \\ and left',
    "newline": "line1\nline2\ttab",
    "empty": "",
}


def test_args_round_trip_exactly(app: errands.App) -> None:
    received: list[dict[str, Any]] = []

    @app.job()
    def echo(**kwargs: Any) -> dict[str, Any]:
        received.append(kwargs)
        return kwargs

    job = echo.enqueue(**ROUND_TRIP_ARGS)
    assert job.args == ROUND_TRIP_ARGS
    stored = app.get_job(job.id)
    assert stored is not None and stored.args == ROUND_TRIP_ARGS
    assert app.drain() == {"completed": 1}
    assert received == [ROUND_TRIP_ARGS]
    done = app.get_job(job.id)
    assert done is not None and done.result == ROUND_TRIP_ARGS
    assert type(done.args["float"]) is float and type(done.args["int"]) is int


def test_nul_character_in_args_round_trips_or_is_refused_cleanly(app: errands.App) -> None:
    """A NUL inside a string is valid JSON; an engine that cannot store it must say so
    with InvalidJobError at enqueue, never a driver error, and never store something else."""

    @app.job()
    def echo(s: str) -> str:
        return s

    try:
        job = echo.enqueue(s="a\x00b")
    except errands.InvalidJobError as exc:
        assert "\\x00" in str(exc) or "NUL" in str(exc).upper() or "null" in str(exc).lower()
        assert app.list_jobs() == []
        return
    stored = app.get_job(job.id)
    assert stored is not None and stored.args == {"s": "a\x00b"}
    assert app.drain() == {"completed": 1}
    assert app.get_job(job.id).result == "a\x00b"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "options",
    [{"schedule_in": 1e12}, {"scheduled_at": 1e13}],
    ids=["schedule_in-31k-years", "scheduled_at-year-318857"],
)
def test_a_due_time_no_engine_can_hold_is_refused(
    app: errands.App, options: dict[str, Any]
) -> None:
    """A due time past year 9999 cannot be a datetime (Job.scheduled_time) nor a
    PostgreSQL timestamp: every engine refuses it at enqueue, and inserts nothing."""

    @app.job()
    def later() -> None:
        return None

    with pytest.raises(errands.InvalidJobError, match=r"scheduled_at|schedule_in"):
        later.options(**options).enqueue()
    assert app.list_jobs() == []


def test_nul_character_in_a_result_is_kept_or_fails_the_attempt(app: errands.App) -> None:
    """A result is stored as given, or the attempt fails; never silently another value."""

    @app.job(max_attempts=1)
    def give() -> str:
        return "a\x00b"

    job = give.enqueue()
    counts = app.drain()
    done = app.get_job(job.id)
    assert done is not None
    if counts == {"completed": 1}:
        assert done.result == "a\x00b", f"result stored as {done.result!r}"
    else:
        assert counts == {"discarded": 1}
        assert done.result is None
