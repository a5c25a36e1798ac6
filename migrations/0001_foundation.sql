-- FortiFile foundation schema: tenants, the access-control tables (users, roles,
-- permissions, user_roles, role_permissions, departments, clearance_levels),
-- sessions and the append-only, monthly-partitioned audit log.
--
-- Runs as the schema owner. The server itself connects as `fortifile_app`, a role
-- that is not superuser, owns nothing, has no BYPASSRLS, and may only INSERT and
-- SELECT audit_logs. Every tenant table has FORCE ROW LEVEL SECURITY with a policy
-- comparing tenant_id to the per-transaction setting `app.tenant_id`.
-- Never edit this file once applied: add a new migration.

-- The serving role. Created here when missing (concurrent migrations of several
-- databases in one cluster may race to create it; the loser ignores the error).
-- An operator whose owner account lacks CREATEROLE creates it beforehand.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'fortifile_app') THEN
        BEGIN
            CREATE ROLE fortifile_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA public TO fortifile_app;

-- Enables and forces the tenant policy on a table. Used by this and later migrations.
CREATE FUNCTION fortifile_enable_tenant_rls(tbl regclass) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tbl);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', tbl);
    EXECUTE format(
        'CREATE POLICY tenant_isolation ON %s '
        'USING (tenant_id = NULLIF(current_setting(''app.tenant_id'', true), '''')::uuid) '
        'WITH CHECK (tenant_id = NULLIF(current_setting(''app.tenant_id'', true), '''')::uuid)',
        tbl);
END
$$;
REVOKE ALL ON FUNCTION fortifile_enable_tenant_rls(regclass) FROM PUBLIC;

CREATE FUNCTION fortifile_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

-- Tenants: the registry of organisations. Readable by the server (to resolve a
-- tenant by slug), written only by the owner (seed, CLI).
CREATE TABLE tenants (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    slug       text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    name       text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    created_at timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT ON tenants TO fortifile_app;

-- The permission catalogue is defined by the code (route guards name these), so
-- it is global and read-only for the server. Names are `resource.action`.
CREATE TABLE permissions (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL UNIQUE CHECK (name ~ '^[a-z_]+\.[a-z_]+$'),
    description text NOT NULL DEFAULT ''
);
GRANT SELECT ON permissions TO fortifile_app;

INSERT INTO permissions (name, description) VALUES
    ('file.upload',        'Upload documents'),
    ('file.download',      'Download documents'),
    ('file.share',         'Share documents with other users'),
    ('admin.view_logs',    'View the audit log and security dashboard'),
    ('admin.manage_roles', 'Assign roles and edit role permissions'),
    ('incident.manage',    'Create and update security incidents'),
    ('users.view',         'List and view user accounts'),
    ('users.create',       'Create user accounts'),
    ('users.edit',         'Edit user accounts'),
    ('users.delete',       'Delete user accounts');

CREATE TABLE departments (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    name        text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    description text NOT NULL DEFAULT '',
    color       text NOT NULL DEFAULT '#64748b' CHECK (color ~ '^#[0-9A-Fa-f]{6}$'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, id)
);
CREATE UNIQUE INDEX departments_name_key ON departments (tenant_id, lower(name));

CREATE TABLE clearance_levels (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    name        text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    description text NOT NULL DEFAULT '',
    level       integer NOT NULL CHECK (level BETWEEN 1 AND 100),
    color       text NOT NULL DEFAULT '#64748b' CHECK (color ~ '^#[0-9A-Fa-f]{6}$'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, id),
    UNIQUE (tenant_id, level)
);
CREATE UNIQUE INDEX clearance_levels_name_key ON clearance_levels (tenant_id, lower(name));

CREATE TABLE roles (
    id                      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id               uuid NOT NULL REFERENCES tenants (id),
    name                    text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 64),
    description             text NOT NULL DEFAULT '',
    -- seed 001's per-role policy: overrides the idle timeout (shortest wins) ...
    session_timeout_minutes integer CHECK (session_timeout_minutes BETWEEN 1 AND 1440),
    -- ... and whether holders must use MFA (enforced by the MFA work).
    requires_mfa            boolean NOT NULL DEFAULT false,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, id)
);
CREATE UNIQUE INDEX roles_name_key ON roles (tenant_id, lower(name));

CREATE TABLE role_permissions (
    tenant_id     uuid NOT NULL,
    role_id       uuid NOT NULL,
    permission_id uuid NOT NULL REFERENCES permissions (id),
    -- which objects the grant covers: the tenant's, the holder's department's, or own.
    scope         text NOT NULL DEFAULT 'tenant' CHECK (scope IN ('tenant', 'department', 'own')),
    granted_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (role_id, permission_id),
    FOREIGN KEY (tenant_id, role_id) REFERENCES roles (tenant_id, id) ON DELETE CASCADE
);

CREATE TABLE users (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id          uuid NOT NULL REFERENCES tenants (id),
    username           text NOT NULL CHECK (username ~ '^[A-Za-z0-9][A-Za-z0-9._-]{2,63}$'),
    email              text NOT NULL CHECK (char_length(email) BETWEEN 3 AND 254),
    password_hash      text NOT NULL,
    status             text NOT NULL DEFAULT 'active'
                       CHECK (status IN ('active', 'inactive', 'suspended', 'pending')),
    requested_role     text CHECK (char_length(requested_role) <= 64),
    department_id      uuid NOT NULL,
    clearance_level_id uuid NOT NULL,
    last_login         timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, id),
    -- composite keys: a user can only point at its own tenant's rows.
    FOREIGN KEY (tenant_id, department_id) REFERENCES departments (tenant_id, id),
    FOREIGN KEY (tenant_id, clearance_level_id) REFERENCES clearance_levels (tenant_id, id)
);
CREATE UNIQUE INDEX users_username_key ON users (tenant_id, lower(username));
CREATE UNIQUE INDEX users_email_key ON users (tenant_id, lower(email));

CREATE TABLE user_roles (
    tenant_id   uuid NOT NULL,
    user_id     uuid NOT NULL,
    role_id     uuid NOT NULL,
    assigned_by uuid,
    assigned_at timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz,
    PRIMARY KEY (user_id, role_id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, role_id) REFERENCES roles (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, assigned_by) REFERENCES users (tenant_id, id) ON DELETE SET NULL (assigned_by)
);
CREATE INDEX user_roles_role_idx ON user_roles (role_id);

-- Server-side sessions. Only the SHA-256 of the cookie's token is stored.
CREATE TABLE sessions (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id    uuid NOT NULL,
    user_id      uuid NOT NULL,
    token_hash   bytea NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    created_at   timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    ip           inet,
    user_agent   text,
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX sessions_user_idx ON sessions (user_id);

CREATE TRIGGER departments_touch BEFORE UPDATE ON departments
    FOR EACH ROW EXECUTE FUNCTION fortifile_touch_updated_at();
CREATE TRIGGER clearance_levels_touch BEFORE UPDATE ON clearance_levels
    FOR EACH ROW EXECUTE FUNCTION fortifile_touch_updated_at();
CREATE TRIGGER roles_touch BEFORE UPDATE ON roles
    FOR EACH ROW EXECUTE FUNCTION fortifile_touch_updated_at();
CREATE TRIGGER users_touch BEFORE UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION fortifile_touch_updated_at();

-- A user who stops being active loses every session at once, whoever changed the
-- status and however. Runs with the caller's rights, inside the tenant's policy.
CREATE FUNCTION users_end_sessions_when_disabled() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status <> 'active' THEN
        DELETE FROM sessions WHERE user_id = NEW.id;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER users_end_sessions AFTER UPDATE OF status ON users
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION users_end_sessions_when_disabled();

GRANT SELECT, INSERT, UPDATE, DELETE
    ON departments, clearance_levels, roles, role_permissions, users, user_roles, sessions
    TO fortifile_app;

-- The audit log (seed 000 §4 columns plus tenant_id), partitioned by month.
CREATE TABLE audit_logs (
    id          uuid NOT NULL DEFAULT gen_random_uuid(),
    created_at  timestamptz NOT NULL DEFAULT now(),
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    user_id     uuid,
    action      text NOT NULL CHECK (action ~ '^[a-z_]+(\.[a-z_]+)+$'),
    target_type text,
    target_id   text,
    ip          inet,
    user_agent  text,
    result      text NOT NULL CHECK (result IN ('success', 'fail')),
    details     jsonb NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE INDEX audit_logs_created_at_idx ON audit_logs (tenant_id, created_at DESC, id DESC);
CREATE INDEX audit_logs_user_id_idx ON audit_logs (tenant_id, user_id, created_at DESC);
CREATE INDEX audit_logs_action_idx ON audit_logs (tenant_id, action, created_at DESC);

-- Catches rows for a month whose partition does not exist (clock jumps); the
-- maintenance function below keeps it empty in normal operation.
CREATE TABLE audit_logs_default PARTITION OF audit_logs DEFAULT;

-- Creates the monthly partitions from last month to `months_ahead` months ahead.
-- SECURITY DEFINER so the server (which owns nothing) can keep them ahead of time.
CREATE FUNCTION audit_ensure_partitions(months_ahead integer) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    first_month timestamp := date_trunc('month', now() AT TIME ZONE 'UTC') - interval '1 month';
    month_start timestamp;
    part_name   text;
    created     integer := 0;
BEGIN
    IF months_ahead < 0 OR months_ahead > 120 THEN
        RAISE EXCEPTION 'months_ahead must be between 0 and 120';
    END IF;
    FOR i IN 0 .. months_ahead + 1 LOOP
        month_start := first_month + make_interval(months => i);
        part_name := 'audit_logs_' || to_char(month_start, 'YYYY_MM');
        IF to_regclass(part_name) IS NULL THEN
            BEGIN
                EXECUTE format(
                    'CREATE TABLE %I PARTITION OF audit_logs FOR VALUES FROM (%L) TO (%L)',
                    part_name,
                    to_char(month_start, 'YYYY-MM-DD') || ' 00:00:00+00',
                    to_char(month_start + interval '1 month', 'YYYY-MM-DD') || ' 00:00:00+00');
                created := created + 1;
            EXCEPTION WHEN OTHERS THEN
                -- e.g. rows for that month already sit in the default partition
                RAISE WARNING 'could not create audit partition %: %', part_name, SQLERRM;
            END;
        END IF;
    END LOOP;
    RETURN created;
END
$$;
REVOKE ALL ON FUNCTION audit_ensure_partitions(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit_ensure_partitions(integer) TO fortifile_app;
SELECT audit_ensure_partitions(12);

-- Append-only: the server's role was never granted UPDATE, DELETE or TRUNCATE,
-- and even the owner is refused row changes (retention drops whole partitions).
CREATE FUNCTION audit_logs_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_logs is append-only' USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_logs_append_only BEFORE UPDATE OR DELETE ON audit_logs
    FOR EACH ROW EXECUTE FUNCTION audit_logs_refuse_change();
CREATE TRIGGER audit_logs_no_truncate BEFORE TRUNCATE ON audit_logs
    FOR EACH STATEMENT EXECUTE FUNCTION audit_logs_refuse_change();

GRANT SELECT, INSERT ON audit_logs TO fortifile_app;

SELECT fortifile_enable_tenant_rls(t) FROM unnest(ARRAY[
    'departments', 'clearance_levels', 'roles', 'role_permissions', 'users',
    'user_roles', 'sessions', 'audit_logs'
]::regclass[]) AS t;
