"""The ``errands`` command, end to end on SQLite files in tmp_path.

Most tests call the click command in-process with ``CliRunner``; ``worker`` and
``python -m errands`` run as real subprocesses, since signals and process exit
are what they test.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from click.testing import CliRunner, Result

import errands
from errands.cli import cli
from errands.engines.migrations import latest_version

# Unset the variables the command reads, so the developer's shell cannot leak in.
CLEAN_ENV: dict[str, str | None] = {
    "ERRANDS_APP": None,
    "ERRANDS_DATABASE_URL": None,
    "COLUMNS": "200",
}

APP_SOURCE = """
import time
import errands

app = errands.App({url!r}, queues={{"default": 2, "mail": 1}}, rescue_after=5,
                  stage_interval=0.1, poll_interval=0.05)

@app.job(name="add")
def add(a: int, b: int) -> int:
    return a + b

@app.job(name="slow", queue="mail")
async def slow(seconds: float) -> str:
    import asyncio
    await asyncio.sleep(seconds)
    return "slept"

@app.job(name="stuck")
def stuck(seconds: float) -> None:
    time.sleep(seconds)

@app.register
class Boom(errands.Worker, name="boom", max_attempts=1):
    def perform(self, job: errands.Job) -> None:
        raise RuntimeError("kaboom " + str(job.args.get("n", 0)))

not_an_app = 42
"""


def invoke(*args: str, env: dict[str, str | None] | None = None) -> Result:
    """Run ``errands ARGS`` in-process; stdout and stderr are also kept apart."""
    return CliRunner().invoke(cli, list(args), env={**CLEAN_ENV, **(env or {})})


def clean_subprocess_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ERRANDS_")}
    env.update(COLUMNS="200", **extra)
    return env


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'jobs.db'}"


@pytest.fixture
def app_module(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ModuleType]:
    """A fresh app module in tmp_path (unique name), importable from the cwd."""
    name = f"cliapp_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(APP_SOURCE.format(url=db_url)))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module(name)
    yield module
    module.app.close()
    sys.modules.pop(name, None)


@pytest.fixture
def app(app_module: ModuleType) -> errands.App:
    result: errands.App = app_module.app
    return result


@pytest.fixture
def spec(app_module: ModuleType) -> str:
    return f"{app_module.__name__}:app"


def wait_for(check: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# -- general ------------------------------------------------------------------------------
def test_help_lists_every_command() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for command in (
        "worker",
        "enqueue",
        "jobs",
        "job",
        "retry",
        "cancel",
        "delete",
        "queues",
        "migrate",
        "demo",
    ):
        assert command in result.output


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert errands.__version__ in result.output


def test_python_dash_m_runs_the_command(tmp_path: Path, db_url: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "errands", "--database-url", db_url, "migrate"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=clean_subprocess_env(),
    )
    assert proc.returncode == 0, proc.stderr
    assert f"schema version {latest_version('sqlite')}" in proc.stdout
    assert (tmp_path / "jobs.db").exists()


# -- migrate ------------------------------------------------------------------------------
def test_migrate_creates_the_database(tmp_path: Path, db_url: str) -> None:
    result = invoke("--database-url", db_url, "migrate")
    assert result.exit_code == 0, result.output
    assert f"schema version {latest_version('sqlite')}" in result.output
    assert (tmp_path / "jobs.db").exists()
    assert errands.App(db_url).queue_counts() == {}


def test_migrate_reads_the_url_from_the_environment(tmp_path: Path, db_url: str) -> None:
    result = invoke("migrate", env={"ERRANDS_DATABASE_URL": db_url})
    assert result.exit_code == 0, result.output
    assert (tmp_path / "jobs.db").exists()


# -- enqueue ------------------------------------------------------------------------------
def test_enqueue_prints_the_id_and_stores_the_job(app: errands.App, spec: str) -> None:
    result = invoke(
        "--app",
        spec,
        "enqueue",
        "add",
        "--args",
        '{"a": 2, "b": 3}',
        "--queue",
        "mail",
        "--priority",
        "4",
        "--max-attempts",
        "7",
    )
    assert result.exit_code == 0, result.output
    job_id = int(result.stdout.strip())
    job = app.get_job(job_id)
    assert job is not None
    assert (job.worker, job.args, job.queue, job.priority, job.max_attempts) == (
        "add",
        {"a": 2, "b": 3},
        "mail",
        4,
        7,
    )
    assert job.state == "available"
    assert f"enqueued job {job_id}" in result.stderr


def test_enqueue_reads_the_app_from_the_environment(app: errands.App, spec: str) -> None:
    result = invoke("enqueue", "add", "--args", '{"a": 1, "b": 1}', env={"ERRANDS_APP": spec})
    assert result.exit_code == 0, result.output
    assert app.drain() == {"completed": 1}


def test_enqueue_in_schedules_the_job_ahead(app: errands.App, spec: str) -> None:
    before = time.time()
    result = invoke("--app", spec, "enqueue", "add", "--args", '{"a": 1, "b": 2}', "--in", "60")
    assert result.exit_code == 0, result.output
    job = app.get_job(int(result.stdout))
    assert job is not None
    assert job.state == "scheduled"
    assert before + 59 <= job.scheduled_at <= time.time() + 61


def test_enqueue_unknown_worker_is_a_usage_error(app: errands.App, spec: str) -> None:
    result = invoke("--app", spec, "enqueue", "nope", "--args", "{}")
    assert result.exit_code == 2
    assert "no worker named 'nope'" in result.output
    assert "add" in result.output  # the registered names are listed
    assert "Traceback" not in result.output
    assert app.queue_counts() == {}


@pytest.mark.parametrize("bad", ["{bad", "not json", ""])
def test_enqueue_bad_json_names_the_option_and_value(app: errands.App, spec: str, bad: str) -> None:
    result = invoke("--app", spec, "enqueue", "add", "--args", bad)
    assert result.exit_code == 2
    assert "--args" in result.output
    assert f"{bad!r}" in result.output
    assert app.queue_counts() == {}


def test_enqueue_args_must_be_an_object(app: errands.App, spec: str) -> None:
    result = invoke("--app", spec, "enqueue", "add", "--args", "[1, 2]")
    assert result.exit_code == 2
    assert "JSON object" in result.output


def test_enqueue_invalid_option_is_a_one_line_error(app: errands.App, spec: str) -> None:
    result = invoke(
        "--app", spec, "enqueue", "add", "--args", '{"a": 1, "b": 2}', "--priority", "12"
    )
    assert result.exit_code == 1
    assert result.stderr.strip().startswith("error: priority must be")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output
    assert app.queue_counts() == {}


def test_enqueue_args_that_do_not_fit_the_function(app: errands.App, spec: str) -> None:
    result = invoke("--app", spec, "enqueue", "add", "--args", '{"a": 1}')
    assert result.exit_code == 1
    assert "error:" in result.stderr and "'b'" in result.stderr


def test_enqueue_needs_an_app(db_url: str) -> None:
    result = invoke("--database-url", db_url, "enqueue", "add")
    assert result.exit_code == 2
    assert "needs --app" in result.output


# -- --app and --database-url -----------------------------------------------------------
def test_unknown_module_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke("--app", "no_such_module_xyz:app", "jobs")
    assert result.exit_code == 2
    assert "could not import 'no_such_module_xyz:app'" in result.output
    assert "Traceback" not in result.output


def test_missing_attribute_is_a_clear_error(app_module: ModuleType) -> None:
    result = invoke("--app", f"{app_module.__name__}:nothing", "jobs")
    assert result.exit_code == 2
    assert f"could not import '{app_module.__name__}:nothing'" in result.output
    assert "nothing" in result.output


def test_attribute_that_is_not_an_app_is_refused(app_module: ModuleType) -> None:
    result = invoke("--app", f"{app_module.__name__}:not_an_app", "jobs")
    assert result.exit_code == 2
    assert "not an errands.App" in result.output


def test_module_alone_means_its_app_attribute(app: errands.App, app_module: ModuleType) -> None:
    app.enqueue("add", {"a": 1, "b": 1})
    result = invoke("--app", app_module.__name__, "jobs", "--json")
    assert result.exit_code == 0, result.output
    assert [job["worker"] for job in json.loads(result.stdout)] == ["add"]


def test_module_raising_at_import_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken_app_mod.py").write_text("raise RuntimeError('half-written module')\n")
    monkeypatch.chdir(tmp_path)
    result = invoke("--app", "broken_app_mod:app", "jobs")
    sys.modules.pop("broken_app_mod", None)
    assert result.exit_code == 2
    assert "half-written module" in result.output


def test_database_url_is_ignored_with_a_warning_when_an_app_is_given(
    app: errands.App, spec: str, tmp_path: Path
) -> None:
    app.enqueue("add", {"a": 1, "b": 1})
    other = f"sqlite:///{tmp_path / 'other.db'}"
    result = invoke("--app", spec, "--database-url", other, "jobs", "--json")
    assert result.exit_code == 0, result.output
    assert "ignoring --database-url" in result.stderr
    assert len(json.loads(result.stdout)) == 1  # read from the app's own database
    assert not (tmp_path / "other.db").exists()


@pytest.mark.parametrize("url", ["nope", "mysql://localhost/db", "sqlite://"])
def test_malformed_database_url_is_a_one_line_error(url: str) -> None:
    result = invoke("--database-url", url, "jobs")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ")
    assert "database URL" in result.stderr
    assert "Traceback" not in result.output


def test_inspecting_a_missing_sqlite_file_does_not_create_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'absent.db'}"
    result = invoke("--database-url", url, "jobs")
    assert result.exit_code == 1
    assert "no database at" in result.stderr
    assert not (tmp_path / "absent.db").exists()


# -- jobs and job ------------------------------------------------------------------------------
@pytest.fixture
def mixed(app: errands.App) -> dict[str, int]:
    """One completed, one discarded (with an error) and one available job."""
    done = app.enqueue("add", {"a": 1, "b": 2})
    failed = app.enqueue("boom", {"n": 7})
    assert app.drain() == {"completed": 1, "discarded": 1}
    waiting = app.enqueue("slow", {"seconds": 0.01}, priority=3)
    return {"completed": done.id, "discarded": failed.id, "available": waiting.id}


def test_jobs_table_shows_every_job(db_url: str, mixed: dict[str, int]) -> None:
    result = invoke("--database-url", db_url, "jobs")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    for state, job_id in mixed.items():
        row = next(line for line in lines if line.strip().startswith(f"{job_id} "))
        assert state in row
    failed_id = mixed["discarded"]
    discarded_row = next(line for line in lines if line.strip().startswith(f"{failed_id} "))
    assert "RuntimeError: kaboom 7" in discarded_row
    assert "1/1" in discarded_row
    assert "3 job(s)" in result.stdout


def test_a_time_written_as_text_by_hand_is_shown_not_fatal(db_url: str, tmp_path: Path) -> None:
    """SQLite keeps text in a REAL column; one such row must not break the listing."""
    assert invoke("--database-url", db_url, "migrate").exit_code == 0
    with sqlite3.connect(tmp_path / "jobs.db") as conn:
        conn.execute(
            "INSERT INTO errands_jobs (queue, worker, inserted_at, scheduled_at) "
            "VALUES ('default', 'w', 1.0, 'garbage')"
        )
    listed = invoke("--database-url", db_url, "jobs")
    shown = invoke("--database-url", db_url, "job", "1")
    for result in (listed, shown):
        assert result.exit_code == 0, result.output
        assert "'garbage' (not a time)" in result.stdout


def test_jobs_filters(db_url: str, mixed: dict[str, int]) -> None:
    result = invoke("--database-url", db_url, "jobs", "--state", "discarded", "--json")
    assert result.exit_code == 0, result.output
    assert [job["id"] for job in json.loads(result.stdout)] == [mixed["discarded"]]
    result = invoke("--database-url", db_url, "jobs", "--queue", "mail", "--json")
    assert [job["id"] for job in json.loads(result.stdout)] == [mixed["available"]]
    result = invoke("--database-url", db_url, "jobs", "--worker", "add", "--json")
    assert [job["id"] for job in json.loads(result.stdout)] == [mixed["completed"]]
    result = invoke("--database-url", db_url, "jobs", "--limit", "1", "--json")
    assert [job["id"] for job in json.loads(result.stdout)] == [mixed["available"]]  # newest


def test_jobs_with_no_match(db_url: str, mixed: dict[str, int]) -> None:
    result = invoke("--database-url", db_url, "jobs", "--state", "executing")
    assert result.exit_code == 0
    assert "no jobs match" in result.output


def test_jobs_rejects_an_unknown_state(db_url: str, mixed: dict[str, int]) -> None:
    result = invoke("--database-url", db_url, "jobs", "--state", "done")
    assert result.exit_code == 2
    assert "'done'" in result.output


def test_job_shows_the_full_record(db_url: str, mixed: dict[str, int]) -> None:
    result = invoke("--database-url", db_url, "job", str(mixed["discarded"]))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "boom" in out and "discarded" in out and "1 of 1" in out
    assert '"n": 7' in out  # args as JSON
    assert "errors (1)" in out
    assert "RuntimeError: kaboom 7" in out
    assert "Traceback (most recent call last)" in out
    assert 'raise RuntimeError("kaboom "' in out  # the traceback's source line


def test_job_shows_the_result(db_url: str, mixed: dict[str, int]) -> None:
    result = invoke("--database-url", db_url, "job", str(mixed["completed"]), "--json")
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    assert (data["state"], data["result"], data["args"], data["attempt"]) == (
        "completed",
        3,
        {"a": 1, "b": 2},
        1,
    )


def test_job_with_a_missing_id_fails(db_url: str, mixed: dict[str, int]) -> None:
    result = invoke("--database-url", db_url, "job", "999")
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: no job with id 999"


def test_job_id_must_be_a_number(db_url: str, mixed: dict[str, int]) -> None:
    result = invoke("--database-url", db_url, "job", "abc")
    assert result.exit_code == 2


# -- retry, cancel, delete -------------------------------------------------------------------
def test_retry_a_discarded_job(app: errands.App, db_url: str, mixed: dict[str, int]) -> None:
    job_id = mixed["discarded"]
    result = invoke("--database-url", db_url, "retry", str(job_id))
    assert result.exit_code == 0, result.output
    assert "discarded -> available" in result.output
    job = app.get_job(job_id)
    assert job is not None and job.state == "available"
    again = invoke("--database-url", db_url, "retry", str(job_id))
    assert again.exit_code == 1
    assert f"job {job_id} cannot be retried (state available)" in again.stderr


def test_retry_missing_job(db_url: str, mixed: dict[str, int]) -> None:
    result = invoke("--database-url", db_url, "retry", "999")
    assert result.exit_code == 1
    assert "no job with id 999" in result.stderr


def test_cancel_an_available_job(app: errands.App, db_url: str, mixed: dict[str, int]) -> None:
    job_id = mixed["available"]
    result = invoke("--database-url", db_url, "cancel", str(job_id))
    assert result.exit_code == 0, result.output
    assert "cancelled (was available)" in result.output
    job = app.get_job(job_id)
    assert job is not None and job.state == "cancelled"


def test_cancel_a_finished_job_fails(app: errands.App, db_url: str, mixed: dict[str, int]) -> None:
    job_id = mixed["completed"]
    result = invoke("--database-url", db_url, "cancel", str(job_id))
    assert result.exit_code == 1
    assert f"job {job_id} cannot be cancelled (state completed)" in result.stderr
    job = app.get_job(job_id)
    assert job is not None and job.state == "completed"


def test_delete_a_job(app: errands.App, db_url: str, mixed: dict[str, int]) -> None:
    job_id = mixed["completed"]
    result = invoke("--database-url", db_url, "delete", str(job_id))
    assert result.exit_code == 0, result.output
    assert app.get_job(job_id) is None
    again = invoke("--database-url", db_url, "delete", str(job_id))
    assert again.exit_code == 1
    assert f"no job with id {job_id}" in again.stderr


# -- queues -----------------------------------------------------------------------------------
def _row(output: str, first: str) -> list[str]:
    for line in output.splitlines():
        cells = line.replace("│", " ").replace("┃", " ").split()
        if cells and cells[0] == first:
            return cells
    raise AssertionError(f"no row {first!r} in:\n{output}")


def test_queues_counts_by_state(db_url: str, mixed: dict[str, int]) -> None:
    result = invoke("--database-url", db_url, "queues")
    assert result.exit_code == 0, result.output
    header = _row(result.stdout, "queue")
    default, mail = _row(result.stdout, "default"), _row(result.stdout, "mail")
    assert header == ["queue", "available", "completed", "discarded", "total"]
    assert default == ["default", "0", "1", "1", "2"]
    assert mail == ["mail", "1", "0", "0", "1"]
    assert _row(result.stdout, "total") == ["total", "1", "1", "1", "3"]


def test_queues_with_an_app_shows_limits(spec: str, mixed: dict[str, int]) -> None:
    result = invoke("--app", spec, "queues")
    assert result.exit_code == 0, result.output
    assert _row(result.stdout, "queue")[:2] == ["queue", "limit"]
    assert _row(result.stdout, "default")[:2] == ["default", "2"]
    assert _row(result.stdout, "mail")[:2] == ["mail", "1"]


def test_queues_of_an_empty_database(db_url: str) -> None:
    assert invoke("--database-url", db_url, "migrate").exit_code == 0
    result = invoke("--database-url", db_url, "queues")
    assert result.exit_code == 0
    assert result.stdout.strip() == "no jobs"


# -- worker (a real process) ---------------------------------------------------------------
def _start_worker(tmp_path: Path, spec: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "errands", "--app", spec, "worker", *extra],
        cwd=tmp_path,
        env=clean_subprocess_env(),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _stop(proc: subprocess.Popen[str], within: float) -> tuple[float, str, str]:
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=within)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"worker did not exit within {within}s:\n{out}\n{err}") from None
    return time.monotonic() - started, out, err


def _states(app: errands.App, ids: list[int]) -> list[str]:
    return [str(job.state) if (job := app.get_job(i)) else "missing" for i in ids]


def test_worker_runs_jobs_and_stops_on_sigterm(app: errands.App, spec: str, tmp_path: Path) -> None:
    ids = [app.enqueue("add", {"a": i, "b": 1}).id for i in range(3)]
    ids.append(app.enqueue("slow", {"seconds": 0.05}).id)
    proc = _start_worker(tmp_path, spec)
    try:
        wait_for(lambda: _states(app, ids) == ["completed"] * 4, what="jobs to complete")
    finally:
        took, out, err = _stop(proc, within=15)
    assert proc.returncode == 0, err
    assert took < 5
    assert "started: queues default(2), mail(1)" in out
    assert "errands worker stopped (completed 4)" in out
    assert [app.get_job(i).result for i in ids[:3]] == [1, 2, 3]  # type: ignore[union-attr]
    late = app.enqueue("add", {"a": 0, "b": 0})  # nothing runs it once the worker is gone
    time.sleep(0.3)
    assert _states(app, [late.id]) == ["available"]


def test_worker_exits_even_when_a_sync_job_is_stuck(
    app: errands.App, spec: str, tmp_path: Path
) -> None:
    stuck = app.enqueue("stuck", {"seconds": 120})
    proc = _start_worker(tmp_path, spec, "--grace", "0.5")
    try:
        wait_for(lambda: _states(app, [stuck.id]) == ["executing"], what="the job to start")
    finally:
        took, _out, err = _stop(proc, within=15)
    assert proc.returncode == 0, err
    assert took < 8
    assert "still running at exit" in err
    assert "rescued" in err  # the log says what becomes of the job
    job = app.get_job(stuck.id)
    # Not handed back while its body may still run: the lifeline rescues it later.
    assert job is not None and job.state == "executing"


def test_worker_queue_and_concurrency_options(app: errands.App, spec: str, tmp_path: Path) -> None:
    mail_job = app.enqueue("slow", {"seconds": 0.01})
    default_job = app.enqueue("add", {"a": 1, "b": 1})
    proc = _start_worker(tmp_path, spec, "--queues", "default", "--concurrency", "3")
    try:
        wait_for(lambda: _states(app, [default_job.id]) == ["completed"], what="default job")
        time.sleep(0.3)
        assert _states(app, [mail_job.id]) == ["available"]  # queue not run
    finally:
        _took, out, err = _stop(proc, within=15)
    assert proc.returncode == 0, err
    assert "started: queues default(3);" in out


def test_worker_reports_a_database_it_cannot_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'jobs.db'}"
    (tmp_path / "unopenable_app.py").write_text(
        f"import errands\napp = errands.App({url!r})\n"
        "@app.job(name='noop')\ndef noop() -> None: ...\n"
    )
    monkeypatch.chdir(tmp_path)
    try:
        result = invoke("--app", "unopenable_app:app", "worker")
    finally:
        sys.modules.pop("unopenable_app", None)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: SQLite")
    assert "Traceback" not in result.output


def test_worker_needs_an_app(db_url: str) -> None:
    result = invoke("--database-url", db_url, "worker")
    assert result.exit_code == 2
    assert "needs --app" in result.output


def test_worker_rejects_an_empty_queue_list(spec: str) -> None:
    result = invoke("--app", spec, "worker", "--queues", ",")
    assert result.exit_code == 2
    assert "--queues" in result.output
