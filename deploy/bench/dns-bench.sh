#!/usr/bin/env bash
# dns-bench.sh: mxport's dns role against Knot and NSD, same data, one run, on loopback.
#
# Uses the shared harness (../shared/bench: data generator, peers, dnsperf rounds with
# rotation, per-process server CPU). mxport gets the same 1,000 generated zones, imported
# through `mxport zone import`; every odd zone's MX is made a forwarded one (":2525"), so
# mxport answers it with --mx-hosts, as in production. RRL is off on every server (NSD's
# too), as the harness requires.
#
# Usage (from the repo root):  flock /tmp/mxbench.lock deploy/bench/dns-bench.sh
# (the lock keeps load runs of everyone sharing the machine from overlapping)
# Env: SHARED_BENCH (../shared/bench), MXPORT_DNS_PORT (5353), REDIS_PORT (6391),
#      and the harness's own knobs (ROUNDS, MODES, DURATION, MAX_QPS, ZONES, ...).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
SHARED_BENCH=${SHARED_BENCH:-$root/../shared/bench}
source "$SHARED_BENCH/lib.sh"
need dnsperf nsd knotd redis-server redis-cli
export PATH=$PATH:/usr/local/go/bin
MXPORT_DNS_PORT=${MXPORT_DNS_PORT:-5353}
REDIS_PORT=${REDIS_PORT:-6391}
work=$BENCH_DIR/mxport
mkdir -p "$work"

"$SHARED_BENCH/dns-gen-data.sh"
data=$BENCH_DIR/dns/data

go build -o "$work/mxport" ./cmd/mxport

# A private Redis, no persistence: it only feeds the snapshot.
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
	--dir "$work" --pidfile "$work/redis.pid" --logfile "$work/redis.log"
cleanup() {
	[ -n "${mx_pid:-}" ] && kill "$mx_pid" 2>/dev/null || true
	redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
	"$SHARED_BENCH/dns-peers.sh" stop >/dev/null 2>&1 || true
}
trap cleanup EXIT
for _ in $(seq 100); do redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
export MXPORT_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0 MXPORT_MX_HOSTS=mx1.fwd.test,mx2.fwd.test
redis-cli -p "$REDIS_PORT" flushall >/dev/null

log "importing $(wc -l <"$data/zones.list") zones into mxport"
mkdir -p "$work/zones"
n=0
while read -r z; do
	n=$((n + 1))
	f=$data/zones/$z.zone
	if [ $((n % 2)) = 1 ]; then # forwarded: the customer's MX gets a port
		sed 's/^\(@\tIN MX .*\)$/\1 ; mxport:port=2525/' "$f" >"$work/zones/$z.zone"
		f=$work/zones/$z.zone
	fi
	"$work/mxport" zone import "$f" >/dev/null
done <"$data/zones.list"

"$work/mxport" serve --dns "127.0.0.1:$MXPORT_DNS_PORT" --smtp "" --http "" --rrl-rate 0 \
	>"$work/serve.log" 2>&1 &
mx_pid=$!
wait_port udp 127.0.0.1 "$MXPORT_DNS_PORT" 30 || die "mxport did not listen (see $work/serve.log)"
for _ in $(seq 300); do grep -q 'store loaded' "$work/serve.log" && break; sleep 0.1; done

"$SHARED_BENCH/dns-peers.sh" start nsd knot
"$SHARED_BENCH/dns-check.sh" knot=127.0.0.1:5402 nsd=127.0.0.1:5401 mxport=127.0.0.1:"$MXPORT_DNS_PORT" || true
"$SHARED_BENCH/dns-compare.sh" knot=127.0.0.1:5402 nsd=127.0.0.1:5401 mxport=127.0.0.1:"$MXPORT_DNS_PORT"
