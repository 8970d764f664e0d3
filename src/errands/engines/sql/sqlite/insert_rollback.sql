-- Undo what a failed insert wrote (see insert_savepoint.sql); RELEASE follows.
ROLLBACK TO errands_insert
