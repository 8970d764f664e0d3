-- The existing jobs behind duplicate unique enqueues, one per distinct key.
-- Where a duplicate asked to replace fields (replace=...), they are updated
-- first, but only on a job that is still scheduled or available; a new due
-- time also moves the job between scheduled and available (and wakes its queue).
-- Runs as its own statement after insert_unique, so it sees the rows that
-- statement conflicted with, including ones other transactions committed meanwhile.
WITH input AS (
    SELECT *
    FROM unnest(%(key)s::text[], %(set_scheduled_at)s::boolean[], %(scheduled_at)s::float8[],
                %(set_priority)s::boolean[], %(priority)s::smallint[],
                %(set_args)s::boolean[], %(args)s::text[],
                %(set_meta)s::boolean[], %(meta)s::text[],
                %(set_max_attempts)s::boolean[], %(max_attempts)s::integer[])
         AS t(key, set_scheduled_at, scheduled_at, set_priority, priority, set_args, args,
              set_meta, meta, set_max_attempts, max_attempts)
),
updated AS (
    UPDATE {schema}.errands_jobs AS j
    SET scheduled_at = CASE WHEN i.set_scheduled_at
                            THEN coalesce(to_timestamp(i.scheduled_at), now())
                            ELSE j.scheduled_at END,
        state = CASE WHEN NOT i.set_scheduled_at THEN j.state
                     WHEN to_timestamp(i.scheduled_at) > now() THEN 'scheduled'
                     ELSE 'available' END,
        priority = CASE WHEN i.set_priority THEN i.priority ELSE j.priority END,
        args = CASE WHEN i.set_args THEN i.args::jsonb ELSE j.args END,
        meta = CASE WHEN i.set_meta THEN i.meta::jsonb ELSE j.meta END,
        max_attempts = CASE WHEN i.set_max_attempts
                            THEN greatest(i.max_attempts, j.attempt + 1)
                            ELSE j.max_attempts END
    FROM input AS i
    WHERE j.unique_key = i.key
      AND j.unique_key IS NOT NULL  -- lets the partial unique index serve the look-up
      AND j.state IN ('scheduled', 'available')
      AND (i.set_scheduled_at OR i.set_priority OR i.set_args OR i.set_meta
           OR i.set_max_attempts)
    RETURNING j.*
),
notified AS (
    SELECT count(pg_notify(%(channel)s::text, q.queue)) AS n
    FROM (SELECT DISTINCT queue FROM updated WHERE state = 'available') AS q
    WHERE %(channel)s::text IS NOT NULL
)
SELECT updated.* FROM updated CROSS JOIN notified
UNION ALL
SELECT j.*
FROM {schema}.errands_jobs AS j JOIN input AS i ON j.unique_key = i.key
WHERE j.unique_key IS NOT NULL
  AND j.id NOT IN (SELECT id FROM updated)
