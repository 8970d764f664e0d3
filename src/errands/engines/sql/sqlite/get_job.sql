SELECT * FROM errands_jobs WHERE id = :id
