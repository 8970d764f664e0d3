-- The RETURNING clause of a claim (claim.sql, ack_fetch.sql): each claimed job
-- comes back as one JSON array (times as Unix seconds), which the client decodes
-- in one call instead of column by column. pg_claim.job_from_claim passes it to
-- Job positionally, so the order is exactly Job's leading fields
-- (inserted.POSITIONAL). An array, not an object: keys cost the server ~4 us per
-- job to build and print, and the client to parse.
RETURNING j.id, j.attempt, json_build_array(
    j.id, j.worker, j.queue, j.args, j.state, j.priority, j.attempt, j.max_attempts,
    j.meta, j.tags, j.errors, j.result, j.timeout,
    extract(epoch FROM j.inserted_at),
    extract(epoch FROM j.scheduled_at),
    extract(epoch FROM j.attempted_at),
    extract(epoch FROM j.finished_at),
    j.attempted_by
)::text AS job
