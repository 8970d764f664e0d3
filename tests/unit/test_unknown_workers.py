"""A queue's jobs for workers this node does not know are reported once per name."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

import pytest

from errands.runtime import unknown_workers
from errands.runtime.unknown_workers import UnknownWorkers


def _node(found: list[list[str]], asked: list[str]) -> Any:
    def lookup(queue: str, known: Sequence[str]) -> list[str]:
        asked.append(queue)
        return found.pop(0)

    async def call_db(fn: Callable[..., Any], *args: Any) -> Any:
        result = fn(*args)
        if isinstance(result, Exception):
            raise result
        return result

    engine = SimpleNamespace(unknown_workers=lookup)
    return SimpleNamespace(engine=engine, worker_names=["known"], call_db=call_db)


def test_each_unknown_name_is_logged_once_and_the_database_asked_at_most_every_interval(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []
    node = _node([["ghost"], ["ghost", "typo"]], asked)
    unknown = UnknownWorkers("emails")
    with caplog.at_level(logging.WARNING, logger="errands.producer"):
        asyncio.run(unknown.check(node))
        asyncio.run(unknown.check(node))  # within CHECK_EVERY: not asked again
        monkeypatch.setattr(unknown_workers, "CHECK_EVERY", 0.0)
        asyncio.run(unknown.check(node))
    assert asked == ["emails", "emails"]
    warned = [record.getMessage() for record in caplog.records]
    assert len(warned) == 2
    assert "queue emails has jobs for worker 'ghost'" in warned[0]
    assert "'typo'" in warned[1] and "registers it" in warned[1]
    assert "should use different queues" in warned[0]


def test_a_failed_lookup_is_silent_and_tried_again_later(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []
    node = _node([], asked)
    node.engine.unknown_workers = lambda queue, known: RuntimeError("database down")
    monkeypatch.setattr(unknown_workers, "CHECK_EVERY", 0.0)
    unknown = UnknownWorkers("emails")
    asyncio.run(unknown.check(node))  # does not raise
    node.engine.unknown_workers = lambda queue, known: asked.append(queue) or []
    asyncio.run(unknown.check(node))
    assert asked == ["emails"]
