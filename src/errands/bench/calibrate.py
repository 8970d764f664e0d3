"""Three small timings that say how fast this machine is at what a worker does.

Benchmark figures only compare within one machine: the same code drained
~22,000 jobs/s on one 2-core cloud machine and ~8,500 on another
(docs/benchmarks-history.md), both sold as two cores. The CPU model name tells too
little, so the report prints, beside its figures, what the hot path is made
of:

- ``python_op_us``: a dict built, encoded to JSON and decoded again (pure CPU);
- ``thread_hop_us``: an asyncio loop hands a call to a pool thread and gets the
  answer back (the wake-ups every claim and every batch of ``def`` jobs pays;
  on virtual machines this is where they differ most);
- ``pg_round_trip_us``: ``SELECT 1`` on PostgreSQL over the benchmark's own
  connection settings (loopback latency plus the server's per-statement cost).

Each is the median of several short rounds, in microseconds.

Example::

    >>> figures = calibrate(pg_url=None)
    >>> sorted(figures)
    ['python_op_us', 'thread_hop_us']
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

__all__ = ["calibrate"]

_ROUNDS = 5


def _median_us(rounds: list[float], per_round: int) -> float:
    return round(statistics.median(rounds) / per_round * 1e6, 1)


def python_op_us(per_round: int = 2_000) -> float:
    """Microseconds to build a small dict, encode it to JSON and decode it again."""
    rounds = []
    for _ in range(_ROUNDS):
        started = time.perf_counter()
        for i in range(per_round):
            json.loads(json.dumps({"id": i, "worker": "bench.noop", "args": {"i": i}}))
        rounds.append(time.perf_counter() - started)
    return _median_us(rounds, per_round)


def thread_hop_us(per_round: int = 500) -> float:
    """Microseconds for one asyncio loop → pool thread → loop round trip."""

    async def hops() -> list[float]:
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(1) as pool:
            await loop.run_in_executor(pool, int)  # start the thread first
            rounds = []
            for _ in range(_ROUNDS):
                started = time.perf_counter()
                for _ in range(per_round):
                    await loop.run_in_executor(pool, int)
                rounds.append(time.perf_counter() - started)
        return rounds

    return _median_us(asyncio.run(hops()), per_round)


def pg_round_trip_us(url: str, per_round: int = 500) -> float:
    """Microseconds for one ``SELECT 1`` on a PostgreSQL connection to ``url``."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT 1")
        rounds = []
        for _ in range(_ROUNDS):
            started = time.perf_counter()
            for _ in range(per_round):
                conn.execute("SELECT 1")
            rounds.append(time.perf_counter() - started)
    return _median_us(rounds, per_round)


def calibrate(pg_url: str | None) -> dict[str, float]:
    """All three timings (the PostgreSQL one only when ``pg_url`` is given)."""
    figures = {"python_op_us": python_op_us(), "thread_hop_us": thread_hop_us()}
    if pg_url is not None:
        figures["pg_round_trip_us"] = pg_round_trip_us(pg_url)
    return figures
