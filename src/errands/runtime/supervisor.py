"""Run N worker processes under one command, so CPU-bound jobs use every core.

``errands worker --processes N`` starts N children (each a full worker
process with its own node), forwards SIGTERM/SIGINT to them, restarts a child
that dies while the supervisor is running (a crash or an OOM kill), and exits
once every child has stopped. Jobs a dead child held are rescued by the
lifeline like any other orphan.

Example::

    code = Supervisor([sys.executable, "-m", "errands", "worker", "--app", "tasks:app"], 4).run()
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from types import FrameType

__all__ = ["Supervisor"]

log = logging.getLogger("errands.supervisor")

_RESTART_DELAY = 1.0


class Supervisor:
    """Starts ``processes`` copies of ``command`` and keeps them running until told to stop."""

    def __init__(self, command: Sequence[str], processes: int, *, stop_timeout: float = 60.0):
        if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
            raise ValueError(f"processes must be an int >= 1, got {processes!r}")
        self.command = list(command)
        self.processes = processes
        self.stop_timeout = stop_timeout
        self.children: dict[int, subprocess.Popen[bytes]] = {}
        self.restarts = 0
        self._stopping = threading.Event()

    def _spawn(self, index: int) -> None:
        env = dict(os.environ, ERRANDS_WORKER_INDEX=str(index))
        child = subprocess.Popen(self.command, env=env)  # noqa: S603 - our own command line
        self.children[index] = child
        log.info("started worker process %d (pid %d)", index, child.pid)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop()

    def stop(self) -> None:
        """Ask every child to stop gracefully (SIGTERM); safe to call twice."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        for child in list(self.children.values()):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    def run(self) -> int:
        """Supervise until stopped; return 0 if every child exited cleanly."""
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            for index in range(self.processes):
                self._spawn(index)
            while not self._stopping.is_set():
                for index, child in list(self.children.items()):
                    code = child.poll()
                    if code is not None and not self._stopping.is_set():
                        log.warning(
                            "worker process %d (pid %d) exited with %d; restarting",
                            index,
                            child.pid,
                            code,
                        )
                        self.restarts += 1
                        del self.children[index]
                        time.sleep(_RESTART_DELAY)
                        if not self._stopping.is_set():
                            self._spawn(index)
                self._stopping.wait(0.2)
            return self._wait_all()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

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
