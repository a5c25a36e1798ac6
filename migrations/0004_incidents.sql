-- Incidents (seed 000 §6): tracked by administrators, optionally linked to the
-- audit entry that prompted them. Never deleted by the server.

CREATE TABLE incidents (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id            uuid NOT NULL REFERENCES tenants (id),
    created_at           timestamptz NOT NULL,
    updated_at           timestamptz NOT NULL,
    created_by           uuid,
    status               text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'investigating', 'resolved')),
    severity             text NOT NULL CHECK (severity IN ('low', 'medium', 'high')),
    title                text NOT NULL CHECK (char_length(title) BETWEEN 1 AND 200),
    description          text NOT NULL DEFAULT '' CHECK (char_length(description) <= 10000),
    -- audit_logs is partitioned (its key is (id, created_at)), so this cannot be
    -- a foreign key: the server checks the entry exists in the same tenant.
    related_audit_log_id uuid,
    UNIQUE (tenant_id, id),
    FOREIGN KEY (tenant_id, created_by) REFERENCES users (tenant_id, id) ON DELETE SET NULL (created_by)
);
CREATE INDEX incidents_listing_idx ON incidents (tenant_id, created_at DESC, id DESC);
CREATE INDEX incidents_status_idx ON incidents (tenant_id, status, severity);

GRANT SELECT, INSERT, UPDATE ON incidents TO fortifile_app;
SELECT fortifile_enable_tenant_rls('incidents');

-- The dashboard's filters and highlights: login attempts by the username they
-- named, and events by client address. The username is a column of its own
-- because row-level security lets an index serve only leakproof comparisons:
-- `lower(details->>'username') = $1` would be checked row by row after the
-- tenant's rows were read, `login_username = $1` is an index lookup.
ALTER TABLE audit_logs ADD COLUMN login_username text
    GENERATED ALWAYS AS (CASE WHEN action = 'auth.login' THEN lower(details->>'username') END) STORED;
CREATE INDEX audit_logs_login_username_idx ON audit_logs (tenant_id, login_username, created_at DESC)
    WHERE login_username IS NOT NULL;
CREATE INDEX audit_logs_ip_idx ON audit_logs (tenant_id, ip, created_at DESC);
