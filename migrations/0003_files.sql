-- Documents (issue 4): file metadata, shares, and two new permissions.
--
-- The bytes live in object storage, encrypted with a per-file data key; this
-- table holds the wrapped key and the key id of the master key that wrapped it.
-- A row exists only for an object that was stored completely.

INSERT INTO permissions (name, description) VALUES
    ('file.delete',   'Delete documents'),
    ('file.classify', 'Change a document''s classification');

CREATE TABLE files (
    id                uuid PRIMARY KEY,
    tenant_id         uuid NOT NULL REFERENCES tenants (id),
    owner_id          uuid NOT NULL,
    department_id     uuid NOT NULL,
    classification_id uuid NOT NULL,
    -- the user's filename, for display and Content-Disposition only; never a path.
    name              text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 255),
    size              bigint NOT NULL CHECK (size >= 0),
    -- detected from the bytes at upload, not the client's claim.
    content_type      text NOT NULL CHECK (char_length(content_type) BETWEEN 1 AND 255),
    sha256            bytea NOT NULL CHECK (octet_length(sha256) = 32),
    -- server-generated: "<tenant>/<random uuid>".
    object_key        text NOT NULL UNIQUE,
    key_id            text NOT NULL,
    wrapped_key       bytea NOT NULL,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, id),
    -- an owner with documents cannot be deleted (suspend them instead).
    FOREIGN KEY (tenant_id, owner_id) REFERENCES users (tenant_id, id),
    FOREIGN KEY (tenant_id, department_id) REFERENCES departments (tenant_id, id),
    FOREIGN KEY (tenant_id, classification_id) REFERENCES clearance_levels (tenant_id, id)
);
CREATE INDEX files_listing_idx ON files (tenant_id, created_at DESC, id DESC);
CREATE INDEX files_owner_idx ON files (owner_id, created_at DESC);
CREATE INDEX files_department_idx ON files (department_id, created_at DESC);
CREATE INDEX files_classification_idx ON files (classification_id);
CREATE TRIGGER files_touch BEFORE UPDATE ON files
    FOR EACH ROW EXECUTE FUNCTION fortifile_touch_updated_at();

-- A share lets the recipient view and download one file until it expires or is
-- deleted (revoked). One share per file and recipient.
CREATE TABLE file_shares (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id    uuid NOT NULL,
    file_id      uuid NOT NULL,
    recipient_id uuid NOT NULL,
    shared_by    uuid,
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz,
    UNIQUE (file_id, recipient_id),
    FOREIGN KEY (tenant_id, file_id) REFERENCES files (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, recipient_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, shared_by) REFERENCES users (tenant_id, id) ON DELETE SET NULL (shared_by)
);
CREATE INDEX file_shares_recipient_idx ON file_shares (recipient_id, file_id);

GRANT SELECT, INSERT, UPDATE, DELETE ON files, file_shares TO fortifile_app;
SELECT fortifile_enable_tenant_rls(t) FROM unnest(ARRAY['files', 'file_shares']::regclass[]) AS t;

-- Existing tenants get the new permissions as the presets now give them: roles
-- that administer the tenant may delete and classify everything; roles that
-- upload may delete their own documents. Row-level security applies to the
-- owner too (FORCE), so each tenant is visited with its id set.
DO $$
DECLARE
    t uuid;
BEGIN
    FOR t IN SELECT id FROM tenants LOOP
        PERFORM set_config('app.tenant_id', t::text, true);
        INSERT INTO role_permissions (tenant_id, role_id, permission_id, scope)
        SELECT rp.tenant_id, rp.role_id, p.id, 'tenant'
          FROM role_permissions rp
          JOIN permissions admin ON admin.id = rp.permission_id AND admin.name = 'admin.manage_roles'
          CROSS JOIN permissions p
         WHERE rp.scope = 'tenant' AND p.name IN ('file.delete', 'file.classify')
        ON CONFLICT DO NOTHING;
        INSERT INTO role_permissions (tenant_id, role_id, permission_id, scope)
        SELECT rp.tenant_id, rp.role_id, p.id, 'own'
          FROM role_permissions rp
          JOIN permissions up ON up.id = rp.permission_id AND up.name = 'file.upload'
          CROSS JOIN permissions p
         WHERE p.name = 'file.delete'
        ON CONFLICT DO NOTHING;
    END LOOP;
    PERFORM set_config('app.tenant_id', '', true);
END
$$;
