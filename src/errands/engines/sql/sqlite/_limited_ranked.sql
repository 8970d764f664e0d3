-- The WITH clause of a limited claim: each partition's room and the waiting jobs
-- ranked within their partition, for fetch_limited.sql (which claims them) and
-- claimable.sql (which only asks whether there is one). fetch_limited.sql's header
-- explains partitions, room and the parameters.
-- A job's partition key is the same CASE in running, started and candidates (keep
-- the three in step).
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
    WHERE j.queue = :queue AND j.rate_started_at > :since AND :rate_count IS NOT NULL
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
