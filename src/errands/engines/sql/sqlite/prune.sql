-- Delete a bounded batch of finished jobs, oldest first.
DELETE FROM errands_jobs
WHERE id IN (
    SELECT id FROM errands_jobs
    WHERE state IN ('completed', 'cancelled', 'discarded') AND finished_at < :cutoff
    ORDER BY finished_at
    LIMIT :limit
)
