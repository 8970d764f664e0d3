-- Claim up to :limit available jobs of a queue that has a global_limit and/or a
-- rate_limit, in one statement, so the count and the claim cannot race (the
-- engine runs it inside BEGIN IMMEDIATE: SQLite's one writer serializes claimers).
--
-- Every job belongs to a partition: '' (the whole queue), its worker name, or
-- the JSON array of the values at :path1..:path8 in its args ('$.account_id'; a
-- partition by fewer keys repeats the last one): :by is 'none', 'worker' or 'args'.
-- json_extract with several paths parses the args once per row.
-- A partition's room is
--     min(:global_limit - its executing jobs, :rate_count - its jobs started since :since)
-- (a NULL limit means no cap); a partition without executing or recent jobs has
-- :default_room. The claim walks the first :scan waiting jobs of partitions with
-- room, in priority order, and takes at most `room` of each, :limit in all.
-- A job counts as started at its latest attempted_at: the rate window slides over it.
WITH running AS (
    SELECT CASE :by WHEN 'worker' THEN j.worker
                    WHEN 'args' THEN json_extract(j.args, :path1, :path2, :path3, :path4,
                                                  :path5, :path6, :path7, :path8)
                    ELSE '' END AS pkey,
           count(*) AS n
    FROM errands_jobs AS j
    WHERE j.state = 'executing' AND j.queue = :queue AND :global_limit IS NOT NULL
    GROUP BY 1
),
started AS (
    SELECT CASE :by WHEN 'worker' THEN j.worker
                    WHEN 'args' THEN json_extract(j.args, :path1, :path2, :path3, :path4,
                                                  :path5, :path6, :path7, :path8)
                    ELSE '' END AS pkey,
           count(*) AS n
    FROM errands_jobs AS j
    WHERE j.queue = :queue AND j.attempted_at > :since AND :rate_count IS NOT NULL
    GROUP BY 1
),
used AS (
    SELECT pkey,
           min(CASE WHEN :global_limit IS NULL THEN :default_room
                    ELSE :global_limit - coalesce(sum(running_n), 0) END,
               CASE WHEN :rate_count IS NULL THEN :default_room
                    ELSE :rate_count - coalesce(sum(started_n), 0) END) AS room
    FROM (SELECT pkey, n AS running_n, NULL AS started_n FROM running
          UNION ALL
          SELECT pkey, NULL, n FROM started)
    GROUP BY pkey
),
candidates AS (
    SELECT j.id, j.priority, j.scheduled_at,
           CASE :by WHEN 'worker' THEN j.worker
                    WHEN 'args' THEN json_extract(j.args, :path1, :path2, :path3, :path4,
                                                  :path5, :path6, :path7, :path8)
                    ELSE '' END AS pkey
    FROM errands_jobs AS j
    WHERE j.state = 'available'
      AND j.attempt < j.max_attempts
      AND j.queue = :queue
      AND j.worker IN (SELECT value FROM json_each(:workers))
      AND pkey NOT IN (SELECT pkey FROM used WHERE room <= 0)
    ORDER BY j.priority, j.scheduled_at, j.id
    LIMIT :scan
),
ranked AS (
    -- Candidates and room rows side by side, sorted once per partition: the room of
    -- a candidate's partition comes from the window, not from a join (which SQLite
    -- would run as a nested loop over every partition in use).
    SELECT id, priority, scheduled_at, kind,
           row_number() OVER (PARTITION BY pkey, kind
                              ORDER BY priority, scheduled_at, id) AS rn,
           coalesce(max(room) OVER (PARTITION BY pkey), :default_room) AS room
    FROM (SELECT id, priority, scheduled_at, pkey, NULL AS room, 0 AS kind FROM candidates
          UNION ALL
          SELECT NULL, NULL, NULL, pkey, room, 1 FROM used)
)
UPDATE errands_jobs
SET state = 'executing',
    attempt = attempt + 1,
    attempted_at = :now,
    attempted_by = :producer
WHERE id IN (
    SELECT id FROM ranked
    WHERE kind = 0 AND rn <= room
    ORDER BY priority, scheduled_at, id
    LIMIT :limit
)
RETURNING *
