"""A start-up cut short by a stop (SIGTERM while ``app.start()`` still runs).

The node's producers start before the rest of it (completer, heartbeat,
plugins), so a job can already be running when the stop arrives. It must get
the same grace period as after a complete start: finish, and have its outcome
recorded, instead of being abandoned to the lifeline and run a second time.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

import errands
from errands import JobState
from errands.runtime.heartbeat import Heartbeat


@pytest.fixture
def start_may_go_on(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Holds the heartbeat's start until set.

    The heartbeat starts after the producers: held, as a slow round trip would
    hold it, the stop arrives while a job runs and start() has not returned.
    """
    go_on = threading.Event()
    original_start = Heartbeat.start

    def slow_start(self: Heartbeat) -> None:
        go_on.wait(20)
        original_start(self)

    monkeypatch.setattr(Heartbeat, "start", slow_start)
    return go_on


def test_a_job_started_during_a_cancelled_start_gets_its_grace(
    make_app: Callable[..., errands.App],
    arun: Callable[..., Any],
    start_may_go_on: threading.Event,
) -> None:
    app = make_app(grace_period=10)
    running = threading.Event()
    finish = threading.Event()

    @app.job()
    def report() -> str:
        running.set()
        finish.wait(20)
        return "sent"

    job = report.enqueue()

    async def main() -> None:
        starting = asyncio.create_task(app.start())
        assert await asyncio.to_thread(running.wait, 20), "the job never started"
        starting.cancel()  # what start_when_reachable does on SIGTERM
        loop = asyncio.get_running_loop()
        loop.call_later(0.3, finish.set)  # the job ends well within the grace period
        start_may_go_on.set()
        with pytest.raises(asyncio.CancelledError):
            await starting

    arun(main())
    stored = app.get_job(job.id)
    assert stored is not None
    assert stored.state is JobState.COMPLETED, stored
    assert stored.result == "sent" and stored.attempt == 1
    assert app.node is None


def test_a_cancelled_start_gives_running_jobs_the_grace_it_was_given(
    make_app: Callable[..., errands.App],
    arun: Callable[..., Any],
    start_may_go_on: threading.Event,
) -> None:
    """``errands worker --grace 0.5``, stopped mid-start, waits 0.5 s, not the app's 30."""
    app = make_app(grace_period=30)
    running = threading.Event()
    finish = threading.Event()

    @app.job()
    def stuck() -> None:
        running.set()
        finish.wait(30)

    job = stuck.enqueue()

    async def main() -> float:
        starting = asyncio.create_task(app._start(None, grace=0.2))
        assert await asyncio.to_thread(running.wait, 20), "the job never started"
        loop = asyncio.get_running_loop()
        began = loop.time()
        starting.cancel()
        start_may_go_on.set()
        with pytest.raises(asyncio.CancelledError):
            await starting
        return loop.time() - began

    try:
        took = arun(main())
    finally:
        finish.set()
    assert took < 10, f"the cancelled start waited {took:.1f}s for a stuck job"
    stored = app.get_job(job.id)
    assert stored is not None and stored.state is JobState.EXECUTING  # left for the lifeline
    assert app.node is None
