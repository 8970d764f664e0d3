-- The existing jobs behind duplicate unique enqueues, one per distinct key,
-- after applying replace=...: fields are updated only on a job that is still
-- scheduled or available; a new due time also moves it between the two.
-- :conflicts is [{"key", "set_scheduled_at", "scheduled_at", "set_priority",
-- "priority", "set_args", "args", "set_meta", "meta", "set_max_attempts",
-- "max_attempts"}, ...]. Run with insert_unique_existing for the rows not updated.
UPDATE errands_jobs AS t
SET scheduled_at = CASE WHEN i.set_scheduled_at THEN coalesce(i.scheduled_at, :now)
                        ELSE t.scheduled_at END,
    state = CASE WHEN NOT i.set_scheduled_at THEN t.state
                 WHEN i.scheduled_at > :now THEN 'scheduled'
                 ELSE 'available' END,
    priority = CASE WHEN i.set_priority THEN i.priority ELSE t.priority END,
    args = CASE WHEN i.set_args THEN i.args ELSE t.args END,
    meta = CASE WHEN i.set_meta THEN i.meta ELSE t.meta END,
    max_attempts = CASE WHEN i.set_max_attempts THEN max(i.max_attempts, t.attempt + 1)
                        ELSE t.max_attempts END
FROM (
    SELECT json_extract(c.value, '$.key') AS key,
           json_extract(c.value, '$.set_scheduled_at') AS set_scheduled_at,
           json_extract(c.value, '$.scheduled_at') AS scheduled_at,
           json_extract(c.value, '$.set_priority') AS set_priority,
           json_extract(c.value, '$.priority') AS priority,
           json_extract(c.value, '$.set_args') AS set_args,
           json(json_extract(c.value, '$.args')) AS args,
           json_extract(c.value, '$.set_meta') AS set_meta,
           json(json_extract(c.value, '$.meta')) AS meta,
           json_extract(c.value, '$.set_max_attempts') AS set_max_attempts,
           json_extract(c.value, '$.max_attempts') AS max_attempts
    FROM json_each(:conflicts) AS c
) AS i
WHERE t.unique_key = i.key
  AND +t.state IN ('scheduled', 'available')  -- unary +: drive the join by the key index
  AND (i.set_scheduled_at OR i.set_priority OR i.set_args OR i.set_meta OR i.set_max_attempts)
RETURNING *
