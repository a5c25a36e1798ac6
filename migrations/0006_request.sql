-- One round trip opens a request (issue 11): inside the request's transaction,
-- set the tenant for every later statement and look the session up with all
-- that authorization and the page header need: the user's status and profile,
-- department, clearance, the shortest session timeout of their current roles,
-- their current roles and every grant as 'permission:scope'.
--
-- SECURITY INVOKER (the default): it runs as the serving role, so row-level
-- security applies to every table it reads, with the tenant it has just set.
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
    grants         text[]
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
                  WHERE ur.user_id = u.id AND (ur.expires_at IS NULL OR ur.expires_at > p_now))
    FROM sessions s
    JOIN users u ON u.id = s.user_id
    JOIN departments d ON d.id = u.department_id
    JOIN clearance_levels c ON c.id = u.clearance_level_id
    WHERE s.token_hash = p_token_hash;
END
$$;
REVOKE ALL ON FUNCTION fortifile_open_request(uuid, bytea, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fortifile_open_request(uuid, bytea, timestamptz) TO fortifile_app;
