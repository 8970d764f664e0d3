-- The jobs a claim just took (fetch.sql, fetch_limited.sql), read after its
-- COMMIT instead of through its RETURNING: building and fetching each job's
-- columns under the write lock was ~1.3 us of the ~8.8 a job held it, which the
-- other processes' writers spent waiting. Only the producer's own executing
-- attempts come back: a job cancelled in between is not started. Claim order,
-- as fetch.sql picks it. :ids is a JSON array of the claim's ids; the unary +
-- keeps the partial index of executing jobs (every executing job of the queue)
-- out of the plan, so each id is one rowid probe.
SELECT
-- include: _claimed_row
FROM errands_jobs
WHERE id IN (SELECT value FROM json_each(:ids))
  AND +state = 'executing'
  AND attempted_by = :producer
ORDER BY priority, scheduled_at, id
