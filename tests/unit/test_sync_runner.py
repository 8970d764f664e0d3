"""SyncRunner: ``def`` bodies on pool threads, outcomes handed back to the loop in batches.

Every test drives a real :class:`JobThreads` pool and a real event loop
(``asyncio.run``, as the rest of the suite does); waits poll with deadlines
instead of sleeping.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from tests.support import until, wait_for

import errands
from errands.engines.base import Ack
from errands.job import Job, JobState
from errands.runtime import sync_runner
from errands.runtime.executor import RunawayCounter
from errands.runtime.sync_runner import SyncRunner
from errands.runtime.threads import JobThreads

PRODUCER = "node/q/test"
#: What error_record() calls the timeout: JobTimeoutError is not exported from ``errands``.
TIMEOUT_TYPE = "errands.runtime.executor.JobTimeoutError"

Outcome = tuple[Job, Ack]


def make_job(
    job_id: int,
    args: dict[str, Any] | None = None,
    *,
    attempt: int = 1,
    max_attempts: int = 3,
    timeout: float | None = None,
    worker: str = "t.worker",
) -> Job:
    """A job as ``fetch`` hands it to a producer: claimed, executing, attempt counted."""
    return Job(
        id=job_id,
        worker=worker,
        queue="q",
        args=args or {},
        state=JobState.EXECUTING,
        attempt=attempt,
        max_attempts=max_attempts,
        timeout=timeout,
    )


class Harness:
    """A runner on its own pool, recording every ``deliver`` call."""

    def __init__(self, threads: JobThreads) -> None:
        self.threads = threads
        self.runaways = RunawayCounter()
        self.batches: list[list[Outcome]] = []
        self.loop_thread: int | None = None
        self.runner = SyncRunner(threads, self.runaways, self._deliver)

    def _deliver(self, batch: list[Outcome]) -> None:
        # deliver must always be called on the loop's thread, never a pool thread.
        assert threading.get_ident() == self.loop_thread
        self.batches.append(list(batch))

    def submit(self, job: Job, worker_cls: type[errands.Worker]) -> None:
        self.loop_thread = threading.get_ident()
        self.runner.submit(job, worker_cls, PRODUCER)

    @property
    def outcomes(self) -> list[Outcome]:
        return [outcome for batch in self.batches for outcome in batch]

    def acks(self) -> dict[int, Ack]:
        """Outcomes by job id; fails if any job got more than one."""
        counts = collections.Counter(job.id for job, _ in self.outcomes)
        twice = {job_id: n for job_id, n in counts.items() if n > 1}
        assert not twice, f"jobs delivered more than once: {twice}"
        return {job.id: ack for job, ack in self.outcomes}


@pytest.fixture
def threads() -> Iterator[JobThreads]:
    pool = JobThreads(name="test-sync-runner")
    yield pool
    pool.shutdown(wait=False)


@pytest.fixture
def harness(threads: JobThreads) -> Harness:
    return Harness(threads)


# -- workers -------------------------------------------------------------------


class Double(errands.Worker, name="t.double"):
    """Returns ``2 * n``; raises ValueError when ``fail`` is set."""

    def perform(self, job: errands.Job) -> Any:
        if job.args.get("fail"):
            raise ValueError(f"bad n {job.args['n']}")
        return {"n": job.args["n"] * 2}


# -- 1. many quick jobs: every outcome once, in batches ------------------------------


def test_many_quick_jobs_are_delivered_once_each_with_their_outcome(harness: Harness) -> None:
    count = 200
    jobs = [
        make_job(i, {"n": i, "fail": i % 5 == 0}, attempt=2 if i % 10 == 0 else 1, max_attempts=2)
        for i in range(1, count + 1)
    ]

    async def main() -> None:
        for job in jobs:
            harness.submit(job, Double)
        await until(lambda: len(harness.outcomes) >= count)
        # nothing else is on its way: every body has returned and the loop has run since
        await until(lambda: harness.threads.busy == 0)
        await asyncio.sleep(0.02)

    asyncio.run(main())

    acks = harness.acks()
    assert len(harness.outcomes) == count
    assert sorted(acks) == [job.id for job in jobs]
    for job in jobs:
        ack = acks[job.id]
        assert (ack.id, ack.attempt, ack.producer) == (job.id, job.attempt, PRODUCER)
        n = job.args["n"]
        if not job.args["fail"]:
            assert ack.state is JobState.COMPLETED
            assert ack.result is not None and orjson.loads(ack.result) == {"n": 2 * n}
            assert ack.error is None
            continue
        assert ack.error is not None
        assert ack.error["type"] == "ValueError"
        assert ack.error["message"] == f"bad n {n}"
        assert ack.error["attempt"] == job.attempt
        assert "raise ValueError" in ack.error["traceback"]
        if job.attempt < job.max_attempts:
            assert ack.state is JobState.RETRYABLE
            assert ack.scheduled_at is not None and ack.scheduled_at > time.time() - 5
        else:  # the last attempt failed
            assert ack.state is JobState.DISCARDED
    # batching: 200 outcomes arrived in fewer deliver calls than jobs
    assert len(harness.batches) < count
    assert harness.runaways.count == 0
    assert harness.runner.running == 0


def test_outcomes_that_arrive_while_the_loop_is_busy_come_in_one_call(harness: Harness) -> None:
    count = 200
    gate = threading.Event()

    class Gated(errands.Worker, name="t.gated"):
        def perform(self, job: errands.Job) -> int:
            gate.wait(5)
            return job.id

    async def main() -> None:
        for i in range(1, count + 1):
            harness.submit(make_job(i), Gated)
        gate.set()
        # Block the loop (no await) until every body has returned and reported.
        wait_for(lambda: harness.threads.busy == 0, timeout=5)
        assert harness.batches == []  # only the loop delivers
        await until(lambda: len(harness.outcomes) >= count)

    asyncio.run(main())

    assert len(harness.batches) == 1 < count
    acks = harness.acks()
    assert sorted(acks) == list(range(1, count + 1))
    assert all(ack.state is JobState.COMPLETED for ack in acks.values())
    assert {orjson.loads(ack.result or b"") for ack in acks.values()} == set(acks)


@pytest.mark.parametrize(
    ("raised", "state"),
    [
        (errands.Snooze(30), JobState.SCHEDULED),
        (errands.Cancel("gone"), JobState.CANCELLED),
        (errands.Discard("bad"), JobState.DISCARDED),
    ],
)
def test_outcome_exceptions_are_classified(
    harness: Harness, raised: Exception, state: JobState
) -> None:
    class Raises(errands.Worker, name="t.raises"):
        def perform(self, job: errands.Job) -> None:
            raise raised

    async def main() -> None:
        harness.submit(make_job(1), Raises)
        await until(lambda: harness.outcomes)

    asyncio.run(main())
    assert harness.acks()[1].state is state


# -- 2. a body that runs past its timeout -------------------------------------------


def test_a_body_past_its_timeout_fails_once_and_counts_as_a_runaway(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    started, release, returned = threading.Event(), threading.Event(), threading.Event()
    seen_cancelled: list[bool] = []

    class Stuck(errands.Worker, name="t.stuck", timeout=0.2):
        def perform(self, job: errands.Job) -> str:
            started.set()
            release.wait(5)
            seen_cancelled.append(job.cancelled())
            returned.set()
            return "late"

    job = make_job(7, worker=Stuck.name)

    async def main() -> None:
        harness.submit(job, Stuck)
        assert harness.runner.running == 1
        await until(lambda: harness.outcomes, timeout=3)
        # the attempt is recorded while the body still runs
        assert started.is_set() and not returned.is_set()
        assert job.cancelled()
        assert harness.runaways.count == 1
        assert harness.runner.running == 0
        assert len(harness.outcomes) == 1
        release.set()
        await until(lambda: harness.runaways.count == 0)
        await until(lambda: harness.threads.busy == 0)
        await asyncio.sleep(0.05)  # give a (wrong) late delivery every chance to show up

    with caplog.at_level(logging.WARNING, logger="errands.executor"):
        asyncio.run(main())

    assert returned.is_set() and seen_cancelled == [True]
    assert len(harness.batches) == 1
    [(delivered, ack)] = harness.outcomes
    assert delivered is job
    assert (ack.id, ack.attempt, ack.producer) == (7, 1, PRODUCER)
    assert ack.state is JobState.RETRYABLE
    assert ack.result is None
    assert ack.error is not None
    assert ack.error["type"] == TIMEOUT_TYPE
    assert "ran past its timeout of 0.2s" in ack.error["message"]
    assert harness.runaways.count == 0
    assert any("ran past its timeout" in r.getMessage() for r in caplog.records)


def test_a_timeout_on_the_last_attempt_discards(harness: Harness) -> None:
    release = threading.Event()

    class Stuck(errands.Worker, name="t.stuck-last"):
        def perform(self, job: errands.Job) -> None:
            release.wait(5)

    job = make_job(1, attempt=3, max_attempts=3, timeout=0.1)  # the job's own timeout

    async def main() -> None:
        harness.submit(job, Stuck)
        await until(lambda: harness.outcomes, timeout=3)
        release.set()
        await until(lambda: harness.runaways.count == 0 and harness.threads.busy == 0)
        await asyncio.sleep(0.02)

    asyncio.run(main())
    [(_, ack)] = harness.outcomes
    assert ack.state is JobState.DISCARDED
    assert ack.error is not None and ack.error["type"] == TIMEOUT_TYPE


# -- 3. a body that returns before its timeout -----------------------------------------


def test_a_body_that_returns_in_time_completes_and_is_no_runaway(harness: Harness) -> None:
    timeout = 0.5

    class Quick(errands.Worker, name="t.quick", timeout=timeout):
        def perform(self, job: errands.Job) -> str:
            return "fast"

    job = make_job(3)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        harness.submit(job, Quick)
        # a timer due after the job's own: once it fires, the job's timer has fired too
        after_timeout = asyncio.Event()
        loop.call_later(timeout + 0.05, after_timeout.set)
        await until(lambda: harness.outcomes)
        await asyncio.wait_for(after_timeout.wait(), 5)
        await asyncio.sleep(0.01)

    asyncio.run(main())
    [(_, ack)] = harness.outcomes
    assert ack.state is JobState.COMPLETED
    assert ack.result is not None and orjson.loads(ack.result) == "fast"
    assert harness.runaways.count == 0
    assert not job.cancelled()
    assert harness.runner.running == 0


def test_timeouts_racing_returns_give_exactly_one_outcome_per_job(harness: Harness) -> None:
    """Bodies that end around their timeout: each attempt is either completed or timed out."""
    count = 60
    rng = random.Random(1234)
    naps = {i: rng.uniform(0.0, 0.06) for i in range(1, count + 1)}
    returned: set[int] = set()
    lock = threading.Lock()

    class Racer(errands.Worker, name="t.racer", timeout=0.03):
        def perform(self, job: errands.Job) -> int:
            time.sleep(naps[job.id])
            with lock:
                returned.add(job.id)
            return job.id

    jobs = [make_job(i) for i in naps]

    async def main() -> None:
        for job in jobs:
            harness.submit(job, Racer)
        await until(lambda: len(harness.outcomes) >= count)
        await until(lambda: len(returned) == count and harness.threads.busy == 0)
        await until(lambda: harness.runaways.count == 0)
        await asyncio.sleep(0.1)  # every timer (0.03 s) is long past

    asyncio.run(main())
    acks = harness.acks()
    assert sorted(acks) == sorted(naps)
    for job in jobs:
        ack = acks[job.id]
        if ack.state is JobState.COMPLETED:
            assert not job.cancelled()
        else:
            assert ack.state is JobState.RETRYABLE
            assert ack.error is not None and ack.error["type"] == TIMEOUT_TYPE
            assert job.cancelled()
    assert harness.runaways.count == 0


def test_a_finished_job_leaves_no_timer_on_the_loop(harness: Harness) -> None:
    """A job that returned must not stay referenced by a loop timer until its timeout."""

    class Hourly(errands.Worker, name="t.hourly", timeout=3600):
        def perform(self, job: errands.Job) -> None:
            return None

    pending: list[asyncio.TimerHandle] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for i in range(1, 51):
            harness.submit(make_job(i), Hourly)
        await until(lambda: len(harness.outcomes) >= 50)
        scheduled: list[asyncio.TimerHandle] = loop._scheduled  # type: ignore[attr-defined]
        pending.extend(h for h in scheduled if not h.cancelled())

    asyncio.run(main())
    assert harness.acks() and len(harness.outcomes) == 50
    assert pending == [], f"{len(pending)} timers still hold finished jobs for up to an hour"


# -- 4. context isolation and current_job() ----------------------------------------------

marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker", default="unset")


def test_each_body_runs_in_its_own_context(harness: Harness) -> None:
    seen: dict[int, dict[str, Any]] = {}

    class Marks(errands.Worker, name="t.marks"):
        def perform(self, job: errands.Job) -> None:
            seen[job.id] = {
                "before": marker.get(),
                "current": errands.current_job(),
                "thread": threading.get_ident(),
            }
            marker.set(f"set by job {job.id}")

    first, second = make_job(1), make_job(2)

    async def main() -> None:
        marker.set("loop")
        harness.submit(first, Marks)
        await until(lambda: len(harness.outcomes) == 1 and harness.threads.busy == 0)
        harness.submit(second, Marks)  # the one idle thread takes it
        await until(lambda: len(harness.outcomes) == 2)
        # nothing a body set leaks back into the loop's context either
        assert marker.get() == "loop"
        with pytest.raises(RuntimeError, match="only available inside a running job"):
            errands.current_job()

    asyncio.run(main())
    assert harness.threads.size == 1
    assert seen[1]["thread"] == seen[2]["thread"]
    # each body starts from a copy of the loop's context, not from the previous body's
    assert seen[1]["before"] == "loop"
    assert seen[2]["before"] == "loop"
    assert seen[1]["current"] is first
    assert seen[2]["current"] is second
    assert all(ack.state is JobState.COMPLETED for ack in harness.acks().values())


def test_current_job_of_concurrent_bodies(harness: Harness) -> None:
    count = 20
    barrier = threading.Barrier(count, timeout=5)
    mismatches: list[int] = []

    class Together(errands.Worker, name="t.together"):
        def perform(self, job: errands.Job) -> None:
            barrier.wait()  # every body runs at once, each on its own thread
            if errands.current_job() is not job:
                mismatches.append(job.id)

    async def main() -> None:
        for i in range(1, count + 1):
            harness.submit(make_job(i), Together)
        await until(lambda: len(harness.outcomes) >= count)

    asyncio.run(main())
    assert mismatches == []
    assert all(ack.state is JobState.COMPLETED for ack in harness.acks().values())


# -- 5. SystemExit / KeyboardInterrupt fail the attempt, not the thread --------------------


@pytest.mark.parametrize("kind", [SystemExit, KeyboardInterrupt])
def test_system_exit_and_keyboard_interrupt_fail_only_the_attempt(
    harness: Harness, kind: type[BaseException]
) -> None:
    threads_seen: list[int] = []

    class Exits(errands.Worker, name="t.exits"):
        def perform(self, job: errands.Job) -> str:
            threads_seen.append(threading.get_ident())
            if job.args.get("exit"):
                raise kind("stop")
            return "after"

    async def main() -> None:
        harness.submit(make_job(1, {"exit": True}), Exits)
        await until(lambda: len(harness.outcomes) == 1 and harness.threads.busy == 0)
        harness.submit(make_job(2), Exits)
        await until(lambda: len(harness.outcomes) == 2)

    asyncio.run(main())
    acks = harness.acks()
    assert acks[1].state is JobState.RETRYABLE
    assert acks[1].error is not None and acks[1].error["type"] == kind.__name__
    assert acks[2].state is JobState.COMPLETED
    # the same pool thread ran the next job
    assert harness.threads.size == 1
    assert len(threads_seen) == 2 and threads_seen[0] == threads_seen[1]


# -- 6. JobThreads.run -----------------------------------------------------------------


def test_run_logs_what_the_work_raises_and_keeps_serving(
    threads: JobThreads, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[tuple[str, int]] = []

    def boom() -> None:
        ran.append(("boom", threading.get_ident()))
        raise RuntimeError("kaboom")

    def exits() -> None:
        ran.append(("exit", threading.get_ident()))
        raise SystemExit(3)

    def fine(tag: str) -> None:
        ran.append((tag, threading.get_ident()))

    with caplog.at_level(logging.ERROR, logger="errands.threads"):
        for work, args in ((boom, ()), (exits, ()), (fine, ("ok",))):
            threads.run(work, *args)
            wait_for(lambda: threads.busy == 0, timeout=5)

    assert [tag for tag, _ in ran] == ["boom", "exit", "ok"]
    assert len({ident for _, ident in ran}) == 1 and threads.size == 1
    records = [r for r in caplog.records if r.name == "errands.threads"]
    assert len(records) == 2
    assert all(r.levelno == logging.ERROR and r.exc_info for r in records)
    raised = [r.exc_info[1] for r in records if r.exc_info]
    assert isinstance(raised[0], RuntimeError) and str(raised[0]) == "kaboom"
    assert isinstance(raised[1], SystemExit)


def test_run_and_submit_after_shutdown_are_refused() -> None:
    pool = JobThreads(name="test-shut")
    done = threading.Event()
    pool.run(done.set)
    assert done.wait(5)
    pool.shutdown(wait=True)
    with pytest.raises(RuntimeError, match="shut down"):
        pool.run(done.set)
    with pytest.raises(RuntimeError, match="shut down"):
        pool.submit(print, "x")


# -- one batch, one thread, unless a body is slow -------------------------------


class Gate(errands.Worker, name="t.gate"):
    """Job 1 waits until every other job of its batch has started (on other threads)."""

    started: set[int] = set()
    threads: set[int] = set()
    others = 0

    def perform(self, job: errands.Job) -> int:
        Gate.started.add(job.id)
        Gate.threads.add(threading.get_ident())
        if job.id == 1:
            # Raises (failing the attempt) if the others never start beside this slow one.
            wait_for(lambda: len(Gate.started) == Gate.others + 1, timeout=5.0, every=0.001)
        return job.id


def test_a_slow_body_does_not_hold_back_the_rest_of_its_batch(harness: Harness) -> None:
    Gate.started, Gate.threads, Gate.others = set(), set(), 4

    async def main() -> None:
        harness.loop_thread = threading.get_ident()
        batch = [(make_job(i, worker="t.gate"), Gate) for i in range(1, 6)]
        harness.runner.submit_many(batch, PRODUCER)
        await until(lambda: len(harness.outcomes) == 5)

    asyncio.run(main())
    acks = harness.acks()
    assert {job_id: ack.state for job_id, ack in acks.items()} == dict.fromkeys(
        range(1, 6), JobState.COMPLETED
    )
    assert len(Gate.threads) >= 2  # job 1 kept its thread; the rest were spread out


def test_a_batch_of_quick_bodies_runs_on_one_thread(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Waking a thread per body costs more than a quick body: one thread takes them in turn."""
    # A loaded machine can stall the one thread past 1 ms; the spread is tested elsewhere.
    monkeypatch.setattr(sync_runner, "SPREAD_AFTER", 5.0)
    seen: set[int] = set()

    class Quick(errands.Worker, name="t.quick"):
        def perform(self, job: errands.Job) -> None:
            seen.add(threading.get_ident())

    async def main() -> None:
        harness.loop_thread = threading.get_ident()
        harness.runner.submit_many(
            [(make_job(i, worker="t.quick"), Quick) for i in range(20)], PRODUCER
        )
        await until(lambda: len(harness.outcomes) == 20)

    asyncio.run(main())
    assert len(harness.acks()) == 20
    assert harness.threads.size <= 2, "quick bodies of one batch each woke a thread"


# -- 6. waking the loop: once per batch, never long behind a slow body ---------------


def test_a_batch_of_quick_bodies_wakes_the_loop_once(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The thread wakes the loop when it runs out of bodies, not at the first outcome."""
    monkeypatch.setattr(sync_runner, "SPREAD_AFTER", 5.0)

    class Quick(errands.Worker, name="t.quick-once"):
        def perform(self, job: errands.Job) -> int:
            return job.id

    async def main() -> None:
        harness.loop_thread = threading.get_ident()
        harness.runner.submit_many(
            [(make_job(i, worker="t.quick-once"), Quick) for i in range(1, 21)], PRODUCER
        )
        await until(lambda: len(harness.outcomes) == 20)
        await asyncio.sleep(0.02)  # a second wake-up would have delivered by now

    asyncio.run(main())
    assert [len(batch) for batch in harness.batches] == [20]
    assert sorted(harness.acks()) == list(range(1, 21))


class Blocking(errands.Worker, name="t.blocking"):
    """Job 1 returns at once (or after ``Blocking.first_takes`` s); any other waits for ``gate``."""

    gate = threading.Event()
    first_takes = 0.0

    def perform(self, job: errands.Job) -> int:
        if job.id == 1:
            time.sleep(Blocking.first_takes)
        else:
            Blocking.gate.wait(5)
        return job.id


def test_an_outcome_is_delivered_while_its_thread_runs_a_slow_body(harness: Harness) -> None:
    """Recorded before the spread: the loop collects it when it spreads the batch."""
    Blocking.gate, Blocking.first_takes = threading.Event(), 0.0

    async def main() -> None:
        harness.loop_thread = threading.get_ident()
        batch = [(make_job(i, worker="t.blocking"), Blocking) for i in (1, 2)]
        harness.runner.submit_many(batch, PRODUCER)
        await until(lambda: len(harness.outcomes) == 1)
        assert not Blocking.gate.is_set()  # job 2 still blocks its thread
        Blocking.gate.set()
        await until(lambda: len(harness.outcomes) == 2)

    asyncio.run(main())
    assert [job.id for job, _ in harness.outcomes] == [1, 2]


class NoSpread(JobThreads):
    """A pool that starts only the first batch: threads the spread asks for never come."""

    def run(self, fn: Callable[..., Any], /, *args: Any) -> None:
        if self.size == 0:
            super().run(fn, *args)


def test_an_outcome_recorded_after_the_spread_wakes_the_loop_at_once() -> None:
    """Past the spread no collect is coming: the outcome must not wait for the next body."""
    Blocking.gate, Blocking.first_takes = threading.Event(), 0.02
    pool = NoSpread(name="test-no-spread")
    harness = Harness(pool)

    async def main() -> None:
        harness.loop_thread = threading.get_ident()
        batch = [(make_job(i, worker="t.blocking"), Blocking) for i in (1, 2)]
        harness.runner.submit_many(batch, PRODUCER)
        # Job 1 returns 20 ms in, after the spread (1 ms); its thread then blocks in job 2.
        await until(lambda: len(harness.outcomes) == 1)
        assert not Blocking.gate.is_set()
        Blocking.gate.set()
        await until(lambda: len(harness.outcomes) == 2)

    try:
        asyncio.run(main())
    finally:
        Blocking.gate.set()
        pool.shutdown(wait=False)
    assert [job.id for job, _ in harness.outcomes] == [1, 2]
    assert pool.size == 1  # both bodies ran on the one thread


# -- 7. standby: a thread that finished a body starts the next job itself ----------------


class Counted(errands.Worker, name="t.counted"):
    """Sleeps ``Counted.sleep`` s; records the most bodies that ran at once."""

    lock = threading.Lock()
    now = 0
    most = 0
    sleep = 0.002

    def perform(self, job: errands.Job) -> int:
        with Counted.lock:
            Counted.now += 1
            Counted.most = max(Counted.most, Counted.now)
        time.sleep(Counted.sleep)
        with Counted.lock:
            Counted.now -= 1
        return job.id


class StandbyHarness(Harness):
    """A harness that also records ``on_started`` calls, and checks their order."""

    def __init__(self, threads: JobThreads) -> None:
        super().__init__(threads)
        self.started: list[int] = []
        self.runner = SyncRunner(threads, self.runaways, self._deliver, self._on_started)

    def one_then_standby(self, waiting: Job) -> None:
        """On the loop: start job 1 (it returns at once), with ``waiting`` on standby behind it."""
        self.loop_thread = threading.get_ident()
        self.runner.submit_many([(make_job(1, worker="t.blocking"), Blocking)], PRODUCER)
        self.runner.offer([(waiting, Blocking)], PRODUCER)

    def _on_started(self, started: list[tuple[Job, float]]) -> None:
        assert threading.get_ident() == self.loop_thread
        delivered = {job.id for job, _ in self.outcomes}
        for job, at in started:
            assert job.id not in delivered, "a job's start must be told before its outcome"
            assert at <= time.monotonic()
            self.started.append(job.id)


@pytest.fixture
def standby(threads: JobThreads) -> Iterator[StandbyHarness]:
    """A harness that records ``on_started`` too; ``Blocking``'s gate is opened afterwards."""
    Blocking.gate, Blocking.first_takes = threading.Event(), 0.0
    yield StandbyHarness(threads)
    Blocking.gate.set()


def test_standby_jobs_start_in_freed_slots_never_more_at_once(standby: StandbyHarness) -> None:
    Counted.now = Counted.most = 0
    Counted.sleep = 0.002
    harness = standby

    async def main() -> None:
        harness.loop_thread = threading.get_ident()
        jobs = [(make_job(i, worker="t.counted"), Counted) for i in range(1, 23)]
        harness.runner.submit_many(jobs[:2], PRODUCER)  # two slots
        harness.runner.offer(jobs[2:], PRODUCER)
        assert harness.runner.standby == 20
        await until(lambda: len(harness.outcomes) == 22)

    asyncio.run(main())
    assert sorted(harness.acks()) == list(range(1, 23))
    assert sorted(harness.started) == list(range(3, 23))
    assert Counted.most <= 2, "threads started more standby jobs than bodies they finished"
    assert harness.runner.standby == 0
    assert harness.runner.running == 0


def test_recall_takes_back_the_standby_jobs_no_thread_started(standby: StandbyHarness) -> None:
    harness = standby

    async def main() -> list[int]:
        harness.loop_thread = threading.get_ident()
        harness.runner.submit_many([(make_job(2, worker="t.blocking"), Blocking)], PRODUCER)
        waiting = [(make_job(i, worker="t.blocking"), Blocking) for i in (10, 11, 12)]
        harness.runner.offer(waiting, PRODUCER)
        assert harness.runner.standby_ids() == [10, 11, 12]
        first = [job.id for job in harness.runner.recall(1)]
        rest = [job.id for job in harness.runner.recall()]
        Blocking.gate.set()  # job 2 returns: its thread finds nothing to start
        await until(lambda: len(harness.outcomes) == 1)
        await asyncio.sleep(0.05)
        return first + rest

    assert asyncio.run(main()) == [10, 11, 12]
    assert [job.id for job, _ in harness.outcomes] == [2]
    assert harness.started == []


def test_a_thread_with_no_finished_body_starts_no_standby_job(standby: StandbyHarness) -> None:
    """The spread gives a waiting body a thread; if another took the body meanwhile, that
    thread freed no slot, and must not start a standby job in one."""
    harness = standby
    spread_ran = threading.Event()

    async def main() -> None:
        harness.loop_thread = threading.get_ident()
        harness.runner.offer([(make_job(5, worker="t.double", args={"n": 1}), Double)], PRODUCER)
        work: collections.deque[Any] = collections.deque()
        # A spread thread's first look: the deque is empty, as if another thread took it.
        harness.threads.run(harness.runner._drain, work)
        harness.threads.run(spread_ran.set)
        await asyncio.to_thread(spread_ran.wait, 5)
        await asyncio.sleep(0.05)

    asyncio.run(main())
    assert harness.runner.standby == 1
    assert harness.started == [] and harness.outcomes == []


def test_a_runaway_that_returns_frees_no_slot_for_a_standby_job(standby: StandbyHarness) -> None:
    """Its timeout already freed the slot (the loop filled it): it must not start another."""
    harness = standby

    async def main() -> None:
        harness.loop_thread = threading.get_ident()
        slow = make_job(2, worker="t.blocking", timeout=0.05, max_attempts=1)
        harness.runner.submit_many([(slow, Blocking)], PRODUCER)
        await until(lambda: len(harness.outcomes) == 1)  # timed out
        harness.runner.offer([(make_job(7, worker="t.double", args={"n": 1}), Double)], PRODUCER)
        Blocking.gate.set()  # the runaway returns
        await until(lambda: harness.runaways.count == 0)
        await asyncio.sleep(0.05)

    asyncio.run(main())
    assert harness.runner.standby == 1
    assert harness.started == []


def test_a_standby_job_past_its_timeout_fails_and_counts_as_a_runaway(
    standby: StandbyHarness,
) -> None:
    harness = standby

    async def main() -> None:
        harness.one_then_standby(make_job(2, worker="t.blocking", timeout=0.1, max_attempts=2))
        await until(lambda: len(harness.outcomes) == 2)
        assert harness.runaways.count == 1
        Blocking.gate.set()
        await until(lambda: harness.runaways.count == 0)

    asyncio.run(main())
    acks = harness.acks()
    assert acks[1].state is JobState.COMPLETED
    assert acks[2].state is JobState.RETRYABLE
    assert acks[2].error is not None and acks[2].error["type"] == TIMEOUT_TYPE
    assert harness.started == [2]


def test_outcomes_before_a_slow_standby_job_are_delivered_while_it_runs(
    standby: StandbyHarness,
) -> None:
    harness = standby

    async def main() -> None:
        harness.one_then_standby(make_job(2, worker="t.blocking"))
        await until(lambda: len(harness.outcomes) == 1)
        assert not Blocking.gate.is_set()  # job 2 still blocks the thread
        assert harness.started == [2]
        Blocking.gate.set()
        await until(lambda: len(harness.outcomes) == 2)

    asyncio.run(main())
    assert [job.id for job, _ in harness.outcomes] == [1, 2]


def test_a_loop_filling_freed_slots_and_threads_starting_standby_jobs_never_overfill() -> None:
    """The producer's side of the protocol, many times over: the loop hears of starts
    with outcomes, starts jobs in the slots it sees free (standby ones first) and puts
    the rest on standby; threads start standby jobs in slots they free. No slot is
    ever used twice, so never more than ``limit`` bodies run at once."""
    Counted.now = Counted.most = 0
    Counted.sleep = 0.0
    limit, total = 3, 600
    pool = JobThreads(name="test-standby-stress")
    ready = [(make_job(i, worker="t.counted"), Counted) for i in range(1, total + 1)]
    running: set[int] = set()
    finished: list[int] = []
    workers = {job.id: worker_cls for job, worker_cls in ready}

    def refill() -> None:
        free = limit - len(running)
        starting = [(job, workers[job.id]) for job in runner.recall(max(free, 0))]
        while len(starting) < free and ready:
            starting.append(ready.pop(0))
        if starting:
            running.update(job.id for job, _ in starting)
            runner.submit_many(starting, PRODUCER)
        batch, ready[:] = ready[:7], ready[7:]  # a few on standby at a time
        if batch:
            runner.offer(batch, PRODUCER)

    def on_started(started: list[tuple[Job, float]]) -> None:
        # Told before the outcomes of the bodies whose slots they took.
        running.update(job.id for job, _ in started)

    def deliver(outcomes: list[tuple[Job, Ack]]) -> None:
        for job, _ in outcomes:
            running.discard(job.id)
            finished.append(job.id)
        refill()

    runner = SyncRunner(pool, RunawayCounter(), deliver, on_started)

    async def main() -> None:
        refill()
        await until(lambda: len(finished) == total, timeout=20)

    try:
        asyncio.run(main())
    finally:
        pool.shutdown(wait=False)
    assert sorted(finished) == list(range(1, total + 1))
    assert Counted.most <= limit
