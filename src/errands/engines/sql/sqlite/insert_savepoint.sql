-- Make a multi-statement insert all-or-nothing inside the caller's transaction.
SAVEPOINT errands_insert
