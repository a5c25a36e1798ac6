-- Accounts (issue 13): login lockout, and API keys for programs.
--
-- Login attempts are claimed in `throttles` (per account and per address):
-- one upsert counts the attempt in its window, says in `admitted` whether the
-- row was free of a delay when it was claimed (the old `blocked_until`), and
-- sets the next delay once the window holds the limit. Every instance shares
-- the rows, and parallel claims queue on the row lock: none slips past.
ALTER TABLE throttles
    ADD COLUMN blocked_until timestamptz,
    ADD COLUMN admitted boolean NOT NULL DEFAULT true;

-- Wrong passwords (and second factors) in a row; at 100 the account is locked
-- until an administrator unlocks it (NIST SP 800-63B-4 §3.2.2).
ALTER TABLE users
    ADD COLUMN failed_logins integer NOT NULL DEFAULT 0 CHECK (failed_logins >= 0),
    ADD COLUMN locked_at timestamptz;

-- API keys for programs (seed 003). The key is `ffk_` + hex(32 random bytes ‖
-- the tenant's id) + `_` + hex(CRC-32 of what precedes): a mistyped key is
-- refused without a database read, and the request knows its tenant as a
-- session cookie does. Stored as SHA-256 only, with its first characters for
-- display. `permissions` ('permission:scope'; NULL: all of the owner's) is
-- intersected with the owner's grants at every request.
CREATE TABLE api_keys (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id    uuid NOT NULL,
    user_id      uuid NOT NULL,
    name         text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    key_hash     bytea NOT NULL UNIQUE CHECK (octet_length(key_hash) = 32),
    prefix       text NOT NULL,
    permissions  text[],
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    last_used_at timestamptz,
    revoked_at   timestamptz,
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX api_keys_user_idx ON api_keys (user_id, created_at);
GRANT SELECT, INSERT, UPDATE, DELETE ON api_keys TO fortifile_app;
SELECT fortifile_enable_tenant_rls('api_keys');

-- A request made with an API key opens like a session's (migration 0007): the
-- tenant set, the key with its owner's status, profile, grants and the key's
-- own limits, in one statement.
CREATE FUNCTION fortifile_open_key_request(p_tenant uuid, p_key_hash bytea, p_now timestamptz)
RETURNS TABLE (
    key_id          uuid,
    user_id         uuid,
    key_expires_at  timestamptz,
    revoked         boolean,
    last_used_at    timestamptz,
    key_permissions text[],
    status          text,
    username        text,
    email           text,
    requested_role  text,
    department_id   uuid,
    department      text,
    clearance       text,
    clearance_rank  integer,
    last_login      timestamptz,
    created_at      timestamptz,
    roles           text[],
    grants          text[],
    mfa_methods     text[],
    mfa_required    text
)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant::text, true);
    RETURN QUERY
    SELECT k.id, k.user_id, k.expires_at, k.revoked_at IS NOT NULL, k.last_used_at, k.permissions, u.status,
           u.username, u.email, u.requested_role, u.department_id, d.name, c.name, c.level, u.last_login, u.created_at,
           ARRAY(SELECT r.name FROM user_roles ur JOIN roles r ON r.id = ur.role_id
                  WHERE ur.user_id = u.id AND (ur.expires_at IS NULL OR ur.expires_at > p_now)
                  ORDER BY ur.assigned_at, r.name),
           ARRAY(SELECT p.name || ':' || rp.scope FROM user_roles ur
                  JOIN role_permissions rp ON rp.role_id = ur.role_id
                  JOIN permissions p ON p.id = rp.permission_id
                  WHERE ur.user_id = u.id AND (ur.expires_at IS NULL OR ur.expires_at > p_now)),
           ARRAY(SELECT 'totp'::text FROM mfa_totp t WHERE t.user_id = u.id AND t.confirmed_at IS NOT NULL
                 UNION ALL
                 SELECT 'webauthn' WHERE EXISTS (SELECT 1 FROM mfa_webauthn w WHERE w.user_id = u.id)),
           (SELECT CASE max(CASE coalesce(r.mfa_type, 'any') WHEN 'fido2' THEN 3 WHEN 'totp' THEN 2 ELSE 1 END)
                       WHEN 3 THEN 'fido2' WHEN 2 THEN 'totp' WHEN 1 THEN 'any' END
              FROM user_roles ur JOIN roles r ON r.id = ur.role_id
             WHERE ur.user_id = u.id AND r.requires_mfa AND (ur.expires_at IS NULL OR ur.expires_at > p_now))
    FROM api_keys k
    JOIN users u ON u.id = k.user_id
    JOIN departments d ON d.id = u.department_id
    JOIN clearance_levels c ON c.id = u.clearance_level_id
    WHERE k.key_hash = p_key_hash;
END
$$;
REVOKE ALL ON FUNCTION fortifile_open_key_request(uuid, bytea, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fortifile_open_key_request(uuid, bytea, timestamptz) TO fortifile_app;
