SELECT queue, state, count(*) AS n FROM errands_jobs GROUP BY queue, state
