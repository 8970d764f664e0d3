"""Run N worker processes under one command, so CPU-bound jobs use every core.

``errands worker --processes N`` starts N children (each a full worker
process with its own node), forwards SIGTERM/SIGINT to them, and exits once
every child has stopped. Jobs a dead child held are rescued by the lifeline
like any other orphan.

Each child gets the write end of a pipe, its number in the environment
variable ``ERRANDS_READY_FD`` (:data:`~errands.runtime.ready.READY_FD_ENV`),
and writes one byte to it once it has really started: app imported, database
reached, schema checked, node and producers running, the moment it begins
claiming jobs (see :mod:`errands.runtime.ready`). A child that exits while the
supervisor runs is handled by whether it said so:

- It exited after reporting ready: a crash in the middle of work (a job that
  called ``os._exit()``, a segfault, an OOM kill). It is restarted after a
  backoff of 1 s, doubling for each restart of the same slot up to 30 s; the
  backoff goes back to 1 s once a child in that slot has run
  :data:`STABLE_AFTER` (10 s) past its readiness. Crashes never make the
  supervisor give up, however many and however quick.
- It exited before reporting ready, for any reason (even exit code 0, even
  after minutes): a start-up failure, usually configuration that no restart
  fixes (a schema never migrated, an unknown queue, an import error, a refused
  login). It is restarted with the same backoff, but after 3 start-up failures
  in a row (counted across all slots, and reset whenever a child reports
  ready) the supervisor stops the other children and :meth:`Supervisor.run`
  returns the failing child's exit code, so an orchestrator sees the failure
  instead of a restart loop. A database that merely cannot be reached is not
  a start-up failure: each child waits for it (see
  :mod:`errands.runtime.startup`), alive and not yet ready.

A command that never reports (not an errands worker) thus only ever fails at
start-up.

Example::

    code = Supervisor([sys.executable, "-m", "errands", "worker", "--app", "tasks:app"], 4).run()
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from types import FrameType

from errands.runtime.affinity import WORKER_INDEX_ENV
from errands.runtime.ready import READY_FD_ENV

__all__ = [
    "MAX_RESTART_DELAY",
    "MAX_STARTUP_FAILURES",
    "RESTART_DELAY",
    "STABLE_AFTER",
    "Supervisor",
]

log = logging.getLogger("errands.supervisor")

#: Start-up failures in a row (across all slots) after which the supervisor
#: gives up: one can be bad luck, three with nothing healthy in between are not.
MAX_STARTUP_FAILURES = 3

#: Seconds before restarting a slot's child; doubles per restart up to
#: MAX_RESTART_DELAY so a crash loop does not hammer the machine.
RESTART_DELAY = 1.0
MAX_RESTART_DELAY = 30.0

#: Seconds a child must run after reporting ready before its slot's backoff
#: goes back to RESTART_DELAY: a child that crashes soon after starting, again
#: and again, keeps backing off.
STABLE_AFTER = 10.0

#: How often the supervisor looks at its children.
_POLL_SECONDS = 0.2


@dataclasses.dataclass
class _Slot:
    """One of the N places a child runs in, across that place's restarts."""

    delay: float  # the wait before this slot's next restart
    child: subprocess.Popen[bytes] | None = None
    spawned_at: float = 0.0  # time.monotonic() of the current child's spawn
    ready_fd: int | None = None  # read end of the current child's readiness pipe
    ready_at: float | None = None  # time.monotonic() when the current child reported ready
    stable: bool = False  # the current child has run STABLE_AFTER past its readiness
    restart_at: float | None = None  # set while the slot waits to restart

    def close_ready_fd(self) -> None:
        if self.ready_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.ready_fd)
            self.ready_fd = None


class Supervisor:
    """Starts ``processes`` copies of ``command`` and keeps them running until told to stop.

    ``command`` should report readiness (see the module docs); ``errands
    worker`` does. ``stable_after``, ``max_startup_failures``, ``restart_delay``
    and ``max_restart_delay`` default to the module's constants (tests shorten them).

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
        stable_after: float = STABLE_AFTER,
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
        self.stable_after = stable_after
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
        slot = self._slots[index]
        read_fd, write_fd = os.pipe()  # both non-inheritable; pass_fds hands the child one
        try:
            os.set_blocking(read_fd, False)
            env = dict(os.environ)
            env[WORKER_INDEX_ENV] = str(index)  # which core under --pin-cpus
            env[READY_FD_ENV] = str(write_fd)
            child = subprocess.Popen(self.command, env=env, pass_fds=(write_fd,))  # noqa: S603
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)  # the child has its copy: EOF once it closes or exits
        slot.child, slot.spawned_at, slot.ready_fd = child, time.monotonic(), read_fd
        slot.ready_at, slot.stable, slot.restart_at = None, False, None
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
            for slot in self._slots.values():
                slot.close_ready_fd()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _check_children(self) -> None:
        """One look at every slot: note readiness, handle exits, restart when due."""
        for index, slot in self._slots.items():
            if self._stopping.is_set():
                return  # exits from here on are ours (SIGTERM), not failures
            if slot.child is None:
                if slot.restart_at is not None and time.monotonic() >= slot.restart_at:
                    self.restarts += 1
                    self._spawn(index)
                continue
            # Poll before reading the pipe: a child that reported ready and then
            # exited has its byte in the pipe by the time poll() sees the exit.
            code = slot.child.poll()
            self._read_ready(index, slot)
            now = time.monotonic()
            if code is not None:
                self._on_exit(index, slot, code, now)
            else:
                self._note_stable(slot, now)

    def _note_stable(self, slot: _Slot, now: float) -> None:
        """A child ran STABLE_AFTER past its readiness: its slot's backoff starts over."""
        if (
            slot.ready_at is not None
            and not slot.stable
            and now - slot.ready_at >= self.stable_after
        ):
            slot.stable = True
            slot.delay = self.restart_delay

    def _read_ready(self, index: int, slot: _Slot) -> None:
        """Take the child's readiness byte if it has written it (never blocks)."""
        if slot.ready_fd is None:
            return
        try:
            data = os.read(slot.ready_fd, 64)
        except BlockingIOError:
            return  # nothing written yet, the child still holds the pipe open
        except OSError as exc:
            log.warning("worker process %d: reading its readiness pipe failed: %s", index, exc)
            data = b""
        slot.close_ready_fd()  # a byte, or EOF: nothing more will come
        if data and slot.child is not None:
            slot.ready_at = time.monotonic()
            self.startup_failures = 0  # a child started fine: forget earlier failures
            log.info(
                "worker process %d (pid %d) ready after %.1fs",
                index,
                slot.child.pid,
                slot.ready_at - slot.spawned_at,
            )

    def _on_exit(self, index: int, slot: _Slot, code: int, now: float) -> None:
        if self._stopping.is_set():
            return  # a signal came since the loop's check: our SIGTERM, _wait_all reaps it
        assert slot.child is not None
        pid = slot.child.pid
        slot.child = None
        slot.close_ready_fd()
        lived = now - slot.spawned_at
        if slot.ready_at is not None:
            self._note_stable(slot, now)  # it may have become stable between two looks
            what = f"exited with {code} after running {lived:.1f}s (a crash after start-up)"
        else:
            self.startup_failures += 1
            if self.startup_failures >= self.max_startup_failures:
                self._give_up(index, pid, code)
                return
            what = (
                f"exited with {code} {lived:.1f}s after it started, before reporting ready "
                f"(start-up failure {self.startup_failures} of {self.max_startup_failures} "
                "before giving up)"
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
            "worker processes keep failing at start-up: %d in a row exited before reporting "
            "ready, the last (worker process %d, pid %d) with exit code %d; stopping the "
            "others and exiting with code %d. The cause is in the worker's own error output "
            "above.",
            self.startup_failures,
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
