-- Insert a batch of jobs given as parallel arrays, in one statement, and wake
-- listeners once per queue that got an available job. NOTIFY is sent at commit
-- (so a rolled-back insert wakes nobody); the channel is NULL when notifications
-- are off. scheduled_at NULL means "now" on the database's clock. Ids are drawn
-- in input order (ORDER BY i.ord). Returns only what the client cannot know (see
-- insert_one.sql): id, state and both times as Unix microseconds, in any order.
WITH input AS (
    SELECT *
    FROM unnest(%(queue)s::text[], %(worker)s::text[], %(args)s::text[], %(meta)s::text[],
                %(tags)s::text[], %(priority)s::smallint[], %(max_attempts)s::integer[],
                %(timeout)s::float8[], %(scheduled_at)s::float8[])
         WITH ORDINALITY AS t(queue, worker, args, meta, tags, priority, max_attempts,
                              timeout, scheduled_at, ord)
),
inserted AS (
    INSERT INTO {schema}.errands_jobs (state, queue, worker, args, meta, tags, priority,
                                       max_attempts, timeout, inserted_at, scheduled_at)
    SELECT CASE WHEN to_timestamp(i.scheduled_at) > now() THEN 'scheduled' ELSE 'available' END,
           i.queue, i.worker, i.args::jsonb, i.meta::jsonb, i.tags::jsonb, i.priority,
           i.max_attempts, i.timeout, now(), coalesce(to_timestamp(i.scheduled_at), now())
    FROM input AS i
    ORDER BY i.ord
    RETURNING id, state, queue,
              (extract(epoch FROM inserted_at) * 1000000)::int8 AS inserted_us,
              (extract(epoch FROM scheduled_at) * 1000000)::int8 AS scheduled_us
),
notified AS (
    SELECT count(pg_notify(%(channel)s::text, q.queue)) AS n
    FROM (SELECT DISTINCT queue FROM inserted WHERE state = 'available') AS q
    WHERE %(channel)s::text IS NOT NULL
)
SELECT inserted.id, inserted.state, inserted.inserted_us, inserted.scheduled_us
FROM inserted CROSS JOIN notified
