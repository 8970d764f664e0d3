-- Insert a batch of jobs, many rows per statement: the engine repeats the
-- VALUES row below once per job of a chunk (sqlite_insert.insert_on), so SQLite
-- opens the table and its indexes once per chunk rather than once per job, and
-- parses no JSON but the CHECK (json_valid(...)) of each JSON column. The state
-- and due time come computed ('scheduled' when the due time is after the
-- transaction's "now", else 'available'; no due time means now). Ids come from
-- AUTOINCREMENT, consecutive within the statement, in row order.
-- Parameters, per row: state, queue, worker, args, meta, tags, priority,
-- max_attempts, timeout, inserted_at, scheduled_at.
INSERT INTO errands_jobs (state, queue, worker, args, meta, tags, priority, max_attempts,
                          timeout, inserted_at, scheduled_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
