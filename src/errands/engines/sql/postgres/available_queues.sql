-- The queues that have jobs available now, by name (app.drain with no queue
-- given). One look-up in the partial index of available jobs per queue, each
-- skipping to the next name (a loose index scan): never the available jobs one
-- by one, nor the finished history, which queue_counts reads in full.
WITH RECURSIVE queues(queue) AS (
    SELECT min(queue) FROM {schema}.errands_jobs WHERE state = 'available'
    UNION ALL
    SELECT (SELECT min(j.queue) FROM {schema}.errands_jobs AS j
            WHERE j.state = 'available' AND j.queue > queues.queue)
    FROM queues
    WHERE queues.queue IS NOT NULL
)
SELECT queue FROM queues WHERE queue IS NOT NULL
