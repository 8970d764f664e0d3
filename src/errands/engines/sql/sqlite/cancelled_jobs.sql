-- Which of the jobs this node is running were cancelled from outside (cancel_job).
SELECT id FROM errands_jobs
WHERE state = 'cancelled' AND id IN (SELECT value FROM json_each(:ids))
