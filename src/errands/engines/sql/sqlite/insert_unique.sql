-- Insert a batch that holds unique jobs, in one statement: a job whose unique
-- key is already taken (by a row in one of its unique states, or by an earlier
-- job of this batch) is skipped by ON CONFLICT DO NOTHING, never by a
-- read-then-write. Ids are given explicitly, :base + position + 1, so every
-- returned row tells its position in the batch; :base is the table's
-- AUTOINCREMENT high-water mark, read in the same write transaction.
-- (WHERE true keeps the parser from reading ON CONFLICT as a join constraint.)
INSERT INTO errands_jobs (id, state, queue, worker, args, meta, tags, priority, max_attempts,
                          timeout, inserted_at, scheduled_at, unique_hash, unique_states)
SELECT :base + j.key + 1,
       CASE WHEN json_extract(j.value, '$.scheduled_at') > :now THEN 'scheduled' ELSE 'available' END,
       json_extract(j.value, '$.queue'),
       json_extract(j.value, '$.worker'),
       json_extract(j.value, '$.args'),
       json_extract(j.value, '$.meta'),
       json_extract(j.value, '$.tags'),
       json_extract(j.value, '$.priority'),
       json_extract(j.value, '$.max_attempts'),
       json_extract(j.value, '$.timeout'),
       :now,
       coalesce(json_extract(j.value, '$.scheduled_at'), :now),
       json_extract(j.value, '$.unique_hash'),
       coalesce(json_extract(j.value, '$.unique_states'), 0)
FROM json_each(:jobs) AS j
WHERE true
ORDER BY j.key
ON CONFLICT DO NOTHING
RETURNING *
