"""Pin a worker process to one CPU core of its own: ``errands worker --pin-cpus``.

A worker process runs its loop, its job threads and its database calls under
one GIL. Left free, Linux spreads those threads over every core, and each hand
of the GIL from one thread to another then wakes a thread on another core:
on a 2-core host, a SQLite drain of no-op jobs ran at 39,600-54,900 jobs/s
with its threads spread (where the kernel put them decided) and 54,400-55,100
with them on one core, and two worker processes drained about a sixth faster
each on a core of its own (docs/multi-node.md).

Worker process number ``i`` (``ERRANDS_WORKER_INDEX``, set by the supervisor
of ``--processes N``; 0 for a single worker) runs on the ``i``-th core it is
allowed to use, counting round the allowed cores when there are more
processes than cores. What is pinned is errands' own work: the event loop
(and with it ``async def`` jobs), the database threads, the heartbeat, and
whatever they start. The threads that run ``def`` job bodies take every core
back as they start (:func:`unpin_this_thread`), so the programs and native
threads a ``def`` job starts are not pinned; measured, that cost nothing
against pinning them too. The process executor's children get every core
back as well (see :mod:`errands.runtime.process_child`). Opt-in all the
same: an ``async def`` job's subprocesses inherit the pin.

Linux only (``os.sched_setaffinity``); elsewhere :func:`pin_worker` raises
:class:`~errands.errors.ConfigError`.

Example::

    core = pin_worker(worker_index())
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Collection

from errands.errors import ConfigError

__all__ = [
    "WORKER_INDEX_ENV",
    "check_supported",
    "core_for",
    "pin_worker",
    "unpin_this_thread",
    "unpinned_cpus",
    "worker_index",
]

#: The environment variable holding a supervised worker process's number (0..N-1).
WORKER_INDEX_ENV = "ERRANDS_WORKER_INDEX"

#: The cores this process could use before :func:`pin_worker` (None: not pinned).
_unpinned: frozenset[int] | None = None


def worker_index() -> int:
    """This worker process's number under a supervisor; 0 when it runs alone.

    Example: ``worker_index()  # 1 in the second child of --processes 2``
    """
    value = os.environ.get(WORKER_INDEX_ENV, "0")
    try:
        return max(0, int(value))
    except ValueError:
        raise ConfigError(
            f"{WORKER_INDEX_ENV} must be a whole number (the supervisor sets it), got {value!r}"
        ) from None


def core_for(index: int, cpus: Collection[int]) -> int:
    """The core worker process ``index`` runs on: the allowed cores in order, in turn.

    Example: ``core_for(3, {0, 1, 2})  # 0``
    """
    if not cpus:
        raise ConfigError("--pin-cpus: this process may run on no core at all")
    ordered = sorted(cpus)
    return ordered[index % len(ordered)]


def check_supported() -> None:
    """Raise :class:`~errands.errors.ConfigError` where processes cannot be pinned.

    Example: ``check_supported()  # on macOS: ConfigError("--pin-cpus: ...")``
    """
    if not hasattr(os, "sched_setaffinity"):
        raise ConfigError(
            "--pin-cpus: this system cannot pin a process to a core (it has no "
            "sched_setaffinity; Linux has): run the worker without it"
        )


def pin_worker(index: int) -> int:
    """Pin every thread of this process to the core :func:`core_for` picks; return it.

    Remembers the cores allowed before (:func:`unpinned_cpus`). Threads started
    afterwards inherit the pin.

    Example: ``pin_worker(0)  # 0: this process now runs on core 0 only``
    """
    global _unpinned
    check_supported()
    allowed = frozenset(os.sched_getaffinity(0))
    core = core_for(index, allowed)
    # Affinity is per thread on Linux: set it on the threads already running too.
    for thread_id in _thread_ids():
        with contextlib.suppress(ProcessLookupError):  # a thread that just ended
            os.sched_setaffinity(thread_id, {core})
    if _unpinned is None:
        _unpinned = allowed
    return core


def unpinned_cpus() -> frozenset[int] | None:
    """The cores this process could use before :func:`pin_worker`; None if never pinned.

    Example: ``unpinned_cpus()  # frozenset({0, 1}) in a pinned worker on 2 cores``
    """
    return _unpinned


def unpin_this_thread() -> None:
    """Give the calling thread back the cores of :func:`unpinned_cpus`; nothing if never pinned.

    Job threads call it as they start (see :class:`~errands.runtime.threads.JobThreads`).

    Example: ``unpin_this_thread()  # this thread may run on every core again``
    """
    if _unpinned is not None:
        os.sched_setaffinity(0, _unpinned)  # 0: the calling thread, on Linux


def _thread_ids() -> list[int]:
    try:
        return [int(name) for name in os.listdir("/proc/self/task")]
    except OSError:  # no /proc: the calling thread at least
        return [0]
