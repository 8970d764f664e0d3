-- The partition key of job j: '', its worker, or its args at key1..key8 (see
-- fetch_limited.sql's header). The same expression in every CTE that groups or
-- filters by partition, so they all agree.
CASE %(by)s::text
    WHEN 'worker' THEN j.worker
    WHEN 'args' THEN jsonb_build_array(j.args -> %(key1)s::text, j.args -> %(key2)s::text,
                                       j.args -> %(key3)s::text, j.args -> %(key4)s::text,
                                       j.args -> %(key5)s::text, j.args -> %(key6)s::text,
                                       j.args -> %(key7)s::text, j.args -> %(key8)s::text)::text
    ELSE '' END AS pkey
