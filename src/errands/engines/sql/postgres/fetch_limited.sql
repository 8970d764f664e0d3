-- Claim up to "limit" available jobs of a queue that has a global_limit and/or a
-- rate_limit. The engine runs it right after queue_lock.sql in the same
-- transaction: claimers of the queue take turns, and each one counts what the
-- previous ones committed.
--
-- Every job belongs to a partition: '' (the whole queue), its worker name, or
-- the JSON array of the values of the args named key1..key8 (NULL when unused)
-- -- "by" is 'none', 'worker' or 'args'.
-- A partition's room is
--     least(global_limit - its executing jobs, rate_count - its jobs started in the window)
-- (a NULL limit means no cap); a partition without executing or recent jobs has
-- default_room. The claim walks the first "scan" waiting jobs of partitions with
-- room, in priority order, and takes at most `room` of each, "limit" in all.
-- A job counts as started at its latest rate-limited start, rate_started_at (set
-- here only when the queue has a rate_limit): the rate window slides over it.
-- The clock is read after the lock was granted (clock_timestamp(), not the
-- transaction's now()), so a claimer that waited does not record an old start.
-- "started" takes the window's start as a scalar subquery, so it is a bound of
-- its index scan: as a join with "clock", the planner (with statistics or not)
-- could read the queue's whole rate index, where a start stays until its job is
-- pruned, and filter it afterwards: 5,000 entries, on every claim, for a window
-- that held none.
WITH clock AS MATERIALIZED (
    SELECT clock_timestamp() AS now
),
running AS (
    SELECT count(*) AS n,
           -- include: _partition_key
    FROM {schema}.errands_jobs AS j
    WHERE j.state = 'executing' AND j.queue = %(queue)s AND %(global_limit)s::integer IS NOT NULL
    GROUP BY 2
),
started AS (
    SELECT count(*) AS n,
           -- include: _partition_key
    FROM {schema}.errands_jobs AS j
    WHERE j.queue = %(queue)s
      AND %(rate_count)s::integer IS NOT NULL
      AND j.rate_started_at > (SELECT now FROM clock) - make_interval(secs => %(rate_per)s::float8)
    GROUP BY 2
),
used AS (
    SELECT u.pkey,
           least(CASE WHEN %(global_limit)s::integer IS NULL THEN %(default_room)s::integer
                      ELSE %(global_limit)s::integer - coalesce(sum(u.running_n), 0) END,
                 CASE WHEN %(rate_count)s::integer IS NULL THEN %(default_room)s::integer
                      ELSE %(rate_count)s::integer - coalesce(sum(u.started_n), 0) END) AS room
    FROM (SELECT pkey, n AS running_n, NULL::bigint AS started_n FROM running
          UNION ALL
          SELECT pkey, NULL::bigint, n FROM started) AS u
    GROUP BY u.pkey
),
candidates AS MATERIALIZED (
    SELECT c.id, c.priority, c.scheduled_at, c.pkey
    FROM (
        SELECT j.id, j.priority, j.scheduled_at,
               -- include: _partition_key
        FROM {schema}.errands_jobs AS j
        WHERE j.state = 'available'
          AND j.attempt < j.max_attempts
          AND j.queue = %(queue)s
          AND j.worker = ANY(%(workers)s::text[])
    ) AS c
    WHERE c.pkey NOT IN (SELECT pkey FROM used WHERE room <= 0)
    ORDER BY c.priority, c.scheduled_at, c.id
    LIMIT %(scan)s
),
ranked AS (
    SELECT c.id, c.priority, c.scheduled_at,
           row_number() OVER (PARTITION BY c.pkey
                              ORDER BY c.priority, c.scheduled_at, c.id) AS rn,
           coalesce(u.room, %(default_room)s::integer) AS room
    FROM candidates AS c
    LEFT JOIN used AS u ON u.pkey = c.pkey
),
picked AS MATERIALIZED (
    SELECT j.id
    FROM {schema}.errands_jobs AS j
    JOIN ranked AS r ON r.id = j.id
    WHERE r.rn <= r.room AND j.state = 'available'
    ORDER BY r.priority, r.scheduled_at, r.id
    LIMIT %(limit)s
    FOR UPDATE OF j SKIP LOCKED
)
UPDATE {schema}.errands_jobs AS j
SET state = 'executing',
    attempt = j.attempt + 1,
    attempted_at = clock.now,
    attempted_by = %(producer)s,
    rate_started_at = CASE WHEN %(rate_count)s::integer IS NOT NULL THEN clock.now
                           ELSE j.rate_started_at END
FROM picked, clock
WHERE j.id = picked.id
RETURNING j.*
