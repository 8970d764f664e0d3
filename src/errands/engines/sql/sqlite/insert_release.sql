-- Keep what the insert wrote (see insert_savepoint.sql).
RELEASE errands_insert
