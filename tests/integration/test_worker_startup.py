"""A worker that cannot reach its database at start-up waits for it; other start-up errors
still fail at once.

The worker is a real ``errands worker`` (or ``app.run()``) process pointed at a
PostgreSQL URL on a free local port where nothing listens. The test later opens
that port with a small TCP forwarder onto the real server, as a database coming
back would; PostgreSQL itself is never touched.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import psycopg
import pytest

import errands
from tests.support import POSTGRES_URL, postgres_schema, wait_for, worker_pythonpath

pytestmark = pytest.mark.slow

RETRY_WARNING = "cannot reach the database at start-up"

APP_MODULE = """
import os
import errands

app = errands.App(
    os.environ["TEST_DATABASE_URL"],
    schema=os.environ["TEST_SCHEMA"],
    queues={"default": 2},
    poll_interval=0.05,
    stage_interval=0.1,
    grace_period=1.0,
)

@app.job(name="add")
def add(a: int, b: int) -> int:
    return a + b
"""


def free_port() -> int:
    """A local port nothing listens on (the kernel's pick, released at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Forwarder:
    """Forwards TCP connections on 127.0.0.1:``port`` to ``target``, on a thread of its own."""

    def __init__(self, port: int, target: tuple[str, int] = ("127.0.0.1", 5432)) -> None:
        self.target = target
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", port), self.loop
        ).result(timeout=10)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        async def shut() -> None:
            self.server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shut(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


class Worker:
    """A worker subprocess whose output is read as it comes (to poll it while it runs)."""

    def __init__(self, command: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.out), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.err), daemon=True),
        ]
        for reader in self.readers:
            reader.start()

    @staticmethod
    def _read(stream: IO[str], into: list[str]) -> None:
        for line in stream:
            into.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self.err)

    @property
    def stdout(self) -> str:
        return "".join(self.out)

    def warnings(self) -> int:
        return self.stderr.count(RETRY_WARNING)

    def wait(self, within: float) -> int:
        """The exit code, once the process ends within ``within`` seconds (else kill, fail)."""
        try:
            code = self.proc.wait(timeout=within)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"worker did not exit within {within}s:\n{self.stdout}\n{self.stderr}"
            ) from None
        for reader in self.readers:
            reader.join(timeout=10)
        return code

    def terminate(self, within: float = 30.0) -> tuple[int, float]:
        """SIGTERM; the exit code and how long the process took to exit."""
        started = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.wait(within)
        return code, time.monotonic() - started

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def schema() -> Iterator[str]:
    with postgres_schema() as name:
        yield name


@pytest.fixture
def worker_env(tmp_path: Path, schema: str) -> dict[str, str]:
    (tmp_path / "startupjobs.py").write_text(APP_MODULE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ERRANDS_")}
    env.update(
        TEST_SCHEMA=schema,
        PYTHONPATH=worker_pythonpath(tmp_path),
    )
    return env


@pytest.fixture
def client(schema: str) -> Iterator[errands.App]:
    """An app on the real port: migrates the schema and enqueues what the worker runs."""
    app = errands.App(POSTGRES_URL, schema=schema)

    @app.job(name="add")
    def add(a: int, b: int) -> int:
        return a + b

    app.migrate()
    yield app
    app.close()


def worker_command(entry: str, *extra: str) -> list[str]:
    if entry == "app.run":
        return [sys.executable, "-c", "import startupjobs; startupjobs.app.run()"]
    return [sys.executable, "-m", "errands", "--app", "startupjobs:app", "worker", *extra]


def producer_count(schema: str) -> int:
    with psycopg.connect(POSTGRES_URL) as conn:
        row = conn.execute(f'SELECT count(*) FROM "{schema}".errands_producers').fetchone()
    return int(row[0]) if row else 0


@pytest.mark.parametrize("processes", [1, 2])
def test_worker_waits_for_an_unreachable_database_then_runs_jobs(
    tmp_path: Path, worker_env: dict[str, str], client: errands.App, schema: str, processes: int
) -> None:
    port = free_port()
    env = {**worker_env, "TEST_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{port}/test"}
    worker = Worker(worker_command("worker", "--processes", str(processes)), tmp_path, env)
    forwarder: Forwarder | None = None
    try:
        # Two warnings: it tried again after the first failure instead of exiting.
        wait_for(lambda: worker.warnings() >= 2 or worker.proc.poll() is not None, timeout=60)
        assert worker.proc.poll() is None, worker.stderr
        assert worker.warnings() >= 2, worker.stderr
        assert "retrying in" in worker.stderr
        assert f"127.0.0.1:{port}" in worker.stderr  # the warning names what it cannot reach

        forwarder = Forwarder(port)  # the database "comes back"
        job = client.enqueue("add", {"a": 2, "b": 3})
        wait_for(lambda: producer_count(schema) == processes, timeout=60)
        wait_for(lambda: client.get_job(job.id).state == "completed", timeout=60)  # type: ignore[union-attr]
        assert client.get_job(job.id).result == 5  # type: ignore[union-attr]
        code, took = worker.terminate()
    finally:
        worker.kill()
        if forwarder is not None:
            forwarder.close()
    assert code == 0, worker.stderr
    assert took < 20, f"took {took:.1f}s to stop"
    assert "error:" not in worker.stderr
    assert "restarting" not in worker.stderr  # no child of the supervisor died meanwhile
    if processes == 1:
        assert "started: queues default(2)" in worker.stdout
        assert "errands worker stopped (completed 1)" in worker.stdout


@pytest.mark.parametrize("entry", ["worker", "app.run"])
def test_sigterm_while_waiting_for_the_database_stops_cleanly(
    tmp_path: Path, worker_env: dict[str, str], entry: str
) -> None:
    port = free_port()
    env = {**worker_env, "TEST_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{port}/test"}
    worker = Worker(worker_command(entry), tmp_path, env)
    try:
        wait_for(lambda: worker.warnings() >= 1 or worker.proc.poll() is not None, timeout=60)
        assert worker.proc.poll() is None, worker.stderr
        code, took = worker.terminate()
    finally:
        worker.kill()
    assert code == 0, worker.stderr
    assert took < 10, f"took {took:.1f}s to stop"
    assert "Traceback" not in worker.stderr
    if entry == "worker":
        assert "errands worker stopped (no jobs run)" in worker.stdout


@pytest.mark.parametrize(
    ("url", "message"),
    [
        # Never migrated, auto_migrate off (PostgreSQL's default): a SchemaError.
        (POSTGRES_URL, "run `errands migrate`"),
        # The server answers and refuses the login: configuration, not an outage.
        ("postgresql://postgres@127.0.0.1:5432/errands_no_such_db", "does not exist"),
    ],
    ids=["unmigrated-schema", "missing-database"],
)
@pytest.mark.parametrize("entry", ["worker", "app.run"])
def test_other_start_up_errors_still_fail_fast(
    tmp_path: Path, worker_env: dict[str, str], entry: str, url: str, message: str
) -> None:
    worker = Worker(worker_command(entry), tmp_path, {**worker_env, "TEST_DATABASE_URL": url})
    try:
        code = worker.wait(within=30)
    finally:
        worker.kill()
    assert code == 1, worker.stderr
    assert message in worker.stderr
    assert RETRY_WARNING not in worker.stderr
    if entry == "worker":
        assert "error: " in worker.stderr and "Traceback" not in worker.stderr


def test_processes_that_keep_failing_at_start_up_make_the_supervisor_exit(
    tmp_path: Path, worker_env: dict[str, str]
) -> None:
    """Every child fails on the never-migrated schema (auto_migrate is off on PostgreSQL):
    the supervisor gives up after a few tries instead of restarting them forever."""
    env = {**worker_env, "TEST_DATABASE_URL": POSTGRES_URL}
    worker = Worker(worker_command("worker", "--processes", "2"), tmp_path, env)
    try:
        code = worker.wait(within=90)
    finally:
        worker.kill()
    assert code == 1, worker.stderr
    assert "run `errands migrate`" in worker.stderr  # each child's own error
    assert worker.stderr.count("keep failing at start-up") == 1, worker.stderr
    assert "exiting with code 1" in worker.stderr
    assert "Traceback" not in worker.stderr
