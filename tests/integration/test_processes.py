"""Real worker processes on one database: no job runs twice; a killed worker's job is rescued.

Each job records its start and end to a sink file outside the database, so the
checks do not trust the table they are checking.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

import errands
from tests.support import wait_for, worker_pythonpath

pytestmark = pytest.mark.slow

WORKER_MODULE = textwrap.dedent(
    """
    import os, time
    import errands
    from tests.sink import append

    app = errands.App(
        os.environ["TEST_DATABASE_URL"],
        schema=os.environ.get("TEST_SCHEMA") or None,
        auto_migrate=True,
        queues={q: 4 for q in os.environ.get("TEST_QUEUES", "default").split(",")},
        rescue_after=float(os.environ.get("TEST_RESCUE_AFTER", "1.0")),
        stage_interval=0.05,
        poll_interval=float(os.environ.get("TEST_POLL_INTERVAL", "0.05")),
        grace_period=1.0,
    )

    def record(event: str, job_id: int) -> None:
        append(event, job_id, os.getpid(), time.time())

    @app.job(name="work")
    def work(sleep: float = 0.0, first_sleep: float = 0.0) -> int:
        job = errands.current_job()
        record("start", job.id)
        time.sleep(first_sleep if job.attempt == 1 else sleep)
        record("end", job.id)
        return os.getpid()
    """
)


@pytest.fixture
def worker_env(tmp_path: Path, database_url: str, schema: str | None) -> dict[str, str]:
    (tmp_path / "procjobs.py").write_text(WORKER_MODULE)
    env = dict(os.environ)
    env.update(
        TEST_DATABASE_URL=database_url,
        TEST_SCHEMA=schema or "",
        TEST_SINK=str(tmp_path / "sink.log"),
        PYTHONPATH=worker_pythonpath(tmp_path),
    )
    return env


def start_worker(
    env: dict[str, str], cwd: Path, queues: str = "default"
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", "import procjobs; procjobs.app.run()"],
        cwd=cwd,
        env={**env, "TEST_QUEUES": queues},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def read_sink_times(path: Path) -> list[tuple[str, int, int, float]]:
    """``(event, job id, pid, time)`` for every start and end recorded so far."""
    if not path.exists():
        return []
    events = []
    for line in path.read_text().splitlines():
        event, job_id, pid, at = line.split()
        events.append((event, int(job_id), int(pid), float(at)))
    return events


def read_sink(path: Path) -> list[tuple[str, int, int]]:
    return [(event, job_id, pid) for event, job_id, pid, _ in read_sink_times(path)]


def stop(proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return proc.returncode, err.decode(errors="replace")


def client(env: dict[str, str]) -> errands.App:
    """An app in the test process, registering the same worker name to enqueue it."""
    app = errands.App(
        env["TEST_DATABASE_URL"], schema=env["TEST_SCHEMA"] or None, auto_migrate=True
    )

    @app.job(name="work")
    def work(sleep: float = 0.0, first_sleep: float = 0.0) -> int:
        return 0

    app.migrate()
    return app


def test_two_processes_run_each_job_exactly_once(worker_env: dict[str, str], tmp_path: Path):
    app = client(worker_env)
    workers = [start_worker(worker_env, tmp_path) for _ in range(2)]
    try:
        wait_for(lambda: len(producer_rows(app)) == 2, timeout=30)
        jobs = app.enqueue_many([app.new_job("work", {"sleep": 0.002}) for _ in range(300)])
        ids = {job.id for job in jobs}
        wait_for(
            lambda: app.queue_counts().get("default", {}).get("completed", 0) == len(ids),
            timeout=60,
        )
    finally:
        results = [stop(proc) for proc in workers]
    for code, err in results:
        assert code == 0, err
        assert "database is locked" not in err, err
    events = read_sink(Path(worker_env["TEST_SINK"]))
    starts = Counter(job_id for event, job_id, _ in events if event == "start")
    assert set(starts) == ids
    assert max(starts.values()) == 1, [j for j, n in starts.items() if n > 1]
    pids = {pid for event, _, pid in events if event == "start"}
    assert len(pids) == 2, "both worker processes should have run jobs"
    results_by_pid = Counter(job.result for job in app.list_jobs(state="completed", limit=1000))
    assert set(results_by_pid) == pids


def test_killed_worker_job_is_rescued_and_completes(worker_env: dict[str, str], tmp_path: Path):
    app = client(worker_env)
    victim = start_worker(worker_env, tmp_path)
    sink = Path(worker_env["TEST_SINK"])
    try:
        job = app.enqueue("work", {"first_sleep": 30.0})
        wait_for(lambda: any(e[0] == "start" for e in read_sink(sink)), timeout=30)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        assert app.get_job(job.id).state == "executing"
        killed_at = time.monotonic()
        survivor = start_worker(worker_env, tmp_path)
        try:
            wait_for(lambda: app.get_job(job.id).state == "completed", timeout=30)
            recovery = time.monotonic() - killed_at
        finally:
            code, err = stop(survivor)
        assert code == 0, err
    finally:
        if victim.poll() is None:
            victim.kill()
        victim.communicate()
    done = app.get_job(job.id)
    assert done.attempt == 2
    assert done.errors[0]["type"] == "errands.Rescued"
    assert done.result == survivor.pid
    starts = [e for e in read_sink(sink) if e[0] == "start"]
    assert [pid for _, _, pid in starts] == [victim.pid, survivor.pid]
    assert recovery < 15, f"rescue took {recovery:.1f}s with rescue_after=1s"


def test_sigterm_past_grace_leaves_a_running_sync_job_to_rescue(
    worker_env: dict[str, str], tmp_path: Path
):
    """A sync body stuck past the grace period cannot be stopped: the worker exits
    without handing its job back (another node would run it while it still runs),
    and the job is rescued once the dead worker's heartbeat is old enough."""
    app = client(worker_env)
    proc = start_worker(worker_env, tmp_path)
    sink = Path(worker_env["TEST_SINK"])
    job = app.enqueue("work", {"first_sleep": 30.0})
    try:
        wait_for(lambda: any(e[0] == "start" for e in read_sink(sink)), timeout=30)
        started = time.monotonic()
    finally:
        code, err = stop(proc)
    assert code == 0, err
    assert time.monotonic() - started < 10, "a stuck sync job must not keep the worker alive"
    assert app.get_job(job.id).state == "executing"
    survivor = start_worker(worker_env, tmp_path)
    try:
        wait_for(lambda: app.get_job(job.id).state == "completed", timeout=30)
    finally:
        stop(survivor)
    done = app.get_job(job.id)
    assert done.attempt == 2 and done.errors[-1]["type"] == "errands.Rescued"


def test_killing_the_leader_hands_leadership_over(worker_env: dict[str, str], tmp_path: Path):
    app = client(worker_env)
    sink = Path(worker_env["TEST_SINK"])
    leader = start_worker(worker_env, tmp_path)
    follower = None
    try:
        wait_for(lambda: leader_pid(app) == leader.pid, timeout=30)
        job = app.enqueue("work", {"first_sleep": 30.0})
        wait_for(lambda: any(e[0] == "start" for e in read_sink(sink)), timeout=30)
        follower = start_worker(worker_env, tmp_path)
        wait_for(lambda: len(producer_rows(app)) == 2, timeout=30)
        leader.send_signal(signal.SIGKILL)
        leader.wait(timeout=10)
        # The follower takes the lease once it expires, then rescues and runs the job.
        wait_for(lambda: leader_pid(app) == follower.pid, timeout=30)
        wait_for(lambda: app.get_job(job.id).state == "completed", timeout=30)
    finally:
        code, err = stop(follower) if follower is not None else (0, "")
        stop(leader)
    assert code == 0, err
    done = app.get_job(job.id)
    assert done.attempt == 2 and done.result == follower.pid
    assert done.errors[0]["type"] == "errands.Rescued"


def test_killing_a_follower_lets_the_leader_rescue(worker_env: dict[str, str], tmp_path: Path):
    app = client(worker_env)
    sink = Path(worker_env["TEST_SINK"])
    leader = start_worker(worker_env, tmp_path, queues="default")
    wait_for(lambda: leader_pid(app) == leader.pid, timeout=30)
    # Only the follower works queue "other", so it holds the job.
    follower = start_worker(worker_env, tmp_path, queues="other")
    try:
        job = app.enqueue("work", {"first_sleep": 30.0}, queue="other")
        wait_for(lambda: any(e[0] == "start" for e in read_sink(sink)), timeout=30)
        assert read_sink(sink)[0][2] == follower.pid
        follower.send_signal(signal.SIGKILL)
        follower.wait(timeout=10)
        wait_for(lambda: app.get_job(job.id).state == "available", timeout=30)
        assert leader_pid(app) == leader.pid
    finally:
        code, err = stop(leader)
        stop(follower)
    assert code == 0, err
    rescued = app.get_job(job.id)
    assert rescued.attempt == 1
    assert rescued.errors[-1]["type"] == "errands.Rescued"


def producer_rows(app: errands.App) -> list[str]:
    return [f"{p}" for p in _select(app, "SELECT id FROM {t}errands_producers")]


def producer_pids(app: errands.App) -> set[int]:
    """Pids of the nodes with a producer row (producer ids are node/queue/random)."""
    return {int(row.split("/")[0].split("-")[-2]) for row in producer_rows(app)}


def leader_pid(app: errands.App) -> int | None:
    """The pid of the node holding an unexpired leader lease (names are host-pid-random)."""
    now = "now()" if app.engine.dialect == "postgres" else str(time.time())
    rows = _select(app, f"SELECT node FROM {{t}}errands_leader WHERE expires_at > {now}")
    return int(rows[0].split("-")[-2]) if rows else None


def _select(app: errands.App, sql: str) -> list[str]:
    if app.engine.dialect == "sqlite":
        import sqlite3

        with sqlite3.connect(app.database_url.path) as conn:
            return [row[0] for row in conn.execute(sql.format(t=""))]
    import psycopg

    with psycopg.connect(app.database_url.url) as conn:
        return [row[0] for row in conn.execute(sql.format(t=f'"{app.schema}".'))]


def test_supervisor_runs_n_processes_and_restarts_a_dead_one(
    worker_env: dict[str, str], tmp_path: Path
):
    app = client(worker_env)
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "errands", "--app", "procjobs:app", "worker", "--processes", "2"],
        cwd=tmp_path,
        env=worker_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: len(producer_rows(app)) == 2, timeout=60)
        children = producer_pids(app)
        assert len(children) == 2 and supervisor.pid not in children
        os.kill(min(children), signal.SIGKILL)
        # The supervisor starts a replacement; jobs still all run exactly once.
        jobs = app.enqueue_many([app.new_job("work", {"sleep": 0.001}) for _ in range(100)])
        wait_for(lambda: app.queue_counts()["default"].get("completed", 0) == len(jobs), timeout=60)
        wait_for(lambda: producer_pids(app) - children, timeout=60)
    finally:
        code, err = stop(supervisor)
    assert code == 0, err[-3000:]
    assert "restarting" in err
    starts = Counter(j for e, j, _ in read_sink(Path(worker_env["TEST_SINK"])) if e == "start")
    assert max(starts.values()) == 1 and len(starts) == 100
