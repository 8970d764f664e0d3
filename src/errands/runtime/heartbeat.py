"""Producer liveness and the leader lease, on a thread of their own.

The heartbeat runs off the event loop so that a job that blocks the loop (a
sync call inside an ``async def``) cannot starve it and get its own node
declared dead. Each beat also takes or renews the leader lease; only the
leader runs the stager, lifeline and pruner.

Example::

    beat = Heartbeat(engine, node="web-1", producers=lambda: ids, interval=5, lease=30)
    beat.start(); ...; beat.stop()
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from errands.engines.base import Engine

__all__ = ["Heartbeat"]

log = logging.getLogger("errands.heartbeat")


class Heartbeat:
    """Beats every ``interval`` seconds; ``is_leader`` tells whether this node leads."""

    def __init__(
        self,
        engine: Engine,
        *,
        node: str,
        producers: Callable[[], Sequence[str]],
        interval: float,
        lease: float,
        on_leadership: Callable[[bool], None] | None = None,
        lead: bool = True,
    ) -> None:
        self.engine = engine
        self.node = node
        self.producers = producers
        self.interval = interval
        self.lease = lease
        self.on_leadership = on_leadership
        #: False for a heartbeat that only keeps producers alive (drain): never leads.
        self.lead = lead
        self.is_leader = False
        self.beats = 0
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        # start and stop run on different database threads: a node whose start-up
        # was cancelled (a signal) stops while its heartbeat may still be starting.
        self._lock = threading.Lock()
        self._closed = False

    def beat(self) -> None:
        """One heartbeat and lease renewal, now (errors are logged, not raised)."""
        try:
            ids = self.producers()
            if ids:
                self.engine.heartbeat(ids)
            leads = self.lead and self.engine.acquire_leader(self.node, self.lease)
        except Exception as exc:
            log.warning("heartbeat of node %s failed: %s", self.node, exc)
            leads = False  # without a renewed lease, step down: another node may take it
        if leads != self.is_leader:
            self.is_leader = leads
            log.info("node %s %s leader", self.node, "is now" if leads else "is no longer")
            if self.on_leadership is not None:
                self.on_leadership(leads)
        self.beats += 1

    def start(self) -> None:
        """Beat once now, then every ``interval`` seconds on a daemon thread.

        Does nothing once :meth:`stop` was called: a heartbeat left running for
        producers that are gone would keep their jobs from ever being rescued.
        """
        with self._lock:
            if self._thread is not None or self._closed:
                return
            self.beat()
            self._thread = threading.Thread(target=self._run, name="errands-heartbeat", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stopped.wait(self.interval):
            self.beat()

    def stop(self) -> None:
        """Stop beating and give the lease up, for good. Safe twice or before start."""
        with self._lock:  # waits for a start under way, so its thread is stopped too
            self._closed = True
            self._stopped.set()
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=self.interval + 5)
            if self.is_leader:
                try:
                    self.engine.release_leader(self.node)
                except Exception as exc:
                    log.warning("could not release the leader lease: %s", exc)
                self.is_leader = False
