"""The supervisor of ``--processes N`` (runtime/supervisor.py), with tiny child commands.

``Supervisor.run()`` installs signal handlers, so it runs in the test's main
thread; a watchdog thread stops it once the test's condition holds, or at a
generous deadline (then the test fails instead of hanging). Start-up windows
and restart delays are shortened through the constructor; every child that
must outlive the window sleeps well past it, so a loaded machine only makes
the tests slower, never wrong.
"""

from __future__ import annotations

import logging
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from errands.runtime.supervisor import Supervisor

DEADLINE = 60.0

EXIT_3 = [sys.executable, "-c", "import sys; sys.exit(3)"]


def supervise(
    supervisor: Supervisor, until: Callable[[Supervisor], bool] | None = None
) -> tuple[int, bool]:
    """``supervisor.run()`` here; stopped once ``until`` holds. Returns (code, timed out)."""
    done = threading.Event()
    timed_out = threading.Event()

    def watch() -> None:
        deadline = time.monotonic() + DEADLINE
        while not done.wait(0.02):
            if until is not None and until(supervisor):
                supervisor.stop()
                return
            if time.monotonic() > deadline:
                timed_out.set()
                supervisor.stop()
                return

    watchdog = threading.Thread(target=watch, daemon=True)
    watchdog.start()
    try:
        code = supervisor.run()
    finally:
        done.set()
        watchdog.join(timeout=10)
    return code, timed_out.is_set()


def messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level]


@pytest.fixture(autouse=True)
def _capture_supervisor_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="errands.supervisor")


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import sys; sys.exit(3)", 3),
        # Not our SIGTERM, so still a failure; 0 must not read as success.
        ("pass", 1),
        ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", 128 + signal.SIGKILL),
    ],
    ids=["exit-3", "exit-0", "killed"],
)
def test_children_failing_at_start_up_make_run_give_up_with_their_code(
    caplog: pytest.LogCaptureFixture, source: str, expected: int
) -> None:
    supervisor = Supervisor(
        [sys.executable, "-c", source], 2, startup_window=DEADLINE, restart_delay=0.05
    )
    code, timed_out = supervise(supervisor)
    assert not timed_out, "the supervisor kept restarting children that fail at start-up"
    assert code == expected
    assert supervisor.startup_failures == 3
    assert supervisor.restarts >= 1  # it did try again before giving up
    assert all(child.poll() is not None for child in supervisor.children.values())
    [error] = messages(caplog, logging.ERROR)
    assert "keep failing at start-up" in error
    assert f"exiting with code {expected}" in error
    assert "own error output above" in error


def test_restarts_back_off_up_to_the_cap(caplog: pytest.LogCaptureFixture) -> None:
    supervisor = Supervisor(
        EXIT_3,
        1,
        startup_window=DEADLINE,
        max_startup_failures=5,
        restart_delay=0.05,
        max_restart_delay=0.2,
    )
    code, timed_out = supervise(supervisor)
    assert not timed_out
    assert code == 3
    delays = [re.search(r"restarting in (\S+)s$", m) for m in messages(caplog, logging.WARNING)]
    assert [d.group(1) for d in delays if d] == ["0.05", "0.1", "0.2", "0.2"]
    assert supervisor.restarts == 4


def test_a_child_crashing_after_the_window_is_restarted_without_backoff_growth(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # One start-up failure would be enough to give up: these must not count as one.
    crash_later = [sys.executable, "-c", "import sys, time; time.sleep(1.0); sys.exit(5)"]
    supervisor = Supervisor(
        crash_later, 1, startup_window=0.5, max_startup_failures=1, restart_delay=0.05
    )
    code, timed_out = supervise(supervisor, until=lambda s: s.restarts >= 2)
    assert not timed_out, messages(caplog, logging.WARNING)
    assert code in (0, 5)  # 5 only if the last child crashed before our SIGTERM reached it
    assert messages(caplog, logging.ERROR) == []
    warnings = messages(caplog, logging.WARNING)
    assert len(warnings) >= 2
    for warning in warnings:
        assert "exited with 5 after running" in warning
        # Each child lived past the window, so the delay went back to the first one.
        assert warning.endswith("restarting in 0.05s"), warning


def test_a_child_living_past_the_window_resets_the_start_up_failure_count(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    # Starts alternate: fail at once, then run past the window and crash, and so on.
    alternate = (
        "import pathlib, sys, time\n"
        "p = pathlib.Path(sys.argv[1])\n"
        "n = int(p.read_text()) if p.exists() else 0\n"
        "p.write_text(str(n + 1))\n"
        "if n % 2:\n"
        "    time.sleep(2.5)\n"
        "sys.exit(4)\n"
    )
    command = [sys.executable, "-c", alternate, str(tmp_path / "starts")]
    supervisor = Supervisor(
        command, 1, startup_window=2.0, max_startup_failures=2, restart_delay=0.05
    )
    # Start 3 is the second quick failure; only the long run between keeps it from giving up.
    code, timed_out = supervise(supervisor, until=lambda s: s.restarts >= 3)
    assert not timed_out, messages(caplog, logging.WARNING)
    assert code == 0
    assert messages(caplog, logging.ERROR) == []


def test_stop_with_children_exiting_cleanly_returns_0(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    # Installs its handler, then says so with a file, then waits for SIGTERM.
    stops_cleanly = (
        "import os, pathlib, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
        "pathlib.Path(sys.argv[1], os.environ['ERRANDS_WORKER_INDEX']).touch()\n"
        "time.sleep(120)\n"
    )
    command = [sys.executable, "-c", stops_cleanly, str(tmp_path)]
    # Stopped well inside the window, with one failure enough to give up: the
    # exits our SIGTERM causes must not count as start-up failures.
    supervisor = Supervisor(command, 2, startup_window=DEADLINE, max_startup_failures=1)
    code, timed_out = supervise(
        supervisor, until=lambda s: {p.name for p in tmp_path.iterdir()} == {"0", "1"}
    )
    assert not timed_out
    assert code == 0
    assert [child.returncode for child in supervisor.children.values()] == [0, 0]
    assert supervisor.restarts == 0
    assert messages(caplog, logging.WARNING) == []
    assert messages(caplog, logging.ERROR) == []


def test_processes_must_be_a_positive_int() -> None:
    with pytest.raises(ValueError, match="processes"):
        Supervisor(EXIT_3, 0)
    with pytest.raises(ValueError, match="max_startup_failures"):
        Supervisor(EXIT_3, 1, max_startup_failures=0)
