"""Live queue control: pause, resume, scale, start and stop queues, here or on every node.

A mixin of :class:`errands.App`. Each method acts on every node by default:
it records the instruction in ``errands_queues`` (so it also holds for nodes
that start later, and across restarts), applies it to this app's own running
node at once, and every other node applies it within a poll interval (at once
on PostgreSQL, which sends a NOTIFY). ``local=True`` changes only this app's
running node and writes nothing.

Example::

    app.pause_queue("mail")                 # every node stops claiming mail jobs
    app.resume_queue("mail")
    app.scale_queue("mail", 50)             # every node runs up to 50 at once
    app.scale_queue("mail", None)           # back to each node's configured limit
    app.pause_queue("mail", local=True)     # only this process
    app.stop_queue("reports")               # no node claims reports jobs any more
    app.start_queue("reports", limit=2)     # every node runs reports again
    app.queue_states()["mail"].paused       # False
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from errands.config import QUEUE_NAME, QueueConfig
from errands.engines.base import QueueState
from errands.errors import ConfigError

if TYPE_CHECKING:
    from errands.engines import Engine
    from errands.runtime.node import Node
    from errands.runtime.producer import Producer

__all__ = ["QueueControl"]


def _queue_name(call: str, name: Any) -> str:
    if not isinstance(name, str) or not QUEUE_NAME.match(name):
        raise ConfigError(
            f"{call}: queue name must be 1-128 letters, digits or _.:- characters, got {name!r}"
        )
    return name


def _limit(call: str, limit: Any, *, allow_none: bool) -> int | None:
    if limit is None and allow_none:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        clear = " (or None to clear the override)" if allow_none else ""
        raise ConfigError(f"{call} limit must be an int >= 1{clear}, got {limit!r}")
    return limit


def _local_flag(call: str, local: Any) -> bool:
    if not isinstance(local, bool):
        raise ConfigError(f"{call} local must be True or False, got {local!r}")
    return local


class QueueControl:
    """Queue control methods of :class:`errands.App` (see the module docs).

    Example: ``app.pause_queue("mail"); app.scale_queue("mail", 5, local=True)``
    """

    if TYPE_CHECKING:

        @property
        def engine(self) -> Engine: ...

        @property
        def node(self) -> Node | None: ...

        def ensure_schema(self) -> None: ...

        def queue_config(self, name: str) -> QueueConfig: ...

    # -- helpers ------------------------------------------------------------------
    def _running_node(self, call: str, name: str) -> Node:
        node = self.node
        if node is None or not node.started:
            raise ConfigError(
                f"{call}({name!r}, local=True) needs this app's node running "
                "(await app.start() or app.run()); without local=True it acts on every node"
            )
        return node

    def _on_producer(self, call: str, name: str, change: Callable[[Producer], None]) -> None:
        """Apply ``change`` to this node's producer of ``name``, on the node's loop."""
        node = self._running_node(call, name)

        def apply() -> None:
            producer = node.producers.get(name)
            if producer is None:
                running = ", ".join(sorted(q for q in node.producers if "!" not in q))
                raise ConfigError(
                    f"{call}: queue {name!r} is not running on this node "
                    f"(running: {running or 'none'})"
                )
            change(producer)
            producer.wake()

        node.queue_watch.on_loop(apply)

    def _store(self, name: str, **change: Any) -> QueueState:
        """Record an instruction for every node, and apply it to our own node now."""
        self.ensure_schema()
        state = self.engine.set_queue(name, **change)
        node = self.node
        if node is not None and node.started:
            watch = node.queue_watch
            watch.on_loop(lambda: watch.apply(state))
        return state

    # -- public API ------------------------------------------------------------------
    def pause_queue(self, name: str, *, local: bool = False) -> None:
        """Stop claiming new jobs of queue ``name``; running ones finish.

        Example: ``app.pause_queue("mail")`` (every node, survives restarts), or
        ``app.pause_queue("mail", local=True)`` (only this app's running node).
        """
        call = "pause_queue"
        name = _queue_name(call, name)
        if _local_flag(call, local):
            self._on_producer(call, name, lambda p: setattr(p, "paused", True))
        else:
            self._store(name, paused=True)

    def resume_queue(self, name: str, *, local: bool = False) -> None:
        """Claim jobs of queue ``name`` again after :meth:`pause_queue`.

        Example: ``app.resume_queue("mail")``
        """
        call = "resume_queue"
        name = _queue_name(call, name)
        if _local_flag(call, local):
            self._on_producer(call, name, lambda p: setattr(p, "paused", False))
        else:
            self._store(name, paused=False)

    def scale_queue(self, name: str, limit: int | None, *, local: bool = False) -> None:
        """Run up to ``limit`` jobs of queue ``name`` at once per node.

        ``None`` clears the override: each node goes back to its configured limit.
        Lowering the limit lets running jobs finish; no new ones start until the
        queue is under it.

        Example: ``app.scale_queue("mail", 50)``; ``app.scale_queue("mail", None)``
        """
        call = "scale_queue"
        name = _queue_name(call, name)
        chosen = _limit(call, limit, allow_none=True)
        if _local_flag(call, local):
            node = self._running_node(call, name)
            base = node.queue_watch.base_limits

            def change(producer: Producer) -> None:
                producer.limit = base.get(name, producer.limit) if chosen is None else chosen

            self._on_producer(call, name, change)
        else:
            self._store(name, limit=chosen, set_limit=True)

    def start_queue(self, name: str, limit: int | None = None, *, local: bool = False) -> None:
        """Start working queue ``name`` (on every node, or only here with ``local=True``).

        ``limit`` defaults to the queue's configured limit (10 for a queue this
        app does not configure). The queue's other options come from each
        node's own configuration.

        Example: ``app.start_queue("reports", limit=2)``
        """
        call = "start_queue"
        name = _queue_name(call, name)
        chosen = _limit(call, limit, allow_none=True)
        if not _local_flag(call, local):
            self._store(
                name, running=True, set_running=True, limit=chosen, set_limit=chosen is not None
            )
            return
        node = self._running_node(call, name)
        config = self.queue_config(name)
        if chosen is not None:
            config = dataclasses.replace(config, limit=chosen)

        def apply() -> None:
            if name in node.producers:
                raise ConfigError(
                    f"{call}: queue {name!r} is already running on this node; "
                    "use scale_queue to change its limit"
                )
            node.queue_watch.add_queue(config)

        node.queue_watch.on_loop(apply)

    def stop_queue(self, name: str, *, local: bool = False) -> None:
        """Stop working queue ``name``: no new claims now, running jobs get the grace period.

        Returns at once; the queue winds down in the background. Globally
        stopped queues stay stopped on nodes that start later, until
        :meth:`start_queue`.

        Example: ``app.stop_queue("reports")``
        """
        call = "stop_queue"
        name = _queue_name(call, name)
        if not _local_flag(call, local):
            self._store(name, running=False, set_running=True)
            return
        node = self._running_node(call, name)

        def apply() -> None:
            if name not in node.producers:
                raise ConfigError(f"{call}: queue {name!r} is not running on this node")
            node.queue_watch.remove_queue(name)

        node.queue_watch.on_loop(apply)

    def queue_states(self) -> dict[str, QueueState]:
        """The instructions stored for every node, by queue name (``None``: no instruction).

        Example: ``app.queue_states()["mail"].paused``
        """
        self.ensure_schema()
        return {state.name: state for state in self.engine.queue_states()}
