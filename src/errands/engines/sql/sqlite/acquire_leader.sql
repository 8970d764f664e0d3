-- Take the lease when it is free or expired, or renew it when we hold it.
-- term grows with every change of leader: it fences a deposed leader's work.
INSERT INTO errands_leader (name, node, term, expires_at)
VALUES ('errands', :node, 1, :expires_at)
ON CONFLICT (name) DO UPDATE
SET term = CASE WHEN errands_leader.node = excluded.node
                THEN errands_leader.term ELSE errands_leader.term + 1 END,
    node = excluded.node,
    expires_at = excluded.expires_at
WHERE errands_leader.node = excluded.node OR errands_leader.expires_at < :now
RETURNING node, term
