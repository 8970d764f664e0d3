-- errands schema v1 for PostgreSQL. Idempotent: safe to run twice.
-- The engine runs this file with search_path set to the errands schema, inside
-- one transaction that holds the migration advisory lock.
-- Times are timestamptz on the database's clock; JSON columns are jsonb.
CREATE TABLE IF NOT EXISTS errands_jobs (
    id            bigserial PRIMARY KEY,
    state         text        NOT NULL DEFAULT 'available'
                  CONSTRAINT errands_jobs_state_check
                  CHECK (state IN ('scheduled', 'available', 'executing', 'retryable',
                                   'completed', 'cancelled', 'discarded')),
    queue         text        NOT NULL,
    worker        text        NOT NULL,
    args          jsonb       NOT NULL DEFAULT '{}',
    meta          jsonb       NOT NULL DEFAULT '{}',
    tags          jsonb       NOT NULL DEFAULT '[]',
    errors        jsonb       NOT NULL DEFAULT '[]',
    result        jsonb,
    priority      smallint    NOT NULL DEFAULT 0
                  CONSTRAINT errands_jobs_priority_check CHECK (priority BETWEEN 0 AND 9),
    attempt       integer     NOT NULL DEFAULT 0
                  CONSTRAINT errands_jobs_attempt_check CHECK (attempt >= 0),
    max_attempts  integer     NOT NULL DEFAULT 20
                  CONSTRAINT errands_jobs_max_attempts_check CHECK (max_attempts >= 1),
    timeout       double precision,
    inserted_at   timestamptz NOT NULL DEFAULT now(),
    scheduled_at  timestamptz NOT NULL DEFAULT now(),
    attempted_at  timestamptz,
    finished_at   timestamptz,
    attempted_by  text
);

-- A queue table churns: every job is inserted, updated a few times and deleted.
-- Vacuum and analyze after a small fraction of changes, not the default 20 %,
-- so dead tuples do not pile up in the partial indexes the claim walks.
ALTER TABLE errands_jobs SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 1
);

-- The claim reads only available jobs, in priority order.
CREATE INDEX IF NOT EXISTS errands_jobs_fetch
    ON errands_jobs (queue, priority, scheduled_at, id) WHERE state = 'available';
-- The stager reads only future jobs by due time.
CREATE INDEX IF NOT EXISTS errands_jobs_due
    ON errands_jobs (scheduled_at) WHERE state IN ('scheduled', 'retryable');
-- Rescue and shutdown look up executing jobs by producer.
CREATE INDEX IF NOT EXISTS errands_jobs_executing
    ON errands_jobs (attempted_by) WHERE state = 'executing';
-- The pruner deletes finished jobs oldest first.
CREATE INDEX IF NOT EXISTS errands_jobs_finished
    ON errands_jobs (finished_at) WHERE state IN ('completed', 'cancelled', 'discarded');
CREATE INDEX IF NOT EXISTS errands_jobs_state_queue ON errands_jobs (state, queue);

-- Producers heart-beat every few seconds: leave room on each page so the
-- update of heartbeat_at (not indexed) stays a HOT update.
CREATE TABLE IF NOT EXISTS errands_producers (
    id            text        PRIMARY KEY,
    node          text        NOT NULL,
    queue         text        NOT NULL,
    pid           integer     NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 50);

CREATE TABLE IF NOT EXISTS errands_leader (
    name        text        PRIMARY KEY,
    node        text        NOT NULL,
    term        bigint      NOT NULL,
    expires_at  timestamptz NOT NULL
) WITH (fillfactor = 50);
