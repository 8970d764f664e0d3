"""The child's side of the readiness pipe of ``errands worker --processes N``.

The supervisor (:mod:`errands.runtime.supervisor`) gives each child the write
end of a pipe and its number in :data:`READY_FD_ENV`. The child writes one
byte (:data:`READY_MESSAGE`) and closes the pipe once it has started: app
imported, database reached, schema checked, queues loaded, right before its
node's producers claim the first job (so no job, however deadly, runs before
it). From then on an exit is a crash, not a start-up failure. Without the
variable (a worker run on its own) :meth:`ReadyPipe.report` does nothing.

Example::

    ready = ReadyPipe.from_env()    # early: keeps the number from later subprocesses
    node = await app._start(queues, on_ready=ready.report)
"""

from __future__ import annotations

import contextlib
import logging
import os

__all__ = ["READY_FD_ENV", "READY_MESSAGE", "ReadyPipe"]

log = logging.getLogger("errands.supervisor")

#: The environment variable holding the number of the inherited write end.
READY_FD_ENV = "ERRANDS_READY_FD"

#: What a child writes once started (any byte would do).
READY_MESSAGE = b"R"


class ReadyPipe:
    """The write end a supervisor handed this process, reported on at most once.

    Example::

        ready = ReadyPipe.from_env()
        ready.report()  # the supervisor now counts this child as started
        ready.report()  # does nothing: the fd is closed (and its number may be reused)
    """

    def __init__(self, fd: int | None) -> None:
        self._fd = fd

    @classmethod
    def from_env(cls) -> ReadyPipe:
        """Take :data:`READY_FD_ENV` out of the environment; a pipe that reports nowhere without it.

        Removed so processes this one starts (a job's subprocess, another
        worker) do not take a number that means nothing to them for their own pipe.
        """
        value = os.environ.pop(READY_FD_ENV, None)
        if value is None:
            return cls(None)
        try:
            fd = int(value)
            os.set_inheritable(fd, False)
        except (ValueError, OSError) as exc:
            log.warning("ignoring %s=%r: %s", READY_FD_ENV, value, exc)
            return cls(None)
        return cls(fd)

    def report(self) -> None:
        """Tell the supervisor this worker has started: write one byte, close the fd.

        Only the first call writes. A supervisor that is gone (a broken pipe) is
        logged, not raised: the worker itself is fine.
        """
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.write(fd, READY_MESSAGE)
        except OSError as exc:
            log.warning("could not report readiness to the supervisor: %s", exc)
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)
