-- Hand back jobs a producer claimed ahead of free slots but never started (the
-- queue was paused or is stopping): they become available again as if never
-- claimed, in the same place in line, and the attempt the claim counted is
-- given back. Fenced like an ack: a job cancelled or rescued meanwhile is left alone.
-- As in ack.sql, the jobs are found by primary key (%(ids)s, hidden from the
-- planner) and the fence's state is joined from a one-row CTE, so the planner
-- never scans the whole table, nor the partial index of executing jobs and its
-- dead entries.
WITH fence AS MATERIALIZED (
    SELECT 'executing'::text AS state
)
UPDATE {schema}.errands_jobs AS j
SET state = 'available',
    attempt = j.attempt - 1,
    attempted_by = NULL,
    attempted_at = CASE WHEN j.attempt > 1 THEN j.attempted_at END,
    rate_started_at = CASE WHEN j.attempt > 1 THEN j.rate_started_at END
FROM json_to_recordset(%(jobs)s::json) AS r(id bigint, attempt integer)
CROSS JOIN fence
WHERE j.id = r.id
  AND j.id = ANY((SELECT %(ids)s::int8[])::int8[])
  AND j.state = fence.state
  AND j.attempt = r.attempt
  AND j.attempted_by = %(producer)s
