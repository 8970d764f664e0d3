"""JobThreads: grows for job bodies, and stays within ``max_threads`` for database calls."""

from __future__ import annotations

import threading

import pytest
from tests.support import wait_for

from errands.runtime.threads import JobThreads


def _blockers(pool: JobThreads, count: int) -> tuple[threading.Event, list[int], threading.Lock]:
    """Start ``count`` items that wait for the returned event; each records its thread."""
    go = threading.Event()
    seen: list[int] = []
    lock = threading.Lock()

    def block() -> None:
        go.wait(20)
        with lock:
            seen.append(threading.get_ident())

    for _ in range(count):
        pool.run(block)
    return go, seen, lock


def test_an_uncapped_pool_starts_a_thread_for_every_waiting_item() -> None:
    pool = JobThreads("test-grow")
    go, seen, _ = _blockers(pool, 3)
    assert pool.size == 3 and pool.busy == 3
    go.set()
    wait_for(lambda: len(seen) == 3 and pool.busy == 0, timeout=10)
    pool.shutdown()


def test_a_capped_pool_queues_what_its_threads_cannot_take_yet() -> None:
    pool = JobThreads("test-capped", max_threads=2)
    go, seen, _ = _blockers(pool, 5)
    assert pool.size == 2  # three items wait in the queue, no third thread
    go.set()
    wait_for(lambda: len(seen) == 5, timeout=10)
    assert len(set(seen)) <= 2
    wait_for(lambda: pool.busy == 0, timeout=10)
    # The books balance: two idle threads take the next two items, no new thread.
    go2, seen2, _ = _blockers(pool, 2)
    assert pool.size == 2
    go2.set()
    wait_for(lambda: len(seen2) == 2 and pool.busy == 0, timeout=10)
    pool.shutdown()


@pytest.mark.parametrize("bad", [0, -1])
def test_max_threads_below_one_is_refused_by_name(bad: int) -> None:
    with pytest.raises(ValueError, match=rf"max_threads must be >= 1 or None, got {bad}"):
        JobThreads("test-bad", max_threads=bad)
