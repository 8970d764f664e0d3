"""The supervisor of ``--processes N`` (runtime/supervisor.py), with tiny child commands.

``Supervisor.run()`` installs signal handlers, so it runs in the test's main
thread; a watchdog thread stops it once the test's condition holds, or at a
generous deadline (then the test fails instead of hanging). Children that
count as started write the readiness byte to the fd named by
``ERRANDS_READY_FD``, as ``errands worker`` does; the others never do. Whether
a child started depends only on that byte, never on how long it lived, so a
loaded machine only makes the tests slower, never wrong. Restart delays and
``stable_after`` are shortened through the constructor.
"""

from __future__ import annotations

import logging
import os
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

#: Python source a child command starts with to report it has started.
REPORT_READY = (
    "import os\nfd = int(os.environ['ERRANDS_READY_FD'])\nos.write(fd, b'R')\nos.close(fd)\n"
)


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
    supervisor = Supervisor([sys.executable, "-c", source], 2, restart_delay=0.05)
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


def test_a_child_crashing_after_running_stably_is_restarted_without_backoff_growth(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # One start-up failure would be enough to give up: these must not count as one.
    crash_later = [
        sys.executable,
        "-c",
        REPORT_READY + "import sys, time; time.sleep(1.0); sys.exit(5)",
    ]
    supervisor = Supervisor(
        crash_later, 1, stable_after=0.3, max_startup_failures=1, restart_delay=0.05
    )
    code, timed_out = supervise(supervisor, until=lambda s: s.restarts >= 2)
    assert not timed_out, messages(caplog, logging.WARNING)
    assert code in (0, 5)  # 5 only if the last child crashed before our SIGTERM reached it
    assert messages(caplog, logging.ERROR) == []
    warnings = messages(caplog, logging.WARNING)
    assert len(warnings) >= 2
    for warning in warnings:
        assert "exited with 5 after running" in warning
        assert "a crash after start-up" in warning
        # Each child ran past stable_after once ready, so the delay went back to the first one.
        assert warning.endswith("restarting in 0.05s"), warning


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize(
    "crash",
    ["os._exit(7)", "import signal; os.kill(os.getpid(), signal.SIGKILL)"],
    ids=["os-exit", "killed"],
)
def test_children_crashing_right_after_reporting_ready_never_make_run_give_up(
    caplog: pytest.LogCaptureFixture, crash: str
) -> None:
    """Jobs that kill their worker within moments of its start: every child started
    fine, so however quick and many the crashes, they are restarted, not given up on."""
    command = [sys.executable, "-c", REPORT_READY + crash]
    supervisor = Supervisor(
        command, 2, max_startup_failures=1, restart_delay=0.01, max_restart_delay=0.05
    )
    fds_before = open_fds() if os.path.isdir("/proc/self/fd") else None
    code, timed_out = supervise(supervisor, until=lambda s: s.restarts >= 4)
    assert not timed_out, messages(caplog, logging.WARNING)
    # A child that crashed again before our SIGTERM reached it leaves its code.
    assert code in (0, 7, 1)
    assert supervisor.startup_failures == 0
    assert supervisor.restarts >= 4
    assert messages(caplog, logging.ERROR) == []
    warnings = messages(caplog, logging.WARNING)
    assert len(warnings) >= 4
    assert all("a crash after start-up" in w for w in warnings), warnings
    assert not any("keep failing at start-up" in m for m in caplog.messages)
    infos = messages(caplog, logging.INFO)
    assert sum("ready after" in m for m in infos) >= 4
    if fds_before is not None:  # every restart's pipe was closed again
        # Only new descriptors are a leak: others may close meanwhile (an earlier
        # test's connection collected by the garbage collector in this process).
        assert open_fds() - fds_before == set()


def test_a_child_exiting_before_reporting_ready_fails_at_start_up_however_long_it_lived(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Lives 1 s, longer than stable_after, alive and not ready all along (like a
    # child waiting for its database), then exits without ever reporting.
    slow_failure = [sys.executable, "-c", "import sys, time; time.sleep(1.0); sys.exit(6)"]
    supervisor = Supervisor(
        slow_failure, 1, stable_after=0.1, max_startup_failures=2, restart_delay=0.05
    )
    seen_alive_without_failures: list[bool] = []

    def first_child_alive(s: Supervisor) -> bool:
        children = s.children
        if s.restarts == 0 and children and children[0].poll() is None:
            seen_alive_without_failures.append(s.startup_failures == 0)
        return False

    code, timed_out = supervise(supervisor, until=first_child_alive)
    assert not timed_out
    assert code == 6
    assert supervisor.startup_failures == 2
    assert seen_alive_without_failures and all(seen_alive_without_failures)
    [warning] = messages(caplog, logging.WARNING)
    assert "before reporting ready (start-up failure 1 of 2" in warning
    [error] = messages(caplog, logging.ERROR)
    assert "2 in a row exited before reporting ready" in error
    assert "exiting with code 6" in error


def test_a_child_reporting_ready_resets_the_start_up_failure_count(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    # Starts alternate: fail at once, then report ready and crash at once, and so on.
    alternate = (
        "import os, pathlib, sys\n"
        "p = pathlib.Path(sys.argv[1])\n"
        "n = int(p.read_text()) if p.exists() else 0\n"
        "p.write_text(str(n + 1))\n"
        "if n % 2:\n"
        "    os.write(int(os.environ['ERRANDS_READY_FD']), b'R')\n"
        "sys.exit(4)\n"
    )
    command = [sys.executable, "-c", alternate, str(tmp_path / "starts")]
    supervisor = Supervisor(command, 1, max_startup_failures=2, restart_delay=0.05)
    # Start 3 is the second quick failure; only the ready start between keeps it from giving up.
    code, timed_out = supervise(supervisor, until=lambda s: s.restarts >= 5)
    assert not timed_out, messages(caplog, logging.WARNING)
    assert code in (0, 4)  # 4 only if the last child exited before our SIGTERM reached it
    assert messages(caplog, logging.ERROR) == []
    warnings = messages(caplog, logging.WARNING)
    assert any("start-up failure 1 of 2" in w for w in warnings)
    assert any("a crash after start-up" in w for w in warnings)
    assert not any("start-up failure 2 of 2" in w for w in warnings)


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
    # Stopped before any child reports ready, with one failure enough to give up:
    # the exits our SIGTERM causes must not count as start-up failures.
    supervisor = Supervisor(command, 2, max_startup_failures=1)
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
