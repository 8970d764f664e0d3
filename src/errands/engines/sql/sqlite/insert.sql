-- Insert a batch of jobs given as a JSON array, in one statement.
-- :jobs is [{"worker", "queue", "args", "meta", "tags", "priority", "max_attempts",
--            "timeout", "scheduled_at"}, ...]; scheduled_at null means "now".
INSERT INTO errands_jobs (state, queue, worker, args, meta, tags, priority, max_attempts,
                          timeout, inserted_at, scheduled_at)
SELECT CASE WHEN json_extract(j.value, '$.scheduled_at') > :now THEN 'scheduled' ELSE 'available' END,
       json_extract(j.value, '$.queue'),
       json_extract(j.value, '$.worker'),
       json_extract(j.value, '$.args'),
       json_extract(j.value, '$.meta'),
       json_extract(j.value, '$.tags'),
       json_extract(j.value, '$.priority'),
       json_extract(j.value, '$.max_attempts'),
       json_extract(j.value, '$.timeout'),
       :now,
       coalesce(json_extract(j.value, '$.scheduled_at'), :now)
FROM json_each(:jobs) AS j
ORDER BY j.key
RETURNING *
