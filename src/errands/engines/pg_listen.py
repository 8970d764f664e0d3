"""LISTEN for job notifications on a dedicated PostgreSQL connection.

One daemon thread owns one non-pooled autocommit connection: it runs
``LISTEN <channel>`` and waits in ``conn.notifies(timeout=...)``, calling
``wake_up(queue)`` for every notification (the payload is the queue name).
A notification is only a hint (producers still poll), so a lost connection is
logged, retried with a backoff (0.5 s doubling to 5 s), and followed by a
``wake_up("*")`` for the notifications missed while disconnected.

Example::

    listener = PgListener(url, channel_name("public"), listen_sql, print, connect_kwargs={})
    ...
    listener.stop()
"""

from __future__ import annotations

import hashlib
import logging
import threading
from typing import Any

import psycopg

from errands.config import mask_url
from errands.engines.base import WakeUp

__all__ = ["PgListener", "channel_name"]

log = logging.getLogger(__name__)

_BACKOFF_START = 0.5
_BACKOFF_MAX = 5.0
#: How long one wait for notifications lasts: bounds how long ``stop`` takes.
_WAIT = 0.25


def channel_name(schema: str) -> str:
    """The NOTIFY channel of ``schema``: ``errands.<schema>``, hashed if over 63 bytes."""
    name = f"errands.{schema}"
    if len(name.encode()) > 63:
        name = "errands." + hashlib.sha256(schema.encode()).hexdigest()[:32]
    return name


class PgListener:
    """A running LISTEN loop; :meth:`stop` ends it within about a second."""

    def __init__(
        self,
        url: str,
        channel: str,
        listen_sql: bytes,
        wake_up: WakeUp,
        *,
        connect_kwargs: dict[str, Any],
    ) -> None:
        self.url = url
        self.channel = channel
        self._listen_sql = listen_sql
        self._wake_up = wake_up
        self._connect_kwargs = connect_kwargs
        self._stopped = threading.Event()
        #: Set once the first LISTEN is in place (tests wait on it).
        self.ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="errands-pg-listen", daemon=True)
        self._thread.start()

    def _connect(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self.url, autocommit=True, **self._connect_kwargs)
        try:
            conn.execute(self._listen_sql)
        except BaseException:
            conn.close()
            raise
        return conn

    def _deliver(self, queue: str) -> None:
        try:
            self._wake_up(queue)
        except Exception:
            log.exception("errands: wake-up callback failed for queue %r", queue)

    def _run(self) -> None:
        delay = _BACKOFF_START
        reconnecting = False
        while not self._stopped.is_set():
            try:
                conn = self._connect()
            except psycopg.Error as exc:
                log.warning(
                    "errands: cannot LISTEN on %s (%s); retrying in %.1f s",
                    mask_url(self.url),
                    " ".join(str(exc).split()),
                    delay,
                )
                self._stopped.wait(delay)
                delay = min(delay * 2, _BACKOFF_MAX)
                continue
            delay = _BACKOFF_START
            self.ready.set()
            if reconnecting:
                self._deliver("*")  # notifications sent while we were away are lost
            try:
                while not self._stopped.is_set():
                    for notify in conn.notifies(timeout=_WAIT):
                        self._deliver(notify.payload)
            except psycopg.Error as exc:
                if not self._stopped.is_set():
                    log.warning(
                        "errands: lost the LISTEN connection to %s (%s); reconnecting",
                        mask_url(self.url),
                        " ".join(str(exc).split()),
                    )
                    reconnecting = True
                    self._stopped.wait(delay)
                    delay = min(delay * 2, _BACKOFF_MAX)
            finally:
                conn.close()

    def stop(self) -> None:
        """Stop listening and close the connection; safe to call twice."""
        self._stopped.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)
