-- Idempotency keys (issue 14): the first answer to a create made with an
-- `Idempotency-Key` header, kept for 24 hours under (tenant, who, key) so a
-- retry gets that answer instead of creating a second resource.
--
-- The row is inserted in the request's own transaction, before the handler
-- acts: it commits with the action or not at all, so a key never names an
-- action that did not happen, and an action taken with a key is never taken
-- twice. `status` and `body` are filled in right after the commit; a row
-- without them is a request still finishing (a retry answers 409).
CREATE TABLE idempotency_keys (
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- The user (session) or the API key the request was made as: a user's
    -- keys and their sessions are separate namespaces.
    principal    uuid NOT NULL,
    key          text NOT NULL CHECK (char_length(key) BETWEEN 1 AND 255),
    -- The claiming request's own token: its answer is stored only on its row.
    token        uuid NOT NULL UNIQUE,
    -- SHA-256 of the method, the path with its query and the body (for
    -- uploads: the stored bytes' SHA-256 and the form fields).
    fingerprint  bytea NOT NULL CHECK (octet_length(fingerprint) = 32),
    method       text NOT NULL,
    path         text NOT NULL,
    created_at   timestamptz NOT NULL,
    status       smallint,
    content_type text,
    location     text,
    body         bytea,
    PRIMARY KEY (tenant_id, principal, key)
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
GRANT SELECT, INSERT, UPDATE, DELETE ON idempotency_keys TO fortifile_app;
SELECT fortifile_enable_tenant_rls('idempotency_keys');
