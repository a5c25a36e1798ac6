#!/usr/bin/env bash
# The stale-permit burst of issue 11, by hand with curl against the release
# binary: administrator B fires 30 role assignments (`admin` for 30 users who
# have no role of note) while administrator A revokes B's `admin`. Before the
# request spine, some of B's assignments committed after the revocation (the
# guard's decision was made in one transaction and acted on in another).
#
# Which commit came first is read from PostgreSQL itself: the cluster runs with
# track_commit_timestamp, and each row's creating transaction (xmin) has its
# commit time. An assignment row whose transaction committed after the one
# that wrote A's `role.revoke` audit row is a stale permit acted on.
#
# Refusals show where each was decided: `permission_revoked` where the
# assignment acts (it was admitted, then waited on the administration lock
# while the revocation held it), or by the guard (it arrived after).
#
#     bench/stale_permit.sh [ROUNDS]     # default 5 rounds of 30
# Exit status 1 when any assignment committed after its round's revocation.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
rounds=${1:-5}
port=18630

start_server "$port"
# Commit timestamps need a restart of the cluster: stop the server (it stops
# its embedded cluster), set it, and serve again.
sql -c "ALTER SYSTEM SET track_commit_timestamp = on"
kill -TERM "$server"; wait "$server" || true
./target/release/fortifile serve >> "$work/serve.log" 2>&1 & server=$!
for _ in $(seq 1 120); do curl -sf "$base/readyz" >/dev/null && break; sleep 0.5; done
socket=$(sed -n 5p "$FORTIFILE_DATA_DIR/postgres/data/postmaster.pid")
pgport=$(sed -n 4p "$FORTIFILE_DATA_DIR/postgres/data/postmaster.pid")
[ "$(sql -c 'SHOW track_commit_timestamp')" = on ]

# sign_in NAME: a cookie jar $work/NAME.jar; prints the CSRF token.
sign_in() {
    curl -s -c "$work/$1.jar" -H 'content-type: application/json' \
        -d "{\"username\":\"$1\",\"password\":\"$pw\"}" "$base/auth/login" |
        sed 's/.*"csrfToken":"\([^"]*\)".*/\1/'
}
# as NAME CSRF METHOD PATH [BODY]: prints the status code.
as() {
    curl -s -o /dev/null -w '%{http_code}' -b "$work/$1.jar" -H "x-csrf-token: $2" \
        -H 'content-type: application/json' -X "$3" ${5:+-d "$5"} "$base$4"
}

csrf_a=$(sign_in bench)
FORTIFILE_ADMIN_PASSWORD="$pw" ./target/release/fortifile create-admin --username adminb \
    --email adminb@example.org >>"$work/admin.log" 2>&1
b_id=$(sql -c "SELECT id FROM users WHERE username = 'adminb'")
held=$(sql -c "SELECT coalesce((SELECT enabled FROM approval_policies WHERE tenant_id = '$tenant' AND operation = 'role.assign_privileged'), false)")
[ "$held" = f ] || { echo "dual control holds privileged assignments here: the burst would only queue approvals"; exit 2; }

stale_total=0
for round in $(seq 1 "$rounds"); do
    targets=()
    for i in $(seq 1 30); do
        name="r${round}t$i"
        code=$(as bench "$csrf_a" POST /api/users "{\"username\":\"$name\",\"email\":\"$name@example.org\",\"password\":\"$pw\",\"role\":\"student\",\"department\":\"General\",\"clearanceLevel\":\"public\"}")
        [ "$code" = 201 ] || [ "$code" = 200 ] || { echo "creating $name answered $code"; exit 2; }
        targets+=("$(sql -c "SELECT id FROM users WHERE username = '$name'")")
    done
    # B is an administrator again for this round (A gives the role back).
    if [ "$round" != 1 ]; then
        code=$(as bench "$csrf_a" POST "/api/users/$b_id/roles" '{"role":"admin"}')
        [ "$code" = 201 ] || { echo "round $round: giving B admin again answered $code"; exit 2; }
    fi
    since=$(sql -c "SELECT clock_timestamp()")
    csrf_b=$(sign_in adminb)
    : > "$work/codes"
    n=0
    for t in "${targets[@]}"; do
        (code=$(as adminb "$csrf_b" POST "/api/users/$t/roles" '{"role":"admin"}'); echo "$code" >> "$work/codes") &
        n=$((n + 1))
        # A revokes while B's burst is in flight: after a third of it has left.
        [ "$n" = 10 ] && (as bench "$csrf_a" DELETE "/api/users/$b_id/roles/admin" > "$work/revoke") &
    done
    wait $(jobs -p | grep -v "^$server\$") 2>/dev/null || true
    revoke=$(cat "$work/revoke")
    [ "$revoke" = 204 ] || { echo "round $round: the revocation answered $revoke"; exit 2; }
    list=$(printf "'%s'," "${targets[@]}"); list="(${list%,})"
    read -r revoked granted stale < <(sql -F ' ' -c "
        WITH revoked AS (
            SELECT max(pg_xact_commit_timestamp(xmin)) AS at FROM audit_logs
             WHERE action = 'role.revoke' AND result = 'success' AND target_id = '$b_id')
        SELECT (SELECT at FROM revoked) IS NOT NULL, count(*), count(*) FILTER (WHERE pg_xact_commit_timestamp(ur.xmin) > (SELECT at FROM revoked))
          FROM user_roles ur JOIN roles r ON r.id = ur.role_id
         WHERE r.name = 'admin' AND ur.user_id IN $list")
    [ "$revoked" = t ] || { echo "round $round: no commit time for the revocation"; exit 2; }
    codes=$(sort "$work/codes" | uniq -c | awk '{printf "%s×%s ", $1, $2}')
    reasons=$(sql -c "SELECT string_agg(n || '×' || reason, ', ') FROM (SELECT coalesce(details->>'reason', 'by the guard') AS reason, count(*) AS n
        FROM audit_logs WHERE action = 'rbac.denied' AND user_id = '$b_id' AND created_at >= '$since' GROUP BY 1) r")
    echo "round $round: revoke answered $revoke; B's 30 assignments answered ${codes}(refusals: ${reasons:-none});" \
        "committed $granted, after the revocation $stale"
    stale_total=$((stale_total + stale))
done
echo "assignments committed after their round's revocation: $stale_total"
[ "$stale_total" = 0 ]
