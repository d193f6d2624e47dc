#!/usr/bin/env bash
# smtp-latency.sh: mxport's smtp role, time from the 250 to arrival at the home server
# (issue 5: "p99 < 50 ms at half the peak rate, the target up"), on loopback.
#
# smtpload (deploy/bench/smtpload) is both the sender and the customer's home server: its
# sink listens on 127.0.0.1:$SINK_PORT, the MX port of the $ZONES forwarded zones imported
# into a private Redis (zone0001..zoneNNNN.test: @ MX 10 sink ; mxport:port=$SINK_PORT,
# sink A 127.0.0.1). mxport serve (smtp role only, fresh spool) relays to it. Per round:
#   1. peak: closed loop, $PEAK_SESSIONS sessions, $PEAK_MESSAGES messages of $SIZE bytes,
#      one per connection; delivered/s = messages / time until the sink saw the last one
#      (skipped when PEAK is set in the environment);
#   2. latency: open loop at PEAK/2 messages a second for $DURATION s (a new connection
#      every 1/rate s, at most $SESSIONS at once), each message with a unique id header;
#      smtpload prints p50/p90/p99/max of (sink's end of DATA - client's 250) and of the
#      250 latency (scheduled start to the 250 after DATA), and the messages lost; one line
#      per message goes to $BENCH_DIR/mxport-latency/latency.rN.csv.
# mxport is restarted (fresh spool) every round; Redis and the zones stay. This is a shared
# machine: during the latency phase the script samples the kernel's pressure stall counters
# (/proc/pressure/cpu and io, every 100 ms, to $BENCH_DIR/mxport-latency/psi.rN.txt) and
# reports the share of the time some task waited for a CPU (cpu_psi_%) or for I/O (io_psi_%).
#
# Usage (from anywhere):  deploy/bench/smtp-latency.sh
# Env: ROUNDS (2), SIZE (2048), PEAK (unset: measured per round), PEAK_MESSAGES (5000),
#      PEAK_SESSIONS (20), DURATION (20), SESSIONS (200), ZONES (10),
#      MXPORT_SMTP_PORT (2540), SINK_PORT (2541), REDIS_PORT (6396), BENCH_DIR, SHARED_BENCH.
set -euo pipefail
WORK_NAME=mxport-latency
source "$(dirname "$0")/mxport-lib.sh"
ROUNDS=${ROUNDS:-2}
SIZE=${SIZE:-2048}
PEAK_MESSAGES=${PEAK_MESSAGES:-5000}
PEAK_SESSIONS=${PEAK_SESSIONS:-20}
DURATION=${DURATION:-20}
SESSIONS=${SESSIONS:-200}
need timeout awk

mx_init
mx_redis_start
mx_import_zones
log "$(machine_facts); $(redis-server --version | cut -d' ' -f1-3), $(go version | cut -d' ' -f3), commit $commit"

# field NAME LINE: the value of NAME=... in a RESULT line
field() { tr ' ' '\n' <<<"$2" | sed -n "s/^$1=//p"; }
# psi_total RESOURCE: the "some" stall total (microseconds) from /proc/pressure, or 0
psi_total() { awk '$1 == "some" { sub("total=", "", $5); print $5 }' "/proc/pressure/$1" 2>/dev/null || echo 0; }

load=("$work/smtpload" -target "127.0.0.1:$MXPORT_SMTP_PORT" -sink "$SINK_ADDR:$SINK_PORT" -zones "$ZONES" -size "$SIZE")
csv=$work/results.csv
echo "round,commit,load1,cpu_psi_%,io_psi_%,peak_delivered_per_s,peak_accepted_per_s,rate,sent,failed,lost,lat250_p50_ms,lat250_p99_ms,lat250_max_ms,transit_p50_ms,transit_p90_ms,transit_p99_ms,transit_max_ms" >"$csv"
for r in $(seq 1 "$ROUNDS"); do
	logf=$work/serve.r$r.log
	mx_start "$logf"
	peak=${PEAK:-}
	peak_acc=NA
	if [ -z "$peak" ]; then
		log "round $r: peak, closed loop, $PEAK_SESSIONS sessions, $PEAK_MESSAGES x $SIZE bytes"
		out=$(timeout 600 "${load[@]}" -mode peak -sessions "$PEAK_SESSIONS" -n "$PEAK_MESSAGES" -drain 120s -timeout 540s)
		echo "$out" | grep -v '^RESULT' >&2
		res=$(grep '^RESULT' <<<"$out")
		peak=$(field delivered_per_s "$res")
		peak_acc=$(field accepted_per_s "$res")
		[ "$(field lost "$res")" = 0 ] && [ "$(field failed "$res")" = 0 ] || log "round $r: peak run lost or failed messages"
		sleep 2
	fi
	rate=$(awk -v p="$peak" 'BEGIN { printf "%.0f", p / 2 }')
	load1=$(cut -d' ' -f1 /proc/loadavg)
	log "round $r: latency, open loop at $rate/s (half of $peak) for ${DURATION}s, $SIZE bytes"
	(
		while :; do
			echo "$(date +%s.%N) $(psi_total cpu) $(psi_total io)"
			sleep 0.1
		done
	) >"$work/psi.r$r.txt" &
	sampler=$!
	extra_pids+=("$sampler")
	c0=$(psi_total cpu) i0=$(psi_total io) t0=$(date +%s%N)
	out=$(timeout $((DURATION + 300)) "${load[@]}" -mode latency -rate "$rate" -duration "${DURATION}s" \
		-sessions "$SESSIONS" -drain 60s -timeout $((DURATION + 240))s -csv "$work/latency.r$r.csv")
	c1=$(psi_total cpu) i1=$(psi_total io) t1=$(date +%s%N)
	kill "$sampler" 2>/dev/null || true
	wait "$sampler" 2>/dev/null || true
	pct() { awk -v a="$1" -v b="$2" -v t=$(((t1 - t0) / 1000)) 'BEGIN { if (t > 0) printf "%.0f", 100 * (b - a) / t; else print "NA" }'; }
	echo "$out" | grep -v '^RESULT' >&2
	res=$(grep '^RESULT' <<<"$out")
	echo "$r,$commit,$load1,$(pct "$c0" "$c1"),$(pct "$i0" "$i1"),$peak,$peak_acc,$rate,$(field sent "$res"),$(field failed "$res"),$(field lost "$res"),$(field lat250_p50_ms "$res"),$(field lat250_p99_ms "$res"),$(field lat250_max_ms "$res"),$(field transit_p50_ms "$res"),$(field transit_p90_ms "$res"),$(field transit_p99_ms "$res"),$(field transit_max_ms "$res")" >>"$csv"
	mx_stop
	mx_log_summary "$logf"
done
column -t -s, "$csv"
awk -F, 'NR > 1 { v = ($17 < 50 && $11 == 0) ? "met" : "NOT met"; printf "round %s: arrival-250 p99 %s ms at %s/s, lost %s: target p99 < 50 ms %s\n", $1, $17, $8, $11, v }' "$csv"
