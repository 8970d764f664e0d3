"""A snooze gives the attempt back, so the next claim can carry the very same fence.

Acks are fenced by ``(id, attempt, producer)``. A snooze decrements
``attempt``; when the same producer claims the job again, the new attempt has
the fence of the snoozed one. A late duplicate of the snooze ack (the
completer re-sends a batch whose commit went through but whose reply was lost,
e.g. a connection cut at COMMIT) then lands on the *new* attempt: it snoozes a
job that is running, and the running attempt's own outcome is then refused as
stale. DESIGN.md section 4, invariant 2: an ack from a producer that no longer
holds the job changes nothing.
"""

from __future__ import annotations

import pytest

from errands.engines.base import ProducerInfo
from errands.job import JobState
from tests.property.engines import ENGINES, PAST, ack, fresh_engine, new_job


@pytest.mark.parametrize("engine_name", ENGINES)
def test_a_late_snooze_ack_does_not_touch_the_next_attempt(engine_name: str) -> None:
    with fresh_engine(engine_name) as engine:
        engine.register_producer(ProducerInfo("A", "node-A", "default", 1))
        (job,) = engine.insert([new_job(max_attempts=3)])
        (first,) = engine.fetch("default", 1, "A", ["prop.work"])
        snooze = ack(first.id, first.attempt, "A", "snooze", due_in=PAST)
        assert engine.ack([snooze]) == 1
        assert engine.ack([snooze]) == 0, "a duplicate right away is stale"
        assert engine.stage(10) == ["default"]
        (second,) = engine.fetch("default", 1, "A", ["prop.work"])
        assert second.state == JobState.EXECUTING

        # The same snooze ack, delivered late: it belongs to the first run.
        applied = engine.ack([snooze])
        now = engine.get_job(job.id)
        assert now is not None
        assert (applied, now.state) == (0, JobState.EXECUTING), (
            f"a late ack of the snoozed attempt {first.attempt} was applied to the running "
            f"attempt {second.attempt} (fence {(job.id, second.attempt, 'A')} is reused): "
            f"job is now {now.state}"
        )
        assert engine.ack([ack(second.id, second.attempt, "A", "complete")]) == 1
