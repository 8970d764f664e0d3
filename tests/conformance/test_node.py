"""A running node (``await app.start()`` / ``await app.stop()``): dispatch, limits, timeouts,
scheduling and graceful shutdown.

Each test runs its own event loop with ``arun`` (``asyncio.run`` with a deadline)."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from tests.support import run_past_timeout

import errands
from errands import JobState

Until = Callable[..., Any]


@asynccontextmanager
async def running(
    app: errands.App, queues: list[str] | None = None, grace: float | None = None
) -> AsyncIterator[Any]:
    """Start the app's node for the body of a ``with``; stop it afterwards, whatever happens."""
    node = await app.start(queues)
    try:
        yield node
    finally:
        await app.stop(grace)


def _state(app: errands.App, job_id: int) -> str | None:
    job = app.get_job(job_id)
    return None if job is None else job.state.value


def _all_in(app: errands.App, ids: list[int], state: str) -> bool:
    return all(_state(app, i) == state for i in ids)


def test_jobs_enqueued_after_start_run_promptly(
    app: errands.App, arun: Callable[..., Any], until: Until
) -> None:
    @app.job()
    def double(n: int) -> int:
        return n * 2

    @app.job()
    async def adouble(n: int) -> int:
        return n * 2

    async def main() -> list[float]:
        latencies = []
        async with running(app):
            for enqueue in (
                lambda: adouble.aenqueue(n=1),
                lambda: asyncio.to_thread(double.enqueue, n=2),  # a sync caller's thread
            ):
                start = time.monotonic()
                job_id = (await enqueue()).id
                await until(lambda: _state(app, job_id) == "completed", 3)  # noqa: B023
                latencies.append(time.monotonic() - start)
        return latencies

    latencies = arun(main())
    assert max(latencies) < 1.0, latencies
    assert sorted(j.result for j in app.list_jobs()) == [2, 4]


def test_jobs_inserted_by_another_app_are_picked_up(
    make_app: Callable[..., errands.App], arun: Callable[..., Any], until: Until
) -> None:
    """Another process's insert reaches this node by notification or, at worst, polling."""
    worker_app = make_app()
    web_app = make_app()
    ran: list[int] = []

    @worker_app.job(name="shared.work")
    def work(n: int) -> None:
        ran.append(n)

    @web_app.job(name="shared.work")
    def work_stub(n: int) -> None:
        raise AssertionError("the web app never runs jobs")

    async def main() -> float:
        async with running(worker_app):
            await asyncio.sleep(0.1)
            start = time.monotonic()
            job = await asyncio.to_thread(work_stub.enqueue, n=7)
            await until(lambda: _state(worker_app, job.id) == "completed", 5)
            return time.monotonic() - start

    latency = arun(main())
    assert ran == [7]
    assert latency < 2.0


def _concurrency_probe() -> tuple[Callable[[], None], Callable[[], None], dict[str, int]]:
    lock = threading.Lock()
    stats = {"now": 0, "max": 0, "done": 0}

    def enter() -> None:
        with lock:
            stats["now"] += 1
            stats["max"] = max(stats["max"], stats["now"])

    def leave() -> None:
        with lock:
            stats["now"] -= 1
            stats["done"] += 1

    return enter, leave, stats


def test_queue_limit_is_never_exceeded_sync(
    make_app: Callable[..., errands.App], arun: Callable[..., Any], until: Until
) -> None:
    app = make_app(queues={"limited": 3})
    enter, leave, stats = _concurrency_probe()

    @app.job(queue="limited")
    def busy(i: int) -> None:
        enter()
        time.sleep(0.05)
        leave()

    async def main() -> None:
        async with running(app):
            jobs = await app.aenqueue_many([busy.new(i=i) for i in range(15)])
            await until(lambda: _all_in(app, [j.id for j in jobs], "completed"), 10)

    arun(main())
    assert stats["done"] == 15
    assert stats["max"] == 3, stats


def test_queue_limit_is_never_exceeded_async(
    make_app: Callable[..., errands.App], arun: Callable[..., Any], until: Until
) -> None:
    app = make_app(queues={"limited": 4})
    enter, leave, stats = _concurrency_probe()

    @app.job(queue="limited")
    async def busy(i: int) -> None:
        enter()
        await asyncio.sleep(0.05)
        leave()

    async def main() -> None:
        async with running(app):
            jobs = await app.aenqueue_many([busy.new(i=i) for i in range(20)])
            await until(lambda: _all_in(app, [j.id for j in jobs], "completed"), 10)

    arun(main())
    assert stats["done"] == 20
    assert stats["max"] == 4, stats


def test_several_queues_in_one_node(
    make_app: Callable[..., errands.App], arun: Callable[..., Any], until: Until
) -> None:
    app = make_app(queues={"alpha": 2, "beta": {"limit": 1}})
    ran: list[str] = []

    @app.job()
    def work(label: str) -> None:
        ran.append(label)

    async def main() -> list[errands.Job]:
        async with running(app):
            jobs = [
                await work.options(queue="alpha").aenqueue(label="a1"),
                await work.options(queue="beta").aenqueue(label="b1"),
                await work.options(queue="alpha").aenqueue(label="a2"),
            ]
            ignored = await work.options(queue="gamma").aenqueue(label="g1")
            await until(lambda: _all_in(app, [j.id for j in jobs], "completed"), 5)
            await asyncio.sleep(0.2)  # gamma is not run by this node, however long we wait
            return [*jobs, ignored]

    jobs = arun(main())
    assert sorted(ran) == ["a1", "a2", "b1"]
    gamma = app.get_job(jobs[-1].id)
    assert gamma is not None and gamma.state == JobState.AVAILABLE and gamma.attempt == 0


def test_start_with_a_subset_of_queues(
    make_app: Callable[..., errands.App], arun: Callable[..., Any], until: Until
) -> None:
    app = make_app(queues={"default": 2, "other": 2})

    @app.job()
    def work() -> None:
        return None

    async def main() -> tuple[int, int]:
        async with running(app, queues=["other"]):
            skipped = await work.aenqueue()
            taken = await work.options(queue="other").aenqueue()
            await until(lambda: _state(app, taken.id) == "completed", 5)
            await asyncio.sleep(0.2)
            return skipped.id, taken.id

    skipped_id, _ = arun(main())
    assert _state(app, skipped_id) == "available"


def test_paused_queue_runs_nothing(
    make_app: Callable[..., errands.App], arun: Callable[..., Any]
) -> None:
    app = make_app(queues={"default": {"limit": 2, "paused": True}})

    @app.job()
    def work() -> None:
        raise AssertionError("a paused queue must not run jobs")

    async def main() -> int:
        async with running(app):
            job = await work.aenqueue()
            await asyncio.sleep(0.4)
            return job.id

    job_id = arun(main())
    job = app.get_job(job_id)
    assert job is not None and job.state == JobState.AVAILABLE and job.attempt == 0


@pytest.mark.parametrize("how", ["schedule_in", "scheduled_at"])
def test_scheduled_job_runs_only_after_its_time(
    app: errands.App, arun: Callable[..., Any], until: Until, how: str
) -> None:
    ran_at: list[float] = []

    @app.job()
    def later() -> None:
        ran_at.append(time.time())

    async def main() -> tuple[errands.Job, float]:
        async with running(app):
            await asyncio.sleep(0.05)
            enqueued = time.time()
            if how == "schedule_in":
                job = await later.options(schedule_in=0.3).aenqueue()
            else:
                when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=0.3)
                job = await later.options(scheduled_at=when).aenqueue()
            assert job.state == JobState.SCHEDULED
            await asyncio.sleep(0.15)
            assert ran_at == [], "ran before its time"
            assert _state(app, job.id) == "scheduled"
            await until(lambda: _state(app, job.id) == "completed", 3)
            return job, enqueued

    job, enqueued = arun(main())
    assert len(ran_at) == 1
    assert ran_at[0] >= job.scheduled_at - 0.01
    assert ran_at[0] >= enqueued + 0.29
    assert ran_at[0] - job.scheduled_at < 1.5  # staged promptly (stage_interval 0.05)


def test_retryable_job_is_staged_and_run_again(
    app: errands.App, arun: Callable[..., Any], until: Until
) -> None:
    attempts: list[int] = []

    @app.register
    class Flaky(errands.Worker, max_attempts=3):
        def perform(self, job: errands.Job) -> str:
            attempts.append(job.attempt)
            if job.attempt < 2:
                raise ValueError("first time fails")
            return "second time lucky"

        def backoff(self, job: errands.Job) -> float:
            return 0.1

    async def main() -> int:
        async with running(app):
            job = await app.aenqueue(Flaky)
            await until(lambda: _state(app, job.id) == "completed", 5)
            return job.id

    job = app.get_job(arun(main()))
    assert job is not None
    assert attempts == [1, 2]
    assert job.attempt == 2 and len(job.errors) == 1 and job.result == "second time lucky"


def test_async_jobs_run_concurrently_on_the_loop(
    make_app: Callable[..., errands.App], arun: Callable[..., Any], until: Until
) -> None:
    app = make_app(queues={"default": 10})
    threads: set[int] = set()

    @app.job()
    async def nap(i: int) -> int:
        threads.add(threading.get_ident())
        await asyncio.sleep(0.2)
        return i

    async def main() -> float:
        async with running(app):
            start = time.monotonic()
            jobs = await app.aenqueue_many([nap.new(i=i) for i in range(10)])
            await until(lambda: _all_in(app, [j.id for j in jobs], "completed"), 5)
            return time.monotonic() - start

    elapsed = arun(main())
    assert elapsed < 1.0, f"10 x 0.2 s naps took {elapsed:.2f}s: not concurrent"
    assert len(threads) == 1, "async bodies must all run on the event loop's thread"


def test_sync_jobs_run_off_the_loop(
    app: errands.App, arun: Callable[..., Any], until: Until
) -> None:
    seen: list[int] = []

    @app.job()
    def where() -> None:
        seen.append(threading.get_ident())

    async def main() -> int:
        async with running(app):
            job = await where.aenqueue()
            await until(lambda: _state(app, job.id) == "completed", 3)
            return threading.get_ident()

    loop_thread = arun(main())
    assert seen and seen[0] != loop_thread


def test_async_job_timeout_cancels_the_body(
    app: errands.App, arun: Callable[..., Any], until: Until
) -> None:
    cancelled = threading.Event()

    @app.job(timeout=0.2)
    async def slow() -> None:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def main() -> tuple[int, float]:
        async with running(app):
            start = time.monotonic()
            job = await slow.aenqueue()
            await until(lambda: _state(app, job.id) == "retryable", 3)
            return job.id, time.monotonic() - start

    job_id, elapsed = arun(main())
    job = app.get_job(job_id)
    assert job is not None
    assert job.attempt == 1
    assert "Timeout" in job.errors[-1]["type"]
    assert job.errors[-1]["attempt"] == 1
    assert cancelled.is_set()
    assert elapsed < 2.0


def test_sync_job_timeout_records_failure_and_frees_the_slot(
    make_app: Callable[..., errands.App], arun: Callable[..., Any], until: Until
) -> None:
    app = make_app(queues={"default": 1})
    saw_cancel = threading.Event()
    release = threading.Event()

    @app.job()
    def stubborn() -> None:
        run_past_timeout(saw_cancel, release)

    @app.job()
    def quick() -> str:
        return "ran beside the runaway"

    async def main() -> tuple[int, int]:
        async with running(app, grace=0.5):
            slow = await stubborn.options(timeout=0.2).aenqueue()
            await until(lambda: _state(app, slow.id) == "retryable", 3)
            # the runaway thread still runs, and yet the queue's only slot is free again
            fast = await quick.aenqueue()
            await until(lambda: _state(app, fast.id) == "completed", 3)
            assert not release.is_set()
            release.set()
            return slow.id, fast.id

    try:
        slow_id, fast_id = arun(main())
    finally:
        release.set()
    slow_job = app.get_job(slow_id)
    assert slow_job is not None
    assert slow_job.state == JobState.RETRYABLE and slow_job.attempt == 1
    assert "Timeout" in slow_job.errors[-1]["type"]
    assert saw_cancel.is_set(), "job.cancelled() never became True inside the sync body"
    assert app.get_job(fast_id).result == "ran beside the runaway"  # type: ignore[union-attr]


def test_graceful_stop_waits_for_a_short_running_job(
    app: errands.App, arun: Callable[..., Any], until: Until
) -> None:
    started = threading.Event()

    @app.job()
    def short() -> str:
        started.set()
        time.sleep(0.3)
        return "finished"

    async def main() -> tuple[int, float]:
        await app.start()
        try:
            job = await short.aenqueue()
            await until(started.is_set, 3)
        finally:
            began = time.monotonic()
            await app.stop()  # grace_period is 2 s
        return job.id, time.monotonic() - began

    job_id, stop_took = arun(main())
    job = app.get_job(job_id)
    assert job is not None
    assert job.state == JobState.COMPLETED and job.result == "finished"
    assert stop_took < 2.0
    assert app.node is None


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_job_longer_than_grace_is_handed_back(
    make_app: Callable[..., errands.App],
    arun: Callable[..., Any],
    until: Until,
    wait: Callable[..., None],
    kind: str,
) -> None:
    app = make_app(grace_period=0.3)
    started = threading.Event()
    release = threading.Event()
    runs: list[int] = []

    if kind == "sync":

        @app.job(name="long")
        def long_sync() -> str:
            runs.append(errands.current_job().attempt)
            started.set()
            release.wait(10)
            return "done"
    else:

        @app.job(name="long")
        async def long_async() -> str:
            runs.append(errands.current_job().attempt)
            started.set()
            while not release.is_set():
                await asyncio.sleep(0.01)
            return "done"

    async def main() -> tuple[int, float]:
        await app.start()
        try:
            job = await app.aenqueue("long")
            await until(started.is_set, 3)
        finally:
            began = time.monotonic()
            await app.stop()
        return job.id, time.monotonic() - began

    try:
        job_id, stop_took = arun(main())
    finally:
        release.set()
    assert stop_took < 2.0, "stop must not wait past the grace period"
    if kind == "sync":
        # A thread cannot be stopped: handing the job back while its body may
        # still run would risk two runs at once. It stays executing until the
        # lifeline finds the stopped node's heartbeat old enough.
        stuck = app.get_job(job_id)
        assert stuck is not None and stuck.state == JobState.EXECUTING
        release.set()
        rescue_after = app.settings.rescue_after
        wait(lambda: app.engine.rescue(rescue_after).total == 1, rescue_after + 5)
    job = app.get_job(job_id)
    assert job is not None
    assert job.state == JobState.AVAILABLE, "an unfinished job must be handed back, not lost"
    assert job.attempt == 1
    assert job.finished_at is None

    # handed back, it runs again: with the next attempt number
    assert app.drain() == {"completed": 1}
    done = app.get_job(job_id)
    assert done is not None and done.state == JobState.COMPLETED and done.attempt == 2
    assert runs == [1, 2]


def test_stop_twice_and_stop_before_start_are_harmless(
    app: errands.App, arun: Callable[..., Any]
) -> None:
    async def main() -> None:
        await app.stop()
        await app.start()
        with pytest.raises(RuntimeError):
            await app.start()
        await app.stop()
        await app.stop()

    arun(main())
    assert app.node is None


def test_each_job_runs_exactly_once(
    make_app: Callable[..., errands.App], arun: Callable[..., Any], until: Until
) -> None:
    app = make_app(queues={"default": 5, "other": 3})
    runs: Counter[int] = Counter()
    lock = threading.Lock()

    @app.job()
    def count(i: int) -> None:
        with lock:
            runs[i] += 1

    @app.job()
    async def acount(i: int) -> None:
        with lock:
            runs[i] += 1

    async def main() -> None:
        async with running(app):
            batch = [count.new(i=i) for i in range(40)]
            batch += [acount.options(queue="other").new(i=i) for i in range(40, 80)]
            jobs = await app.aenqueue_many(batch)
            await until(lambda: _all_in(app, [j.id for j in jobs], "completed"), 10)
            await asyncio.sleep(0.2)

    arun(main())
    assert runs == Counter({i: 1 for i in range(80)})


def test_job_enqueued_from_a_running_job(
    app: errands.App, arun: Callable[..., Any], until: Until
) -> None:
    @app.job()
    def child(n: int) -> int:
        return n

    @app.job()
    async def parent() -> int:
        job = await child.aenqueue(n=5)
        return job.id

    async def main() -> int:
        async with running(app):
            job = await parent.aenqueue()
            await until(lambda: _state(app, job.id) == "completed", 3)
            child_id = app.get_job(job.id).result  # type: ignore[union-attr]
            await until(lambda: _state(app, child_id) == "completed", 3)
            return child_id

    child_id = arun(main())
    assert app.get_job(child_id).result == 5  # type: ignore[union-attr]


def test_retry_job_while_running_runs_promptly(
    app: errands.App, arun: Callable[..., Any], until: Until
) -> None:
    runs: list[int] = []

    @app.job(max_attempts=1)
    def once() -> None:
        runs.append(errands.current_job().attempt)
        if len(runs) == 1:
            raise ValueError("first")

    async def main() -> int:
        async with running(app):
            job = await once.aenqueue()
            await until(lambda: _state(app, job.id) == "discarded", 3)
            retried = await asyncio.to_thread(app.retry_job, job.id)
            assert retried is not None and retried.state == JobState.AVAILABLE
            await until(lambda: _state(app, job.id) == "completed", 3)
            return job.id

    job = app.get_job(arun(main()))
    assert job is not None and job.attempt == 2 and runs == [1, 2]


def test_cancel_an_executing_job_makes_its_ack_stale(
    app: errands.App, arun: Callable[..., Any], until: Until
) -> None:
    started = threading.Event()
    release = threading.Event()

    @app.job()
    def long() -> str:
        started.set()
        release.wait(5)
        return "too late"

    async def main() -> tuple[int, int]:
        async with running(app) as node:
            job = await long.aenqueue()
            await until(started.is_set, 3)
            cancelled = await asyncio.to_thread(app.cancel_job, job.id)
            assert cancelled is not None and cancelled.state == JobState.CANCELLED
            release.set()
            await until(lambda: node.completer.stale >= 1, 3, message="the stale ack is counted")
            return job.id, node.completer.stale

    try:
        job_id, stale = arun(main())
    finally:
        release.set()
    job = app.get_job(job_id)
    assert job is not None
    assert job.state == JobState.CANCELLED, "a stale ack must not overwrite the cancellation"
    assert job.result is None
    assert stale == 1


def test_lifeline_rescues_a_dead_producers_job(
    app: errands.App, arun: Callable[..., Any], until: Until
) -> None:
    """Invariant 4: a job held by a producer that stopped heart-beating runs again."""
    from errands.engines.base import ProducerInfo

    ran: list[int] = []

    @app.job()
    def orphan() -> None:
        ran.append(errands.current_job().attempt)

    job = orphan.enqueue()
    engine = app.engine
    engine.register_producer(ProducerInfo("dead-node/default/x", "dead-node", "default", 1))
    claimed = engine.fetch("default", 10, "dead-node/default/x", [orphan.name])
    assert [j.id for j in claimed] == [job.id]
    assert _state(app, job.id) == "executing"

    async def main() -> float:
        start = time.monotonic()
        async with running(app):  # rescue_after = 1 s
            await until(lambda: _state(app, job.id) == "completed", 6)
        return time.monotonic() - start

    elapsed = arun(main())
    assert ran == [2]
    assert elapsed < 5.0
    done = app.get_job(job.id)
    assert done is not None and done.attempt == 2


def test_a_job_longer_than_rescue_after_is_not_rescued_while_its_node_lives(
    app: errands.App, arun: Callable[..., Any], until: Until
) -> None:
    """Heartbeats keep a live producer's long job from being rescued (and run twice)."""
    runs: list[int] = []

    @app.job()
    def long() -> str:
        runs.append(errands.current_job().attempt)
        time.sleep(1.6)  # rescue_after is 1 s
        return "finished"

    async def main() -> int:
        async with running(app):
            job = await long.aenqueue()
            await until(lambda: _state(app, job.id) == "completed", 6)
            await asyncio.sleep(0.2)
            return job.id

    job = app.get_job(arun(main()))
    assert job is not None
    assert runs == [1], "the job was rescued and run again while its node was alive"
    assert job.attempt == 1 and job.errors == [] and job.result == "finished"


def test_two_nodes_on_one_database_share_the_work(
    make_app: Callable[..., errands.App], arun: Callable[..., Any], until: Until
) -> None:
    first = make_app(queues={"default": 3})
    second = make_app(queues={"default": 3})
    runs: list[tuple[str, int]] = []
    lock = threading.Lock()

    @first.job(name="multi.work")
    def on_first(i: int) -> None:
        with lock:
            runs.append(("first", i))
        time.sleep(0.03)

    @second.job(name="multi.work")
    def on_second(i: int) -> None:
        with lock:
            runs.append(("second", i))
        time.sleep(0.03)

    async def main() -> None:
        await first.start()
        try:
            await second.start()
            try:
                jobs = await first.aenqueue_many([on_first.new(i=i) for i in range(40)])
                when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=0.2)
                jobs += await second.aenqueue_many(
                    [on_second.options(scheduled_at=when).new(i=i) for i in range(40, 50)]
                )
                ids = [j.id for j in jobs]
                await until(lambda: _all_in(first, ids, "completed"), 10)
            finally:
                await second.stop()
        finally:
            await first.stop()

    arun(main())
    done = Counter(i for _, i in runs)
    assert done == Counter({i: 1 for i in range(50)}), "a job ran twice or never"
    by_node = Counter(name for name, _ in runs)
    assert by_node["first"] > 0 and by_node["second"] > 0, by_node


def test_pruner_deletes_only_old_finished_jobs(
    make_app: Callable[..., errands.App], arun: Callable[..., Any], until: Until
) -> None:
    app = make_app(prune_after=0.2, prune_interval=0.05)

    @app.job()
    def work(fail: bool) -> None:
        if fail:
            raise ValueError("again")

    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)

    async def main() -> tuple[int, int, int]:
        async with running(app):
            done = await work.aenqueue(fail=False)
            failing = await work.aenqueue(fail=True)
            waiting = await work.options(scheduled_at=later).aenqueue(fail=False)
            await until(lambda: _state(app, done.id) == "completed", 3)
            await until(lambda: app.get_job(done.id) is None, 3, message="pruned")
            await asyncio.sleep(0.3)
            return done.id, failing.id, waiting.id

    _, failing_id, waiting_id = arun(main())
    assert _state(app, failing_id) == "retryable"
    assert _state(app, waiting_id) == "scheduled"


def test_adrain(app: errands.App, arun: Callable[..., Any]) -> None:
    @app.job()
    async def work(n: int) -> int:
        return n + 1

    async def main() -> dict[str, int]:
        await work.aenqueue(n=1)
        return await app.adrain()

    assert arun(main()) == {"completed": 1}
    assert [j.result for j in app.list_jobs()] == [2]


def test_a_long_drain_job_is_not_rescued_by_a_running_node(
    make_app: Callable[..., errands.App], arun: Callable[..., Any], until: Until
) -> None:
    """A script calling app.drain() next to running workers is a live producer too:
    its job must not be rescued and run a second time while drain still runs it."""
    worker_app = make_app()
    script_app = make_app()
    runs: list[tuple[str, int]] = []

    @worker_app.job(name="shared.long")
    def on_worker() -> None:
        runs.append(("worker", errands.current_job().attempt))

    started = threading.Event()

    @script_app.job(name="shared.long")
    def on_script() -> str:
        runs.append(("script", errands.current_job().attempt))
        started.set()
        time.sleep(1.8)  # rescue_after is 1 s
        return "done by the script"

    job = on_script.enqueue()

    async def main() -> dict[str, int]:
        draining = asyncio.create_task(asyncio.to_thread(script_app.drain))
        await until(started.is_set, 3)
        async with running(worker_app):  # it leads, so its lifeline runs
            return await draining

    counts = arun(main())
    assert runs == [("script", 1)], f"the job ran twice: {runs}"
    assert counts == {"completed": 1}
    done = script_app.get_job(job.id)
    assert done is not None and done.result == "done by the script" and done.attempt == 1
