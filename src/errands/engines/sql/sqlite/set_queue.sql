-- Record an instruction for every node: pause/resume, scale, start/stop a queue.
-- A NULL :paused keeps the stored value; :set_limit / :set_running say whether
-- limit_override / running change (to NULL, "no instruction", too). version grows
-- with every change so each node applies it once.
INSERT INTO errands_queues (name, paused, limit_override, running, version, updated_at)
VALUES (:name, :paused, :limit, :running, 1, :now)
ON CONFLICT (name) DO UPDATE
SET paused = coalesce(excluded.paused, errands_queues.paused),
    limit_override = CASE WHEN :set_limit THEN excluded.limit_override
                          ELSE errands_queues.limit_override END,
    running = CASE WHEN :set_running THEN excluded.running ELSE errands_queues.running END,
    version = errands_queues.version + 1,
    updated_at = excluded.updated_at
RETURNING name, paused, limit_override, running, version, updated_at
