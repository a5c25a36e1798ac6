#!/usr/bin/env bash
# Benchmark: 1 GiB upload and download through FortiFile (release build, embedded
# PostgreSQL, local storage, encryption on, the object fsynced before the row
# commits) against, on the same machine and disk: `dd conv=fsync` writing the
# same bytes (the upload's floor: nothing can be acknowledged faster than it is
# durable) and nginx serving the file. Prints seconds, both ratios, and the
# server's peak RSS growth for each direction. Loopback only; bounded.
#
#   bash bench/file_transfer.sh            # needs nginx (apt-get install nginx-light)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v nginx >/dev/null || { echo "bench: needs nginx (apt-get install nginx-light)"; exit 2; }
export FORTIFILE_MAX_UPLOAD_BYTES=2147483648
. bench/lib.sh
nport=18481
head -c 1073741824 /dev/urandom > "$work/big.bin"
start_server 18480
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

# The upload's baseline: the same bytes written to the same disk and fsynced.
dd_secs=$(python3 - "$work" <<'PY'
import subprocess, sys, time
work = sys.argv[1]
started = time.monotonic()
subprocess.run(["dd", f"if={work}/big.bin", f"of={work}/data/dd.bin", "bs=1M", "conv=fsync", "status=none"], check=True)
print(f"{time.monotonic() - started:.3f}")
PY
)
rm -f "$work/data/dd.bin"

echo "upload 1 GiB:   ${up}s, server peak RSS +${up_growth} MiB"
echo "dd conv=fsync:  ${dd_secs}s (the same bytes to the same disk)"
python3 -c "print(f'upload / dd conv=fsync ratio: {$up / $dd_secs:.2f}')"
echo "download 1 GiB: ${best_ff}s (best of 3), server peak RSS +${down_growth} MiB"
echo "nginx 1 GiB:    ${best_ng}s (best of 3, sendfile off)"
python3 -c "print(f'download / nginx ratio: {$best_ff / $best_ng:.2f}')"
