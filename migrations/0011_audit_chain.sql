-- The audit chain (issue 16): every audit row is sealed, after it commits, into
-- a per-tenant hash chain; signed checkpoints pin the chain's head from time to
-- time. Writers pay one column and one index entry; the sealer does the rest.
--
-- Why seal after commit (design (b) in ARCHITECTURE.md "Audit chain"): a chain
-- built in the writing transaction must hold a per-tenant lock from the moment
-- it reads the head until its commit is on disk, which serialises every audited
-- write of a tenant behind one fsync at a time. Sealing later costs the writer
-- nothing; the order is made safe by the transaction id each row carries.

-- The inserting transaction's id. The sealer only seals rows whose transaction
-- is older than every transaction still in flight (pg_snapshot_xmin), so no row
-- can commit later behind a sealed one.
ALTER TABLE audit_logs DISABLE TRIGGER audit_logs_append_only;
ALTER TABLE audit_logs ADD COLUMN txid xid8 NOT NULL DEFAULT pg_current_xact_id();
ALTER TABLE audit_logs ENABLE TRIGGER audit_logs_append_only;
CREATE INDEX audit_logs_txid_idx ON audit_logs (tenant_id, txid);

-- One row per tenant: the chain's head (last sequence and hash), the sealing
-- horizon (every row whose txid is below it is sealed), the anchor (the last
-- sequence and hash archived and purged, 0 and the genesis hash before any
-- purge), the tenant's legal hold, and the syslog forwarding cursor.
CREATE TABLE audit_chain (
    tenant_id        uuid PRIMARY KEY REFERENCES tenants (id),
    seq              bigint NOT NULL DEFAULT 0 CHECK (seq >= 0),
    hash             bytea NOT NULL CHECK (octet_length(hash) = 32),
    horizon          xid8 NOT NULL DEFAULT '0',
    sealed_at        timestamptz,
    anchor_seq       bigint NOT NULL DEFAULT 0 CHECK (anchor_seq >= 0 AND anchor_seq <= seq),
    anchor_hash      bytea NOT NULL CHECK (octet_length(anchor_hash) = 32),
    legal_hold       boolean NOT NULL DEFAULT false,
    forwarded_seq    bigint NOT NULL DEFAULT 0 CHECK (forwarded_seq >= 0)
);
GRANT SELECT, INSERT, UPDATE ON audit_chain TO fortifile_app;
SELECT fortifile_enable_tenant_rls('audit_chain');

-- The seals: row `log_id` is number `seq` of its tenant's chain;
-- digest = SHA-256(canonical row), hash = SHA-256(previous hash || seq || digest).
-- Append-only for the server, like the log itself.
CREATE TABLE audit_seals (
    tenant_id      uuid NOT NULL REFERENCES tenants (id),
    seq            bigint NOT NULL CHECK (seq > 0),
    log_id         uuid NOT NULL,
    log_created_at timestamptz NOT NULL,
    digest         bytea NOT NULL CHECK (octet_length(digest) = 32),
    hash           bytea NOT NULL CHECK (octet_length(hash) = 32),
    sealed_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, seq),
    UNIQUE (tenant_id, log_id)
);
GRANT SELECT, INSERT ON audit_seals TO fortifile_app;
SELECT fortifile_enable_tenant_rls('audit_seals');

-- Signed checkpoints: Ed25519 over (tenant, seq, hash, time); see audit::chain.
CREATE TABLE audit_checkpoints (
    tenant_id  uuid NOT NULL REFERENCES tenants (id),
    seq        bigint NOT NULL CHECK (seq >= 0),
    hash       bytea NOT NULL CHECK (octet_length(hash) = 32),
    created_at timestamptz NOT NULL,
    key_id     text NOT NULL,
    signature  bytea NOT NULL,
    PRIMARY KEY (tenant_id, seq, created_at)
);
CREATE INDEX audit_checkpoints_recent_idx ON audit_checkpoints (tenant_id, created_at DESC);
GRANT SELECT, INSERT ON audit_checkpoints TO fortifile_app;
SELECT fortifile_enable_tenant_rls('audit_checkpoints');

-- Audit archives written by retention: where each went and what it covers.
CREATE TABLE audit_archives (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    partition   text NOT NULL,
    object_key  text NOT NULL,
    first_seq   bigint NOT NULL,
    last_seq    bigint NOT NULL,
    last_hash   bytea NOT NULL CHECK (octet_length(last_hash) = 32),
    rows        bigint NOT NULL,
    sha256      bytea NOT NULL CHECK (octet_length(sha256) = 32),
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- when the tenant let its rows of the partition go: at once by the daily
    -- job, or by an approved audit.purge where dual control holds it
    released_at timestamptz,
    UNIQUE (tenant_id, partition)
);
GRANT SELECT, INSERT, UPDATE (released_at) ON audit_archives TO fortifile_app;
SELECT fortifile_enable_tenant_rls('audit_archives');

-- The retention the server is configured with, written by the owner at start
-- (`fortifile serve` connects as the owner for migrations): the drop below
-- refuses anything younger, whatever its caller says.
CREATE TABLE audit_retention (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    days     integer NOT NULL CHECK (days >= 365)
);
GRANT SELECT ON audit_retention TO fortifile_app;

-- Retention's last step, run once every tenant with rows in the partition has
-- archived them (read back and verified) and released them. SECURITY DEFINER:
-- the server owns nothing. Nothing the caller says is trusted: the partition
-- is detached first (no row can arrive after the checks), then, per tenant
-- (row-level security binds the owner too, so each is looked at under its own
-- setting): a released archive must exist, no legal hold, and every row must
-- carry a seal the archive covers. Only then go the rows' seals, the
-- partition, and an `audit.purge` row is written in each tenant's log, all in
-- the caller's transaction.
CREATE FUNCTION audit_drop_partition(part text, retention_days integer) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    upper_bound timestamptz;
    configured  integer := coalesce((SELECT days FROM audit_retention), 2557);
    previous    text := current_setting('app.tenant_id', true);
    t           uuid;
    n           bigint;
    uncovered   bigint;
    archive     audit_archives;
    dropped     bigint := 0;
BEGIN
    IF part !~ '^audit_logs_[0-9]{4}_[0-9]{2}$' OR to_regclass(part) IS NULL THEN
        RAISE EXCEPTION 'no audit partition %', part;
    END IF;
    IF retention_days < greatest(configured, 365) THEN
        RAISE EXCEPTION 'retention below the configured % days is refused', configured;
    END IF;
    upper_bound := (to_date(substr(part, 12), 'YYYY_MM') + interval '1 month')::timestamp AT TIME ZONE 'UTC';
    IF upper_bound > now() - make_interval(days => retention_days) THEN
        RAISE EXCEPTION 'partition % still holds rows inside retention', part;
    END IF;
    EXECUTE format('ALTER TABLE audit_logs DETACH PARTITION %I', part);
    FOR t IN SELECT id FROM tenants LOOP
        PERFORM set_config('app.tenant_id', t::text, true);
        EXECUTE format('SELECT count(*) FROM %I WHERE tenant_id = $1', part) INTO n USING t;
        CONTINUE WHEN n = 0;
        SELECT * INTO archive FROM audit_archives a
         WHERE a.tenant_id = t AND a.partition = part AND a.released_at IS NOT NULL;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'partition % has rows of tenant % without a released archive', part, t;
        END IF;
        IF EXISTS (SELECT 1 FROM audit_chain c WHERE c.tenant_id = t AND c.legal_hold) THEN
            RAISE EXCEPTION 'partition % holds rows of tenant % under legal hold', part, t;
        END IF;
        EXECUTE format(
            'SELECT count(*) FROM %I p WHERE p.tenant_id = $1 AND NOT EXISTS ('
            'SELECT 1 FROM audit_seals s WHERE s.tenant_id = $1 AND s.log_id = p.id AND s.seq <= $2)', part)
            INTO uncovered USING t, archive.last_seq;
        IF uncovered > 0 THEN
            RAISE EXCEPTION 'partition % has % rows of tenant % that its archive does not cover', part, uncovered, t;
        END IF;
        EXECUTE format('DELETE FROM audit_seals s USING %I p WHERE s.tenant_id = $1 AND p.tenant_id = $1 '
                       'AND s.log_id = p.id', part) USING t;
        INSERT INTO audit_logs (tenant_id, action, result, details)
        VALUES (t, 'audit.purge', 'success', jsonb_build_object(
            'partition', part, 'rows', n, 'retentionDays', retention_days, 'archive', archive.object_key,
            'archiveSha256', encode(archive.sha256, 'hex'), 'lastSeq', archive.last_seq));
        dropped := dropped + n;
    END LOOP;
    PERFORM set_config('app.tenant_id', coalesce(previous, ''), true);
    EXECUTE format('DROP TABLE %I', part);
    RETURN dropped;
END
$$;
REVOKE ALL ON FUNCTION audit_drop_partition(text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit_drop_partition(text, integer) TO fortifile_app;

-- The purge and the legal hold are dual-control operations.
ALTER TABLE approval_policies DROP CONSTRAINT approval_policies_operation_check;
ALTER TABLE approval_policies ADD CONSTRAINT approval_policies_operation_check CHECK (operation IN (
    'role.assign_privileged', 'role.widen', 'user.clearance_raise', 'file.declassify',
    'audit.export', 'user.delete', 'mfa.reset', 'policy.change', 'audit.purge', 'audit.legal_hold'));
