-- Record a batch of outcomes in one statement, fenced: only the producer holding
-- this attempt of an executing job may change it; a stale ack matches no row.
-- The completer's own flush: unlike ack_fetch.sql it waits for a locked row.
-- The batch is one JSON array (pg_claim.ack_payload); result and error are JSON
-- texts, so a result that is JSON null is stored as jsonb null.
WITH settings AS (
    SELECT set_config('synchronous_commit', %(commit)s::text, true) AS commit_mode
),
acked AS (
    UPDATE {schema}.errands_jobs AS j
    SET state = a.state,
        result = a.result::jsonb,
        errors = CASE WHEN a.error IS NULL THEN j.errors
                      ELSE j.errors || jsonb_build_array(a.error::jsonb) END,
        scheduled_at = coalesce(to_timestamp(a.scheduled_at), j.scheduled_at),
        max_attempts = j.max_attempts + CASE WHEN a.snoozed THEN 1 ELSE 0 END,
        finished_at = CASE WHEN a.state IN ('completed', 'cancelled', 'discarded')
                           THEN now() END
    FROM json_to_recordset(%(acks)s::json)
         AS a(id bigint, attempt integer, producer text, state text, result text,
              error text, scheduled_at float8, snoozed boolean)
    WHERE j.id = a.id
      AND j.state = 'executing'
      AND j.attempt = a.attempt
      AND j.attempted_by = a.producer
    RETURNING 1
)
SELECT (SELECT count(*) FROM acked) AS acked FROM settings
