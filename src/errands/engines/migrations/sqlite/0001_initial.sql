-- errands schema v1 for SQLite. Idempotent: safe to run twice.
-- Times are Unix seconds (REAL); JSON columns are TEXT checked by json_valid().
CREATE TABLE IF NOT EXISTS errands_jobs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    state         TEXT    NOT NULL DEFAULT 'available'
                  CHECK (state IN ('scheduled', 'available', 'executing', 'retryable',
                                   'completed', 'cancelled', 'discarded')),
    queue         TEXT    NOT NULL,
    worker        TEXT    NOT NULL,
    args          TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(args)),
    meta          TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(meta)),
    tags          TEXT    NOT NULL DEFAULT '[]' CHECK (json_valid(tags)),
    errors        TEXT    NOT NULL DEFAULT '[]' CHECK (json_valid(errors)),
    result        TEXT             CHECK (result IS NULL OR json_valid(result)),
    priority      INTEGER NOT NULL DEFAULT 0 CHECK (priority BETWEEN 0 AND 9),
    attempt       INTEGER NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    max_attempts  INTEGER NOT NULL DEFAULT 20 CHECK (max_attempts >= 1),
    timeout       REAL,
    inserted_at   REAL    NOT NULL,
    scheduled_at  REAL    NOT NULL,
    attempted_at  REAL,
    finished_at   REAL,
    attempted_by  TEXT
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

CREATE TABLE IF NOT EXISTS errands_producers (
    id            TEXT PRIMARY KEY,
    node          TEXT NOT NULL,
    queue         TEXT NOT NULL,
    pid           INTEGER NOT NULL,
    started_at    REAL NOT NULL,
    heartbeat_at  REAL NOT NULL
);

CREATE TABLE IF NOT EXISTS errands_leader (
    name        TEXT PRIMARY KEY,
    node        TEXT NOT NULL,
    term        INTEGER NOT NULL,
    expires_at  REAL NOT NULL
);
