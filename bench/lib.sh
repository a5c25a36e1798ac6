# Shared by the bench/ scripts: a release server on its own embedded cluster
# under a scratch directory, signed in as an administrator, and timing helpers.
# Loopback only. Source it after `cd` to the checkout; call `start_server PORT`.

pw='violet staple orbit lantern'
cargo build --release --quiet
work=$(mktemp -d /tmp/fortifile-bench-XXXXXX); chmod 755 "$work"
export FORTIFILE_DATA_DIR="$work/data"
cleanup() {
    [ -n "${server:-}" ] && kill -TERM "$server" 2>/dev/null && wait "$server" 2>/dev/null || true
    [ -f "$work/nginx.conf" ] && nginx -c "$work/nginx.conf" -s stop 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# start_server PORT: serves on PORT, creates the administrator `bench`, signs in
# (cookie jar $work/jar, CSRF token $csrf) and finds the embedded cluster (sql).
start_server() {
    export FORTIFILE_BIND="127.0.0.1:$1"
    base="http://127.0.0.1:$1"
    ./target/release/fortifile serve > "$work/serve.log" 2>&1 & server=$!
    for _ in $(seq 1 120); do curl -sf "$base/readyz" >/dev/null && break; sleep 0.5; done
    FORTIFILE_ADMIN_PASSWORD="$pw" ./target/release/fortifile create-admin --username bench --email bench@example.org >"$work/admin.log" 2>&1
    csrf=$(curl -s -c "$work/jar" -H 'content-type: application/json' \
        -d "{\"username\":\"bench\",\"password\":\"$pw\"}" "$base/auth/login" | sed 's/.*"csrfToken":"\([^"]*\)".*/\1/')
    # The embedded cluster: socket directory and port from its pid file; its
    # superuser is the user it runs as (postgres when we are root).
    local pidfile="$FORTIFILE_DATA_DIR/postgres/data/postmaster.pid"
    socket=$(sed -n 5p "$pidfile"); pgport=$(sed -n 4p "$pidfile")
    superuser=$([ "$(id -u)" = 0 ] && echo postgres || id -un)
    tenant=$(sql -c "SELECT id FROM tenants WHERE slug = 'default'")
    admin=$(sql -c "SELECT id FROM users WHERE username = 'bench'")
}

sql() { psql -h "$socket" -p "$pgport" -U "$superuser" -d fortifile -v ON_ERROR_STOP=1 -Atq "$@"; }

# median PATH: the median of 7 GETs of PATH, in milliseconds (or "failed (CODE)").
median() {
    for _ in 1 2 3 4 5 6 7; do
        curl -s -m 300 -b "$work/jar" -o "$work/out" -w '%{http_code} %{time_total}\n' "$base$1"
    done | python3 -c '
import sys
runs = [line.split() for line in sys.stdin]
bad = [code for code, _ in runs if code != "200"]
times = sorted(float(t) for _, t in runs)
print(f"{times[3] * 1000:.1f}" if not bad else f"failed ({bad[0]})")'
}

report() { printf '%-72s %8s ms\n' "$1" "$2"; }
