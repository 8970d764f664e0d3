-- Record an instruction for every node: pause/resume, scale, start/stop a queue,
-- and wake the nodes' watch loops (payload '!control', which no queue name can be).
-- A NULL paused keeps the stored value; set_limit / set_running say whether
-- limit_override / running change (to NULL, "no instruction", too). version grows
-- with every change so each node applies it once.
WITH saved AS (
    INSERT INTO {schema}.errands_queues AS q (name, paused, limit_override, running, version)
    VALUES (%(name)s, %(paused)s, %(limit)s, %(running)s, 1)
    ON CONFLICT (name) DO UPDATE
    SET paused = coalesce(excluded.paused, q.paused),
        limit_override = CASE WHEN %(set_limit)s THEN excluded.limit_override
                              ELSE q.limit_override END,
        running = CASE WHEN %(set_running)s THEN excluded.running ELSE q.running END,
        version = q.version + 1,
        updated_at = now()
    RETURNING q.*
),
notified AS (
    SELECT count(pg_notify(%(channel)s::text, '!control')) AS n
    WHERE %(channel)s::text IS NOT NULL
)
SELECT name, paused, limit_override, running, version,
       extract(epoch FROM updated_at)::float8 AS updated_at
FROM saved CROSS JOIN notified
