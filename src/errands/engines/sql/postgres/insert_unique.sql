-- Insert a batch that holds unique jobs, in one statement: a job whose unique
-- key is already taken (by a row in one of its unique states, or by an earlier
-- job of this batch) is skipped by ON CONFLICT DO NOTHING, never by a
-- read-then-write. Ids are drawn up front in input order so that every
-- returned row carries its position in the batch (ord, from 1); the caller
-- then fetches the existing rows of the skipped jobs (insert_unique_conflicts).
-- %(table)s is the quoted table name, for pg_get_serial_sequence.
WITH input AS (
    SELECT *
    FROM unnest(%(queue)s::text[], %(worker)s::text[], %(args)s::text[], %(meta)s::text[],
                %(tags)s::text[], %(priority)s::smallint[], %(max_attempts)s::integer[],
                %(timeout)s::float8[], %(scheduled_at)s::float8[], %(unique_hash)s::text[],
                %(unique_states)s::smallint[])
         WITH ORDINALITY AS t(queue, worker, args, meta, tags, priority, max_attempts,
                              timeout, scheduled_at, unique_hash, unique_states, ord)
),
seq AS MATERIALIZED (
    SELECT pg_get_serial_sequence(%(table)s::text, 'id')::regclass AS id_seq
),
ids AS MATERIALIZED (
    SELECT i.ord, nextval(seq.id_seq) AS id
    FROM input AS i CROSS JOIN seq
    ORDER BY i.ord
),
inserted AS (
    INSERT INTO {schema}.errands_jobs (id, state, queue, worker, args, meta, tags, priority,
                                       max_attempts, timeout, inserted_at, scheduled_at,
                                       unique_hash, unique_states)
    SELECT ids.id,
           CASE WHEN to_timestamp(i.scheduled_at) > now() THEN 'scheduled' ELSE 'available' END,
           i.queue, i.worker, i.args::jsonb, i.meta::jsonb, i.tags::jsonb, i.priority,
           i.max_attempts, i.timeout, now(), coalesce(to_timestamp(i.scheduled_at), now()),
           i.unique_hash, i.unique_states
    FROM input AS i JOIN ids ON ids.ord = i.ord
    ORDER BY i.ord
    ON CONFLICT DO NOTHING
    RETURNING *
),
notified AS (
    SELECT count(pg_notify(%(channel)s::text, q.queue)) AS n
    FROM (SELECT DISTINCT queue FROM inserted WHERE state = 'available') AS q
    WHERE %(channel)s::text IS NOT NULL
)
SELECT inserted.*, ids.ord
FROM inserted JOIN ids ON ids.id = inserted.id CROSS JOIN notified
