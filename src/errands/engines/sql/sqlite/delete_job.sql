DELETE FROM errands_jobs WHERE id = :id AND state <> 'executing'
