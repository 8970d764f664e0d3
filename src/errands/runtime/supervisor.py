"""Run N worker processes under one command, so CPU-bound jobs use every core.

``errands worker --processes N`` starts N children (each a full worker
process with its own node), forwards SIGTERM/SIGINT to them, and exits once
every child has stopped. Jobs a dead child held are rescued by the lifeline
like any other orphan.

A child that exits while the supervisor runs is handled by how long it lived:

- It ran past the start-up window (:data:`STARTUP_WINDOW`, 10 s): a crash in
  the middle of work (an OOM kill). It is restarted after a backoff of 1 s,
  doubling for each restart of the same slot up to 30 s; the backoff goes back
  to 1 s once a child in that slot lives past the window again.
- It exited within the window, for any reason (even exit code 0): a start-up
  failure, usually configuration that no restart fixes (a schema never
  migrated, an unknown queue, an import error, a refused login). It is
  restarted with the same backoff, but after 3 start-up failures in a row
  (counted across all slots, and reset whenever a newly started child gets
  past its window) the supervisor stops the other children and :meth:`Supervisor.run`
  returns the failing child's exit code, so an orchestrator sees the failure
  instead of a restart loop. A database that merely cannot be reached is not
  a start-up failure: each child waits for it (see
  :mod:`errands.runtime.startup`) and so stays alive.

Example::

    code = Supervisor([sys.executable, "-m", "errands", "worker", "--app", "tasks:app"], 4).run()
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from types import FrameType

__all__ = [
    "MAX_RESTART_DELAY",
    "MAX_STARTUP_FAILURES",
    "RESTART_DELAY",
    "STARTUP_WINDOW",
    "Supervisor",
]

log = logging.getLogger("errands.supervisor")

#: Seconds after its spawn within which a child's exit counts as a start-up
#: failure. A child importing the app, connecting and checking the schema
#: fails within a few seconds when the configuration is wrong; 10 s leaves room
#: for a slow import (a big framework) on a loaded machine, while a worker that
#: has run this long has started and its exit is a crash worth a restart.
STARTUP_WINDOW = 10.0

#: Start-up failures in a row (across all slots) after which the supervisor
#: gives up: one can be bad luck, three with nothing healthy in between are not.
MAX_STARTUP_FAILURES = 3

#: Seconds before restarting a slot's child; doubles per restart up to
#: MAX_RESTART_DELAY so a crash loop does not hammer the machine.
RESTART_DELAY = 1.0
MAX_RESTART_DELAY = 30.0

#: How often the supervisor looks at its children.
_POLL_SECONDS = 0.2


@dataclasses.dataclass
class _Slot:
    """One of the N places a child runs in, across that place's restarts."""

    delay: float  # the wait before this slot's next restart
    child: subprocess.Popen[bytes] | None = None
    spawned_at: float = 0.0  # time.monotonic() of the current child's spawn
    settled: bool = False  # the current child has lived past the start-up window
    restart_at: float | None = None  # set while the slot waits to restart


class Supervisor:
    """Starts ``processes`` copies of ``command`` and keeps them running until told to stop.

    ``startup_window``, ``max_startup_failures``, ``restart_delay`` and
    ``max_restart_delay`` default to the module's constants (tests shorten them).

    Example::

        supervisor = Supervisor(["python", "-m", "errands", "--app", "tasks:app", "worker"], 2)
        sys.exit(supervisor.run())  # 0 after SIGTERM; non-zero if children fail at start-up
    """

    def __init__(
        self,
        command: Sequence[str],
        processes: int,
        *,
        stop_timeout: float = 60.0,
        startup_window: float = STARTUP_WINDOW,
        max_startup_failures: int = MAX_STARTUP_FAILURES,
        restart_delay: float = RESTART_DELAY,
        max_restart_delay: float = MAX_RESTART_DELAY,
    ):
        if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
            raise ValueError(f"processes must be an int >= 1, got {processes!r}")
        if max_startup_failures < 1:
            raise ValueError(f"max_startup_failures must be >= 1, got {max_startup_failures!r}")
        self.command = list(command)
        self.processes = processes
        self.stop_timeout = stop_timeout
        self.startup_window = startup_window
        self.max_startup_failures = max_startup_failures
        self.restart_delay = restart_delay
        self.max_restart_delay = max_restart_delay
        self.restarts = 0
        self.startup_failures = 0  # in a row, across all slots
        self._slots = {index: _Slot(delay=restart_delay) for index in range(processes)}
        self._failed_code: int | None = None  # set when giving up
        self._stopping = threading.Event()

    @property
    def children(self) -> dict[int, subprocess.Popen[bytes]]:
        """The running children by slot index (a slot waiting to restart has none)."""
        return {i: slot.child for i, slot in self._slots.items() if slot.child is not None}

    def _spawn(self, index: int) -> None:
        env = dict(os.environ, ERRANDS_WORKER_INDEX=str(index))
        child = subprocess.Popen(self.command, env=env)  # noqa: S603 - our own command line
        slot = self._slots[index]
        slot.child, slot.spawned_at = child, time.monotonic()
        slot.settled, slot.restart_at = False, None
        log.info("started worker process %d (pid %d)", index, child.pid)
        if self._stopping.is_set():  # a signal arrived mid-spawn: stop() missed this child
            child.send_signal(signal.SIGTERM)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop()

    def stop(self) -> None:
        """Ask every child to stop gracefully (SIGTERM); safe to call twice."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    def run(self) -> int:
        """Supervise until stopped; return 0 if every child exited cleanly.

        Returns the failing child's exit code (128 + signal number if a signal
        killed it, never 0) when children keep failing at start-up.
        """
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            for index in range(self.processes):
                self._spawn(index)
            while not self._stopping.is_set():
                self._check_children()
                self._stopping.wait(_POLL_SECONDS)
            worst = self._wait_all()
            return self._failed_code if self._failed_code is not None else worst
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _check_children(self) -> None:
        """One look at every slot: note settled children, handle exits, restart when due."""
        for index, slot in self._slots.items():
            if self._stopping.is_set():
                return  # exits from here on are ours (SIGTERM), not failures
            now = time.monotonic()
            if slot.child is None:
                if slot.restart_at is not None and now >= slot.restart_at:
                    self.restarts += 1
                    self._spawn(index)
                continue
            code = slot.child.poll()
            if code is None:
                if not slot.settled and now - slot.spawned_at >= self.startup_window:
                    self._settle(slot)
            else:
                self._on_exit(index, slot, code, now - slot.spawned_at)

    def _settle(self, slot: _Slot) -> None:
        """A child lived past the window: it started fine, so forget earlier failures."""
        slot.settled = True
        slot.delay = self.restart_delay
        self.startup_failures = 0

    def _on_exit(self, index: int, slot: _Slot, code: int, lived: float) -> None:
        if self._stopping.is_set():
            return  # a signal came since the loop's check: our SIGTERM, _wait_all reaps it
        assert slot.child is not None
        pid = slot.child.pid
        slot.child = None
        if slot.settled or lived >= self.startup_window:
            self._settle(slot)  # it may have crossed the window between two looks
            what = f"exited with {code} after running {lived:.0f}s"
        else:
            self.startup_failures += 1
            if self.startup_failures >= self.max_startup_failures:
                self._give_up(index, pid, code)
                return
            what = (
                f"exited with {code} {lived:.1f}s after it started (start-up failure "
                f"{self.startup_failures} of {self.max_startup_failures} before giving up)"
            )
        log.warning(
            "worker process %d (pid %d) %s; restarting in %gs", index, pid, what, slot.delay
        )
        slot.restart_at = time.monotonic() + slot.delay
        slot.delay = min(slot.delay * 2, self.max_restart_delay)

    def _give_up(self, index: int, pid: int, code: int) -> None:
        # Shell convention for a child killed by a signal; 0 must not read as success.
        self._failed_code = 128 - code if code < 0 else code or 1
        log.error(
            "worker processes keep failing at start-up: %d in a row exited within %gs of "
            "starting, the last (worker process %d, pid %d) with exit code %d; stopping the "
            "others and exiting with code %d. The cause is in the worker's own error output "
            "above.",
            self.startup_failures,
            self.startup_window,
            index,
            pid,
            code,
            self._failed_code,
        )
        self.stop()

    def _wait_all(self) -> int:
        deadline = time.monotonic() + self.stop_timeout
        worst = 0
        for child in self.children.values():
            try:
                code = child.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker pid %d did not stop in time; killing it", child.pid)
                child.kill()
                code = child.wait()
            if code not in (0, -signal.SIGTERM):
                worst = worst or (code if code > 0 else 1)
        return worst
