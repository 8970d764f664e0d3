"""Whose turn it is to write: a file lock that hands SQLite's one write lock on in order.

SQLite lets one connection write at a time. A writer that finds the lock taken
sleeps in SQLite's busy handler — 1 ms, then 2, 5, 10… — and retries; with
transactions a fraction of a millisecond long, a second worker process spent
most of its time asleep while the lock was free, and adding it drained no
faster than one process alone. Taking a ``flock`` first, writers take turns
with a short wait instead: two worker processes drained ~17 % faster than with
the busy handler alone (docs/benchmarks-history.md, measured with a blocking wait; the
bounded wait below inserted as fast from two processes).

The lock is a separate file beside the database (``<db>-errands.lock``), never
the database file itself: closing any descriptor of a file drops every POSIX
lock the process holds on it, SQLite's own included. It only orders errands'
writers; SQLite's lock still protects the data, so another program writing the
same file stays correct (it just takes its turn through the busy handler).

The wait is bounded, like SQLite's, and still hands the lock on at once. A
writer first tries the lock without blocking; when it is taken, a waiter
thread (one per lock and process) blocks in ``flock`` on its behalf, so the
kernel wakes it the moment the holder lets go, while the writer waits for the
waiter at most ``timeout`` s (the engine's ``busy_timeout``). There is no
``flock`` with a deadline, and interrupting one takes a signal handler, which
a library does not own; polling the lock with sleeps instead (50 µs growing to
100 µs or 1 ms) drained 7-14 % slower with two worker processes.

A process that dies releases the lock with its descriptors. One that is
stopped in the middle of a write (SIGSTOP, Ctrl-Z, a debugger breakpoint)
holds it until it resumes, as it holds SQLite's own lock meanwhile; every
other writer gives up after ``timeout`` with :class:`WriterLockTimeoutError`
("database is locked", as SQLite's busy handler would say) instead of hanging.
A writer that gave up leaves its descriptor to the waiter thread: its next
write waits on that same turn again, and if the waiter got the lock meanwhile
with nobody waiting, it let it go at once and closed the descriptor (the next
write opens a new one). So a stopped holder costs one descriptor, however many
writes time out.

Example::

    lock = WriterLock("jobs.db", timeout=10.0)
    with lock:  # may raise WriterLockTimeoutError after 10 s
        ...  # BEGIN IMMEDIATE ... COMMIT
"""

from __future__ import annotations

import fcntl
import logging
import os
import queue
import sqlite3
import threading
import time
from types import TracebackType

__all__ = ["WriterLock", "WriterLockTimeoutError"]

log = logging.getLogger("errands.engines")


class WriterLockTimeoutError(sqlite3.OperationalError):
    """Another errands writer held the lock past ``timeout``: "database is locked".

    A :class:`sqlite3.OperationalError` whose ``sqlite_errorname`` is
    ``SQLITE_BUSY``, as for SQLite's own busy timeout, so the engine maps it
    like that one: callers of the engine get an :class:`errands.DatabaseError`
    naming the database and what was being done.

    Example::

        try:
            app.enqueue("w")
        except errands.DatabaseError as exc:
            print(exc)  # SQLite 'jobs.db': inserting jobs failed: database is locked: ...
    """


class WriterLock:
    """An exclusive ``flock`` on ``<path>-errands.lock``, re-opened after a fork.

    Waits at most ``timeout`` seconds for it, then raises :class:`WriterLockTimeoutError`.
    Where the lock file cannot be created (a read-only folder, an in-memory
    database), it does nothing and SQLite's busy handler alone orders writers.

    ``held_seconds`` adds up how long this process held it: over a drain, its
    share of the wall time says how close the single writer is to being the
    bottleneck (``errands bench`` reports it).

    Example: ``with WriterLock("jobs.db", timeout=0.5): ...``
    """

    def __init__(self, path: str, *, timeout: float = 10.0) -> None:
        self.path = None if path == ":memory:" else f"{path}-errands.lock"
        self.timeout = timeout
        #: Seconds this process has held the lock so far (0 without a lock file).
        self.held_seconds = 0.0
        self._fd: int | None = None
        self._pid = 0
        self._held = False
        self._held_since = 0.0
        self._waiter: _Waiter | None = None
        #: A wait that timed out while the waiter still blocks on ``_fd`` for it.
        self._pending: _Turn | None = None

    def _descriptor(self) -> int | None:
        # A forked child gets its own descriptor: one shared with the parent
        # would share the lock too, so each would let the other in.
        if self.path is None:
            return None
        if self._fd is None or self._pid != os.getpid():
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                log.debug(
                    "no writer lock file %s (%s): SQLite's busy handler orders writers",
                    self.path,
                    exc,
                )
                self.path = None
                return None
            self._pid = os.getpid()
        return self._fd

    def _acquire(self, fd: int) -> None:
        turn = self._pending
        if turn is None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                pass
            if self._waiter is None or self._waiter.pid != os.getpid():
                self._waiter = _Waiter()
            turn = self._waiter.wait_for(fd)
        # else: the last write gave up while the waiter still waits on this same
        # descriptor: wait on that turn again rather than open one more each time.
        if turn.taken(self.timeout):
            self._pending = None
            return
        self._pending = turn
        error = WriterLockTimeoutError(
            f"database is locked: another errands process held the writer lock "
            f"{self.path} for {self.timeout:g} s (busy_timeout); a process stopped "
            "in the middle of a write (SIGSTOP, Ctrl-Z, a debugger) holds it until it resumes"
        )
        error.sqlite_errorcode = sqlite3.SQLITE_BUSY
        error.sqlite_errorname = "SQLITE_BUSY"
        raise error

    def acquire(self) -> None:
        """Take the lock, waiting at most ``timeout`` s (else :class:`WriterLockTimeoutError`)."""
        if self._pending is not None and (
            self._pending.pid != os.getpid() or not self._pending.resume()
        ):
            # The waiter let the lock go and closed the descriptor (or we forked).
            self._pending = self._fd = None
        fd = self._descriptor()
        if fd is not None:
            self._acquire(fd)
            self._held = True
            self._held_since = time.perf_counter()

    def release(self) -> None:
        """Let the next writer in; does nothing if the lock is not held."""
        if self._held and self._fd is not None:
            self._held = False
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            self.held_seconds += time.perf_counter() - self._held_since

    def __enter__(self) -> WriterLock:
        self.acquire()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()

    def close(self) -> None:
        """Close this process's descriptor (the lock file stays); safe to call twice.

        A descriptor the waiter thread still waits on is its to close (it lets
        the lock go as soon as it gets it): closing it here could close another
        file that reused its number.
        """
        if self._fd is not None and self._pid == os.getpid() and self._pending is None:
            os.close(self._fd)
        self._fd = self._pending = None


class _Turn:
    """One writer's wait for the lock, which the waiter thread takes on its behalf."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pid = os.getpid()
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._given_up = False
        self._closed = False

    def taken(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s; True if the lock is ours, False if we gave up."""
        if self._done.wait(timeout):
            return True
        with self._lock:
            if self._done.is_set():  # got it just as the time ran out
                return True
            self._given_up = True
            return False

    def resume(self) -> bool:
        """Want the lock again after giving up; False if the waiter already let it go."""
        with self._lock:
            if self._closed:
                return False
            self._given_up = False
            return True

    def granted(self) -> None:
        """Called by the waiter thread holding the lock: hand it over, or let it go."""
        with self._lock:
            if not self._given_up:
                self._done.set()
                return
            self._closed = True
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


class _Waiter:
    """A daemon thread that blocks in ``flock`` for writers that found the lock taken."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._turns: queue.SimpleQueue[_Turn] = queue.SimpleQueue()
        threading.Thread(target=self._serve, name="errands-sqlite-writer", daemon=True).start()

    def wait_for(self, fd: int) -> _Turn:
        """Queue a wait for the lock on ``fd``; the returned turn says when it is ours."""
        turn = _Turn(fd)
        self._turns.put(turn)
        return turn

    def _serve(self) -> None:
        while True:
            turn = self._turns.get()
            try:
                fcntl.flock(turn.fd, fcntl.LOCK_EX)  # releases the GIL while it waits
            except OSError as exc:  # the descriptor was closed: the writer is gone
                log.debug("writer lock wait ended: %s", exc)
                continue
            turn.granted()
