-- Which of the jobs this node is running were cancelled from outside (cancel_job).
-- Runs every second on every node. The state comes from a scalar subquery rather
-- than a literal: 'cancelled' would let the planner use the partial index of
-- finished jobs, and without statistics it read that whole index (every job
-- ever finished) to intersect it with the few ids.
SELECT id FROM {schema}.errands_jobs
WHERE id = ANY(%(ids)s::bigint[]) AND state = (SELECT 'cancelled'::text)
