#!/usr/bin/env bash
# smtp-memory.sh: mxport's smtp role under 200 concurrent 20 MiB messages (issue 5: "200
# concurrent sessions each sending a 20 MiB message keep RSS < 512 MiB"), on loopback.
#
# smtpload -mode big opens $SESSIONS connections at once, each sending one message of
# $SIZE bytes streamed from a repeating pattern (nothing is held in memory), to mxport,
# which relays them to smtpload's sink on 127.0.0.1:$SINK_PORT (the MX port of the
# $ZONES imported forwarded zones); the sink counts bytes and discards them. Meanwhile
# this script samples mxport's VmRSS from /proc/PID/status every 100 ms and reports the
# peak, VmHWM at the end, the elapsed times, what the sink received and (from ss) the most
# inbound connections open at once. mxport is started afresh (fresh spool) for every
# round, so VmHWM is that round's own.
#
# Usage (from anywhere):  deploy/bench/smtp-memory.sh
# Env: ROUNDS (2), SESSIONS (200), SIZE (20971520), ZONES (10), MXPORT_SMTP_PORT (2542),
#      SINK_PORT (2543), REDIS_PORT (6397), BENCH_DIR, SHARED_BENCH.
set -euo pipefail
WORK_NAME=mxport-memory
MXPORT_SMTP_PORT=${MXPORT_SMTP_PORT:-2542}
SINK_PORT=${SINK_PORT:-2543}
REDIS_PORT=${REDIS_PORT:-6397}
source "$(dirname "$0")/mxport-lib.sh"
ROUNDS=${ROUNDS:-2}
SESSIONS=${SESSIONS:-200}
SIZE=${SIZE:-20971520}
need timeout awk df
avail=$(df -Pk "$BENCH_DIR" 2>/dev/null | awk 'NR == 2 { print $4 }')
need_kib=$((SESSIONS * SIZE / 1024 + 1048576))
[ "${avail:-0}" -gt "$need_kib" ] || die "$BENCH_DIR has ${avail} KiB free; the spool may need $need_kib KiB"

mx_init
mx_redis_start
mx_import_zones
log "$(machine_facts); $(redis-server --version | cut -d' ' -f1-3), $(go version | cut -d' ' -f3), commit $commit"

field() { tr ' ' '\n' <<<"$2" | sed -n "s/^$1=//p"; }
status_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status" 2>/dev/null; }

csv=$work/results.csv
echo "round,commit,sessions,max_conns,size,rss_idle_mib,rss_peak_mib,vmhwm_mib,rss_after_mib,accept_s,deliver_s,wall_s,accepted,failed,delivered,lost,sink_bytes,msg_bytes_min,load_hwm_mib" >"$csv"
for r in $(seq 1 "$ROUNDS"); do
	logf=$work/serve.r$r.log
	samples=$work/rss.r$r.txt
	mx_start "$logf"
	sleep 1
	idle=$(status_kib "$mx_pid" VmRSS)
	# the sampler: "seconds VmRSS_kB inbound_connections" every 100 ms while mxport lives
	# (stopped below); the connections show that the 200 sessions really were open at once
	(
		while [ -r "/proc/$mx_pid/status" ]; do
			echo "$(date +%s.%N) $(awk '$1 == "VmRSS:" { print $2 }' "/proc/$mx_pid/status" 2>/dev/null) $(ss -Htn state established "sport = :$MXPORT_SMTP_PORT" 2>/dev/null | wc -l)"
			sleep 0.1
		done
	) >"$samples" &
	sampler=$!
	extra_pids+=("$sampler")
	log "round $r: $SESSIONS concurrent sessions x $SIZE bytes (mxport RSS idle $((idle / 1024)) MiB)"
	t0=$(date +%s.%N)
	out=$(timeout 1200 "$work/smtpload" -mode big -target "127.0.0.1:$MXPORT_SMTP_PORT" -sink "$SINK_ADDR:$SINK_PORT" \
		-zones "$ZONES" -sessions "$SESSIONS" -size "$SIZE" -drain 600s -timeout 1140s)
	t1=$(date +%s.%N)
	sleep 1
	kill "$sampler" 2>/dev/null || true
	wait "$sampler" 2>/dev/null || true
	hwm=$(status_kib "$mx_pid" VmHWM)
	after=$(status_kib "$mx_pid" VmRSS)
	echo "$out" | grep -v '^RESULT' >&2
	res=$(grep '^RESULT' <<<"$out")
	peak=$(awk '$2 > m { m = $2 } END { print m + 0 }' "$samples")
	nsamp=$(wc -l <"$samples")
	conns=$(awk '$3 > m { m = $3 } END { print m + 0 }' "$samples")
	mib() { awk -v k="$1" 'BEGIN { printf "%.0f", k / 1024 }'; }
	log "round $r: mxport VmRSS peak $(mib "$peak") MiB over $nsamp samples (at most $conns inbound connections at once), VmHWM $(mib "$hwm") MiB, after $(mib "$after") MiB"
	echo "$r,$commit,$SESSIONS,$conns,$SIZE,$(mib "$idle"),$(mib "$peak"),$(mib "$hwm"),$(mib "$after"),$(field accept_s "$res"),$(field deliver_s "$res"),$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }'),$(field accepted "$res"),$(field failed "$res"),$(field delivered "$res"),$(field lost "$res"),$(field sink_bytes "$res"),$(field msg_bytes_min "$res"),$(mib "$(field load_hwm_kib "$res")")" >>"$csv"
	mx_stop
	mx_log_summary "$logf"
done
column -t -s, "$csv"
awk -F, 'NR > 1 { v = ($7 < 512 && $8 < 512 && $15 == $3 && $14 == 0) ? "met" : "NOT met"; printf "round %s: VmRSS peak %s MiB (VmHWM %s MiB), delivered %s of %s: target RSS < 512 MiB with every message delivered %s\n", $1, $7, $8, $15, $3, v }' "$csv"
