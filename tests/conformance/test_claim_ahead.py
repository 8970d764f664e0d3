"""Claiming ahead: a busy producer of brief jobs claims beyond its free slots.

Those jobs are ``executing`` in the database but not started. The runtime must
never start more than ``limit`` at once, and must hand the waiting ones back
(attempt not spent) when the queue pauses, the node stops, the running jobs
turn slow, or a waiting job is cancelled. How many it claims ahead is a few
milliseconds of work, from one batch of ``limit`` to ``AHEAD_MAX`` batches;
most tests here pin it to one batch so that one job stays behind.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

import errands
from errands import JobState
from errands.runtime import claim_ahead

Until = Callable[..., Any]
WARM_UP = 80  # quick jobs that prove the queue quick (the moving average starts slow)
HOLD = 0.05


@pytest.fixture(autouse=True)
def _hold_long(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """Jobs claimed ahead wait for a slot as long as a test needs, unless it tests HOLD.

    Otherwise the HOLD hand-back would also pass the pause, cancel and limit
    tests, which must each show their own path works.
    """
    hold = HOLD if "turn_slow" in request.node.name else 60.0
    monkeypatch.setattr(claim_ahead, "HOLD", hold)
    if "batches_ahead" not in request.node.name:
        monkeypatch.setattr(claim_ahead, "AHEAD_MAX", 1)


class Setup:
    """One queue of limit 1: quick jobs, then a blocking job and two that must wait."""

    def __init__(self, app: errands.App) -> None:
        self.app = app
        self.release = threading.Event()
        self.ran: list[str] = []
        self.producer: Any = None  # set by held()

        @app.job(name="quick")
        def quick() -> None:
            return None

        @app.job(name="block")
        def block() -> None:
            self.ran.append("block")
            self.release.wait(10)

        @app.job(name="later")
        def later(n: int) -> None:
            self.ran.append(f"later-{n}")

        self.quick, self.block, self.later = quick, block, later

    def state(self, job_id: int) -> tuple[JobState, int, str | None]:
        job = self.app.get_job(job_id)
        assert job is not None
        return job.state, job.attempt, job.attempted_by

    @asynccontextmanager
    async def held(
        self, until: Until, warm_up: Any = None, warm_ups: int = WARM_UP
    ) -> AsyncIterator[tuple[errands.Job, errands.Job, errands.Job]]:
        """Run the node until ``block`` runs in the only slot and ``ahead`` is claimed ahead.

        ``warm_ups`` jobs of ``warm_up`` (default: ``quick``) run first, to
        bring the producer's moving average of job times down. Yields (block,
        ahead, behind): with limit 1, one batch ahead is one job, so ``behind``
        stays in the queue. ``self.producer`` is the queue's producer meanwhile.
        """
        job = warm_up or self.quick
        await self.app.aenqueue_many([job.new() for _ in range(warm_ups)])
        node = await self.app.start()
        try:
            await until(lambda: node.outcomes["completed"] >= warm_ups, 20)
            block = await self.block.options(priority=0).aenqueue()
            ahead = await self.later.options(priority=1).aenqueue(n=1)
            behind = await self.later.options(priority=2).aenqueue(n=2)
            self.producer = producer = node.producers["default"]
            await until(lambda: producer.held == [block.id, ahead.id] and self.ran == ["block"], 5)
            yield block, ahead, behind
        finally:
            self.release.set()
            await self.app.stop()


@pytest.fixture
def setup(make_app: Callable[..., errands.App]) -> Setup:
    """The jobs of :class:`Setup` on an app whose one queue runs one job at a time."""
    return Setup(make_app(queues={"default": 1}))


def test_a_quick_queue_claims_ahead_but_never_runs_more_than_its_limit(
    setup: Setup, arun: Callable[..., Any], until: Until
) -> None:

    async def main() -> None:
        async with setup.held(until) as (block, ahead, behind):
            producer = setup.state(block.id)[2]
            assert producer is not None
            assert setup.state(ahead.id) == (JobState.EXECUTING, 1, producer)
            assert setup.state(behind.id) == (JobState.AVAILABLE, 0, None)
            await asyncio.sleep(0.2)
            assert setup.ran == ["block"]  # the one slot is busy: nothing else started
            setup.release.set()
            await until(lambda: len(setup.ran) == 3, 5)

    arun(main())
    assert setup.ran == ["block", "later-1", "later-2"]


def test_a_queue_of_brief_jobs_claims_one_batch_ahead(
    setup: Setup, arun: Callable[..., Any], until: Until
) -> None:
    """Jobs of ~10 ms are not quick, but brief: the next one waits claimed, not a claim away."""

    @setup.app.job(name="brief")
    def brief() -> None:
        time.sleep(0.01)

    async def main() -> None:
        async with setup.held(until, warm_up=brief, warm_ups=60) as (_, ahead, behind):
            assert claim_ahead.QUICK <= setup.producer._job_time < claim_ahead.BRIEF
            assert setup.state(ahead.id)[0] == JobState.EXECUTING
            assert setup.state(behind.id) == (JobState.AVAILABLE, 0, None)
            setup.release.set()
            await until(lambda: len(setup.ran) == 3, 5)

    arun(main())
    assert setup.ran == ["block", "later-1", "later-2"]


def test_a_quick_queue_claims_up_to_ahead_max_batches_ahead(
    make_app: Callable[..., errands.App],
    arun: Callable[..., Any],
    until: Until,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """However quick the jobs, no more than AHEAD_MAX batches of limit are claimed ahead."""
    monkeypatch.setattr(claim_ahead, "AHEAD_MAX", 3)
    monkeypatch.setattr(claim_ahead, "AHEAD", 0.5)  # hundreds of batches' worth: the cap decides
    setup = Setup(make_app(queues={"default": 2}))

    async def main() -> None:
        app = setup.app
        await app.aenqueue_many([setup.quick.new() for _ in range(WARM_UP)])
        node = await app.start()
        try:
            await until(lambda: node.outcomes["completed"] >= WARM_UP, 10)
            # One transaction: the next claim sees all ten.
            jobs = await app.aenqueue_many(
                [setup.block.options(priority=0).new() for _ in range(2)]
                + [setup.later.options(priority=1).new(n=n) for n in range(8)]
            )
            blocks, waiting = jobs[:2], jobs[2:]
            producer = node.producers["default"]
            # Two slots, both busy: 3 batches of 2 are claimed ahead, 2 jobs stay behind.
            await until(lambda: len(producer.held) == 8 and len(setup.ran) == 2, 5)
            await asyncio.sleep(0.2)
            assert setup.ran == ["block", "block"]
            assert sorted(producer.held) == sorted([*(b.id for b in blocks), *producer_ready(node)])
            states = [setup.state(job.id)[0] for job in waiting]
            assert states.count(JobState.EXECUTING) == 6
            assert states.count(JobState.AVAILABLE) == 2
            setup.release.set()
            await until(lambda: len(setup.ran) == 10, 5)
        finally:
            setup.release.set()
            await app.stop()

    arun(main())


def producer_ready(node: Any) -> list[int]:
    """Ids of the jobs the default queue's producer claimed ahead (not started)."""
    producer = node.producers["default"]
    return [job.id for job in producer._ready] + producer._sync.standby_ids()


def test_a_busy_quick_queue_claims_in_large_batches_ahead(
    make_app: Callable[..., errands.App],
    arun: Callable[..., Any],
    until: Until,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Claims wait until the jobs claimed ahead run low, then take many at once."""
    # Wide windows, so a loaded CI host still finds no-op jobs quick enough for the
    # full AHEAD_MAX batches: what is tested is the claim sizes, not the pace.
    monkeypatch.setattr(claim_ahead, "QUICK", 0.05)
    monkeypatch.setattr(claim_ahead, "AHEAD", 0.5)
    app = make_app(queues={"default": 10})

    @app.job(name="quick")
    def quick() -> None:
        return None

    async def main() -> tuple[int, int]:
        await app.aenqueue_many([quick.new() for _ in range(3_000)])
        node = await app.start()
        try:
            await until(lambda: node.outcomes["completed"] >= 3_000, 30)
            producer = node.producers["default"]
            return producer.fetched, producer.claims
        finally:
            await app.stop()

    fetched, claims = arun(main(), timeout=60)
    assert fetched == 3_000
    # Claiming one batch of limit ahead, as before, averaged ~17 jobs a claim here;
    # up to AHEAD_MAX batches, 70-100.
    assert fetched / claims >= 30, (fetched, claims)


def test_pausing_hands_back_the_jobs_claimed_ahead(
    setup: Setup, arun: Callable[..., Any], until: Until
) -> None:
    app = setup.app

    async def main() -> None:
        async with setup.held(until) as (_, ahead, _):
            await asyncio.to_thread(app.pause_queue, "default")
            await until(lambda: setup.state(ahead.id)[0] == JobState.AVAILABLE, 5)
            assert setup.state(ahead.id) == (JobState.AVAILABLE, 0, None)
            setup.release.set()
            await asyncio.sleep(0.3)  # paused: the slot frees, nothing else starts
            assert setup.ran == ["block"]
            await asyncio.to_thread(app.resume_queue, "default")
            await until(lambda: len(setup.ran) == 3, 5)

    arun(main())
    assert setup.ran == ["block", "later-1", "later-2"]


def test_a_pause_stops_threads_starting_the_jobs_claimed_ahead(
    setup: Setup, arun: Callable[..., Any], until: Until
) -> None:
    """A thread that finishes a body starts the next claimed job itself, unless paused."""
    app = setup.app

    async def main() -> None:
        async with setup.held(until) as (_, ahead, _):
            app.pause_queue("default", local=True)  # seen at once: this is the node's loop
            setup.release.set()  # the block's thread is free: it must not start ``ahead``
            await until(lambda: setup.state(ahead.id)[0] == JobState.AVAILABLE, 5)
            await asyncio.sleep(0.2)
            assert setup.ran == ["block"]
            app.resume_queue("default", local=True)
            await until(lambda: len(setup.ran) == 3, 5)

    arun(main())
    assert setup.ran == ["block", "later-1", "later-2"]


def test_scaling_down_stops_threads_starting_jobs_past_the_new_limit(
    make_app: Callable[..., errands.App], arun: Callable[..., Any], until: Until
) -> None:
    app = make_app(queues={"default": 2})
    setup = Setup(app)
    lock = threading.Lock()
    running = {"now": 0, "most": 0}

    @app.job(name="counted")
    def counted() -> None:
        with lock:
            running["now"] += 1
            running["most"] = max(running["most"], running["now"])
        time.sleep(0.03)
        with lock:
            running["now"] -= 1

    async def main() -> None:
        await app.aenqueue_many([setup.quick.new() for _ in range(WARM_UP)])
        node = await app.start()
        try:
            await until(lambda: node.outcomes["completed"] >= WARM_UP, 10)
            await app.aenqueue_many(
                [setup.block.options(priority=0).new() for _ in range(2)]
                + [counted.options(priority=1).new() for _ in range(4)]
            )
            producer = node.producers["default"]
            # Both slots blocked, one batch of two claimed ahead (on standby).
            await until(lambda: setup.ran == ["block", "block"] and len(producer.held) == 4, 5)
            app.scale_queue("default", 1, local=True)
            setup.release.set()  # two threads free at once: only one may start a job
            await until(lambda: node.outcomes["completed"] >= WARM_UP + 6, 10)
        finally:
            setup.release.set()
            await app.stop()

    arun(main())
    assert running["most"] == 1


def test_stopping_hands_back_the_jobs_claimed_ahead_without_spending_an_attempt(
    setup: Setup, arun: Callable[..., Any], until: Until
) -> None:
    app = setup.app

    async def main() -> errands.Job:
        async with setup.held(until) as (_, ahead, _):
            # Stop while the block still runs; it finishes within the grace period.
            asyncio.get_running_loop().call_later(0.3, setup.release.set)
            await app.stop()
            return ahead

    ahead = arun(main())
    stored = app.get_job(ahead.id)
    assert stored is not None
    assert (stored.state, stored.attempt, stored.errors) == (JobState.AVAILABLE, 0, [])
    assert setup.ran == ["block"]
    assert app.drain() == {"completed": 2}


def test_jobs_claimed_ahead_go_back_when_the_running_jobs_turn_slow(
    setup: Setup, arun: Callable[..., Any], until: Until
) -> None:
    """After HOLD s without a free slot, another node should have the waiting job."""

    async def main() -> None:
        async with setup.held(until) as (_, ahead, _):
            await asyncio.sleep(HOLD)
            await until(lambda: setup.state(ahead.id)[0] == JobState.AVAILABLE, 5)
            assert setup.state(ahead.id) == (JobState.AVAILABLE, 0, None)
            for _ in range(30):  # several polls: not claimed ahead again
                await asyncio.sleep(0.01)
                assert setup.state(ahead.id)[0] == JobState.AVAILABLE
            assert setup.ran == ["block"]
            setup.release.set()
            await until(lambda: len(setup.ran) == 3, 5)

    arun(main())
    assert setup.ran == ["block", "later-1", "later-2"]


def test_jobs_claimed_ahead_go_back_when_the_running_jobs_turn_slow_even_between_polls(
    make_app: Callable[..., errands.App], arun: Callable[..., Any], until: Until
) -> None:
    """A timer wakes the producer HOLD s after the claim: no poll needed (this one is 30 s)."""
    setup = Setup(make_app(queues={"default": 1}, poll_interval=30.0))

    async def main() -> float:
        async with setup.held(until) as (_, ahead, _):
            held = time.monotonic()
            await until(lambda: setup.state(ahead.id)[0] == JobState.AVAILABLE, 10)
            return time.monotonic() - held

    assert arun(main()) < 10  # well before the next poll
    assert setup.ran == ["block"]


def test_a_cancelled_job_claimed_ahead_never_runs(
    setup: Setup, arun: Callable[..., Any], until: Until
) -> None:
    app = setup.app

    async def main() -> None:
        async with setup.held(until) as (block, ahead, _):
            await asyncio.to_thread(app.cancel_job, ahead.id)
            producer = app.node.producers["default"]  # type: ignore[union-attr]
            await until(lambda: ahead.id not in producer.held, 5)
            assert block.id in producer.held
            setup.release.set()
            await until(lambda: "later-2" in setup.ran, 5)
            await asyncio.sleep(0.1)

    arun(main())
    assert setup.ran == ["block", "later-2"]


async def _claims_only_free_slots(setup: Setup, until: Until, *, warm_up: bool) -> None:
    """With the only slot busy, the next job stays in the queue (nothing claimed ahead)."""
    app = setup.app
    if warm_up:
        await app.aenqueue_many([setup.quick.new() for _ in range(WARM_UP)])
    node = await app.start()
    try:
        if warm_up:
            await until(lambda: node.outcomes["completed"] >= WARM_UP, 10)
        block = await setup.block.options(priority=0).aenqueue()
        later = await setup.later.options(priority=1).aenqueue(n=1)
        await until(lambda: "block" in setup.ran, 5)
        await asyncio.sleep(0.3)
        assert node.producers["default"].held == [block.id]
        assert setup.state(later.id) == (JobState.AVAILABLE, 0, None)
        setup.release.set()
        await until(lambda: len(setup.ran) == 2, 5)
    finally:
        setup.release.set()
        await app.stop()


def test_a_queue_with_global_limits_claims_only_its_free_slots(
    make_app: Callable[..., errands.App], arun: Callable[..., Any], until: Until
) -> None:
    """Global limits count executing jobs across nodes: nothing is claimed ahead there."""
    setup = Setup(make_app(queues={"default": {"limit": 1, "global_limit": 5}}))
    arun(_claims_only_free_slots(setup, until, warm_up=True))
    assert setup.ran == ["block", "later-1"]


def test_a_slow_queue_claims_only_its_free_slots(
    setup: Setup, arun: Callable[..., Any], until: Until
) -> None:
    """Until jobs prove quick, a producer claims no more than its free slots."""
    arun(_claims_only_free_slots(setup, until, warm_up=False))
    assert setup.ran == ["block", "later-1"]
