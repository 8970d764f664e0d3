"""SQLite's data_version listener wakes only the queues that have jobs available.

Every commit of another connection changes ``PRAGMA data_version``, this
process's own claims and outcomes included; waking every producer on each one
made idle queues claim ~175 times a second beside a busy one.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.support import wait_for

import errands
from errands.engines import sqlite_listen
from errands.engines.sqlite_listen import DataVersionListener


class Wakes:
    """What the listener asked to wake, in order (it calls from its own thread)."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, queue: str) -> None:
        with self._lock:
            self.seen.append(queue)

    def names(self) -> set[str]:
        with self._lock:
            return set(self.seen)


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[errands.App]:
    """An app on its own connection: its commits are "another connection's"."""
    app = errands.App(f"sqlite:///{tmp_path / 'jobs.db'}", queues={"emails": 1, "later": 1})

    @app.job(name="send", queue="emails")
    def send() -> None:
        return None

    app.ensure_schema()
    yield app
    app.close()


@pytest.fixture
def listening(writer: errands.App) -> Iterator[tuple[DataVersionListener, Wakes]]:
    wakes = Wakes()
    listener = writer.engine.listen(wakes)
    assert listener is not None
    yield listener, wakes
    listener.stop()


def _until_seen(wakes: Wakes, name: str, commit: Callable[[], object]) -> None:
    """Commit again every 0.1 s until ``name`` is woken: the listener thread may
    still be reading its first data_version when the first commit lands."""

    def committed_and_seen() -> bool:
        commit()
        return name in wakes.names()

    wait_for(committed_and_seen, timeout=5, every=0.1)


def test_a_commit_wakes_only_the_queues_with_jobs_available(
    writer: errands.App, listening: tuple[DataVersionListener, Wakes]
) -> None:
    _, wakes = listening

    def commits() -> None:
        writer.enqueue("send", queue="later", schedule_in=3600)  # nothing available
        writer.enqueue("send")  # one available job, in queue "emails"

    _until_seen(wakes, "emails", commits)
    time.sleep(0.05)  # a few more polls
    assert wakes.names() == {"emails"}, wakes.seen  # not "later", not every queue ("*")


def test_it_wakes_every_queue_when_it_cannot_tell_which(
    writer: errands.App,
    listening: tuple[DataVersionListener, Wakes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, wakes = listening

    def broken(conn: sqlite3.Connection) -> list[str]:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(sqlite_listen, "queues_with_available_jobs", broken)
    _until_seen(wakes, "*", lambda: writer.enqueue("send", queue="later", schedule_in=3600))
