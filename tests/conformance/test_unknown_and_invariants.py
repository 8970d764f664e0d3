"""Unknown workers in the table (invariants 8 and 9) and the attempt invariants (3)."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import errands
from errands import JobState

Until = Callable[..., Any]


def _ghost_job(make_app: Callable[..., errands.App]) -> tuple[errands.App, errands.Job]:
    """Insert a job of a worker only another app (another deploy) knows."""
    other = make_app()

    @other.job(name="ghost.worker")
    def ghost(x: int) -> int:
        return x * 10

    return other, ghost.enqueue(x=4)


def test_drain_leaves_unknown_worker_jobs_available(
    make_app: Callable[..., errands.App],
) -> None:
    app = make_app()
    ran: list[int] = []

    @app.job()
    def known(n: int) -> None:
        ran.append(n)

    other, ghost = _ghost_job(make_app)
    first = known.enqueue(n=1)
    second = known.options(priority=9).enqueue(n=2)

    assert app.drain() == {"completed": 2}
    assert ran == [1, 2]
    left = app.get_job(ghost.id)
    assert left is not None
    assert left.state == JobState.AVAILABLE and left.attempt == 0 and left.errors == []
    assert left.worker == "ghost.worker"
    # visible to inspection
    assert [j.id for j in app.list_jobs(worker="ghost.worker")] == [ghost.id]
    assert app.queue_counts()["default"] == {"available": 1, "completed": 2}
    assert {first.id, second.id} <= {j.id for j in app.list_jobs(state="completed")}

    # the engine can name it (for logs and the dashboard)
    assert app.engine.unknown_workers("default", [known.name]) == ["ghost.worker"]
    assert app.engine.unknown_workers("default", [known.name, "ghost.worker"]) == []

    # the app that knows the worker runs it
    assert other.drain() == {"completed": 1}
    assert app.get_job(ghost.id).result == 40  # type: ignore[union-attr]


def test_node_leaves_unknown_worker_jobs_for_a_node_that_knows_them(
    make_app: Callable[..., errands.App], arun: Callable[..., Any], until: Until
) -> None:
    app = make_app()

    @app.job()
    def known(n: int) -> int:
        return n

    other, ghost = _ghost_job(make_app)

    async def main() -> list[int]:
        await app.start()
        try:
            jobs = [await known.aenqueue(n=i) for i in range(3)]
            await until(
                lambda: all(
                    app.get_job(j.id).state == JobState.COMPLETED  # type: ignore[union-attr]
                    for j in jobs
                ),
                5,
            )
            await asyncio.sleep(0.2)
        finally:
            await app.stop()
        return [j.id for j in jobs]

    arun(main())
    left = app.get_job(ghost.id)
    assert left is not None and left.state == JobState.AVAILABLE and left.attempt == 0

    async def other_node() -> None:
        await other.start()
        try:
            await until(lambda: other.get_job(ghost.id).state == JobState.COMPLETED, 5)  # type: ignore[union-attr]
        finally:
            await other.stop()

    arun(other_node())
    assert other.get_job(ghost.id).result == 40  # type: ignore[union-attr]


def test_attempts_never_exceed_max_attempts(
    make_app: Callable[..., errands.App], arun: Callable[..., Any], until: Until
) -> None:
    app = make_app(queues={"default": 4})
    runs: Counter[int] = Counter()
    lock = threading.Lock()

    @app.register
    class AlwaysFails(errands.Worker, max_attempts=3):
        def perform(self, job: errands.Job) -> None:
            assert job.attempt <= job.max_attempts
            with lock:
                runs[job.id] += 1
            raise RuntimeError(f"attempt {job.attempt}")

        def backoff(self, job: errands.Job) -> float:
            return 0.0

    async def main() -> list[int]:
        await app.start()
        try:
            jobs = await app.aenqueue_many(
                [app.new_job(AlwaysFails, {}, max_attempts=m) for m in (1, 2, 3, 3, 5)]
            )
            ids = [j.id for j in jobs]
            await until(lambda: all(app.get_job(i).state == JobState.DISCARDED for i in ids), 8)  # type: ignore[union-attr]
            await asyncio.sleep(0.3)  # nothing runs after discarded
        finally:
            await app.stop()
        return ids

    ids = arun(main())
    assert [runs[i] for i in ids] == [1, 2, 3, 3, 5]
    for job in app.list_jobs():
        assert job.attempt <= job.max_attempts
        assert job.attempt == job.max_attempts == len(job.errors)
    # a discarded job is not run by a drain either
    assert app.drain(with_scheduled=True) == {}
    assert sum(runs.values()) == 14


def test_finished_jobs_never_run_again_unless_retried(
    app: errands.App, arun: Callable[..., Any], until: Until
) -> None:
    runs: Counter[str] = Counter()

    @app.job(max_attempts=1)
    def outcome(kind: str) -> str:
        runs[kind] += 1
        if kind == "cancel":
            raise errands.Cancel("no")
        if kind == "discard":
            raise errands.Discard("no")
        if kind == "fail":
            raise ValueError("no")
        return "ok"

    jobs = {kind: outcome.enqueue(kind=kind) for kind in ("ok", "cancel", "discard", "fail")}
    assert app.drain() == {"completed": 1, "cancelled": 1, "discarded": 2}
    finished = {kind: app.get_job(job.id) for kind, job in jobs.items()}

    async def main() -> None:
        await app.start()
        try:
            await asyncio.sleep(0.4)  # stager, lifeline and producers all get several turns
        finally:
            await app.stop()

    arun(main())
    assert app.drain(with_scheduled=True) == {}
    assert runs == Counter({"ok": 1, "cancel": 1, "discard": 1, "fail": 1})
    for kind, job in jobs.items():
        assert app.get_job(job.id) == finished[kind], kind

    # retried by the API, each runs once more
    for job in jobs.values():
        assert app.retry_job(job.id) is not None
    assert sum(app.drain().values()) == 4
    assert runs == Counter({"ok": 2, "cancel": 2, "discard": 2, "fail": 2})
