#!/usr/bin/env bash
# Issue 16 "Done when", by hand, on the release binary: run from the checkout
# after `cargo build --release` (needs rsyslog, psql and curl). Prints each step.
set -uo pipefail
BIN=$PWD/target/release/fortifile
W=/tmp/dw16/work; rm -rf $W; mkdir -p $W/rsyslog; cd $W
PORT=18790; SYS=18791
cat > rsyslog/rsyslog.conf <<CONF
global(workDirectory="$W/rsyslog")
module(load="imtcp")
input(type="imtcp" port="$SYS" address="127.0.0.1")
template(name="sd" type="string" string="%msgid% %structured-data%\n")
action(type="omfile" file="$W/rsyslog/received.log" template="sd")
CONF
start_rsyslog() { /usr/sbin/rsyslogd -n -f rsyslog/rsyslog.conf -i $W/rsyslog/pid & RS=$!; sleep 1; }
export FORTIFILE_DATA_DIR=$W/data FORTIFILE_BIND=127.0.0.1:$PORT RUST_LOG=warn FORTIFILE_AUDIT_SYSLOG=tcp://127.0.0.1:$SYS
start_serve() { $BIN serve 2>>serve.log & FF=$!; for i in $(seq 100); do curl -sf http://127.0.0.1:$PORT/readyz >/dev/null && return; sleep 0.3; done; echo "serve did not start"; exit 1; }
start_rsyslog
start_serve
FORTIFILE_ADMIN_PASSWORD='violet staple orbit lantern' $BIN create-admin --username root --email root@example.org >/dev/null
curl -s -c jar -H 'content-type: application/json' -d '{"username":"root","password":"violet staple orbit lantern"}' http://127.0.0.1:$PORT/auth/login > login.json
CSRF=$(python3 -c 'import json;print(json.load(open("login.json"))["csrfToken"])')
traffic() { for i in $(seq $1); do curl -s -b jar -H "x-csrf-token: $CSRF" -H 'content-type: application/json' -d "{\"title\":\"incident $i\",\"severity\":\"low\"}" http://127.0.0.1:$PORT/admin/incidents >/dev/null; done; }
traffic 30
sleep 2
echo "== 1. verify after traffic"; $BIN audit verify; echo "exit $?"
PG="psql -h $W/data/postgres -p $(sed -n 4p $W/data/postgres/data/postmaster.pid) -U postgres -d fortifile -Atq"
TENANT=$($PG -c "SELECT id FROM tenants WHERE slug='default'")
echo "== 2. rsyslog stopped, traffic, started again"
kill -TERM $RS; wait $RS 2>/dev/null
traffic 20; sleep 1; start_rsyslog; traffic 10; sleep 4
HEAD=$($PG -c "SELECT set_config('app.tenant_id','$TENANT',false)" -c "SELECT seq FROM audit_chain")
python3 - "$W/rsyslog/received.log" "$HEAD" <<'PY'
import re,sys
seqs=[int(m) for m in re.findall(r'seq="(\d+)"', open(sys.argv[1]).read())]
head=int(sys.argv[2].split()[-1]); first=[]; seen=set()
for s in seqs:
    if s not in seen: seen.add(s); first.append(s)
print(f"received {len(seqs)} lines, {len(seen)} distinct of {head} sealed; missing {sorted(set(range(1,head+1))-seen)}; in order: {first==sorted(first)}")
PY
echo "== 3. checkpoint kept outside, newest 5 rows deleted with their seals"
curl -s -b jar http://127.0.0.1:$PORT/api/audit-logs/checkpoints > checkpoints.json
kill -TERM $FF; wait $FF   # shutdown signs a checkpoint
curl -s -b jar http://127.0.0.1:$PORT/ >/dev/null 2>&1
start_serve
curl -s -b jar http://127.0.0.1:$PORT/api/audit-logs/checkpoints > checkpoints.json
python3 -c 'import json;c=json.load(open("checkpoints.json"))["checkpoints"];print("checkpoints kept:", [(x["seq"]) for x in c])'
$PG <<SQL
SELECT set_config('app.tenant_id', '$TENANT', false);
ALTER TABLE audit_logs DISABLE TRIGGER audit_logs_append_only;
WITH gone AS (DELETE FROM audit_seals WHERE seq > (SELECT seq - 5 FROM audit_chain) RETURNING log_id)
  DELETE FROM audit_logs WHERE id IN (SELECT log_id FROM gone);
UPDATE audit_chain c SET seq = c.seq - 5, hash = (SELECT hash FROM audit_seals s WHERE s.seq = c.seq - 5);
DELETE FROM audit_checkpoints;
SQL
echo "-- without a checkpoint:"; $BIN audit verify; echo "exit $?"
echo "-- with the one kept outside:"; $BIN audit verify --checkpoint checkpoints.json; echo "exit $?"
echo "== 4. a superuser edits one row"
ROW=$($PG -c "SELECT set_config('app.tenant_id','$TENANT',false)" -c "SELECT log_id FROM audit_seals WHERE seq = 10" | tail -1)
$PG -c "SELECT set_config('app.tenant_id','$TENANT',false)" -c "UPDATE audit_logs SET details = details || '{\"edited\": true}' WHERE id = '$ROW'" >/dev/null
echo "edited row $ROW"; $BIN audit verify; echo "exit $?"
$PG -c "SELECT set_config('app.tenant_id','$TENANT',false)" -c "UPDATE audit_logs SET details = details - 'edited' WHERE id = '$ROW'" >/dev/null
echo "== 5. an expired partition: archived, verified, dropped"
$PG <<SQL
CREATE TABLE audit_logs_2015_01 PARTITION OF audit_logs FOR VALUES FROM ('2015-01-01 00:00:00+00') TO ('2015-02-01 00:00:00+00');
SELECT set_config('app.tenant_id', '$TENANT', false);
INSERT INTO audit_logs (tenant_id, created_at, action, result, details)
  SELECT '$TENANT', '2015-01-10'::timestamptz + make_interval(mins => i), 'file.download', 'success', jsonb_build_object('i', i)
  FROM generate_series(1, 40) i;
SQL
echo "(sealed within a second; retention runs at start and every 5 minutes: restart)"
sleep 3; kill -TERM $FF; wait $FF
start_serve; sleep 3
$BIN audit archive --list
KEY=$($BIN audit archive --list | awk -F'\t' 'NR==1{print $3}')
[ -n "$KEY" ] && $BIN audit verify --archive "$KEY"; echo "exit $?"
echo "partition still there: $($PG -c "SELECT to_regclass('audit_logs_2015_01') IS NOT NULL")"
$BIN audit verify; echo "exit $?"
kill -TERM $FF; wait $FF; kill -TERM $RS
