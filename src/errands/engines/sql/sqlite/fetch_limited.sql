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
-- A job counts as started at its latest rate-limited start, rate_started_at (set
-- here only when the queue has a rate_limit): the rate window slides over it.
-- include: _limited_ranked
UPDATE errands_jobs
SET state = 'executing',
    attempt = attempt + 1,
    attempted_at = :now,
    attempted_by = :producer,
    rate_started_at = CASE WHEN :rate_count IS NOT NULL THEN :now ELSE rate_started_at END
WHERE id IN (
    SELECT id FROM ranked
    WHERE kind = 0 AND rn <= room
    ORDER BY priority, scheduled_at, id
    LIMIT :limit
)
RETURNING id, attempt  -- the jobs themselves: claimed_jobs.sql, after COMMIT
