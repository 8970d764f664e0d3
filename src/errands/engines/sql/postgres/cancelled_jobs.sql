-- Which of the jobs this node is running were cancelled from outside (cancel_job).
SELECT id FROM {schema}.errands_jobs
WHERE id = ANY(%(ids)s::bigint[]) AND state = 'cancelled'
