-- Record a batch of outcomes in one statement, fenced: only the producer holding
-- this attempt of an executing job may change it; a stale ack matches no row.
UPDATE {schema}.errands_jobs AS j
SET state = a.state,
    result = a.result::jsonb,
    errors = CASE WHEN a.error IS NULL THEN j.errors
                  ELSE j.errors || jsonb_build_array(a.error::jsonb) END,
    scheduled_at = coalesce(to_timestamp(a.scheduled_at), j.scheduled_at),
    max_attempts = j.max_attempts + CASE WHEN a.snoozed THEN 1 ELSE 0 END,
    finished_at = CASE WHEN a.state IN ('completed', 'cancelled', 'discarded') THEN now() END
FROM unnest(%(id)s::bigint[], %(attempt)s::integer[], %(producer)s::text[], %(state)s::text[],
            %(result)s::text[], %(error)s::text[], %(scheduled_at)s::float8[],
            %(snoozed)s::boolean[])
     AS a(id, attempt, producer, state, result, error, scheduled_at, snoozed)
WHERE j.id = a.id
  AND j.state = 'executing'
  AND j.attempt = a.attempt
  AND j.attempted_by = a.producer
