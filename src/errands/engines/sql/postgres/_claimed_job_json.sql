-- The RETURNING clause of a claim (claim.sql, ack_fetch.sql): each claimed job
-- comes back as one JSON object (times as Unix seconds), which the client decodes
-- in one call instead of column by column. pg_claim.job_from_claim builds the Job
-- from it by keyword, so the keys are exactly Job's fields.
RETURNING j.id, j.attempt, json_build_object(
    'id', j.id, 'worker', j.worker, 'queue', j.queue, 'args', j.args, 'state', j.state,
    'priority', j.priority, 'attempt', j.attempt, 'max_attempts', j.max_attempts,
    'meta', j.meta, 'tags', j.tags, 'errors', j.errors, 'result', j.result,
    'timeout', j.timeout,
    'inserted_at', extract(epoch FROM j.inserted_at),
    'scheduled_at', extract(epoch FROM j.scheduled_at),
    'attempted_at', extract(epoch FROM j.attempted_at),
    'finished_at', extract(epoch FROM j.finished_at),
    'attempted_by', j.attempted_by
)::text AS job
