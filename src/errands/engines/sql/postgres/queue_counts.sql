SELECT queue, state, count(*) AS n FROM {schema}.errands_jobs GROUP BY queue, state
