"""Live queue control (pause, resume, scale, start, stop) and cancelling running jobs.

"Another node" is a second App on the same database: with ``start()`` it is a
running node; without, it is a client (a web process, the CLI). To check that
something does *not* happen (a paused queue claims nothing), tests wait for a
few ticks of the node's queue watch, which runs every poll interval, like the
producers' polls.
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

Until = Callable[..., Any]


class Gate:
    """Async jobs that block until released, counting how many run at once.

    Released jobs still take a moment (20 ms), so jobs started together overlap.
    """

    def __init__(self) -> None:
        self.running = 0
        self.max = 0
        self.release = asyncio.Event()

    def register(self, app: errands.App, name: str = "ctl.gated", queue: str = "q") -> None:
        gate = self

        @app.job(name=name, queue=queue)
        async def gated() -> None:
            gate.running += 1
            gate.max = max(gate.max, gate.running)
            try:
                await gate.release.wait()
                await asyncio.sleep(0.02)
            finally:
                gate.running -= 1


@asynccontextmanager
async def running(app: errands.App) -> AsyncIterator[Any]:
    node = await app.start()
    try:
        yield node
    finally:
        await app.stop(grace=1)


async def _ticks(app: errands.App, until: Until, n: int = 3) -> None:
    """Let ``n`` more ticks of the queue watch (and so a few polls) go by."""
    node = app.node
    assert node is not None
    target = node.queue_watch.ticks + n
    await until(lambda: node.queue_watch.ticks >= target, 5, message=f"{n} watch ticks")


def _state(app: errands.App, job_id: int) -> str:
    job = app.get_job(job_id)
    assert job is not None
    return job.state.value


def _all(app: errands.App, ids: list[int], state: str) -> bool:
    return all(_state(app, i) == state for i in ids)


def test_pause_stops_new_claims_running_jobs_finish_resume_restarts(
    make_app: Callable[..., errands.App], arun: Callable[..., Any], until: Until
) -> None:
    app = make_app(queues={"q": 5})
    gate = Gate()
    gate.register(app)

    async def main() -> None:
        async with running(app):
            first = [(await app.aenqueue("ctl.gated")).id for _ in range(2)]
            await until(lambda: gate.running == 2, 5, message="two running jobs")
            app.pause_queue("q")
            later = [(await app.aenqueue("ctl.gated")).id for _ in range(3)]
            gate.release.set()
            await until(lambda: _all(app, first, "completed"), 5, message="running jobs finish")
            await _ticks(app, until)
            assert [_state(app, i) for i in later] == ["available"] * 3, "paused: no claims"
            assert app.queue_states()["q"].paused is True

            app.resume_queue("q")
            await until(lambda: _all(app, later, "completed"), 5, message="resumed jobs run")
            assert app.queue_states()["q"].paused is False

    arun(main())


def test_pause_from_another_app_applies_to_a_running_node(
    make_app: Callable[..., errands.App], arun: Callable[..., Any], until: Until
) -> None:
    worker = make_app(queues={"q": 5})
    client = make_app()
    Gate().register(worker)

    @worker.job(name="ctl.quick", queue="q")
    def quick() -> str:
        return "done"

    async def main() -> None:
        async with running(worker) as node:
            await asyncio.to_thread(client.pause_queue, "q")
            await until(lambda: node.producers["q"].paused, 3, message="the node to pause")
            job = await asyncio.to_thread(client.enqueue, "ctl.quick", queue="q")
            await _ticks(worker, until)
            assert _state(worker, job.id) == "available"

            await asyncio.to_thread(client.resume_queue, "q")
            await until(lambda: _state(worker, job.id) == "completed", 3, message="resumed")

    client.registry.add(worker.registry.get("ctl.quick"))  # type: ignore[arg-type]
    arun(main())


def test_paused_state_survives_a_restart_of_the_node(
    make_app: Callable[..., errands.App], arun: Callable[..., Any], until: Until
) -> None:
    app = make_app(queues={"q": 5})

    @app.job(name="ctl.quick", queue="q")
    def quick() -> str:
        return "done"

    async def main() -> None:
        async with running(app):
            app.pause_queue("q")
        job = await app.aenqueue("ctl.quick")
        async with running(app) as node:  # a restart: a fresh node reads the table
            assert node.producers["q"].paused is True, "paused before its first claim"
            await _ticks(app, until)
            assert _state(app, job.id) == "available"
            app.resume_queue("q")
            await until(lambda: _state(app, job.id) == "completed", 3, message="resumed")

    arun(main())


def test_configured_pause_and_resume_from_the_table(
    make_app: Callable[..., errands.App], arun: Callable[..., Any], until: Until
) -> None:
    """``paused: True`` in the config holds until someone resumes the queue."""
    app = make_app(queues={"q": {"limit": 2, "paused": True}})

    @app.job(name="ctl.quick", queue="q")
    def quick() -> str:
        return "done"

    async def main() -> None:
        job = await app.aenqueue("ctl.quick")
        async with running(app):
            await _ticks(app, until)
            assert _state(app, job.id) == "available"
            app.resume_queue("q")
            await until(lambda: _state(app, job.id) == "completed", 3, message="resumed")

    arun(main())


def test_scale_up_and_down_changes_concurrency(
    make_app: Callable[..., errands.App], arun: Callable[..., Any], until: Until
) -> None:
    app = make_app(queues={"q": 1})
    client = make_app()
    gate = Gate()
    gate.register(app)

    async def main() -> None:
        async with running(app) as node:
            await app.aenqueue_many([app.new_job("ctl.gated") for _ in range(8)])
            await until(lambda: gate.running == 1, 5, message="one running job")
            await _ticks(app, until)
            assert gate.max == 1

            await asyncio.to_thread(client.scale_queue, "q", 3)  # from another app
            await until(lambda: gate.running == 3, 3, message="scaled up to 3")
            assert node.producers["q"].limit == 3

            app.scale_queue("q", 1, local=True)
            gate.max = 0
            gate.release.set()
            await until(lambda: app.queue_counts()["q"].get("completed") == 8, 5)
            assert gate.max == 1, "scaled down: the last five ran one at a time"
            assert app.queue_states()["q"].limit == 3, "a local change writes nothing"

            app.scale_queue("q", None)  # clear the override: back to the configured 1
            await until(lambda: node.producers["q"].limit == 1, 3, message="override cleared")
            assert app.queue_states()["q"].limit is None

    arun(main())


def test_scaled_down_queue_starts_no_job_until_under_the_limit(
    make_app: Callable[..., errands.App], arun: Callable[..., Any], until: Until
) -> None:
    app = make_app(queues={"q": 3})
    gate = Gate()
    gate.register(app)

    async def main() -> None:
        async with running(app):
            await app.aenqueue_many([app.new_job("ctl.gated") for _ in range(6)])
            await until(lambda: gate.running == 3, 5, message="three running jobs")
            app.scale_queue("q", 1)
            gate.max = 0
            gate.release.set()
            await until(lambda: app.queue_counts()["q"].get("completed") == 6, 5)
            assert gate.max == 1, "after scaling down, one at a time"

    arun(main())


def test_local_pause_changes_only_this_node(
    make_app: Callable[..., errands.App], arun: Callable[..., Any], until: Until
) -> None:
    one = make_app(queues={"q": 2})
    two = make_app(queues={"q": 2})
    for app in (one, two):
        Gate().register(app)

    async def main() -> None:
        async with running(one) as n1, running(two) as n2:
            one.pause_queue("q", local=True)
            assert n1.producers["q"].paused is True
            assert n2.producers["q"].paused is False
            assert one.queue_states() == {}, "nothing stored"
            await _ticks(one, until)
            assert n1.producers["q"].paused is True, "the watch does not undo a local pause"
            one.resume_queue("q", local=True)
            assert n1.producers["q"].paused is False

    arun(main())


def test_a_local_change_survives_global_changes_of_other_settings(
    make_app: Callable[..., errands.App], arun: Callable[..., Any], until: Until
) -> None:
    app = make_app(queues={"q": 2})
    client = make_app()

    async def main() -> None:
        async with running(app) as node:
            app.scale_queue("q", 5, local=True)
            await asyncio.to_thread(client.pause_queue, "q")
            await until(lambda: node.producers["q"].paused, 3, message="the global pause")
            assert node.producers["q"].limit == 5, "the pause did not undo the local scale"
            await asyncio.to_thread(client.scale_queue, "q", 3)
            await until(lambda: node.producers["q"].limit == 3, 3, message="the global scale")
            assert node.producers["q"].paused is True

    arun(main())


def test_start_and_stop_a_queue_locally(
    make_app: Callable[..., errands.App], arun: Callable[..., Any], until: Until
) -> None:
    app = make_app(queues={"q": 2})

    @app.job(name="ctl.report", queue="reports")
    def report() -> str:
        return "ok"

    async def main() -> None:
        async with running(app) as node:
            job = await app.aenqueue("ctl.report")
            await _ticks(app, until)
            assert _state(app, job.id) == "available", "reports is not run yet"
            app.start_queue("reports", limit=2, local=True)
            await until(lambda: _state(app, job.id) == "completed", 3, message="started")
            assert node.producers["reports"].limit == 2
            with pytest.raises(errands.ConfigError, match="already running"):
                app.start_queue("reports", local=True)

            app.stop_queue("reports", local=True)
            await until(lambda: "reports" not in node.producers, 3, message="stopped")
            await until(lambda: len(node.producers) == 1, 3, message="wound down")
            other = await app.aenqueue("ctl.report")
            await _ticks(app, until)
            assert _state(app, other.id) == "available"
            assert app.queue_states() == {}

    arun(main())


def test_stop_and_start_a_queue_on_every_node(
    make_app: Callable[..., errands.App], arun: Callable[..., Any], until: Until
) -> None:
    worker = make_app(queues={"q": 2, "reports": 2})
    client = make_app()

    @worker.job(name="ctl.report", queue="reports")
    def report() -> str:
        return "ok"

    client.registry.add(worker.registry.get("ctl.report"))  # type: ignore[arg-type]

    async def main() -> None:
        async with running(worker) as node:
            await asyncio.to_thread(client.stop_queue, "reports")
            await until(lambda: "reports" not in node.producers, 3, message="stopped")
        job = await client.aenqueue("ctl.report")
        async with running(worker) as node:  # stays stopped after a restart
            assert "reports" not in node.producers
            await _ticks(worker, until)
            assert _state(worker, job.id) == "available"
            await asyncio.to_thread(client.start_queue, "reports", 4)
            await until(lambda: _state(worker, job.id) == "completed", 3, message="started")
            assert node.producers["reports"].limit == 4

    arun(main())


def test_start_queue_on_every_node_reaches_nodes_started_later(
    make_app: Callable[..., errands.App], arun: Callable[..., Any], until: Until
) -> None:
    worker = make_app(queues={"q": 2})

    @worker.job(name="ctl.report", queue="extra")
    def report() -> str:
        return "ok"

    worker.start_queue("extra", limit=3)
    job = worker.enqueue("ctl.report")

    async def main() -> None:
        async with running(worker) as node:
            assert node.producers["extra"].limit == 3
            await until(lambda: _state(worker, job.id) == "completed", 3, message="ran")

    arun(main())


def test_cancel_an_executing_async_job_stops_it_quickly(
    make_app: Callable[..., errands.App], arun: Callable[..., Any], until: Until
) -> None:
    app = make_app(queues={"q": 2})
    client = make_app()
    seen: list[str] = []

    @app.job(name="ctl.forever", queue="q")
    async def forever() -> None:
        seen.append("started")
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    async def main() -> float:
        async with running(app) as node:
            job = await app.aenqueue("ctl.forever")
            await until(lambda: seen == ["started"], 5, message="the job to start")
            began = time.monotonic()
            assert await asyncio.to_thread(client.cancel_job, job.id) is not None
            await until(lambda: not node.producers["q"].running, 3, message="the job to stop")
            took = time.monotonic() - began
            await node.completer.flush()
            assert _state(app, job.id) == "cancelled"
            return took

    took = arun(main())
    assert seen == ["started", "cancelled"]
    assert took < 1.5, f"stopped {took:.2f}s after the cancel"


def test_cancel_an_executing_sync_job_sets_job_cancelled(
    make_app: Callable[..., errands.App], arun: Callable[..., Any], until: Until
) -> None:
    app = make_app(queues={"q": 2})
    client = make_app()
    seen: list[str] = []
    started = threading.Event()

    @app.job(name="ctl.polite", queue="q")
    def polite() -> str:
        job = errands.current_job()
        started.set()
        deadline = time.monotonic() + 10
        while not job.cancelled() and time.monotonic() < deadline:
            time.sleep(0.01)
        seen.append(f"cancelled={job.cancelled()}")
        return "stopped early"

    async def main() -> None:
        async with running(app) as node:
            job = await app.aenqueue("ctl.polite")
            await until(started.is_set, 5, message="the job to start")
            await asyncio.to_thread(client.cancel_job, job.id)
            await until(lambda: seen, 3, message="the body to see job.cancelled()")
            await until(lambda: node.completer.stale >= 1, 3, message="its ack to be stale")
            stored = app.get_job(job.id)
            assert stored is not None
            assert stored.state is JobState.CANCELLED, "the stale ack changed nothing"
            assert stored.result is None

    arun(main())
    assert seen == ["cancelled=True"]


def test_bulk_cancel_stops_executing_jobs_too(
    make_app: Callable[..., errands.App], arun: Callable[..., Any], until: Until
) -> None:
    app = make_app(queues={"q": 3})
    client = make_app()
    gate = Gate()
    gate.register(app)

    async def main() -> None:
        async with running(app) as node:
            await app.aenqueue_many([app.new_job("ctl.gated") for _ in range(5)])
            await until(lambda: gate.running == 3, 5, message="three running jobs")
            count = await asyncio.to_thread(client.cancel_jobs, "q")
            assert count == 5, "three executing and two available"
            await until(lambda: not node.producers["q"].running, 3, message="all stopped")
            assert app.queue_counts()["q"] == {"cancelled": 5}

    arun(main())


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda app: app.pause_queue(""), "queue name"),
        (lambda app: app.pause_queue("bad name!"), "queue name"),
        (lambda app: app.resume_queue(7), "queue name"),
        (lambda app: app.scale_queue("q", 0), "scale_queue limit must be an int >= 1"),
        (lambda app: app.scale_queue("q", "3"), "got '3'"),
        (lambda app: app.scale_queue("q", True), "got True"),
        (lambda app: app.start_queue("q", limit=-1), "start_queue limit"),
        (lambda app: app.pause_queue("q", local="yes"), "local must be True or False"),
        (lambda app: app.pause_queue("q", local=True), "needs this app's node running"),
        (lambda app: app.stop_queue("q", local=True), "needs this app's node running"),
    ],
)
def test_bad_queue_control_input_is_refused_at_the_call(
    app: errands.App, call: Callable[[errands.App], None], match: str
) -> None:
    with pytest.raises(errands.ConfigError, match=match):
        call(app)
    assert app.queue_states() == {}, "nothing stored"


def test_local_control_of_a_queue_this_node_does_not_run(
    make_app: Callable[..., errands.App], arun: Callable[..., Any]
) -> None:
    app = make_app(queues={"q": 1})

    async def main() -> None:
        async with running(app):
            with pytest.raises(errands.ConfigError, match="'other' is not running on this node"):
                app.pause_queue("other", local=True)
            with pytest.raises(errands.ConfigError, match="not running on this node"):
                app.stop_queue("other", local=True)

    arun(main())
