"""Workers survive PostgreSQL going away: terminated backends and a server restart.

These tests disturb every connection on the server, so they must not run in
parallel with other tests (the README's `pytest` runs serially).
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import time
from collections import defaultdict
from pathlib import Path

import psycopg
import pytest

import errands
from tests.integration.test_processes import WORKER_MODULE, read_sink_times, start_worker, stop
from tests.support import POSTGRES_URL, postgres_schema, wait_for, worker_pythonpath

pytestmark = pytest.mark.slow


@pytest.fixture
def pg_env(tmp_path: Path):
    (tmp_path / "procjobs.py").write_text(WORKER_MODULE)
    with postgres_schema() as schema:
        env = dict(os.environ)
        env.update(
            TEST_DATABASE_URL=POSTGRES_URL,
            TEST_SCHEMA=schema,
            TEST_SINK=str(tmp_path / "sink.log"),
            # Longer than any outage here: a live node must not be declared dead.
            TEST_RESCUE_AFTER="15",
            PYTHONPATH=worker_pythonpath(tmp_path),
        )
        yield env


def client(env: dict[str, str]) -> errands.App:
    app = errands.App(env["TEST_DATABASE_URL"], schema=env["TEST_SCHEMA"], auto_migrate=True)

    @app.job(name="work")
    def work(sleep: float = 0.0, first_sleep: float = 0.0) -> int:
        return 0

    app.migrate()
    return app


def terminate_errands_backends() -> int:
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name LIKE 'errands%' AND pid <> pg_backend_pid()"
        ).fetchall()
    return len(rows)


def started_nodes(env: dict[str, str]) -> int:
    """Worker processes past start-up: each registers its producers once running."""
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        row = conn.execute(
            f'SELECT count(DISTINCT node) FROM "{env["TEST_SCHEMA"]}".errands_producers'
        ).fetchone()
    return int(row[0]) if row else 0


def completed(app: errands.App) -> int:
    try:
        return app.queue_counts().get("default", {}).get("completed", 0)
    except errands.DatabaseError:
        return -1  # the server is down: not yet


def assert_no_concurrent_runs(sink: Path) -> None:
    spans: dict[int, list[tuple[float, float, int]]] = defaultdict(list)
    open_starts: dict[tuple[int, int], float] = {}
    for event, job_id, pid, at in read_sink_times(sink):
        if event == "start":
            open_starts[(job_id, pid)] = at
        else:
            spans[job_id].append((open_starts.pop((job_id, pid)), at, pid))
    for job_id, runs in spans.items():
        runs.sort()
        for (_, end, pid), (start, _, other) in itertools.pairwise(runs):
            assert start >= end, f"job {job_id} ran on {pid} and {other} at once"


def run_through(pg_env: dict[str, str], tmp_path: Path, disturb) -> errands.App:
    app = client(pg_env)
    jobs = app.enqueue_many([app.new_job("work", {"sleep": 0.01}) for _ in range(400)])
    workers = [start_worker(pg_env, tmp_path) for _ in range(2)]
    try:
        # Both workers running before the outage: this tests surviving one, not
        # starting during one (a start that cannot reach the database fails).
        wait_for(lambda: started_nodes(pg_env) == len(workers), timeout=60)
        wait_for(lambda: completed(app) >= 40, timeout=60)
        disturb()
        wait_for(lambda: completed(app) == len(jobs), timeout=120, every=0.2)
    finally:
        results = [stop(proc) for proc in workers]
    for code, err in results:
        assert code == 0, err[-3000:]
    assert_no_concurrent_runs(Path(pg_env["TEST_SINK"]))
    return app


def test_workers_survive_terminated_backends(pg_env: dict[str, str], tmp_path: Path):
    def disturb() -> None:
        for _ in range(3):
            assert terminate_errands_backends() > 0
            time.sleep(0.5)

    app = run_through(pg_env, tmp_path, disturb)
    assert app.queue_counts()["default"] == {"completed": 400}


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("pg_ctlcluster") is None,
    reason="restarting the PostgreSQL server needs root and pg_ctlcluster (CI has both)",
)
def test_workers_survive_a_postgres_restart(pg_env: dict[str, str], tmp_path: Path):
    version = sorted(os.listdir("/etc/postgresql"))[-1]

    def disturb() -> None:
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
            check=True,
            timeout=60,
        )

    app = run_through(pg_env, tmp_path, disturb)
    assert app.queue_counts()["default"] == {"completed": 400}


def test_listener_reconnects_after_termination(pg_env: dict[str, str], tmp_path: Path):
    # With polling slowed to 30 s, only a working LISTEN can start these jobs quickly.
    env = {**pg_env, "TEST_POLL_INTERVAL": "30"}
    app = client(env)
    proc = start_worker(env, tmp_path)
    try:
        first = app.enqueue("work", {})
        wait_for(lambda: app.get_job(first.id).state == "completed", timeout=20)
        terminate_errands_backends()
        time.sleep(1.5)  # the listener backs off, then reconnects
        second = app.enqueue("work", {})
        wait_for(lambda: app.get_job(second.id).state == "completed", timeout=15)
    finally:
        code, err = stop(proc)
    assert code == 0, err[-3000:]
    assert proc.returncode == 0 or proc.returncode == -signal.SIGTERM
