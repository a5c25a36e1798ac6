#!/usr/bin/env bash
# Benchmark: 1 GiB upload and download through FortiFile (release build, embedded
# PostgreSQL, local storage, encryption on) against nginx serving the same file
# from disk on the same machine. Prints seconds, the nginx ratio, and the server's
# peak RSS growth for each direction. Loopback only; bounded (3 runs each).
#
#   bash bench/file_transfer.sh            # needs nginx (apt-get install nginx-light)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v nginx >/dev/null || { echo "bench: needs nginx (apt-get install nginx-light)"; exit 2; }
cargo build --release --quiet
work=$(mktemp -d /tmp/fortifile-bench-XXXXXX); chmod 755 "$work"
port=18480; nport=18481; base="http://127.0.0.1:$port"
pw='violet staple orbit lantern'
export FORTIFILE_DATA_DIR="$work/data" FORTIFILE_BIND="127.0.0.1:$port" FORTIFILE_MAX_UPLOAD_BYTES=2147483648
cleanup() {
    [ -n "${server:-}" ] && kill -TERM "$server" 2>/dev/null && wait "$server" 2>/dev/null || true
    nginx -c "$work/nginx.conf" -s stop 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

head -c 1073741824 /dev/urandom > "$work/big.bin"
./target/release/fortifile serve > "$work/serve.log" 2>&1 & server=$!
for _ in $(seq 1 120); do curl -sf "$base/readyz" >/dev/null && break; sleep 0.5; done
FORTIFILE_ADMIN_PASSWORD="$pw" ./target/release/fortifile create-admin --username bench --email bench@example.org >/dev/null
csrf=$(curl -s -c "$work/jar" -H 'content-type: application/json' \
    -d "{\"username\":\"bench\",\"password\":\"$pw\"}" "$base/auth/login" | sed 's/.*"csrfToken":"\([^"]*\)".*/\1/')
rss() { grep "$1" /proc/$server/status | awk '{print $2}'; }

echo 5 > /proc/$server/clear_refs; before=$(rss VmRSS)
up=$(curl -s -b "$work/jar" -H "x-csrf-token: $csrf" -F file=@"$work/big.bin" "$base/api/files" \
    -o "$work/up.json" -w '%{time_total}')
up_growth=$(( ($(rss VmHWM) - before) / 1024 ))
id=$(sed 's/.*"id":"\([^"]*\)".*/\1/' "$work/up.json")

echo 5 > /proc/$server/clear_refs; before=$(rss VmRSS)
best_ff=999
for _ in 1 2 3; do
    t=$(curl -s -b "$work/jar" -o /dev/null -w '%{time_total}' "$base/api/files/$id/download")
    best_ff=$(python3 -c "print(min($best_ff, $t))")
done
down_growth=$(( ($(rss VmHWM) - before) / 1024 ))

cat > "$work/nginx.conf" <<CONF
worker_processes 1; daemon on; pid $work/nginx.pid; error_log $work/nginx.err;
events { worker_connections 64; }
http { access_log off; sendfile off; server { listen 127.0.0.1:$nport; root $work; } }
CONF
nginx -c "$work/nginx.conf"; sleep 0.3
best_ng=999
for _ in 1 2 3; do
    t=$(curl -s -o /dev/null -w '%{time_total}' "http://127.0.0.1:$nport/big.bin")
    best_ng=$(python3 -c "print(min($best_ng, $t))")
done

echo "upload 1 GiB:   ${up}s, server peak RSS +${up_growth} MiB"
echo "download 1 GiB: ${best_ff}s (best of 3), server peak RSS +${down_growth} MiB"
echo "nginx 1 GiB:    ${best_ng}s (best of 3, sendfile off)"
python3 -c "print(f'download / nginx ratio: {$best_ff / $best_ng:.2f}')"
