"""Global, rate and partitioned limits, enforced in the claim, on every engine.

Most tests claim through ``app.engine.fetch`` with two producer ids, standing
for two nodes, so each claim's answer is exact; the last ones run real nodes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import errands
from errands.engines.base import Ack
from errands.job import JobState
from errands.limits import LimitedClaim, Partition, QueueLimits, RateLimit

Until = Callable[..., Any]


def _setup(app: errands.App) -> None:
    @app.job(name="lim.a", queue="q")
    def a(account: str = "", n: int = 0) -> None: ...

    @app.job(name="lim.b", queue="q")
    def b(account: str = "", n: int = 0) -> None: ...

    app.migrate()


def _claim(app: errands.App, producer: str, limits: QueueLimits | None, n: int = 50) -> list[int]:
    jobs = app.engine.fetch("q", n, producer, app.registry.names(), limits)
    return [job.id for job in jobs]


def _finish(app: errands.App, job_ids: list[int]) -> None:
    acks = []
    for job_id in job_ids:
        job = app.get_job(job_id)
        assert job is not None and job.attempted_by is not None
        acks.append(Ack(job_id, job.attempt, job.attempted_by, JobState.COMPLETED))
    assert app.engine.ack(acks) == len(acks)


def test_global_limit_caps_executing_jobs_across_producers(app: errands.App) -> None:
    _setup(app)
    ids = [j.id for j in app.enqueue_many([app.new_job("lim.a", {"n": i}) for i in range(8)])]
    limits = QueueLimits(global_limit=3)

    first = _claim(app, "node-1", limits)
    assert first == ids[:3], "claims in priority order, only up to the global limit"
    assert _claim(app, "node-2", limits) == [], "a second node finds the queue full"

    _finish(app, first[:2])
    assert _claim(app, "node-2", limits) == ids[3:5], "two slots freed, two claimed"
    assert _claim(app, "node-1", limits) == []
    assert app.queue_counts()["q"]["executing"] == 3


def test_plain_claim_is_unlimited_and_demand_still_caps(app: errands.App) -> None:
    _setup(app)
    app.enqueue_many([app.new_job("lim.a", {"n": i}) for i in range(8)])
    assert len(_claim(app, "node-1", QueueLimits(global_limit=5), n=2)) == 2
    assert len(_claim(app, "node-1", None)) == 6, "without limits every available job is claimed"


def test_partition_by_args_caps_each_account(app: errands.App) -> None:
    _setup(app)
    accounts = ["x", "x", "y", "x", "y", "z", "y"]
    ids = [
        j.id
        for j in app.enqueue_many(
            [app.new_job("lim.a", {"account": a, "n": i}) for i, a in enumerate(accounts)]
        )
    ]
    limits = QueueLimits(global_limit=1, partition=Partition("args", ("account",)))

    first = _claim(app, "node-1", limits)
    assert first == [ids[0], ids[2], ids[5]], "the first job of each account"
    assert _claim(app, "node-2", limits) == []

    _finish(app, [ids[0]])  # account x has room again; y and z do not
    assert _claim(app, "node-2", limits) == [ids[1]]


def test_partition_by_args_with_two_keys_and_missing_key(app: errands.App) -> None:
    _setup(app)
    new = app.new_job
    jobs = app.enqueue_many(
        [
            new("lim.a", {"account": "x", "n": 1}),
            new("lim.a", {"account": "x", "n": 2}),
            new("lim.a", {"account": "x", "n": 1}),  # same pair as the first
            new("lim.a", {}),  # neither key: its own partition (null, null)
            new("lim.a", {}),
        ]
    )
    ids = [j.id for j in jobs]
    limits = QueueLimits(global_limit=1, partition=Partition("args", ("account", "n")))
    assert _claim(app, "node-1", limits) == [ids[0], ids[1], ids[3]]


def test_partition_by_worker(app: errands.App) -> None:
    _setup(app)
    jobs = app.enqueue_many(
        [app.new_job("lim.a", {"n": i}) for i in range(3)]
        + [app.new_job("lim.b", {"n": i}) for i in range(3)]
    )
    ids = [j.id for j in jobs]
    limits = QueueLimits(global_limit=2, partition=Partition("worker"))
    assert _claim(app, "node-1", limits) == [ids[0], ids[1], ids[3], ids[4]]
    assert _claim(app, "node-2", limits) == []


def test_rate_limit_counts_starts_in_the_window(app: errands.App, wait: Until) -> None:
    _setup(app)
    ids = [j.id for j in app.enqueue_many([app.new_job("lim.a", {"n": i}) for i in range(6)])]
    limits = QueueLimits(rate_limit=RateLimit(2, 0.6))

    started = time.monotonic()
    first = _claim(app, "node-1", limits)
    assert first == ids[:2]
    _finish(app, first)  # finished jobs still count: they started in the window
    assert _claim(app, "node-2", limits) == []

    second = wait(lambda: _claim(app, "node-2", limits), 5, message="the window to slide")
    assert time.monotonic() - started >= 0.55, "no new start before the window passed"
    assert second == ids[2:4]


def test_rate_limit_per_partition(app: errands.App) -> None:
    _setup(app)
    accounts = ["x", "x", "x", "y", "y", "y"]
    ids = [j.id for j in app.enqueue_many([app.new_job("lim.a", {"account": a}) for a in accounts])]
    limits = QueueLimits(rate_limit=RateLimit(2, 60), partition=Partition("args", ("account",)))
    first = _claim(app, "node-1", limits)
    assert first == [ids[0], ids[1], ids[3], ids[4]]
    _finish(app, first)
    assert _claim(app, "node-2", limits) == [], "finished, but started within the minute"


def test_global_and_rate_limit_together(app: errands.App) -> None:
    _setup(app)
    app.enqueue_many([app.new_job("lim.a", {"n": i}) for i in range(10)])
    both = QueueLimits(global_limit=4, rate_limit=RateLimit(6, 60))
    first = _claim(app, "node-1", both)
    assert len(first) == 4, "the global limit is the tighter one"
    _finish(app, first)
    assert len(_claim(app, "node-2", both)) == 2, "then the rate limit: 6 starts a minute"
    assert _claim(app, "node-1", both) == []


def test_rate_limit_counts_only_the_starts_it_admitted(app: errands.App) -> None:
    """Starts by claims that do not apply the rate limit are not in its window.

    Only a rate-limited claim records the start it counts (schema v6), so plain
    claims and acks, the hot path of every other queue, keep no index for it.
    """
    _setup(app)
    app.enqueue_many([app.new_job("lim.a", {"n": i}) for i in range(8)])
    plain = _claim(app, "node-1", None, n=2)
    global_only = _claim(app, "node-1", QueueLimits(global_limit=10), n=2)
    _finish(app, plain + global_only)
    rate = QueueLimits(rate_limit=RateLimit(2, 60))
    assert len(_claim(app, "node-2", rate)) == 2, "four earlier starts, none rate-limited"
    assert _claim(app, "node-2", rate) == []


def test_releasing_a_first_attempt_gives_its_rate_start_back(app: errands.App) -> None:
    _setup(app)
    app.enqueue_many([app.new_job("lim.a", {"n": i}) for i in range(3)])
    rate = QueueLimits(rate_limit=RateLimit(1, 60))
    claimed = app.engine.fetch("q", 5, "node-1", app.registry.names(), rate)
    assert len(claimed) == 1
    assert app.engine.release(list(claimed), "node-1") == 1
    again = _claim(app, "node-2", rate)
    assert again == [claimed[0].id], "the released job never started: the window is empty"
    assert _claim(app, "node-2", rate) == []


def test_limited_claim_skips_unknown_workers_and_other_queues(app: errands.App) -> None:
    _setup(app)
    app.enqueue("lim.a", {"n": 1}, queue="other")
    mine = app.enqueue("lim.a", {"n": 2})
    jobs = app.engine.fetch("q", 10, "node-1", ["lim.b"], QueueLimits(global_limit=5))
    assert jobs == []
    assert _claim(app, "node-1", QueueLimits(global_limit=5)) == [mine.id]


def test_nodes_keep_a_global_limit_together(
    make_app: Callable[..., errands.App], arun: Callable[..., Any], until: Until
) -> None:
    """Two running nodes with local limit 4 each never run more than 3 jobs at once."""
    state = {"now": 0, "max": 0}

    def build() -> errands.App:
        app = make_app(queues={"q": {"limit": 4, "global_limit": 3}})

        @app.job(name="lim.slow", queue="q")
        async def slow() -> None:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
            try:
                await asyncio.sleep(0.05)
            finally:
                state["now"] -= 1

        return app

    one, two = build(), build()
    one.migrate()
    jobs = one.enqueue_many([one.new_job("lim.slow") for _ in range(15)])

    async def main() -> None:
        await one.start()
        await two.start()
        try:
            await until(
                lambda: one.queue_counts().get("q", {}).get("completed") == len(jobs),
                20,
                message="every job to complete",
            )
        finally:
            await one.stop()
            await two.stop()

    arun(main())
    assert state["max"] == 3, f"at most 3 at once, and the limit was reached: {state}"
    by = {job.attempted_by.split("/")[0] for job in one.list_jobs(limit=100) if job.attempted_by}
    assert len(by) == 2, "both nodes ran jobs"


def test_a_claim_held_back_by_the_limits_says_so(app: errands.App) -> None:
    """``blocked``: jobs wait, but the limits are reached (producers then wait a poll)."""
    _setup(app)
    limits = QueueLimits(global_limit=2)
    assert _blocked(app, limits) is False, "nothing available: not blocked"
    app.enqueue_many([app.new_job("lim.a", {"n": i}) for i in range(3)])
    claim = app.engine.fetch("q", 5, "node-1", app.registry.names(), limits)
    assert len(claim) == 2 and isinstance(claim, LimitedClaim) and claim.blocked
    assert _blocked(app, limits) is True, "the third job waits for room"
    _finish(app, [job.id for job in claim])
    claim = app.engine.fetch("q", 5, "node-1", app.registry.names(), limits)
    assert len(claim) == 1 and isinstance(claim, LimitedClaim) and not claim.blocked


def _blocked(app: errands.App, limits: QueueLimits) -> bool:
    claim = app.engine.fetch("q", 5, "node-2", app.registry.names(), limits)
    assert isinstance(claim, LimitedClaim)
    return claim.blocked
