-- Before a COPY insert (see pg_copy): draw %(n)s ids from the jobs table's
-- sequence and read the transaction's clock as Unix microseconds; the COPY
-- rows carry both, so every job's id and times are exactly the server's.
-- %(table)s is the quoted table name, for pg_get_serial_sequence.
WITH seq AS MATERIALIZED (
    SELECT pg_get_serial_sequence(%(table)s::text, 'id')::regclass AS id_seq
)
SELECT (extract(epoch FROM now()) * 1000000)::int8 AS now_us,
       (SELECT array_agg(nextval(seq.id_seq))
        FROM seq CROSS JOIN generate_series(1, %(n)s::integer)) AS ids
