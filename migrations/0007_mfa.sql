-- Multi-factor authentication (issue 12): TOTP factors, recovery codes, and the
-- second step of a session.
--
-- A session passes its second step once: `mfa_pending` sessions (the password
-- was right, a second factor is outstanding) reach only the second-factor
-- routes and last five minutes; `verified_at` is the last second-factor
-- verification (at login or a step-up), which sensitive routes require to be
-- recent. `mfa_failures` counts wrong second factors of a pending session.
ALTER TABLE sessions
    ADD COLUMN mfa_pending  boolean NOT NULL DEFAULT false,
    ADD COLUMN verified_at  timestamptz,
    ADD COLUMN mfa_failures integer NOT NULL DEFAULT 0 CHECK (mfa_failures >= 0);

-- Wrong second factors of an account, across its pending sessions, since its
-- last successful one.
ALTER TABLE users ADD COLUMN mfa_failures integer NOT NULL DEFAULT 0 CHECK (mfa_failures >= 0);

-- One TOTP factor per user. The secret is sealed under a key derived from the
-- master key (AES-256-GCM, bound to tenant and user); `last_step` is the last
-- accepted RFC 6238 time step: a code is accepted only by the one conditional
-- UPDATE that moves it forward, so no code is used twice. A factor being set up
-- has no `confirmed_at` and does not count.
CREATE TABLE mfa_totp (
    tenant_id    uuid NOT NULL,
    user_id      uuid NOT NULL,
    secret       bytea NOT NULL,
    key_id       text NOT NULL,
    created_at   timestamptz NOT NULL,
    confirmed_at timestamptz,
    last_used_at timestamptz,
    last_step    bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
);

-- Recovery codes: stored as SHA-256 of the code (the codes are 50 random bits
-- each, shown once), one row each, used once.
CREATE TABLE mfa_recovery_codes (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id  uuid NOT NULL,
    user_id    uuid NOT NULL,
    code_hash  bytea NOT NULL CHECK (octet_length(code_hash) = 32),
    created_at timestamptz NOT NULL,
    used_at    timestamptz,
    UNIQUE (user_id, code_hash),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
);

-- Passkeys and security keys (WebAuthn). The credential id is unique across
-- every account of every tenant. `passkey` is webauthn-rs's stored credential
-- (public key, counter, backup flags); `counter` mirrors its signature counter
-- so that an update only ever moves it forward.
CREATE TABLE mfa_webauthn (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id     uuid NOT NULL,
    user_id       uuid NOT NULL,
    credential_id bytea NOT NULL UNIQUE,
    name          text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    passkey       jsonb NOT NULL,
    counter       bigint NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL,
    last_used_at  timestamptz,
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX mfa_webauthn_user_idx ON mfa_webauthn (user_id);

-- A WebAuthn ceremony in progress: bound to the session that started it, used
-- once (taken with DELETE … RETURNING), good for five minutes. webauthn-rs does
-- not expire its state itself.
CREATE TABLE mfa_ceremonies (
    session_id uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    tenant_id  uuid NOT NULL,
    kind       text NOT NULL CHECK (kind IN ('register', 'authenticate')),
    state      jsonb NOT NULL,
    name       text,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (session_id, kind)
);

GRANT SELECT, INSERT, UPDATE, DELETE ON mfa_totp, mfa_recovery_codes, mfa_webauthn, mfa_ceremonies TO fortifile_app;
SELECT fortifile_enable_tenant_rls(t)
  FROM unnest(ARRAY['mfa_totp', 'mfa_recovery_codes', 'mfa_webauthn', 'mfa_ceremonies']::regclass[]) AS t;

-- The request's first statement also says where the session stands with MFA:
-- whether it is still pending, when it last verified a second factor, the
-- user's confirmed methods, and the strictest factor their current roles
-- require ('fido2' > 'totp' > 'any'; NULL when none requires one).
DROP FUNCTION fortifile_open_request(uuid, bytea, timestamptz);
CREATE FUNCTION fortifile_open_request(p_tenant uuid, p_token_hash bytea, p_now timestamptz)
RETURNS TABLE (
    session_id     uuid,
    user_id        uuid,
    last_seen_at   timestamptz,
    expires_at     timestamptz,
    status         text,
    role_timeout   integer,
    username       text,
    email          text,
    requested_role text,
    department_id  uuid,
    department     text,
    clearance      text,
    clearance_rank integer,
    last_login     timestamptz,
    created_at     timestamptz,
    roles          text[],
    grants         text[],
    mfa_pending    boolean,
    verified_at    timestamptz,
    mfa_methods    text[],
    mfa_required   text
)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant::text, true);
    RETURN QUERY
    SELECT s.id, s.user_id, s.last_seen_at, s.expires_at, u.status,
           (SELECT min(r.session_timeout_minutes) FROM user_roles ur JOIN roles r ON r.id = ur.role_id
             WHERE ur.user_id = u.id AND (ur.expires_at IS NULL OR ur.expires_at > p_now)),
           u.username, u.email, u.requested_role, u.department_id, d.name, c.name, c.level,
           u.last_login, u.created_at,
           ARRAY(SELECT r.name FROM user_roles ur JOIN roles r ON r.id = ur.role_id
                  WHERE ur.user_id = u.id AND (ur.expires_at IS NULL OR ur.expires_at > p_now)
                  ORDER BY ur.assigned_at, r.name),
           ARRAY(SELECT p.name || ':' || rp.scope FROM user_roles ur
                  JOIN role_permissions rp ON rp.role_id = ur.role_id
                  JOIN permissions p ON p.id = rp.permission_id
                  WHERE ur.user_id = u.id AND (ur.expires_at IS NULL OR ur.expires_at > p_now)),
           s.mfa_pending, s.verified_at,
           ARRAY(SELECT 'totp'::text FROM mfa_totp t WHERE t.user_id = u.id AND t.confirmed_at IS NOT NULL
                 UNION ALL
                 SELECT 'webauthn' WHERE EXISTS (SELECT 1 FROM mfa_webauthn w WHERE w.user_id = u.id)),
           (SELECT CASE max(CASE coalesce(r.mfa_type, 'any') WHEN 'fido2' THEN 3 WHEN 'totp' THEN 2 ELSE 1 END)
                       WHEN 3 THEN 'fido2' WHEN 2 THEN 'totp' WHEN 1 THEN 'any' END
              FROM user_roles ur JOIN roles r ON r.id = ur.role_id
             WHERE ur.user_id = u.id AND r.requires_mfa AND (ur.expires_at IS NULL OR ur.expires_at > p_now))
    FROM sessions s
    JOIN users u ON u.id = s.user_id
    JOIN departments d ON d.id = u.department_id
    JOIN clearance_levels c ON c.id = u.clearance_level_id
    WHERE s.token_hash = p_token_hash;
END
$$;
REVOKE ALL ON FUNCTION fortifile_open_request(uuid, bytea, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fortifile_open_request(uuid, bytea, timestamptz) TO fortifile_app;
