"""Completer: acks are applied in batches, once the oldest has waited ``interval``.

A real event loop and a recording ``apply``; waits poll with deadlines, and
every timing assertion leaves a wide margin: a slow machine can only make a
flush later, never earlier.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from tests.support import until

from errands.engines.base import Ack
from errands.job import JobState
from errands.runtime.completer import Completer


def ack(job_id: int) -> Ack:
    return Ack(job_id, 1, "node/q/p", JobState.COMPLETED, b"null")


class Recorder:
    """An ``apply`` that records each batch with the loop time it came."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, list[int]]] = []

    async def __call__(self, acks: Sequence[Ack]) -> int:
        self.calls.append((asyncio.get_running_loop().time(), [a.id for a in acks]))
        return len(acks)


def test_acks_wait_for_the_interval_then_go_in_one_batch() -> None:
    recorder = Recorder()

    async def main() -> None:
        completer = Completer(recorder, interval=0.05)
        await completer.start()
        started = asyncio.get_running_loop().time()
        for i in range(1, 6):
            completer.add(ack(i))
        await until(lambda: recorder.calls)
        assert recorder.calls[0][0] - started >= 0.05
        await completer.stop()
        assert completer.applied == 5

    asyncio.run(main())
    assert [ids for _, ids in recorder.calls] == [[1, 2, 3, 4, 5]]


def test_a_claim_that_takes_the_acks_restarts_the_wait() -> None:
    """The interval counts from the oldest ack still pending, not the first since a flush."""
    recorder = Recorder()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        completer = Completer(recorder, interval=0.1)
        await completer.start()
        completer.add(ack(1))
        await asyncio.sleep(0.06)
        taken = completer.take()  # a claim records ack 1 itself
        completer.settle(taken, applied=len(taken))
        second = loop.time()
        completer.add(ack(2))
        await until(lambda: recorder.calls)
        # Waiting from ack 1 would have flushed ack 2 0.04 s after it came.
        assert recorder.calls[0][0] - second >= 0.1
        await completer.stop()

    asyncio.run(main())
    assert [ids for _, ids in recorder.calls] == [[2]]


def test_acks_a_failed_claim_gives_back_are_applied_at_once() -> None:
    recorder = Recorder()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        completer = Completer(recorder, interval=30.0)
        await completer.start()
        completer.add(ack(1))
        taken = completer.take()
        given_back = loop.time()
        completer.settle(taken, applied=None)  # the claim failed: its acks are due
        await until(lambda: recorder.calls, timeout=10.0)
        assert recorder.calls[0][0] - given_back < 10.0 < 30.0
        await completer.stop()

    asyncio.run(main())
    assert [ids for _, ids in recorder.calls] == [[1]]


def test_a_full_batch_goes_without_waiting() -> None:
    recorder = Recorder()

    async def main() -> None:
        completer = Completer(recorder, interval=30.0, batch_size=3)
        await completer.start()
        for i in range(1, 4):
            completer.add(ack(i))
        await until(lambda: recorder.calls, timeout=10.0)
        await completer.stop()

    asyncio.run(main())
    assert [ids for _, ids in recorder.calls] == [[1, 2, 3]]
