-- Serialise concurrent migrations of one schema (released at commit).
SELECT pg_advisory_xact_lock(hashtextextended('errands.migrate:' || %(schema)s::text, 0))
