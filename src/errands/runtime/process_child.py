"""One worker process of a process pool: what runs inside it, and the node's handle on it.

A child is started with the ``spawn`` method (never ``fork``: the node has
threads) and given only an import path (``"module:attr"``) and a pipe. It
imports the app, says it is ready (with the worker names it knows), then runs
one job at a time: a JSON request in, the classified outcome (an
:class:`~errands.engines.base.Ack` as JSON) out. No code and no job data is
pickled; only registered workers run.

Signals: SIGINT is ignored (Ctrl-C is the node's to handle); SIGTERM unwinds
the running body, so its ``finally`` blocks run, then the child exits. A child
whose node died exits within a second.

Example::

    child = ChildProcess.launch(multiprocessing.get_context("spawn"), "jobs:app", "cpu-1")
    reply = await child.acall(job_request(job, producer_id, "jobs:app"))
    ack = read_outcome(reply, job, producer_id)
    await child.stop(polite=True)
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Iterable
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import TYPE_CHECKING, Any

import orjson

from errands.engines.base import Ack
from errands.errors import ConfigError, UnknownWorkerError
from errands.job import Job, JobState
from errands.runtime.affinity import unpinned_cpus
from errands.runtime.executor import classify
from errands.worker import Worker, _current_job, module_name

if TYPE_CHECKING:
    from errands.app import App

__all__ = [
    "ChildProcess",
    "WorkerProcessDiedError",
    "WorkerProcessError",
    "check_import_path",
    "child_main",
    "job_request",
    "read_outcome",
    "resolve_import_path",
]

log = logging.getLogger("errands.process_pool")

#: The message that tells an idle child to leave.
_STOP = b""
_start_lock = threading.Lock()
_IMPORT_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
#: The Job fields a child receives (the others keep their defaults there).
_JOB_FIELDS = (
    *("id", "worker", "queue", "args", "priority", "attempt", "max_attempts", "meta"),
    *("tags", "errors", "timeout", "inserted_at", "scheduled_at", "attempted_at"),
    "attempted_by",
)


class WorkerProcessError(RuntimeError):
    """No child process could run the job (it could not start, or the pool is closed).

    Example: ``job.errors[-1]["type"].endswith("WorkerProcessError")``
    """


class WorkerProcessDiedError(WorkerProcessError):
    """The child process running a job died: killed, crashed or out of memory.

    Example: ``"worker process died (exit code -9) while running job 7"``
    """


class ChildGoneError(Exception):
    """The child's end of the pipe closed (it died). Example: ``except ChildGoneError: ...``"""


class _Terminated(BaseException):
    """SIGTERM in a child: unwind the job body (its ``finally`` blocks run), then exit."""


def check_import_path(value: Any) -> str | None:
    """Validate the ``import_path`` option of :class:`errands.App`; ``None`` passes.

    Example: ``check_import_path("myproject.jobs:app")`` -> ``"myproject.jobs:app"``
    """
    if value is None:
        return None
    if not isinstance(value, str) or not _IMPORT_PATH.match(value):
        raise ConfigError(
            "import_path must be 'module:attr' naming an errands.App "
            f"(e.g. 'myproject.jobs:app'), got {value!r}"
        )
    return value


def resolve_import_path(app: App, queues: Iterable[str] = ()) -> str:
    """How a child process imports ``app``: ``app.import_path``, else found from its workers.

    Without ``import_path`` (``errands --app`` sets it), the modules of the
    registered workers are searched, in registration order, for a global that
    is this very app. Raises :class:`~errands.ConfigError` when none is.

    Example: ``resolve_import_path(app)`` -> ``"myproject.jobs:app"``
    """
    if app.import_path:
        return app.import_path
    for worker in app.registry:
        module = sys.modules.get(worker.__module__)
        name = module_name(worker.__module__)  # python tasks.py: "tasks", not "__main__"
        if module is None or name == "__main__":
            continue
        for attr, value in list(vars(module).items()):
            if value is app:
                return f"{name}:{attr}"
    names = ", ".join(repr(q) for q in queues) or "a queue"
    raise ConfigError(
        f"queue {names} has executor='process', but errands cannot tell how a child process "
        "should import this app: pass errands.App(..., import_path='module:attr'), run "
        "'errands --app module:attr worker', or keep the app as a module-level global of the "
        "module that defines its workers (code run by python -c or a REPL cannot be imported)"
    )


def job_request(job: Job, producer: str, import_path: str) -> bytes:
    """The JSON message that asks a child to run one attempt of ``job``.

    Example: ``await child.acall(job_request(job, producer_id, "myproject.jobs:app"))``
    """
    fields = {name: getattr(job, name) for name in _JOB_FIELDS}
    return orjson.dumps({"job": fields, "producer": producer, "import_path": import_path})


def read_outcome(reply: bytes, job: Job, producer: str) -> Ack:
    """The :class:`~errands.engines.base.Ack` a child's reply (see :func:`run_in_child`) means.

    Example: ``ack = read_outcome(await child.acall(request), job, producer_id)``
    """
    data = orjson.loads(reply)
    result = data["result"]
    return Ack(
        id=job.id,
        attempt=job.attempt,
        producer=producer,
        state=JobState(data["state"]),
        result=None if result is None else result.encode(),
        error=data["error"],
        scheduled_at=data["scheduled_at"],
        snoozed=data["snoozed"],
    )


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Terminated


def _watch_parent(parent: int) -> None:
    # A child never outlives its node, even one killed with SIGKILL.
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _load_app(import_path: str) -> App:
    from errands.app import App

    module_name, _, attr = import_path.partition(":")
    found: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        found = getattr(found, part)
    if not isinstance(found, App):
        raise TypeError(f"{import_path} is a {type(found).__name__}, not an errands.App")
    return found


def run_in_child(app: App, message: bytes) -> bytes:
    """Run the job a :func:`job_request` describes; return its classified outcome as JSON.

    Example: ``conn.send_bytes(run_in_child(app, conn.recv_bytes()))`` (in the child)
    """
    request = orjson.loads(message)
    job = Job(state=JobState.EXECUTING, **request["job"])
    worker_cls = app.registry.get(job.worker)
    worker = worker_cls() if worker_cls is not None else Worker()
    token = _current_job.set(job)
    try:
        if worker_cls is None:
            raise UnknownWorkerError(
                f"worker {job.worker!r} is not registered in the app the worker process "
                f"imported from import_path {request['import_path']!r}"
            )
        result = worker.perform(job)
    except _Terminated:
        raise
    except BaseException as exc:  # the thread executor's rule: the attempt fails, we go on
        ack = classify(job, worker, request["producer"], exc=exc)
    else:
        ack = classify(job, worker, request["producer"], result)
    finally:
        _current_job.reset(token)
    return orjson.dumps(
        {
            "state": ack.state.value,
            "result": None if ack.result is None else ack.result.decode(),
            "error": None if ack.error is None else dict(ack.error),
            "scheduled_at": ack.scheduled_at,
            "snoozed": ack.snoozed,
        }
    )


def child_main(
    conn: Connection, import_path: str, parent: int, cpus: frozenset[int] | None = None
) -> None:
    """The main loop of one child: import the app, then run jobs until told to stop.

    ``cpus``: the cores the node could use before ``--pin-cpus`` pinned it to
    one; the child runs CPU-bound jobs, so it takes them all back.

    Example: ``context.Process(target=child_main, args=(conn, "jobs:app", os.getpid()))``
    """
    if cpus is not None:
        os.sched_setaffinity(0, cpus)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    try:
        try:
            app = _load_app(import_path)
        except BaseException as exc:
            conn.send_bytes(orjson.dumps({"failed": f"{type(exc).__name__}: {exc}"}))
            return
        conn.send_bytes(orjson.dumps({"ready": os.getpid(), "workers": app.registry.names()}))
        while True:
            try:
                message = conn.recv_bytes()
            except (EOFError, OSError):
                return  # the node is gone
            if message == _STOP:
                return
            conn.send_bytes(run_in_child(app, message))
    except _Terminated:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)


# -- the node's side ---------------------------------------------------------------------
class ChildProcess:
    """The node's handle on one child: start it, send it jobs, stop it.

    Example::

        child = ChildProcess.launch(multiprocessing.get_context("spawn"), "jobs:app", "cpu-1")
        reply = await child.acall(job_request(job, producer_id, "jobs:app"))
        await child.stop(polite=True)
    """

    def __init__(self, process: BaseProcess, conn: Connection) -> None:
        self.process = process
        self.conn = conn
        self.pid = process.pid or 0
        #: The worker names the child's app registers.
        self.workers: tuple[str, ...] = ()

    @classmethod
    def launch(
        cls, context: SpawnContext, import_path: str, name: str, start_timeout: float = 60.0
    ) -> ChildProcess:
        """Start a child and wait until it imported the app (blocking: call it off the loop)."""
        parent_conn, child_conn = context.Pipe()
        process = context.Process(
            target=child_main,
            args=(child_conn, import_path, os.getpid(), unpinned_cpus()),
            name=name,
            daemon=True,
        )
        with _start_lock:
            process.start()
        child_conn.close()
        child = cls(process, parent_conn)
        try:
            if not parent_conn.poll(start_timeout):
                process.kill()
                raise WorkerProcessError(f"it did not start within {start_timeout:g}s")
            reply = orjson.loads(parent_conn.recv_bytes())
        except (EOFError, OSError):
            process.join(5.0)
            raise WorkerProcessError(
                f"it exited while starting (exit code {process.exitcode}; its error output "
                "says why). A spawned process first re-imports the main script: code there "
                "that starts workers must sit under if __name__ == '__main__':"
            ) from None
        if "failed" in reply:
            process.join(5.0)
            raise WorkerProcessError(str(reply["failed"]))
        child.workers = tuple(reply["workers"])
        return child

    @property
    def alive(self) -> bool:
        """True until the process has exited (checking reaps it: no zombie is left)."""
        return self.process.exitcode is None

    async def acall(self, message: bytes) -> bytes:
        """Send a job and wait for its outcome on the event loop, without a thread.

        The loop watches the pipe (``add_reader``) and reads the outcome once
        the child starts writing it: no thread hop per job. Cancelled (a
        timeout, a cancelled job, shutdown), it stops watching and closes the
        pipe: the caller is about to kill the child. A loop that cannot watch
        pipes (Windows' proactor) waits on a thread instead.
        """
        loop = asyncio.get_running_loop()
        try:
            self.conn.send_bytes(message)
        except OSError:
            self.conn.close()
            raise ChildGoneError from None
        reply: asyncio.Future[bytes] = loop.create_future()
        fd = self.conn.fileno()

        def readable() -> None:
            loop.remove_reader(fd)
            if reply.done():
                return
            try:
                reply.set_result(self._receive())
            except ChildGoneError as exc:
                reply.set_exception(exc)

        try:
            loop.add_reader(fd, readable)
        except NotImplementedError:
            return await asyncio.to_thread(self._receive)
        try:
            return await reply
        except asyncio.CancelledError:
            loop.remove_reader(fd)
            self.conn.close()
            raise

    def _receive(self) -> bytes:
        """The child's reply (blocking once it has started writing); closes a dead pipe."""
        try:
            return self.conn.recv_bytes()
        except (EOFError, OSError):
            self.conn.close()
            raise ChildGoneError from None

    async def exited(self, within: float) -> bool:
        """Wait up to ``within`` seconds for the process to exit; True if it has."""
        deadline = time.monotonic() + within
        while self.alive:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    async def stop(self, *, polite: bool, grace: float = 1.0) -> None:
        """A stop message (``polite``: idle) or SIGTERM, then SIGKILL after ``grace`` s."""
        if polite:
            with contextlib.suppress(OSError):
                self.conn.send_bytes(_STOP)
            if not await self.exited(grace):
                self.process.terminate()
        else:
            self.process.terminate()
        if not await self.exited(grace):
            log.warning("worker process %d is still running; killing it", self.pid)
            self.process.kill()
            await self.exited(5.0)
        if polite:  # an idle child's pipe is ours to close; a busy one's belongs to its call
            self.conn.close()
