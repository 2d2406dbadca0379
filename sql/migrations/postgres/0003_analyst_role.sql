-- Analysts (issue 9): a role that reads like a viewer and may also run read-only SQL
-- (POST /sql). The role CHECK of 0001 is replaced; 0001 itself stays as applied.
ALTER TABLE org_members DROP CONSTRAINT IF EXISTS org_members_role_check;
ALTER TABLE org_members
    ADD CONSTRAINT org_members_role_check
    CHECK (role IN ('viewer', 'analyst', 'editor', 'admin'));
