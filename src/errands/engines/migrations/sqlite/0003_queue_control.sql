-- errands schema v3 for SQLite: live queue control and cross-node limits.
-- Idempotent: safe to run twice.
--
-- errands_queues holds the instructions given to every node (pause, scale,
-- start, stop). NULL in paused, limit_override or running means "no
-- instruction": each node keeps its own configuration. version grows with
-- every change, so a node applies each change once and a later local change
-- (pause_queue(local=True)) is not undone by the next poll.
CREATE TABLE IF NOT EXISTS errands_queues (
    name            TEXT    PRIMARY KEY,
    paused          INTEGER CHECK (paused IS NULL OR paused IN (0, 1)),
    limit_override  INTEGER CHECK (limit_override IS NULL OR limit_override >= 1),
    running         INTEGER CHECK (running IS NULL OR running IN (0, 1)),
    version         INTEGER NOT NULL DEFAULT 1,
    updated_at      REAL    NOT NULL
);

-- rate_limit counts the jobs of a queue started in the last per_seconds.
CREATE INDEX IF NOT EXISTS errands_jobs_attempted
    ON errands_jobs (queue, attempted_at) WHERE attempted_at IS NOT NULL;
-- global_limit counts the executing jobs of a queue.
CREATE INDEX IF NOT EXISTS errands_jobs_executing_queue
    ON errands_jobs (queue) WHERE state = 'executing'
