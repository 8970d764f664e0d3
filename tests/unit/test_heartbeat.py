"""The heartbeat thread's start and stop, which run on different database threads."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from errands.engines.base import ProducerInfo
from errands.engines.sqlite import SQLiteEngine
from errands.runtime.heartbeat import Heartbeat


def _heartbeat(tmp_path: Path) -> Heartbeat:
    engine = SQLiteEngine(str(tmp_path / "jobs.db"))
    engine.migrate()
    engine.register_producer(ProducerInfo("p1", "node-1", "default", 1))
    return Heartbeat(engine, node="node-1", producers=lambda: ["p1"], interval=0.01, lease=5)


def _beating() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "errands-heartbeat" and t.is_alive()]


def test_a_heartbeat_stopped_before_it_started_never_beats(tmp_path: Path) -> None:
    """A node whose start-up was cancelled stops its heartbeat, maybe before it starts."""
    beat = _heartbeat(tmp_path)
    beat.stop()
    beat.start()
    assert beat.beats == 0 and not beat.is_leader
    assert _beating() == []


def test_start_and_stop_racing_on_two_threads_leave_no_heartbeat_running(tmp_path: Path) -> None:
    for _ in range(50):
        beat = _heartbeat(tmp_path)
        errors: list[BaseException] = []

        def run(step: Callable[[], None], errors: list[BaseException] = errors) -> None:
            try:
                step()
            except BaseException as exc:  # "cannot join thread before it is started"
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(s,)) for s in (beat.start, beat.stop)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert errors == []
        assert beat._thread is None
        assert not beat.is_leader
    assert _beating() == []
