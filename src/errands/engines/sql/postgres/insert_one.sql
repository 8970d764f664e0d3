-- Insert one job, and wake listeners of its queue if it is available now.
-- NOTIFY is sent at commit (so a rolled-back insert wakes nobody); the channel
-- is NULL when notifications are off. scheduled_at NULL means "now" on the
-- database's clock. Returns only what the client cannot know (the rest of the
-- job is what it sent): the id, the state and both times as Unix microseconds,
-- which are exact where a float8 epoch or a timestamptz would need converting.
WITH inserted AS (
    INSERT INTO {schema}.errands_jobs (state, queue, worker, args, meta, tags, priority,
                                       max_attempts, timeout, inserted_at, scheduled_at)
    VALUES (CASE WHEN to_timestamp(%(scheduled_at)s::float8) > now()
                 THEN 'scheduled' ELSE 'available' END,
            %(queue)s::text, %(worker)s::text, %(args)s::jsonb, %(meta)s::jsonb,
            %(tags)s::jsonb, %(priority)s::smallint, %(max_attempts)s::integer,
            %(timeout)s::float8, now(), coalesce(to_timestamp(%(scheduled_at)s::float8), now()))
    RETURNING id, state, queue, inserted_at, scheduled_at
)
SELECT i.id, i.state,
       (extract(epoch FROM i.inserted_at) * 1000000)::int8 AS inserted_us,
       (extract(epoch FROM i.scheduled_at) * 1000000)::int8 AS scheduled_us
FROM inserted AS i
CROSS JOIN (SELECT count(pg_notify(%(channel)s::text, queue)) AS n
            FROM inserted
            WHERE state = 'available' AND %(channel)s::text IS NOT NULL) AS notified
