-- Record a batch of outcomes in one statement, fenced: only the producer holding
-- this attempt of an executing job may change it; a stale ack matches no row.
-- The completer's own flush: unlike ack_fetch.sql it waits for a locked row.
-- The batch is one JSON array (pg_claim.ack_payload); result and error are JSON
-- texts, so a result that is JSON null is stored as jsonb null.
--
-- The jobs are found by primary key (%(ids)s, the batch's ids), passed through a
-- scalar subquery so that the planner cannot see how many there are: shown them,
-- it costs one index probe per id against one pass over the table, and from
-- ~100 ids on a table of 20,000 rows it chose the pass for a connection's first
-- runs (15-90 ms each instead of 1).
--
-- The fence's state comes from the one-row "fence" rather than a literal: with
-- "j.state = 'executing'" the planner could scan the partial index of executing
-- jobs instead, whose dead entries (every job passes through it) pile up
-- between vacuums, so each batch read every job run since the last one. A
-- condition joined to another relation cannot select a partial index.
WITH settings AS (
    SELECT set_config('synchronous_commit', %(commit)s::text, true) AS commit_mode
),
input AS MATERIALIZED (
    SELECT *
    -- include: _ack_input
),
fence AS MATERIALIZED (
    SELECT 'executing'::text AS state
),
acked AS (
    -- include: _ack_update
    FROM input AS a CROSS JOIN fence
    WHERE j.id = a.id
      AND j.id = ANY((SELECT %(ids)s::int8[])::int8[])
      AND j.state = fence.state
      AND j.attempt = a.attempt
      AND j.attempted_by = a.producer
    RETURNING 1
)
SELECT (SELECT count(*) FROM acked) AS acked FROM settings
