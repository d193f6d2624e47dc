#!/usr/bin/env bash
# http-bench.sh: wrk against the http role's hot endpoints, on loopback.
#
#   GET /api/v1/zones/{zone}   (bearer token; a zone of 20 records)
#   GET /nic/update            (dyndns2, basic auth; alternating addresses, so every
#                               request is a real update: good, never nochg)
#
# wrk runs closed-loop with CONNECTIONS connections for DURATION; the figures are its
# requests/s and latency percentiles (--latency). The API rate limit is off (--http-rate 0)
# and the dyndns one raised, or wrk would only measure 429s and "abuse".
# Usage (repo root): deploy/bench/http-bench.sh     Env: DURATION (20s), CONNECTIONS (20),
#   THREADS (1), HTTP_PORT (8091), REDIS_PORT (6393)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
export PATH=$PATH:/usr/local/go/bin:/usr/sbin
DURATION=${DURATION:-20s}
CONNECTIONS=${CONNECTIONS:-20}
THREADS=${THREADS:-1}
HTTP_PORT=${HTTP_PORT:-8091}
REDIS_PORT=${REDIS_PORT:-6393}
work=${BENCH_DIR:-/tmp/mxbench}/http
mkdir -p "$work"
for c in wrk redis-server redis-cli go; do
	command -v "$c" >/dev/null || { echo "http-bench: missing $c (apt-get install wrk redis-server)" >&2; exit 1; }
done

go build -o "$work/mxport" ./cmd/mxport
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
	--dir "$work" --pidfile "$work/redis.pid" --logfile "$work/redis.log"
cleanup() {
	[ -n "${mx_pid:-}" ] && kill "$mx_pid" 2>/dev/null || true
	redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
}
trap cleanup EXIT
for _ in $(seq 100); do redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
redis-cli -p "$REDIS_PORT" flushall >/dev/null
export MXPORT_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0 MXPORT_MX_HOSTS=mx1.fwd.test,mx2.fwd.test MXPORT_NS=ns1.fwd.test

mx=$work/mxport
$mx zone create bench.test --account bench >/dev/null
$mx record add bench.test @ MX 3600 "10 home.bench.test:2525" >/dev/null
$mx record add bench.test home A 60 192.0.2.1 >/dev/null
for i in $(seq 17); do $mx record add bench.test "host$i" A 300 "192.0.2.$((i + 10))" >/dev/null; done
token=$($mx token create --role customer --account bench)

MXPORT_HTTP_RATE=0 MXPORT_DYNDNS_RATE=100000000 $mx serve --dns "" --smtp "" --http "127.0.0.1:$HTTP_PORT" >"$work/serve.log" 2>&1 &
mx_pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$HTTP_PORT/readyz" >/dev/null && break; sleep 0.1; done

cat >"$work/nic.lua" <<'EOF'
-- dyndns2 updates alternating between two addresses: each one changes the record.
local n = 0
request = function()
	n = n + 1
	return wrk.format("GET", "/nic/update?hostname=home.bench.test&myip=192.0.2." .. (1 + n % 2))
end
EOF

echo "== GET /api/v1/zones/bench.test"
wrk -t "$THREADS" -c "$CONNECTIONS" -d "$DURATION" --latency \
	-H "Authorization: Bearer $token" "http://127.0.0.1:$HTTP_PORT/api/v1/zones/bench.test"
echo "== GET /nic/update"
auth=$(printf 'x:%s' "$token" | base64 -w0)
wrk -t "$THREADS" -c "$CONNECTIONS" -d "$DURATION" --latency -s "$work/nic.lua" \
	-H "Authorization: Basic $auth" "http://127.0.0.1:$HTTP_PORT"
echo "== server: $(grep -c 'msg=http ' "$work/serve.log") requests logged"
