"""Global, partitioned and rate limits hold across real worker processes racing for jobs.

Three worker processes (local limit 4 each) work one limited queue. Each job
records its start and end in a sink file outside the database, so the checks
do not trust the table whose claims they check. Jobs are enqueued only once
every process is up, so all of them race from the start.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import errands
from errands.limits import QueueLimits
from tests.support import POSTGRES_URL, postgres_schema, wait_for, worker_pythonpath

pytestmark = pytest.mark.slow

PROCESSES = 3
ROUNDS = 8

WORKER_MODULE = textwrap.dedent(
    """
    import asyncio, json, os, signal, time
    import errands
    from tests.sink import append

    app = errands.App(
        os.environ["TEST_DATABASE_URL"],
        schema=os.environ.get("TEST_SCHEMA") or None,
        auto_migrate=True,
        queues={"limited": json.loads(os.environ["TEST_QUEUE_OPTIONS"])},
        rescue_after=5.0,
        stage_interval=0.05,
        poll_interval=0.05,
        grace_period=1.0,
    )

    def record(event: str, job_id: int, account: str = "-") -> None:
        append(event, job_id, os.getpid(), time.time(), account)

    @app.job(name="work", queue="limited")
    async def work(sleep: float = 0.05, account_id: str = "-") -> None:
        job = errands.current_job()
        record("start", job.id, account_id)
        await asyncio.sleep(sleep)
        record("end", job.id, account_id)

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await app.start()
        record("ready", 0)
        await stop.wait()
        await app.stop()

    if __name__ == "__main__":
        asyncio.run(main())
    """
)


class Sink:
    """The events the worker processes wrote: ``(event, job id, pid, time, account)``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def events(self) -> list[tuple[str, int, int, float, str]]:
        if not self.path.exists():
            return []
        found = []
        for line in self.path.read_text().splitlines():
            event, job_id, pid, at, account = line.split()
            found.append((event, int(job_id), int(pid), float(at), account))
        return found

    def intervals(self) -> dict[int, tuple[float, float, int, str]]:
        """``job id -> (start, end, pid, account)`` for every job that started and ended."""
        starts: dict[int, tuple[float, int, str]] = {}
        done = {}
        for event, job_id, pid, at, account in self.events():
            if event == "start":
                assert job_id not in starts, f"job {job_id} started twice"
                starts[job_id] = (at, pid, account)
            elif event == "end":
                start, start_pid, _ = starts[job_id]
                assert pid == start_pid
                done[job_id] = (start, at, pid, account)
        return done


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one instant (an end at t closes before a start at t)."""
    points = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    # sorted puts (t, -1) before (t, 1): ends first at equal times.
    current = peak = 0
    for _, delta in points:
        current += delta
        peak = max(peak, current)
    return peak


def most_in_window(times: list[float], width: float) -> int:
    """The most of ``times`` inside any half-open window ``[t, t + width)``."""
    ordered = sorted(times)
    best = 0
    for i, start in enumerate(ordered):
        best = max(best, sum(1 for t in ordered[i:] if t < start + width))
    return best


@pytest.fixture
def workers(tmp_path: Path, database_url: str, schema: str | None) -> Iterator[Any]:
    """``start(queue_options) -> (client app, sink)``: three ready worker processes."""
    (tmp_path / "limitjobs.py").write_text(WORKER_MODULE)
    procs: list[subprocess.Popen[bytes]] = []

    def start(options: dict[str, Any]) -> tuple[errands.App, Sink]:
        env = dict(os.environ)
        env.update(
            TEST_DATABASE_URL=database_url,
            TEST_SCHEMA=schema or "",
            TEST_SINK=str(tmp_path / "sink.log"),
            TEST_QUEUE_OPTIONS=json.dumps(options),
            PYTHONPATH=worker_pythonpath(tmp_path),
        )
        client = errands.App(database_url, schema=schema, auto_migrate=True)

        @client.job(name="work", queue="limited")
        async def work(sleep: float = 0.05, account_id: str = "-") -> None: ...

        client.migrate()
        sink = Sink(tmp_path / "sink.log")
        for _ in range(PROCESSES):
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "limitjobs"],
                    cwd=tmp_path,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
            )
        wait_for(lambda: sum(1 for e in sink.events() if e[0] == "ready") == PROCESSES, timeout=30)
        return client, sink

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        assert proc.returncode == 0, err.decode(errors="replace")


def _completed(client: errands.App) -> int:
    return client.queue_counts().get("limited", {}).get("completed", 0)


def _run_all(client: errands.App, jobs: list[Any], sink: Sink) -> dict[int, Any]:
    before = _completed(client)
    inserted = client.enqueue_many(jobs)
    wait_for(lambda: _completed(client) == before + len(inserted), timeout=60)
    intervals = sink.intervals()
    assert {job.id for job in inserted} <= set(intervals), "every job ran exactly once"
    assert len(intervals) == client.queue_counts()["limited"]["completed"]
    return intervals


def test_global_limit_holds_across_processes(workers: Any) -> None:
    client, sink = workers({"limit": 4, "global_limit": 3})
    # Rounds of 6 jobs into an idle queue: every process is woken by the insert
    # (NOTIFY, or SQLite's data_version) at the same moment and claims at once.
    for _ in range(ROUNDS):
        before = _completed(client)
        client.enqueue_many([client.new_job("work") for _ in range(6)])
        wait_for(lambda: _completed(client) == before + 6, timeout=30)  # noqa: B023
    intervals = _run_all(client, [client.new_job("work") for _ in range(12)], sink)
    overlap = max_overlap([(start, end) for start, end, _, _ in intervals.values()])
    assert overlap == 3, f"at most 3 at once across {PROCESSES} processes, and 3 reached"
    pids = Counter(pid for _, _, pid, _ in intervals.values())
    assert len(pids) >= 2, f"several processes shared the work: {pids}"


def test_partitioned_limit_holds_per_account_across_processes(workers: Any) -> None:
    client, sink = workers(
        {"limit": 4, "global_limit": 1, "partition": {"by": "args", "keys": ["account_id"]}}
    )
    accounts = ["a", "b", "c", "d"] * 6
    jobs = [client.new_job("work", {"account_id": account}) for account in accounts]
    intervals = _run_all(client, jobs, sink)
    by_account: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for start, end, _, account in intervals.values():
        by_account[account].append((start, end))
    for account, spans in sorted(by_account.items()):
        assert max_overlap(spans) == 1, f"account {account} ran two jobs at once"
    overall = max_overlap([(start, end) for start, end, _, _ in intervals.values()])
    assert overall >= 2, "different accounts still run side by side"


def test_rate_limit_holds_across_processes(workers: Any) -> None:
    count, per = 4, 0.5
    client, sink = workers({"limit": 4, "rate_limit": [count, per]})
    intervals = _run_all(client, [client.new_job("work", {"sleep": 0.01}) for _ in range(14)], sink)

    claimed = [job.attempted_at for job in client.list_jobs(queue="limited", limit=100)]
    assert all(at is not None for at in claimed)
    assert most_in_window([at for at in claimed if at is not None], per - 0.001) <= count, (
        "the claims themselves: no window of per seconds holds more than count starts"
    )
    starts = [start for start, _, _, _ in intervals.values()]
    # Starts seen by the bodies trail their claims by a dispatch delay that varies
    # by a few milliseconds: allow for that jitter.
    assert most_in_window(starts, per - 0.1) <= count
    assert max(starts) - min(starts) >= (len(starts) / count - 1) * per * 0.9, "throttled"


def test_postgres_claimers_of_a_limited_queue_take_turns() -> None:
    """The count-then-claim is serialized: a claim waits while another is uncommitted.

    Process timing rarely makes two claims overlap, so this test holds the
    queue's lock in a transaction that has claimed 3 jobs (as another node
    would), starts a claim, sees it wait for the lock, and commits: the claim
    then counts those 3 and takes nothing. Without the lock it would not wait,
    would count 0 executing jobs and would claim 3 more.
    """
    with postgres_schema() as schema:
        app = errands.App(POSTGRES_URL, schema=schema, auto_migrate=True)

        @app.job(name="work", queue="limited")
        def work() -> None: ...

        app.migrate()
        ids = [job.id for job in app.enqueue_many([app.new_job("work") for _ in range(6)])]
        other = psycopg.connect(POSTGRES_URL)  # a transaction stays open until commit
        result: list[list[int]] = []
        try:
            other.execute(app.engine._q("queue_lock"), {"key": f"{schema}.limited"})  # type: ignore[attr-defined]
            other.execute(
                f'UPDATE "{schema}".errands_jobs SET state = %s, attempt = 1, '
                "attempted_at = now(), attempted_by = %s WHERE id = ANY(%s)",
                ("executing", "other-node", ids[:3]),
            )
            claim = threading.Thread(
                target=lambda: result.append(
                    [
                        job.id
                        for job in app.engine.fetch(
                            "limited", 4, "node-1", ["work"], QueueLimits(global_limit=3)
                        )
                    ]
                )
            )
            claim.start()
            with psycopg.connect(POSTGRES_URL, autocommit=True) as watcher:
                wait_for(
                    lambda: (
                        watcher.execute(
                            "SELECT count(*) FROM pg_stat_activity "
                            "WHERE wait_event_type = 'Lock' AND wait_event = 'advisory'"
                            " AND datname = current_database() AND query LIKE '%errands.queue:%'"
                        ).fetchone()[0]  # type: ignore[index]
                        >= 1
                    ),
                    timeout=10,
                )
            assert result == [], "the claim waits for the lock"
            other.commit()
            claim.join(timeout=10)
            assert result == [[]], "3 executing elsewhere: the global limit of 3 is reached"
        finally:
            other.close()
            app.close()
