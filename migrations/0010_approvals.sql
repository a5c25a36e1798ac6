-- Dual control (issue 15): sensitive operations wait for a second, eligible
-- person, and run exactly once.
--
-- `approval_policies` says, per tenant and operation, whether the operation
-- is held, how many approvers it needs, who may approve (role names; empty:
-- holders of admin.manage_roles at tenant scope) and when a request expires.
-- A tenant without a row for an operation does not hold it.
CREATE TABLE approval_policies (
    tenant_id          uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    operation          text NOT NULL CHECK (operation IN (
                           'role.assign_privileged', 'role.widen', 'user.clearance_raise', 'file.declassify',
                           'audit.export', 'user.delete', 'mfa.reset', 'policy.change')),
    enabled            boolean NOT NULL DEFAULT false,
    approvals_required integer NOT NULL DEFAULT 1 CHECK (approvals_required BETWEEN 1 AND 5),
    approver_roles     text[] NOT NULL DEFAULT '{}',
    timeout_hours      integer NOT NULL CHECK (timeout_hours BETWEEN 1 AND 720),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, operation)
);
GRANT SELECT, INSERT, UPDATE ON approval_policies TO fortifile_app;
SELECT fortifile_enable_tenant_rls('approval_policies');

-- One held request: the exact request (canonical JSON and its SHA-256), what
-- it would change (before and after, as the operation's audit row will
-- record it), and the policy as it stood when it was made (so a later policy
-- change does not move the goalposts of a pending request). Its state only
-- moves forward, under a row lock: pending -> approved -> executed | failed,
-- or pending | approved -> denied | cancelled | expired.
CREATE TABLE approvals (
    id                  uuid NOT NULL DEFAULT gen_random_uuid(),
    tenant_id           uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    operation           text NOT NULL,
    requester_id        uuid NOT NULL,
    status              text NOT NULL DEFAULT 'pending' CHECK (status IN (
                            'pending', 'approved', 'executed', 'failed', 'denied', 'cancelled', 'expired')),
    request             jsonb NOT NULL,
    request_sha256      bytea NOT NULL CHECK (octet_length(request_sha256) = 32),
    summary             text NOT NULL,
    change              jsonb NOT NULL,
    target_type         text,
    target_id           text,
    -- The classification rank of the document the request is about: an
    -- approver (and any reader) must be cleared at least this high.
    classification_rank integer,
    approvals_required  integer NOT NULL,
    approver_roles      text[] NOT NULL,
    created_at          timestamptz NOT NULL,
    expires_at          timestamptz NOT NULL,
    -- Who denied or cancelled it, why (or why its execution failed), and when.
    closed_by           uuid,
    reason              text,
    closed_at           timestamptz,
    PRIMARY KEY (id),
    UNIQUE (tenant_id, id),
    FOREIGN KEY (tenant_id, requester_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX approvals_list_idx ON approvals (tenant_id, created_at DESC, id DESC);
CREATE INDEX approvals_open_idx ON approvals (tenant_id, expires_at) WHERE status IN ('pending', 'approved');
GRANT SELECT, INSERT, UPDATE ON approvals TO fortifile_app;
SELECT fortifile_enable_tenant_rls('approvals');

-- The approvals given: a person counts once, whatever sessions they use.
CREATE TABLE approval_votes (
    tenant_id   uuid NOT NULL,
    approval_id uuid NOT NULL,
    approver_id uuid NOT NULL,
    comment     text,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (approval_id, approver_id),
    FOREIGN KEY (tenant_id, approval_id) REFERENCES approvals (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, approver_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
);
GRANT SELECT, INSERT ON approval_votes TO fortifile_app;
SELECT fortifile_enable_tenant_rls('approval_votes');
