"""``errands pause/resume/scale/queues`` and bulk ``retry/cancel/delete``, on both engines.

Most tests call the command in-process (``CliRunner``) with ``--app`` (the
app module carries the test's PostgreSQL schema); the last one drives a real
``errands worker`` process: a pause and a cancel given on the command line
reach it.
"""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from click.testing import CliRunner, Result

import errands
from errands.cli import cli
from tests.support import wait_for

CLEAN_ENV: dict[str, str | None] = {
    "ERRANDS_APP": None,
    "ERRANDS_DATABASE_URL": None,
    "COLUMNS": "200",
}

APP_SOURCE = """
import asyncio
import errands

app = errands.App({url!r}, schema={schema!r}, auto_migrate=True,
                  queues={{"default": 2, "mail": 2}}, rescue_after=5,
                  stage_interval=0.05, poll_interval=0.05, grace_period=1)

@app.job(name="ok")
def ok(n: int = 0) -> int:
    return n

@app.job(name="boom", max_attempts=1)
def boom(n: int = 0) -> None:
    raise RuntimeError(f"boom {{n}}")

@app.job(name="slow", queue="mail")
async def slow(seconds: float = 30.0) -> str:
    await asyncio.sleep(seconds)
    return "slept"
"""


def invoke(*args: str) -> Result:
    """Run ``errands ARGS`` in-process; stdout and stderr are kept apart."""
    return CliRunner().invoke(cli, list(args), env=CLEAN_ENV)


@pytest.fixture
def app_module(
    tmp_path: Path, database_url: str, schema: str | None, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ModuleType]:
    name = f"ctlapp_{uuid.uuid4().hex[:8]}"
    source = APP_SOURCE.format(url=database_url, schema=schema)
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module(name)
    module.app.migrate()
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


def _row(output: str, first: str) -> list[str]:
    for line in output.splitlines():
        cells = line.replace("│", " ").replace("┃", " ").split()
        if cells and cells[0] == first:
            return cells
    raise AssertionError(f"no row {first!r} in:\n{output}")


def _control_row(output: str, queue: str) -> list[str]:
    """The row of ``queue`` in the queue control table (printed after the counts)."""
    _, found, control = output.partition("queue control (every node)")
    assert found, output
    return _row(control, queue)


def _ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.stdout


def test_pause_resume_scale_and_queues_show_the_overrides(app: errands.App, spec: str) -> None:
    assert "queue mail paused on every node" in _ok(invoke("--app", spec, "pause", "mail"))
    assert app.queue_states()["mail"].paused is True
    table = _ok(invoke("--app", spec, "queues"))
    assert _control_row(table, "mail")[:4] == ["mail", "yes", "-", "-"]

    assert "up to 5 job(s)" in _ok(invoke("--app", spec, "scale", "mail", "5"))
    assert _control_row(_ok(invoke("--app", spec, "queues")), "mail")[:4] == [
        "mail",
        "yes",
        "5",
        "-",
    ]

    _ok(invoke("--app", spec, "resume", "mail"))
    _ok(invoke("--app", spec, "scale", "mail", "--reset"))
    assert _control_row(_ok(invoke("--app", spec, "queues")), "mail")[:4] == [
        "mail",
        "no",
        "-",
        "-",
    ]
    state = app.queue_states()["mail"]
    assert (state.paused, state.limit) == (False, None)


def test_bad_control_input(app: errands.App, spec: str) -> None:
    result = invoke("--app", spec, "scale", "mail", "0")
    assert result.exit_code == 2, "N must be >= 1"
    result = invoke("--app", spec, "scale", "mail")
    assert result.exit_code == 2
    assert "a limit N or --reset" in result.stderr
    result = invoke("--app", spec, "scale", "mail", "3", "--reset")
    assert result.exit_code == 2
    result = invoke("--app", spec, "pause", "bad name!")
    assert result.exit_code == 1
    assert "queue name must be 1-128 letters" in result.stderr
    assert app.queue_states() == {}


def _mixed(app: errands.App) -> dict[str, list[int]]:
    failed = [app.enqueue("boom", {"n": i}).id for i in range(3)]
    mail_failed = [app.enqueue("boom", {"n": 9}, queue="mail").id]
    done = [app.enqueue("ok").id]
    assert app.drain() == {"discarded": 4, "completed": 1}
    waiting = [app.enqueue("ok", {"n": 1}).id, app.enqueue("ok", {"n": 2}, queue="mail").id]
    return {"failed": failed, "mail_failed": mail_failed, "done": done, "waiting": waiting}


def _states(app: errands.App, ids: list[int]) -> list[str]:
    jobs = [app.get_job(i) for i in ids]
    return [job.state.value if job is not None else "deleted" for job in jobs]


def test_bulk_retry_cancel_delete_with_filters(app: errands.App, spec: str) -> None:
    ids = _mixed(app)
    out = _ok(invoke("--app", spec, "retry", "--queue", "default", "--state", "discarded"))
    assert "retried 3 job(s)" in out
    assert _states(app, ids["failed"]) == ["available"] * 3
    assert _states(app, ids["mail_failed"]) == ["discarded"]

    assert "cancelled 1 job(s)" in _ok(invoke("--app", spec, "cancel", "--queue", "mail"))
    assert _states(app, ids["waiting"]) == ["available", "cancelled"]

    out = _ok(invoke("--app", spec, "delete", "--state", "cancelled", "--state", "discarded"))
    assert "deleted 2 job(s)" in out
    assert _states(app, ids["mail_failed"] + ids["waiting"][1:]) == ["deleted", "deleted"]
    assert "cancelled 3 job(s)" in _ok(invoke("--app", spec, "cancel", "--worker", "boom"))


def test_single_job_commands_still_work(app: errands.App, spec: str) -> None:
    ids = _mixed(app)
    job_id = ids["failed"][0]
    assert "discarded -> available" in _ok(invoke("--app", spec, "retry", str(job_id)))
    assert "cancelled (was available)" in _ok(invoke("--app", spec, "cancel", str(job_id)))
    assert "deleted (was cancelled)" in _ok(invoke("--app", spec, "delete", str(job_id)))
    again = invoke("--app", spec, "retry", str(job_id))
    assert again.exit_code == 1
    assert f"no job with id {job_id}" in again.stderr


@pytest.mark.parametrize("command", ["retry", "cancel", "delete"])
def test_bulk_commands_refuse_no_id_and_no_filter(
    app: errands.App, spec: str, command: str
) -> None:
    _mixed(app)
    before = app.queue_counts()
    result = invoke("--app", spec, command)
    assert result.exit_code == 2
    assert f"errands {command} needs a job ID, or filters" in result.stderr
    both = invoke("--app", spec, command, "1", "--queue", "mail")
    assert both.exit_code == 2
    assert "not both" in both.stderr
    invalid = {"retry": "available", "cancel": "completed", "delete": "executing"}[command]
    wrong = invoke("--app", spec, command, "--state", invalid)
    assert wrong.exit_code == 2, f"{command} --state {invalid} is refused"
    assert app.queue_counts() == before


def test_control_works_with_just_a_database_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'plain.db'}"
    app = errands.App(url)

    @app.job(name="boom", max_attempts=1)
    def boom() -> None:
        raise RuntimeError("no")

    app.enqueue("boom")
    assert app.drain() == {"discarded": 1}
    assert "paused" in _ok(invoke("--database-url", url, "pause", "default"))
    table = _ok(invoke("--database-url", url, "queues"))
    assert _row(table, "default") == ["default", "1", "1"], "the counts: one discarded job"
    assert _control_row(table, "default")[:2] == ["default", "yes"]
    assert "retried 1 job(s)" in _ok(invoke("--database-url", url, "retry", "--state", "discarded"))
    assert app.queue_states()["default"].paused is True
    app.close()


@pytest.mark.slow
def test_pause_and_cancel_from_the_command_line_reach_a_running_worker(
    app: errands.App, spec: str, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ERRANDS_")}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    with log.open("wb") as stderr:
        worker = subprocess.Popen(
            [sys.executable, "-m", "errands", "--app", spec, "worker"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        first = app.enqueue("ok", {"n": 1})
        wait_for(lambda: _states(app, [first.id]) == ["completed"], timeout=30)

        _ok(invoke("--app", spec, "pause", "mail"))
        wait_for(lambda: "queue mail paused on every node" in log.read_text(), timeout=10)
        held = app.enqueue("slow", {"seconds": 0.01})
        probe = app.enqueue("ok", {"n": 2})  # enqueued after: its run proves the worker polled
        wait_for(lambda: _states(app, [probe.id]) == ["completed"], timeout=10)
        assert _states(app, [held.id]) == ["available"], "mail is paused"
        _ok(invoke("--app", spec, "resume", "mail"))
        wait_for(lambda: _states(app, [held.id]) == ["completed"], timeout=10)

        stuck = app.enqueue("slow", {"seconds": 30})
        wait_for(lambda: _states(app, [stuck.id]) == ["executing"], timeout=10)
        _ok(invoke("--app", spec, "cancel", str(stuck.id)))
        wait_for(lambda: "was cancelled while running" in log.read_text(), timeout=5)
        after = app.enqueue("slow", {"seconds": 0.01})
        wait_for(lambda: _states(app, [after.id]) == ["completed"], timeout=10)
        assert _states(app, [stuck.id]) == ["cancelled"]
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    text = log.read_text()
    assert worker.returncode == 0, text
    assert "Traceback" not in text and "ERROR" not in text, text
