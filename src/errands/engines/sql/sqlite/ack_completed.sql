-- Record that attempts completed: ack.sql for the commonest outcome alone (no
-- error, no new due time, no snooze), fenced the same way, for a whole batch
-- in one statement. :batch is a JSON array of [id, attempt, producer, result]
-- (result: the JSON text, or null). One statement over json_each costs about
-- 6 us a job where one execution per ack cost 11 (binding and stepping each
-- row from Python); it assigns three columns instead of six, so SQLite also
-- re-checks fewer CHECK constraints (errors' json_valid among them).
-- A job named twice in a batch is updated once: the second ack is stale.
-- The unary + on state keeps the partial index of executing jobs out of the
-- plan, so each ack is one rowid probe. After an ANALYZE taken while few jobs
-- ran (sqlite_stat1: 15 executing), SQLite drove the join by that index and
-- walked the whole batch for every executing job: on 200,000 finished jobs,
-- with 500 executing and a batch of 100, 21 ms instead of 0.47; with 2,000
-- executing and 500 acks, 389 ms instead of 2.4, under the one write lock.
UPDATE errands_jobs
SET state = 'completed',
    result = json_extract(acked.value, '$[3]'),
    finished_at = :now
FROM json_each(:batch) AS acked
WHERE errands_jobs.id = json_extract(acked.value, '$[0]')
  AND +errands_jobs.state = 'executing'  -- unary +: one rowid probe per ack
  AND errands_jobs.attempt = json_extract(acked.value, '$[1]')
  AND errands_jobs.attempted_by = json_extract(acked.value, '$[2]')
