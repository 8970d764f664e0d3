-- errands schema v3 for PostgreSQL: live queue control and cross-node limits.
-- Idempotent: safe to run twice. Runs with search_path set to the errands schema.
--
-- errands_queues holds the instructions given to every node (pause, scale,
-- start, stop). NULL in paused, limit_override or running means "no
-- instruction": each node keeps its own configuration. version grows with
-- every change, so a node applies each change once and a later local change
-- (pause_queue(local=True)) is not undone by the next poll.
CREATE TABLE IF NOT EXISTS errands_queues (
    name            text        PRIMARY KEY,
    paused          boolean,
    limit_override  integer     CONSTRAINT errands_queues_limit_check
                                CHECK (limit_override IS NULL OR limit_override >= 1),
    running         boolean,
    version         bigint      NOT NULL DEFAULT 1,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- rate_limit counts the jobs of a queue started in the last per_seconds.
CREATE INDEX IF NOT EXISTS errands_jobs_attempted
    ON errands_jobs (queue, attempted_at) WHERE attempted_at IS NOT NULL;
-- global_limit counts the executing jobs of a queue (smaller than the
-- (state, queue) index, and only ever touched by jobs entering or leaving execution).
CREATE INDEX IF NOT EXISTS errands_jobs_executing_queue
    ON errands_jobs (queue) WHERE state = 'executing';
