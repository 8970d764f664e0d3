-- The highest id errands_jobs ever handed out (AUTOINCREMENT never reuses one).
SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'errands_jobs'), 0) AS base
