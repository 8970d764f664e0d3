-- The batch of outcomes as rows a (ack.sql, ack_fetch.sql): one JSON array, built
-- by pg_claim.ack_payload with these fields.
FROM json_to_recordset(%(acks)s::json)
     AS a(id bigint, attempt integer, producer text, state text, result text,
          error text, scheduled_at float8, snoozed boolean)
