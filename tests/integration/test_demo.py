"""``errands demo``: the real command as a subprocess, and ``run_demo`` with fast timings."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

import errands
from errands.cli import cli
from errands.demo import (
    MIN_JOBS,
    DemoTimings,
    Expected,
    build_demo_app,
    enqueue_demo_jobs,
    run_demo,
)

FAST = DemoTimings(
    retry_backoff=0.2,
    schedule_in=0.6,
    snooze=0.4,
    work=(0.0, 0.02),
    stage_interval=0.05,
    poll_interval=0.05,
    refresh=0.05,
    timeout=20,
)


def _console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, width=120), buffer


def _by_worker(jobs: list[errands.Job], worker: str) -> list[errands.Job]:
    return [job for job in jobs if job.worker == worker]


def test_demo_command_on_a_fresh_database(tmp_path: Path) -> None:
    """The real console script, default timings: exit 0, and the table says why."""
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    script = Path(sys.executable).with_name("errands")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "errands"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ERRANDS_")}
    started = time.monotonic()
    proc = subprocess.run(
        [*command, "demo", "--database-url", url],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=tmp_path,
        env={**env, "COLUMNS": "120"},
    )
    took = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert took < 60
    assert "all 40 jobs ended as expected" in proc.stdout
    assert f"errands --database-url {url} jobs" in proc.stdout  # the hint names our database

    app = errands.App(url)
    jobs = app.list_jobs(limit=1000)
    assert len(jobs) == 40
    states = [str(job.state) for job in jobs]
    assert states.count("completed") >= 30
    assert states.count("discarded") == 1
    assert states.count("cancelled") == 2
    assert all(state in ("completed", "cancelled", "discarded") for state in states)

    (flaky,) = _by_worker(jobs, "demo.Flaky")
    assert (flaky.state, flaky.attempt, len(flaky.errors)) == ("completed", 3, 2)
    assert flaky.result == "succeeded on attempt 3"
    assert "upstream timed out" in flaky.errors[0]["message"]

    (doomed,) = _by_worker(jobs, "demo.Doomed")
    assert (doomed.state, doomed.attempt, doomed.max_attempts) == ("discarded", 2, 2)
    assert [e["type"] for e in doomed.errors] == ["ValueError", "ValueError"]

    (snoozy,) = _by_worker(jobs, "demo.Snoozy")
    assert (snoozy.state, snoozy.attempt, snoozy.result) == ("completed", 2, {"snoozes": 1})
    assert snoozy.attempted_at is not None
    assert snoozy.attempted_at - snoozy.inserted_at >= 2.0 - 0.05

    (reminder,) = _by_worker(jobs, "demo.remind")
    assert reminder.state == "completed"
    assert reminder.attempted_at is not None
    assert reminder.attempted_at - reminder.inserted_at >= 3.0 - 0.05

    (unwanted,) = _by_worker(jobs, "demo.Unwanted")
    assert unwanted.state == "cancelled"
    assert "closed their account" in unwanted.errors[0]["message"]

    never = [job for job in _by_worker(jobs, "demo.send_email") if job.state == "cancelled"]
    assert [job.attempt for job in never] == [0]  # cancelled before it ever ran

    reports = _by_worker(jobs, "demo.Report")
    last = max(reports, key=lambda job: job.attempted_at or 0.0)
    assert last.priority == 9


def test_run_demo_fast(tmp_path: Path) -> None:
    console, buffer = _console()
    url = f"sqlite:///{tmp_path / 'fast.db'}"
    assert run_demo(url, 20, timings=FAST, console=console) == 0
    out = buffer.getvalue()
    assert "all 20 jobs ended as expected" in out
    assert "demo jobs by queue and state" in out
    assert "fails twice, then succeeds" in out
    counts = errands.App(url).queue_counts()
    assert sum(sum(row.values()) for row in counts.values()) == 20
    assert set(counts) == {"default", "mail", "reports"}


def test_run_demo_fails_when_jobs_do_not_finish_in_time(tmp_path: Path) -> None:
    console, buffer = _console()
    slow = DemoTimings(
        retry_backoff=0.2,
        schedule_in=30,
        snooze=0.2,
        work=(0.0, 0.01),
        stage_interval=0.05,
        poll_interval=0.05,
        refresh=0.05,
        timeout=1.0,
    )
    url = f"sqlite:///{tmp_path / 'slow.db'}"
    assert run_demo(url, MIN_JOBS, timings=slow, console=console) == 1
    out = buffer.getvalue()
    assert "did not end as expected" in out
    assert "scheduled 30s ahead" in out


def test_run_demo_removes_its_temporary_database_unless_kept() -> None:
    console, buffer = _console()
    assert run_demo(None, MIN_JOBS, timings=FAST, console=console) == 0
    found = re.search(r"database sqlite:///(\S+)", buffer.getvalue())
    assert found is not None
    assert not Path(found.group(1)).parent.exists()
    assert "errands demo --keep" in buffer.getvalue()

    console, buffer = _console()
    assert run_demo(None, MIN_JOBS, timings=FAST, keep=True, console=console) == 0
    found = re.search(r"database sqlite:///(\S+)", buffer.getvalue())
    assert found is not None
    kept = Path(found.group(1))
    try:
        assert kept.exists()
        assert f"errands --database-url sqlite:///{kept} jobs" in buffer.getvalue()
    finally:
        for path in kept.parent.iterdir():
            path.unlink()
        kept.parent.rmdir()


def test_demo_needs_enough_jobs(tmp_path: Path) -> None:
    app = build_demo_app(f"sqlite:///{tmp_path / 'few.db'}", FAST)
    with pytest.raises(errands.ConfigError, match="at least 8 jobs"):
        enqueue_demo_jobs(app, MIN_JOBS - 1, FAST)
    result = CliRunner().invoke(cli, ["demo", "--jobs", "3"])
    assert result.exit_code == 2
    assert "--jobs" in result.output


def test_demo_uses_a_database_url_given_on_the_command_line(tmp_path: Path) -> None:
    """The global --database-url given by hand counts; $ERRANDS_DATABASE_URL does not."""
    given, from_env = tmp_path / "given.db", tmp_path / "env.db"
    env = {"ERRANDS_APP": None, "ERRANDS_DATABASE_URL": f"sqlite:///{from_env}"}
    # --timeout 1 stops the demo before its 3-second scheduled job runs: exit code 1.
    result = CliRunner().invoke(
        cli,
        ["--database-url", f"sqlite:///{given}", "demo", "--jobs", "8", "--timeout", "1"],
        env=env,
    )
    assert result.exit_code == 1, result.output
    assert "did not end as expected" in result.output
    assert len(errands.App(f"sqlite:///{given}").list_jobs()) == 8
    result = CliRunner().invoke(cli, ["demo", "--jobs", "8", "--timeout", "1"], env=env)
    assert result.exit_code == 1, result.output
    assert not from_env.exists()


def test_expected_explains_each_mismatch() -> None:
    job = errands.Job(
        id=1,
        worker="w",
        queue="default",
        args={},
        state=errands.JobState.COMPLETED,
        attempt=2,
        inserted_at=100.0,
        attempted_at=100.5,
    )
    assert Expected(1, "x", "completed", 2).problem(job) is None
    assert Expected(1, "x", "discarded").problem(job) == "ended completed"
    assert Expected(1, "x", "completed", 3).problem(job) == "attempt 2, not 3"
    assert Expected(1, "x", "completed", not_before=0.5).problem(job) is None
    too_soon = Expected(1, "x", "completed", not_before=2).problem(job)
    assert too_soon is not None and "not >= 2s" in too_soon
    assert Expected(1, "x", "completed").problem(None) == "missing"
