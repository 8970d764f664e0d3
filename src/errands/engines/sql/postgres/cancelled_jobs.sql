-- Which of the jobs this node is running were cancelled from outside (cancel_job).
-- Runs every second on every node. The state comes from a scalar subquery rather
-- than a literal: 'cancelled' would let the planner use the partial index of
-- finished jobs, and without statistics it read that whole index (every job
-- ever finished) to intersect it with the few ids.
-- The ids (every job the node holds: hundreds on a busy node) come through a
-- scalar subquery too, as in ack.sql: shown 200 of them, the planner without
-- statistics costed one probe per id above one pass over the table, and read
-- all of it (20,000 rows) each second.
SELECT id FROM {schema}.errands_jobs
WHERE id = ANY((SELECT %(ids)s::bigint[])::bigint[]) AND state = (SELECT 'cancelled'::text)
