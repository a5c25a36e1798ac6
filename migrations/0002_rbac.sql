-- RBAC administration (issue 3): seed 001's role attributes, and the indexes the
-- user and role administration queries use.
--
-- portal, tier and mfa_type describe a role as seed 001 does (the `compliance`
-- preset fills them); FortiFile's own roles leave them empty. requires_mfa and
-- mfa_type are enforced by the MFA work; session_timeout_minutes already is.

ALTER TABLE roles
    ADD COLUMN portal   text CHECK (char_length(portal) BETWEEN 1 AND 64),
    ADD COLUMN tier     integer CHECK (tier BETWEEN 1 AND 9),
    ADD COLUMN mfa_type text CHECK (mfa_type IN ('totp', 'fido2', 'any'));

CREATE INDEX users_status_idx ON users (tenant_id, status, lower(username));
CREATE INDEX users_department_idx ON users (department_id);
CREATE INDEX users_clearance_idx ON users (clearance_level_id);
CREATE INDEX role_permissions_permission_idx ON role_permissions (permission_id);
