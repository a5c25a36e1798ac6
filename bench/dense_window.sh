#!/usr/bin/env bash
# Benchmark: the highlights when one user's events are packed into one window,
# which is what an attacker does to make the dashboard hang exactly when it is
# needed (issue 10, item 5). Inserts N file.download rows (default 50,000) by
# one user within 10 minutes, then times the highlights and the dashboard page
# (median of 7, release build, embedded PostgreSQL). Target: under 1 s each.
# Before the rules were made linear, 45,000 such rows took 24-25 s.
#
#   bash bench/dense_window.sh             # N=100000 for a denser attack
set -euo pipefail
cd "$(dirname "$0")/.."
n=${N:-50000}
. bench/lib.sh
start_server 18495
hoarder=$(sql -c "INSERT INTO users (tenant_id, username, email, password_hash, department_id, clearance_level_id) \
    SELECT tenant_id, 'hoarder', 'hoarder@example.org', 'x', department_id, clearance_level_id FROM users \
    WHERE username = 'bench' RETURNING id")
sql -v tenant="$tenant" -v who="$hoarder" -v n="$n" <<'SQL'
INSERT INTO audit_logs (created_at, tenant_id, user_id, action, target_type, target_id, result, details)
SELECT now() - interval '1 hour' + g * (interval '9 minutes' / :n), :'tenant', :'who', 'file.download', 'file',
       gen_random_uuid()::text, 'success', '{"name": "x"}'::jsonb
FROM generate_series(1, :n) g;
VACUUM (ANALYZE) audit_logs;
SQL
highlights=$(median "/api/audit-logs/highlights")
count=$(python3 -c "import json; print([h['count'] for h in json.load(open('$work/out'))['highlights'] if h['kind'] == 'bulk_downloads'])")
report "GET /api/audit-logs/highlights, $n downloads by one user in one window" "$highlights"
report "GET /admin/logs (24 hours: highlights, chart, first page)" "$(median "/admin/logs")"
echo "bulk_downloads highlight counts: $count"
python3 -c "print('target (under 1 s):', 'met' if float('$highlights') < 1000 else 'missed')"
