"""``errands worker --processes 2`` whose jobs kill their worker process.

Jobs that ``os._exit()`` within seconds of a child's start crash a child that
started fine (it reported ready): the supervisor restarts it every time and
never gives up, as it would for children failing at start-up. Four quick
crashes in a row are more than the 3 start-up failures it gives up after.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import errands
from tests.support import wait_for, worker_pythonpath

pytestmark = pytest.mark.slow

CRASHES = 4
PROCESSES = ["--processes", "2"]

APP_MODULE = textwrap.dedent(
    """
    import os
    import errands
    from tests.sink import append

    app = errands.App(
        os.environ["TEST_DATABASE_URL"],
        schema=os.environ.get("TEST_SCHEMA") or None,
        auto_migrate=True,
        queues={"default": 4},
        rescue_after=1.0,
        stage_interval=0.05,
        poll_interval=0.05,
        grace_period=1.0,
    )

    def record(event: str) -> None:
        append(event, errands.current_job().id, os.getpid())

    @app.job(name="work")
    def work() -> int:
        record("work")
        return os.getpid()

    @app.job(name="crash")
    def crash() -> None:
        record("crash")
        os._exit(1)  # the whole worker process dies, as on a segfault or an OOM kill
    """
)


@pytest.fixture
def worker_env(tmp_path: Path, database_url: str, schema: str | None) -> dict[str, str]:
    (tmp_path / "crashjobs.py").write_text(APP_MODULE)
    env = dict(os.environ)
    env.pop("ERRANDS_READY_FD", None)
    env.update(
        TEST_DATABASE_URL=database_url,
        TEST_SCHEMA=schema or "",
        TEST_SINK=str(tmp_path / "sink.log"),
        PYTHONPATH=worker_pythonpath(tmp_path),
    )
    return env


@pytest.fixture
def client(worker_env: dict[str, str]) -> Iterator[errands.App]:
    """An app in the test process registering the same job names, to enqueue them."""
    app = errands.App(
        worker_env["TEST_DATABASE_URL"],
        schema=worker_env["TEST_SCHEMA"] or None,
        auto_migrate=True,
    )

    @app.job(name="work")
    def work() -> int:
        return 0

    @app.job(name="crash")
    def crash() -> None:
        return None

    app.migrate()
    yield app


def sink_events(sink: Path, event: str) -> list[str]:
    if not sink.exists():
        return []
    return [line for line in sink.read_text().splitlines() if line.split()[0] == event]


def test_jobs_crashing_their_worker_process_never_make_the_supervisor_give_up(
    tmp_path: Path, worker_env: dict[str, str], client: errands.App
) -> None:
    sink = Path(worker_env["TEST_SINK"])
    stderr_path = tmp_path / "supervisor.err"
    with stderr_path.open("wb") as stderr:
        supervisor = subprocess.Popen(
            [sys.executable, "-m", "errands", "--app", "crashjobs:app", "worker", *PROCESSES],
            cwd=tmp_path,
            env=worker_env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )

    def err() -> str:
        return stderr_path.read_text(errors="replace")

    def alive() -> bool:
        assert supervisor.poll() is None, f"the supervisor exited:\n{err()[-4000:]}"
        return True

    try:
        wait_for(lambda: alive() and err().count("ready after") >= 2, timeout=60)
        normal = [client.enqueue("work") for _ in range(10)]
        # One crash at a time, each soon after a (re)start: the old time-based rule
        # counted every one as a start-up failure and gave up at the third.
        for n in range(1, CRASHES + 1):
            client.enqueue("crash", max_attempts=1)
            wait_for(lambda n=n: alive() and len(sink_events(sink, "crash")) >= n, timeout=90)
        normal += [client.enqueue("work") for _ in range(10)]
        wait_for(
            lambda: alive() and all(client.get_job(job.id).state == "completed" for job in normal),
            timeout=120,
            every=0.2,
        )
        # Both slots are running again (the last crash's replacement reported ready).
        wait_for(lambda: alive() and err().count("ready after") >= 2 + CRASHES, timeout=90)
        alive()
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nsupervisor's stderr:\n{err()[-6000:]}") from exc
    finally:
        if supervisor.poll() is None:
            supervisor.send_signal(signal.SIGTERM)
        try:
            code = supervisor.wait(timeout=30)
        except subprocess.TimeoutExpired:
            supervisor.kill()
            supervisor.wait()
            raise
    log = err()
    assert code == 0, log[-4000:]
    assert log.count("a crash after start-up") == CRASHES, log[-4000:]
    assert "keep failing at start-up" not in log
    assert "start-up failure" not in log
    assert len(sink_events(sink, "crash")) == CRASHES  # max_attempts=1: each ran once
