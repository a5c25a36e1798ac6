#!/usr/bin/env bash
# Benchmark: the security dashboard at millions of audit rows (release build,
# embedded PostgreSQL). Fills ROWS rows over 50 days (default 3,000,000: 200
# users, 5 % failed logins, 40 % downloads) plus one attack of 20,000 failed
# logins from one address in two hours, then times the log API's pages and
# filters, the highlights (24 hours and 50 days) and the dashboard page: the
# median of 7 requests each. Baseline: pgbench running the first page's SQL
# directly, as the serving role under row-level security, on the same cluster;
# the ratio is what our HTTP stack adds (session, permission, tenant transaction,
# per-request planning, JSON). The rows are vacuumed first, so autovacuum does not
# run during the timings. Loopback only.
#
#   bash bench/audit_dashboard.sh             # ROWS=500000 for a quicker run
set -euo pipefail
cd "$(dirname "$0")/.."
command -v pgbench >/dev/null || { echo "bench: needs pgbench (apt-get install postgresql-client)"; exit 2; }
rows=${ROWS:-3000000}
. bench/lib.sh
start_server 18490

echo "filling $rows audit rows (and a 20,000-failure attack)…"
started=$(date +%s)
sql -v tenant="$tenant" -v admin="$admin" -v rows="$rows" <<'SQL'
CREATE TEMP TABLE u AS SELECT gen_random_uuid() AS id, g AS n FROM generate_series(0, 199) g;
INSERT INTO audit_logs (created_at, tenant_id, user_id, action, target_type, target_id, ip, user_agent, result, details)
SELECT now() - random() * interval '50 days', :'tenant',
       CASE WHEN r < 0.01 THEN :'admin'::uuid ELSE (SELECT id FROM u WHERE n = g % 200) END,
       CASE WHEN r < 0.05 THEN 'auth.login' WHEN r < 0.055 THEN 'mac.denied' WHEN r < 0.065 THEN 'rbac.denied'
            WHEN r < 0.45 THEN 'file.download' WHEN r < 0.6 THEN 'file.upload' ELSE 'auth.login' END,
       'file', gen_random_uuid()::text, ('10.' || (g % 250) || '.' || ((g / 250) % 250) || '.1')::inet,
       'Mozilla/5.0 (X11; Linux x86_64) Chrome/156', CASE WHEN r < 0.065 THEN 'fail' ELSE 'success' END,
       jsonb_build_object('username', 'user' || (g % 200))
FROM (SELECT g, random() AS r FROM generate_series(1, :rows) g) s;
INSERT INTO audit_logs (created_at, tenant_id, action, ip, user_agent, result, details)
SELECT now() - interval '6 hours' + g * interval '360 milliseconds', :'tenant', 'auth.login', '203.0.113.9',
       'curl/8', 'fail', jsonb_build_object('username', CASE WHEN g % 2 = 0 THEN 'victim' ELSE 'user' || (g % 500) END)
FROM generate_series(1, 20000) g;
VACUUM (ANALYZE) audit_logs;
SQL
echo "filled in $(( $(date +%s) - started ))s"

first=$(median "/api/audit-logs")
report "GET /api/audit-logs (first page of 100)" "$first"
cursor=$(python3 -c "import json; print(json.load(open('$work/out'))['nextCursor'])")
for _ in $(seq 1 50); do
    cursor=$(curl -s -b "$work/jar" "$base/api/audit-logs?after=$cursor" | python3 -c "import json,sys; print(json.load(sys.stdin)['nextCursor'])")
done
report "  page 51 (keyset cursor)" "$(median "/api/audit-logs?after=$cursor")"
for query in "action=auth.login&result=fail" "action=mac.denied" "username=victim" "username=nobody-at-all" \
             "user=bench" "user=bench&action=mac.denied" "ip=203.0.113.9"; do
    report "  ?$query" "$(median "/api/audit-logs?$query")"
done
today=$(date -u +%Y-%m-%d); then=$(date -u -d '50 days ago' +%Y-%m-%d)
report "GET /api/audit-logs/highlights (last 24 hours)" "$(median "/api/audit-logs/highlights")"
report "GET /api/audit-logs/highlights (50 days)" \
    "$(median "/api/audit-logs/highlights?from=${then}T00:00:00Z&to=${today}T23:59:59Z")"
report "GET /admin/logs (24 hours: highlights, chart, first page)" "$(median "/admin/logs")"
report "GET /admin/logs (50 days)" "$(median "/admin/logs?from=$then&to=$today")"

# Baseline: the first page's query, straight to PostgreSQL as the serving role.
cat > "$work/page.sql" <<SQL
BEGIN;
SELECT set_config('app.tenant_id', '$tenant', true);
SET LOCAL ROLE fortifile_app;
SELECT a.id, a.created_at, a.user_id, u.username, a.action, a.target_type, a.target_id, host(a.ip), a.user_agent,
       a.result, a.details FROM audit_logs a LEFT JOIN users u ON u.id = a.user_id
ORDER BY a.created_at DESC, a.id DESC LIMIT 101;
COMMIT;
SQL
latency=$(pgbench -h "$socket" -p "$pgport" -U "$superuser" -n -c 1 -T 10 -f "$work/page.sql" fortifile 2>/dev/null \
    | awk '/latency average/ {print $4}')
report "baseline: pgbench, the first page's SQL alone (average)" "$latency"
python3 -c "print(f'first page / pgbench ratio: {float(\"$first\") / float(\"$latency\"):.2f}')"
