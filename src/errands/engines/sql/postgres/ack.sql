-- Record a batch of outcomes in one statement, fenced: only the producer holding
-- this attempt of an executing job may change it; a stale ack matches no row.
-- The completer's own flush: unlike ack_fetch.sql it waits for a locked row.
-- The batch is one JSON array (pg_claim.ack_payload); result and error are JSON
-- texts, so a result that is JSON null is stored as jsonb null.
WITH settings AS (
    SELECT set_config('synchronous_commit', %(commit)s::text, true) AS commit_mode
),
acked AS (
    -- include: _ack_update
    -- include: _ack_input
    WHERE j.id = a.id
      AND j.state = 'executing'
      AND j.attempt = a.attempt
      AND j.attempted_by = a.producer
    RETURNING 1
)
SELECT (SELECT count(*) FROM acked) AS acked FROM settings
