-- A claim's UPDATE (claim.sql, ack_fetch.sql; each goes on with FROM its picked
-- jobs WHERE j.id = picked.id): the picked jobs start executing on this producer.
-- attempt is counted here, at fetch, so a job that kills its worker still runs
-- out of attempts.
UPDATE {schema}.errands_jobs AS j
SET state = 'executing',
    attempt = j.attempt + 1,
    attempted_at = now(),
    attempted_by = %(producer)s
