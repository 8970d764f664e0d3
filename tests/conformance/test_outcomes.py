"""What a job body's return or raise does to the job, run with ``app.drain()``."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from tests.support import run_past_timeout

import errands
from errands import JobState


def _job(app: errands.App, job_id: int) -> errands.Job:
    job = app.get_job(job_id)
    assert job is not None, f"job {job_id} vanished"
    return job


def test_results_are_stored(app: errands.App) -> None:
    @app.job()
    def give(value: Any) -> Any:
        return value

    values: list[Any] = [None, 0, "text", [1, 2], {"a": {"b": None}}, 3.25, False]
    jobs = [give.enqueue(value=v) for v in values]
    assert app.drain() == {"completed": len(values)}
    for job, value in zip(jobs, values, strict=True):
        done = _job(app, job.id)
        assert done.state == JobState.COMPLETED
        assert done.result == value
        assert done.errors == []


def test_priority_order_within_a_queue(app: errands.App) -> None:
    order: list[str] = []

    @app.job()
    def record(label: str) -> None:
        order.append(label)

    for label, priority in [("p5", 5), ("p0-a", 0), ("p9", 9), ("p0-b", 0), ("p3", 3), ("p1", 1)]:
        record.options(priority=priority).enqueue(label=label)
    assert app.drain() == {"completed": 6}
    assert order == ["p0-a", "p0-b", "p1", "p3", "p5", "p9"]


def test_drain_of_one_queue_leaves_the_others(app: errands.App) -> None:
    @app.job()
    def work(n: int) -> int:
        return n

    mail = work.options(queue="mail").enqueue(n=1)
    default = work.enqueue(n=2)
    assert app.drain(queue="mail") == {"completed": 1}
    assert _job(app, mail.id).state == JobState.COMPLETED
    assert _job(app, default.id).state == JobState.AVAILABLE
    assert app.drain() == {"completed": 1}


def test_a_drain_of_every_queue_asks_only_for_queues_with_jobs_ready(app: errands.App) -> None:
    """With no queue given, each round drains the queues that have available jobs:
    found one index look-up per queue, never by counting the finished history."""

    @app.job()
    def work(n: int) -> int:
        return n

    work.options(queue="later", schedule_in=3600).enqueue(n=4)  # scheduled: not ready
    assert app.engine.available_queues() == []
    work.options(queue="zeta").enqueue(n=1)
    work.options(queue="alpha").enqueue(n=2)
    work.options(queue="alpha").enqueue(n=3)
    assert app.engine.available_queues() == ["alpha", "zeta"]
    assert app.drain() == {"completed": 3}
    assert app.engine.available_queues() == []  # completed jobs name no queue
    work.options(queue="mid").enqueue(n=5)
    assert app.engine.available_queues() == ["mid"]


def test_jobs_enqueued_by_a_job_are_drained_too(app: errands.App) -> None:
    seen: list[int] = []

    @app.job()
    def chain(n: int) -> None:
        seen.append(n)
        if n < 3:
            chain.enqueue(n=n + 1)

    chain.enqueue(n=0)
    assert app.drain() == {"completed": 4}
    assert seen == [0, 1, 2, 3]


def test_failure_makes_retryable_with_error_entry_and_backoff(app: errands.App) -> None:
    @app.job(max_attempts=3)
    def flaky() -> None:
        raise ValueError("boom")

    job = flaky.enqueue()
    before = time.time()
    assert app.drain() == {"retryable": 1}
    after = time.time()

    failed = _job(app, job.id)
    assert failed.state == JobState.RETRYABLE
    assert failed.attempt == 1
    assert failed.finished_at is None
    assert len(failed.errors) == 1
    error = failed.errors[0]
    assert set(error) >= {"type", "message", "traceback", "at", "attempt"}
    assert error["type"] == "ValueError"
    assert error["message"] == "boom"
    assert "ValueError: boom" in error["traceback"]
    assert "flaky" in error["traceback"]
    assert error["attempt"] == 1
    assert before - 1 <= error["at"] <= after + 1
    # default backoff: 15 + 2**attempt seconds, +/-10%
    delay = failed.scheduled_at - error["at"]
    assert 17 * 0.9 - 0.5 <= delay <= 17 * 1.1 + 0.5, delay

    # not due yet: a drain does not run it again
    assert app.drain(with_scheduled=True) == {}

    # second attempt (made due by retry_job): attempt 2, backoff 15 + 4
    assert _job(app, job.id).state == JobState.RETRYABLE
    assert app.retry_job(job.id) is not None
    assert app.drain() == {"retryable": 1}
    failed = _job(app, job.id)
    assert failed.attempt == 2 and len(failed.errors) == 2
    assert [e["attempt"] for e in failed.errors] == [1, 2]
    delay = failed.scheduled_at - failed.errors[-1]["at"]
    assert 19 * 0.9 - 0.5 <= delay <= 19 * 1.1 + 0.5, delay

    # third and last attempt: discarded, with every error kept
    assert app.retry_job(job.id) is not None
    assert app.drain() == {"discarded": 1}
    dead = _job(app, job.id)
    assert dead.state == JobState.DISCARDED
    assert dead.attempt == 3 == dead.max_attempts
    assert [e["attempt"] for e in dead.errors] == [1, 2, 3]
    assert dead.finished_at is not None


def test_max_attempts_one_discards_on_first_failure(app: errands.App) -> None:
    @app.job(max_attempts=1)
    def once() -> None:
        raise RuntimeError("nope")

    job = once.enqueue()
    assert app.drain() == {"discarded": 1}
    dead = _job(app, job.id)
    assert dead.state == JobState.DISCARDED and dead.attempt == 1
    assert dead.errors[0]["type"] == "RuntimeError"


def test_async_failure_is_recorded_like_a_sync_one(app: errands.App) -> None:
    @app.job()
    async def broken() -> None:
        await asyncio.sleep(0)
        raise KeyError("missing")

    job = broken.enqueue()
    assert app.drain() == {"retryable": 1}
    failed = _job(app, job.id)
    assert failed.errors[0]["type"] == "KeyError"
    assert "missing" in failed.errors[0]["message"]
    assert "KeyError" in failed.errors[0]["traceback"]


def test_custom_backoff_sees_the_exception(app: errands.App) -> None:
    seen: list[tuple[type[BaseException] | None, int, int]] = []

    class RateLimitedError(Exception):
        pass

    @app.register
    class Api(errands.Worker, max_attempts=5):
        def perform(self, job: errands.Job) -> str:
            if job.attempt == 1:
                raise RateLimitedError("slow down")
            if job.attempt == 2:
                raise ValueError("other")
            return "ok"

        def backoff(self, job: errands.Job) -> float:
            seen.append((type(job.exception), job.attempt, len(job.errors)))
            if isinstance(job.exception, RateLimitedError):
                return 0.2
            return 0.0

    job = app.enqueue(Api)
    assert app.drain() == {"retryable": 1}
    failed = _job(app, job.id)
    assert failed.scheduled_at - failed.errors[-1]["at"] == pytest.approx(0.2, abs=0.1)
    assert seen == [(RateLimitedError, 1, 1)]

    # not due for 0.2 s; once due, drain(with_scheduled=True) stages and runs it, and
    # runs the third attempt in the same drain (backoff 0 makes it due at once)
    assert app.drain(with_scheduled=True) == {}
    time.sleep(0.25)
    assert app.drain(with_scheduled=True) == {"retryable": 1, "completed": 1}
    assert seen == [(RateLimitedError, 1, 1), (ValueError, 2, 2)]
    done = _job(app, job.id)
    assert done.state == JobState.COMPLETED and done.attempt == 3 and done.result == "ok"
    assert [e["type"].rsplit(".", 1)[-1] for e in done.errors] == ["RateLimitedError", "ValueError"]


@pytest.mark.parametrize(
    "bad",
    [float("nan"), "soon", None, -5.0],
    ids=["nan", "str", "none", "negative"],
)
def test_a_bad_backoff_value_still_gives_a_sane_due_time(app: errands.App, bad: Any) -> None:
    """A user's backoff() returning garbage must not corrupt the job or the ack."""

    @app.register
    class Odd(errands.Worker, max_attempts=3):
        def perform(self, job: errands.Job) -> None:
            raise ValueError("fail")

        def backoff(self, job: errands.Job) -> Any:
            return bad

    @app.job()
    def bystander() -> str:
        return "fine"

    job = app.enqueue(Odd)
    other = bystander.enqueue()
    counts = app.drain()
    assert counts == {"retryable": 1, "completed": 1}
    failed = _job(app, job.id)
    assert failed.state == JobState.RETRYABLE
    assert math.isfinite(failed.scheduled_at)
    # never scheduled before the failure itself
    assert failed.scheduled_at >= failed.errors[-1]["at"]
    assert _job(app, other.id).result == "fine"


def test_snooze_reschedules_without_spending_an_attempt(app: errands.App) -> None:
    attempts: list[int] = []

    @app.job(max_attempts=1)
    def waiting() -> str:
        job = errands.current_job()
        attempts.append(job.attempt)
        if len(attempts) == 1:
            raise errands.Snooze(0.2)
        return "done"

    job = waiting.enqueue()
    before = time.time()
    assert app.drain() == {"scheduled": 1}
    snoozed = _job(app, job.id)
    assert snoozed.state == JobState.SCHEDULED
    # attempt still counts claims (it fences acks); one more attempt is allowed
    assert (snoozed.attempt, snoozed.max_attempts) == (1, 2)
    assert snoozed.errors == []
    assert before + 0.1 <= snoozed.scheduled_at <= time.time() + 0.3

    assert app.drain(with_scheduled=True) == {}
    time.sleep(0.25)
    # max_attempts=1 and yet it runs again: the snooze spent no attempt
    assert app.drain(with_scheduled=True) == {"completed": 1}
    done = _job(app, job.id)
    assert done.state == JobState.COMPLETED and done.attempt == 2 and done.result == "done"
    assert attempts == [1, 2]


def test_long_snooze(app: errands.App) -> None:
    @app.job()
    def waiting() -> None:
        raise errands.Snooze(3600)

    job = waiting.enqueue()
    assert app.drain() == {"scheduled": 1}
    snoozed = _job(app, job.id)
    assert snoozed.scheduled_at == pytest.approx(time.time() + 3600, abs=5)
    assert app.drain(with_scheduled=True) == {}


def test_cancel_from_the_body(app: errands.App) -> None:
    @app.job()
    def stop_it() -> None:
        raise errands.Cancel("user deleted")

    job = stop_it.enqueue()
    assert app.drain() == {"cancelled": 1}
    cancelled = _job(app, job.id)
    assert cancelled.state == JobState.CANCELLED
    assert cancelled.finished_at is not None
    assert cancelled.errors and cancelled.errors[-1]["message"] == "user deleted"
    assert "Cancel" in cancelled.errors[-1]["type"]
    assert app.drain(with_scheduled=True) == {}


def test_discard_from_the_body(app: errands.App) -> None:
    @app.job(max_attempts=10)
    def bad_data() -> None:
        raise errands.Discard("unparseable")

    job = bad_data.enqueue()
    assert app.drain() == {"discarded": 1}
    dead = _job(app, job.id)
    assert dead.state == JobState.DISCARDED
    assert dead.attempt == 1 < dead.max_attempts
    assert dead.errors[-1]["message"] == "unparseable"
    assert "Discard" in dead.errors[-1]["type"]
    assert dead.finished_at is not None


@pytest.mark.parametrize(
    "make_result",
    [lambda: {1, 2}, lambda: object(), lambda: float("nan"), lambda: {"x": float("inf")}],
    ids=["set", "object", "nan", "inf"],
)
def test_non_json_return_value_fails_the_attempt(
    app: errands.App, make_result: Callable[[], Any]
) -> None:
    @app.job(max_attempts=2)
    def weird() -> Any:
        return make_result()

    job = weird.enqueue()
    assert app.drain() == {"retryable": 1}
    failed = _job(app, job.id)
    assert failed.state == JobState.RETRYABLE
    assert failed.result is None
    assert failed.errors[-1]["attempt"] == 1
    assert "result" in failed.errors[-1]["message"]
    assert "InvalidJobError" in failed.errors[-1]["type"]


def test_system_exit_in_a_body_fails_the_attempt(app: errands.App) -> None:
    """A body that calls sys.exit() has raised: its attempt fails, the worker goes on."""

    @app.job(max_attempts=2)
    def quitter() -> None:
        raise SystemExit(3)

    @app.job()
    def fine() -> str:
        return "ok"

    job = quitter.enqueue()
    other = fine.enqueue()
    assert app.drain() == {"retryable": 1, "completed": 1}
    failed = _job(app, job.id)
    assert failed.state == JobState.RETRYABLE
    assert "SystemExit" in failed.errors[-1]["type"]
    assert _job(app, other.id).state == JobState.COMPLETED


def test_current_job_inside_sync_and_async_bodies(app: errands.App) -> None:
    seen: dict[str, tuple[int, int, str, dict[str, Any]]] = {}

    @app.job()
    def sync_body(tag: str) -> None:
        job = errands.current_job()
        seen["sync"] = (job.id, job.attempt, job.state, job.args)

    @app.job()
    async def async_body(tag: str) -> None:
        job = errands.current_job()
        seen["async"] = (job.id, job.attempt, job.state, job.args)

    one = sync_body.options(meta={"m": 1}).enqueue(tag="s")
    two = async_body.enqueue(tag="a")
    assert app.drain() == {"completed": 2}
    assert seen["sync"] == (one.id, 1, JobState.EXECUTING, {"tag": "s"})
    assert seen["async"] == (two.id, 1, JobState.EXECUTING, {"tag": "a"})
    with pytest.raises(RuntimeError, match="only available inside a running job"):
        errands.current_job()


def test_drain_times_out_a_sync_body_as_a_worker_does(app: errands.App) -> None:
    """The attempt fails at the timeout; the body sees job.cancelled(); drain goes on."""
    saw_cancel = threading.Event()
    release = threading.Event()

    @app.job()
    def stubborn() -> None:
        run_past_timeout(saw_cancel, release)

    @app.job()
    def after() -> str:
        return "ran after the runaway's attempt was recorded"

    slow = stubborn.options(timeout=0.2, priority=0).enqueue()
    later = after.options(priority=1).enqueue()
    started = time.monotonic()
    try:
        assert app.drain() == {"retryable": 1, "completed": 1}
        assert time.monotonic() - started < 4  # did not wait for the runaway
        assert saw_cancel.wait(5), "job.cancelled() never became true inside the body"
    finally:
        release.set()
    failed = _job(app, slow.id)
    assert failed.state == JobState.RETRYABLE and failed.attempt == 1
    assert failed.errors[-1]["type"].endswith("JobTimeoutError")
    assert _job(app, later.id).result == "ran after the runaway's attempt was recorded"


def test_worker_perform_gets_meta_and_tags(app: errands.App) -> None:
    seen: list[tuple[dict[str, Any], list[str], int]] = []

    @app.register
    class Tagged(errands.Worker, tags=["t1"]):
        def perform(self, job: errands.Job) -> None:
            seen.append((job.meta, job.tags, job.max_attempts))

    app.enqueue(Tagged, meta={"who": "me"}, max_attempts=4)
    assert app.drain() == {"completed": 1}
    assert seen == [({"who": "me"}, ["t1"], 4)]
