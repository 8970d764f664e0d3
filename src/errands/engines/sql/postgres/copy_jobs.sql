-- Stream new jobs in PostgreSQL's binary COPY format (see pg_copy): ids drawn
-- by copy_reserve.sql, state and times computed from that statement's clock.
-- The column order is the order of the fields in each row.
COPY {schema}.errands_jobs (id, state, inserted_at, scheduled_at, queue, worker, args, meta, tags,
                            priority, max_attempts, timeout)
FROM STDIN (FORMAT binary)
