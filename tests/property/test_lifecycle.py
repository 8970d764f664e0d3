"""The job lifecycle as a state machine, explored by Hypothesis on every engine.

Rules drive the Engine protocol directly (insert, fetch, ack, stale acks,
cancel_job, retry_job, stage, rescue, rescue_producer, prune, delete, producer
registration and heartbeats); a plain-Python model says what each rule must do.
After every step the whole table is compared with the model (DESIGN.md
section 4): the same ids, each in the model's state and attempt,
``attempt <= max_attempts``, every executing job held by exactly the producer
the model says, ``finished_at`` set exactly on finished jobs, errors counted,
and a finished job unchanged unless the step retried, pruned or deleted it.

Each example gets a fresh SQLite file or PostgreSQL schema. The CI size runs
40 random programs of up to 40 steps per engine (a few seconds on SQLite,
about 20 s on PostgreSQL); ``ERRANDS_PROPERTY_EXAMPLES=1000`` explores longer.
A failure prints the program that broke an invariant, step by step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from errands.engines.base import Ack, ProducerInfo
from errands.job import Job, JobState
from tests.property.engines import ENGINES, FUTURE, PAST, WORKER, ack, fresh_engine, new_job

OTHER = "prop.unknown"  # a worker name no fetch in the machine asks for, unless told
QUEUES = ("q1", "q2")
PRODUCERS = ("prod-A", "prod-B")
FINISHED = ("completed", "cancelled", "discarded")
OUTCOMES = ("complete", "retry", "snooze", "cancel", "discard")
Fence = tuple[int, int, str]
PICK = st.integers(0, 1000)
DUE = st.sampled_from((PAST, PAST, FUTURE))
EXTRA = st.lists(st.integers(0, 1000), max_size=2)


@dataclass
class Model:
    """What one job should look like."""

    id: int
    queue: str
    worker: str
    priority: int
    max_attempts: int
    state: str
    attempt: int = 0
    holder: str | None = None
    #: For scheduled/retryable jobs: is the due time in the past?
    due: bool = False
    errors: int = 0
    result: Any = None

    @property
    def fence(self) -> Fence:
        assert self.holder is not None
        return (self.id, self.attempt, self.holder)


class Lifecycle(RuleBasedStateMachine):
    """One engine's job table against the model; subclasses pick the engine."""

    engine_name: ClassVar[str] = "sqlite"

    def __init__(self) -> None:
        super().__init__()
        self._context = fresh_engine(self.engine_name)
        self.engine = self._context.__enter__()
        self.model: dict[int, Model] = {}
        self.registered: set[str] = set()
        for producer in PRODUCERS:
            self._register(producer)
        #: Fences of attempts that lost their job (acked, rescued, cancelled): stale forever.
        self.old_fences: list[Fence] = []
        self.snapshot: dict[int, Job] = {}
        #: Ids whose finished row this step may change (retried, pruned, deleted).
        self.touched: set[int] = set()

    def teardown(self) -> None:
        self._context.__exit__(None, None, None)

    # -- helpers ----------------------------------------------------------------------
    def _register(self, producer: str) -> None:
        info = ProducerInfo(producer, f"node-{producer}", "q1", os.getpid())
        self.engine.register_producer(info)
        self.registered.add(producer)

    def _rows(self) -> dict[int, Job]:
        return {job.id: job for job in self.engine.list_jobs(limit=100_000)}

    def _executing(self) -> list[Model]:
        return [j for j in self.model.values() if j.state == "executing"]

    def _pick(self, items: list[Any], pick: int) -> Any:
        return items[pick % len(items)]

    def _lose_hold(self, job: Model) -> None:
        self.old_fences.append(job.fence)
        job.holder = None

    def _stale_fences(self) -> list[Fence]:
        """Fences no live attempt has: every ack carrying one must change nothing."""
        live = {job.fence for job in self._executing()}
        fences: list[Fence] = [f for f in self.old_fences if f not in live]
        for job in self.model.values():
            if job.state == "executing":
                assert job.holder is not None
                other = next(p for p in PRODUCERS if p != job.holder)
                fences += [
                    (job.id, job.attempt + 1, job.holder),
                    (job.id, job.attempt - 1, job.holder),
                    (job.id, job.attempt, other),
                ]
            else:
                fences += [(job.id, job.attempt, p) for p in PRODUCERS]
        fences.append((max(self.model, default=0) + 1000, 1, PRODUCERS[0]))
        return [f for f in fences if f not in live]

    def _rescued(self, jobs: list[Model]) -> tuple[int, int]:
        available = discarded = 0
        for job in jobs:
            self._lose_hold(job)
            job.errors += 1
            if job.attempt >= job.max_attempts:
                job.state, discarded = "discarded", discarded + 1
            else:
                job.state, available = "available", available + 1
        return available, discarded

    # -- rules ------------------------------------------------------------------------
    @initialize(max_attempts=st.integers(1, 4))
    def some_jobs(self, max_attempts: int) -> None:
        """Start every example with work in both queues (and one job nobody here runs)."""
        self.enqueue("q1", WORKER, "now", 0, max_attempts, 3)
        self.enqueue("q2", WORKER, "past", 1, max_attempts, 2)
        self.enqueue("q1", OTHER, "now", 0, max_attempts, 1)
        self.enqueue("q2", WORKER, "future", 0, max_attempts, 1)

    @rule(
        queue=st.sampled_from(QUEUES),
        worker=st.sampled_from((WORKER, WORKER, OTHER)),
        when=st.sampled_from(("now", "past", "future")),
        priority=st.integers(0, 3),
        max_attempts=st.integers(1, 3),
        count=st.integers(1, 3),
    )
    def enqueue(
        self, queue: str, worker: str, when: str, priority: int, max_attempts: int, count: int
    ) -> None:
        due_in = {"now": None, "past": PAST, "future": FUTURE}[when]
        batch = [
            new_job(
                worker=worker,
                queue=queue,
                args={"i": i},
                priority=priority,
                max_attempts=max_attempts,
                due_in=due_in,
            )
            for i in range(count)
        ]
        inserted = self.engine.insert(batch)
        assert len(inserted) == count
        assert [job.id for job in inserted] == sorted(job.id for job in inserted)
        state = "scheduled" if when == "future" else "available"
        for job in inserted:
            assert job.id not in self.model
            assert (job.state, job.attempt, job.queue) == (state, 0, queue)
            self.model[job.id] = Model(
                job.id, queue, worker, priority, max_attempts, state, due=when != "future"
            )

    @rule(
        producer=st.sampled_from(PRODUCERS),
        pick=st.integers(0, 1000),
        limit=st.integers(1, 3),
        any_worker=st.booleans(),
    )
    def fetch(self, producer: str, pick: int, limit: int, any_worker: bool) -> None:
        workers = [WORKER, OTHER] if any_worker else [WORKER]
        # Mostly a queue with work in it: an empty fetch proves little.
        busy = sorted({j.queue for j in self.model.values() if j.state == "available"})
        queue = self._pick([*busy, *busy, *QUEUES], pick)
        candidates = sorted(
            (
                j
                for j in self.model.values()
                if j.state == "available" and j.queue == queue and j.worker in workers
            ),
            key=lambda j: (j.priority, self.snapshot[j.id].scheduled_at, j.id),
        )
        expected = [j.id for j in candidates[:limit]]
        claimed = self.engine.fetch(queue, limit, producer, workers)
        assert [job.id for job in claimed] == expected
        event(f"fetch claimed {min(len(claimed), 2)}+")
        for job in claimed:
            model = self.model[job.id]
            model.state, model.attempt, model.holder = "executing", model.attempt + 1, producer
            assert job.state == JobState.EXECUTING
            assert (job.attempt, job.attempted_by) == (model.attempt, producer)
            assert job.attempted_at is not None

    def _ack_live(self, outcome: str, pick: int, due: float, extra: list[int], again: bool) -> None:
        job = self._pick(self._executing(), pick)
        if outcome == "retry" and job.attempt >= job.max_attempts:
            outcome = "discard"  # what the runtime sends once attempts are spent
        stale = self._stale_fences()
        batch = [ack(job.id, job.attempt, job.holder, outcome, due_in=due)]
        if again:
            batch.append(batch[0])  # the same ack twice in one batch applies once
        batch += [ack(*self._pick(stale, i), outcome="complete") for i in extra]
        assert self.engine.ack(batch) == 1
        event(f"live ack: {outcome}")
        self._lose_hold(job)
        if outcome == "snooze":
            job.state, job.due = "scheduled", due == PAST
            job.max_attempts += 1  # no attempt spent; attempt still fences
        elif outcome == "retry":
            job.state, job.due, job.errors = "retryable", due == PAST, job.errors + 1
        elif outcome == "complete":
            job.state, job.result = "completed", {"job": job.id, "attempt": job.attempt}
        else:
            job.state = "cancelled" if outcome == "cancel" else "discarded"
            job.errors += 1

    # One rule per outcome, so that acks (live, and stale ones riding in the same
    # batch) are as frequent as the rules that take jobs away from producers.
    @precondition(lambda self: self._executing())
    @rule(pick=PICK, extra=EXTRA, again=st.booleans())
    def ack_complete(self, pick: int, extra: list[int], again: bool) -> None:
        self._ack_live("complete", pick, PAST, extra, again)

    @precondition(lambda self: self._executing())
    @rule(pick=PICK, due=DUE, extra=EXTRA, again=st.booleans())
    def ack_retry(self, pick: int, due: float, extra: list[int], again: bool) -> None:
        self._ack_live("retry", pick, due, extra, again)

    @precondition(lambda self: self._executing())
    @rule(pick=PICK, due=DUE, extra=EXTRA, again=st.booleans())
    def ack_snooze(self, pick: int, due: float, extra: list[int], again: bool) -> None:
        self._ack_live("snooze", pick, due, extra, again)

    @precondition(lambda self: self._executing())
    @rule(pick=PICK, extra=EXTRA, again=st.booleans())
    def ack_cancel(self, pick: int, extra: list[int], again: bool) -> None:
        self._ack_live("cancel", pick, PAST, extra, again)

    @precondition(lambda self: self._executing())
    @rule(pick=PICK, extra=EXTRA, again=st.booleans())
    def ack_discard(self, pick: int, extra: list[int], again: bool) -> None:
        self._ack_live("discard", pick, PAST, extra, again)

    @rule(pick=st.integers(0, 10_000), outcome=st.sampled_from(OUTCOMES))
    def ack_stale(self, pick: int, outcome: str) -> None:
        fence = self._pick(self._stale_fences(), pick)
        before = self._rows()
        stale: Ack = ack(*fence, outcome=outcome)
        assert self.engine.ack([stale]) == 0, f"stale ack {fence} applied"
        assert self._rows() == before, f"stale ack {fence} changed the table"
        job = self.model.get(fence[0])
        event(f"stale ack on a {job.state if job else 'missing'} job")

    @rule(pick=st.integers(0, 1000), missing=st.booleans())
    def cancel_job(self, pick: int, missing: bool) -> None:
        ids = sorted(self.model)
        if missing or not ids:
            assert self.engine.cancel_job(max(ids, default=0) + 77) is None
            return
        job = self.model[self._pick(ids, pick)]
        got = self.engine.cancel_job(job.id)
        if job.state in FINISHED:
            assert got is None
            return
        assert got is not None and got.state == JobState.CANCELLED and got.finished_at is not None
        if job.state == "executing":
            self._lose_hold(job)
        job.state = "cancelled"

    @rule(pick=st.integers(0, 1000))
    def retry_job(self, pick: int) -> None:
        ids = sorted(self.model)
        if not ids:
            return
        job = self.model[self._pick(ids, pick)]
        got = self.engine.retry_job(job.id)
        if job.state not in ("retryable", *FINISHED):
            assert got is None
            return
        assert got is not None and got.state == JobState.AVAILABLE
        job.state, job.max_attempts = "available", max(job.max_attempts, job.attempt + 1)
        assert got.max_attempts == job.max_attempts
        self.touched.add(job.id)

    @rule(limit=st.sampled_from((1, 2, 1000)))
    def stage(self, limit: int) -> None:
        due = [j for j in self.model.values() if j.state in ("scheduled", "retryable") and j.due]
        queues = self.engine.stage(limit)
        after = self._rows()
        staged = [j for j in due if after[j.id].state == JobState.AVAILABLE]
        assert len(staged) == min(limit, len(due))
        waiting = [j for j in due if j not in staged]
        if staged and waiting:  # oldest due first
            latest = max(self.snapshot[j.id].scheduled_at for j in staged)
            assert latest <= min(self.snapshot[j.id].scheduled_at for j in waiting)
        assert queues == sorted({j.queue for j in staged})
        event(f"stage moved {min(len(staged), 2)}+ (of {min(len(due), 3)}+ due)")
        for job in staged:
            job.state = "available"

    @rule(producer=st.sampled_from(PRODUCERS))
    def register(self, producer: str) -> None:
        self._register(producer)

    @rule(producer=st.sampled_from(PRODUCERS))
    def unregister(self, producer: str) -> None:
        self.engine.unregister_producers([producer])
        self.registered.discard(producer)

    @rule(producers=st.lists(st.sampled_from(PRODUCERS), max_size=2, unique=True))
    def heartbeat(self, producers: list[str]) -> None:
        self.engine.heartbeat(producers)  # keeps the registered alive; registers nobody

    @rule()
    def rescue_unregistered(self) -> None:
        orphans = [j for j in self._executing() if j.holder not in self.registered]
        counts = self.engine.rescue(3600.0)  # every registered producer beat within the hour
        assert (counts.available, counts.discarded) == self._rescued(orphans)
        event(f"rescue of unregistered: {counts.available} available, {counts.discarded} discarded")

    @rule()
    def rescue_everyone(self) -> None:
        # rescue_after=0: every heartbeat is older than now, so every producer is silent,
        # and (10 x 0 s) every producer row is forgotten.
        orphans = self._executing()
        counts = self.engine.rescue(0.0)
        assert (counts.available, counts.discarded) == self._rescued(orphans)
        self.registered.clear()

    @rule(producer=st.sampled_from(PRODUCERS))
    def rescue_producer(self, producer: str) -> None:
        held = [j for j in self._executing() if j.holder == producer]
        counts = self.engine.rescue_producer(producer)
        assert (counts.available, counts.discarded) == self._rescued(held)

    @rule(older_than=st.sampled_from((0.0, 3600.0)), limit=st.sampled_from((1, 2, 1000)))
    def prune(self, older_than: float, limit: int) -> None:
        eligible = [j for j in self.model.values() if j.state in FINISHED and older_than == 0]
        deleted = self.engine.prune(older_than, limit)
        assert deleted == min(limit, len(eligible))
        event(f"prune deleted {min(deleted, 2)}+")
        after = self._rows()
        gone = [j for j in eligible if j.id not in after]
        assert len(gone) == deleted
        kept = [j for j in eligible if j.id in after]
        if gone and kept:  # oldest finished first
            latest = max(self.snapshot[j.id].finished_at or 0 for j in gone)
            assert latest <= min(self.snapshot[j.id].finished_at or 0 for j in kept)
        for job in gone:
            del self.model[job.id]
            self.touched.add(job.id)

    @rule(pick=st.integers(0, 1000), missing=st.booleans())
    def delete_job(self, pick: int, missing: bool) -> None:
        ids = sorted(self.model)
        if missing or not ids:
            assert self.engine.delete_job(max(ids, default=0) + 55) is False
            return
        job = self.model[self._pick(ids, pick)]
        deleted = self.engine.delete_job(job.id)
        assert deleted is (job.state != "executing")
        if deleted:
            del self.model[job.id]
            self.touched.add(job.id)
            assert self.engine.get_job(job.id) is None

    # -- invariants -------------------------------------------------------------------
    @invariant()
    def table_matches_model(self) -> None:
        rows = self._rows()
        assert set(rows) == set(self.model), "rows lost or invented"
        for job_id, model in self.model.items():
            row = rows[job_id]
            where = f"job {job_id}: {row}"
            assert row.state.value == model.state, where
            assert row.attempt == model.attempt, where
            assert row.max_attempts == model.max_attempts, where
            assert 0 <= row.attempt <= row.max_attempts, where
            assert (row.queue, row.worker, row.priority) == (
                model.queue,
                model.worker,
                model.priority,
            ), where
            if model.state == "executing":
                assert row.attempted_by == model.holder is not None, where
            assert (row.finished_at is not None) == (model.state in FINISHED), where
            assert len(row.errors) == model.errors, where
            if model.state == "completed":
                assert row.result == model.result, where
        for job_id, old in self.snapshot.items():
            if old.state.value in FINISHED and job_id in rows and job_id not in self.touched:
                assert rows[job_id] == old, (
                    f"finished job {job_id} changed: {old} -> {rows[job_id]}"
                )
        self.snapshot, self.touched = rows, set()


def _settings() -> settings:
    examples = int(os.environ.get("ERRANDS_PROPERTY_EXAMPLES", "40"))
    return settings(
        max_examples=examples,
        stateful_step_count=40,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


@pytest.mark.parametrize("engine_name", ENGINES)
def test_job_lifecycle(engine_name: str) -> None:
    machine = type(f"Lifecycle_{engine_name}", (Lifecycle,), {"engine_name": engine_name})
    run_state_machine_as_test(machine, settings=_settings())
