-- Record that attempts completed: ack.sql for the commonest outcome alone (no
-- error, no new due time, no snooze), fenced the same way, for a whole batch
-- in one statement. :batch is a JSON array of [id, attempt, producer, result]
-- (result: the JSON text, or null). One statement over json_each costs about
-- 6 us a job where one execution per ack cost 11 (binding and stepping each
-- row from Python); it assigns three columns instead of six, so SQLite also
-- re-checks fewer CHECK constraints (errors' json_valid among them).
-- A job named twice in a batch is updated once: the second ack is stale.
UPDATE errands_jobs
SET state = 'completed',
    result = json_extract(acked.value, '$[3]'),
    finished_at = :now
FROM json_each(:batch) AS acked
WHERE errands_jobs.id = json_extract(acked.value, '$[0]')
  AND errands_jobs.state = 'executing'
  AND errands_jobs.attempt = json_extract(acked.value, '$[1]')
  AND errands_jobs.attempted_by = json_extract(acked.value, '$[2]')
