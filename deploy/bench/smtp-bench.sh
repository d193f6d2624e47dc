#!/usr/bin/env bash
# smtp-bench.sh: mxport's smtp role (the MX forwarder) against Postfix, one run, on loopback.
#
# Uses the shared harness (../shared/bench: a private Postfix relay, one smtp-sink as the
# customer's "home server" for every run, smtp-source rounds with rotation, per-process
# server CPU). smtp-source sends to rcpt@zone0001.test; Postfix relays zone0001..1000.test
# to the sink through transport_maps. mxport gets the same 1,000 zones, imported with
# `mxport zone import` into a private Redis, each a forwarded zone:
#     @    MX 10 sink ; mxport:port=$SINK_PORT
#     sink A  127.0.0.1
# so mxport accepts the mail, fsyncs it to its spool, and relays it to 127.0.0.1:$SINK_PORT.
#
# Usage (from anywhere):  deploy/bench/smtp-bench.sh
# Env: SHARED_BENCH (../shared/bench), MXPORT_SMTP_PORT (2500), REDIS_PORT (6392),
#      SINK_PORT (2525), RELAY_PORT (2526, Postfix), ZONES (1000), REF (postfix), and the
#      harness's knobs (ROUNDS (here 2), SIZES, MESSAGES, MESSAGES_LARGE, SESSIONS, REUSE, BENCH_DIR).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
SHARED_BENCH=${SHARED_BENCH:-$root/../shared/bench}
export PATH=$PATH:/usr/local/go/bin:/usr/sbin
source "$SHARED_BENCH/lib.sh"
need go redis-server redis-cli smtp-source smtp-sink postfix postconf
MXPORT_SMTP_PORT=${MXPORT_SMTP_PORT:-2500}
REDIS_PORT=${REDIS_PORT:-6392}
ZONES=${ZONES:-1000}
export SINK_ADDR=${SINK_ADDR:-127.0.0.1} SINK_PORT=${SINK_PORT:-2525} RELAY_PORT=${RELAY_PORT:-2526}
export BENCH_DIR
export REF=${REF:-postfix} # ratios to Postfix, same round and size
# 2 rounds of the harness's default sizes and counts take about 10 minutes here (3 would take 15)
export ROUNDS=${ROUNDS:-2}
require_loopback "$SINK_ADDR"
work=$BENCH_DIR/mxport-smtp
spool=$BENCH_DIR/mxport-spool
mkdir -p "$work"

for p in "$MXPORT_SMTP_PORT" "$REDIS_PORT" "$SINK_PORT" "$RELAY_PORT"; do
	port_free 127.0.0.1 "$p" || die "port $p is taken"
done

log "building mxport"
go build -o "$work/mxport" ./cmd/mxport

mx_pid= redis_started= postfix_started=
cleanup() {
	set +e
	if [ -n "$mx_pid" ]; then
		kill "$mx_pid" 2>/dev/null
		for _ in $(seq 150); do kill -0 "$mx_pid" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$mx_pid" 2>/dev/null
	fi
	[ -n "$postfix_started" ] && "$SHARED_BENCH/smtp-postfix.sh" stop >/dev/null 2>&1
	[ -n "$redis_started" ] && redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1
	return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A private Redis, no persistence: it holds the zones, the queue mirror and the delivery log.
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
	--dir "$work" --pidfile "$work/redis.pid" --logfile "$work/redis.log"
redis_started=1
for _ in $(seq 100); do redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
export MXPORT_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0 MXPORT_MX_HOSTS=mx1.fwd.test
redis-cli -p "$REDIS_PORT" flushall >/dev/null

# The harness's relay_domains, every one forwarded to the sink.
log "importing $ZONES forwarded zones (MX sink:$SINK_PORT, sink A $SINK_ADDR)"
rm -rf "$work/zones"
mkdir -p "$work/zones"
for i in $(seq 1 "$ZONES"); do
	z=$(printf 'zone%04d.test' "$i")
	cat >"$work/zones/$z.zone" <<-EOF
		\$ORIGIN $z.
		\$TTL 300
		@	IN	SOA	mx1.fwd.test. hostmaster.$z. 1 3600 900 1209600 300
		@	IN	NS	mx1.fwd.test.
		@	IN	MX	10 sink ; mxport:port=$SINK_PORT
		sink	IN	A	$SINK_ADDR
	EOF
done
# 4 importers in parallel (one process per zone file)
find "$work/zones" -name '*.zone' -print0 |
	xargs -0 -P 4 -n 1 "$work/mxport" zone import >"$work/import.log"
n=$(grep -c ' imported: ' "$work/import.log" || true)
[ "$n" = "$ZONES" ] || die "imported $n of $ZONES zones (see $work/import.log)"

# mxport serve, smtp role only; a fresh spool each run.
rm -rf "$spool"
"$work/mxport" serve --dns "" --http "" --smtp "127.0.0.1:$MXPORT_SMTP_PORT" --spool "$spool" \
	--hostname mx1.fwd.test --mx-hosts mx1.fwd.test --retry-schedule 1s >"$work/serve.log" 2>&1 &
mx_pid=$!
for _ in $(seq 300); do
	grep -q 'smtp listening' "$work/serve.log" && break
	kill -0 "$mx_pid" 2>/dev/null || die "mxport exited (see $work/serve.log)"
	sleep 0.1
done
grep -q 'smtp listening' "$work/serve.log" || die "mxport did not listen (see $work/serve.log)"
# the route index must hold the zones before mail arrives (else 451)
for _ in $(seq 300); do grep -q 'store loaded' "$work/serve.log" && break; sleep 0.1; done

postfix_started=1
"$SHARED_BENCH/smtp-postfix.sh" start
log "postfix mail_version $(postconf -d -h mail_version), $(redis-server --version | cut -d" " -f1-3), $(go version | cut -d" " -f3)"

# The harness starts the one sink and runs ROUNDS x SIZES x targets.
"$SHARED_BENCH/smtp-compare.sh" direct=SINK postfix=127.0.0.1:"$RELAY_PORT" mxport=127.0.0.1:"$MXPORT_SMTP_PORT"

# Anything mxport still holds, and what it logged at warning level or above.
left=$(find "$spool/meta" -type f 2>/dev/null | wc -l)
log "mxport spool: $left messages left in meta/"
log "mxport log: $(grep -c 'level=WARN' "$work/serve.log" || true) warnings, $(grep -c 'level=ERROR' "$work/serve.log" || true) errors ($work/serve.log)"
grep -E 'level=(WARN|ERROR)' "$work/serve.log" | sed 's/ id=[^ ]*//' | cut -c1-200 | sort | uniq -c | sort -rn | head -10 >&2 || true
