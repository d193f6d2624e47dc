#!/usr/bin/env bash
# smtp-tls.sh: mxport's smtp role, CPU per message with and without STARTTLS, on loopback.
#
# smtp-bench.sh measures plaintext sessions (smtp-source has no TLS); most mail on the
# Internet arrives over STARTTLS. Here smtpload (deploy/bench/smtpload) is both the sender
# and the home server (its sink on 127.0.0.1:$SINK_PORT, the MX port of the $ZONES zones).
# Per round, per size and per mode (plain, then -starttls): a fresh mxport serve (smtp role
# only, its self-signed certificate made in the fresh spool), a closed-loop peak run of
# $SESSIONS sessions, $MESSAGES messages, one per connection; mxport's CPU (the harness's
# proc_ticks: utime + stime from /proc/PID/stat, handshakes included) over the run divided
# by the messages.
#
# Usage (from anywhere):  deploy/bench/smtp-tls.sh
# Env: ROUNDS (2), SIZES ("2048 65536"), MESSAGES (5000), SESSIONS (20), ZONES (10),
#      MXPORT_SMTP_PORT (2544), SINK_PORT (2545), REDIS_PORT (6398), BENCH_DIR, SHARED_BENCH.
set -euo pipefail
WORK_NAME=mxport-tls
MXPORT_SMTP_PORT=${MXPORT_SMTP_PORT:-2544}
SINK_PORT=${SINK_PORT:-2545}
REDIS_PORT=${REDIS_PORT:-6398}
source "$(dirname "$0")/mxport-lib.sh"
ROUNDS=${ROUNDS:-2}
SIZES=${SIZES:-2048 65536}
MESSAGES=${MESSAGES:-5000}
SESSIONS=${SESSIONS:-20}
need timeout awk getconf

mx_init
mx_redis_start
mx_import_zones
log "$(machine_facts); $(go version | cut -d' ' -f3), commit $commit"

# field NAME LINE: the value of NAME=... in a RESULT line
field() { tr ' ' '\n' <<<"$2" | sed -n "s/^$1=//p"; }
# proc_ticks (the harness's CPU accounting): user + system clock ticks of a process
# shellcheck source=/dev/null
source "$SHARED_BENCH/procstat.sh"
hz=$(getconf CLK_TCK)

csv=$work/results.csv
echo "round,commit,size,mode,messages,failed,lost,delivered_per_s,cpu_ms_per_msg" >"$csv"
for r in $(seq 1 "$ROUNDS"); do
	for size in $SIZES; do
		for mode in plain starttls; do
			logf=$work/serve.r$r.$size.$mode.log
			mx_start "$logf"
			flags=()
			[ "$mode" = starttls ] && flags=(-starttls)
			log "round $r: $mode, $SESSIONS sessions, $MESSAGES x $size bytes"
			c0=$(proc_ticks "$mx_pid")
			out=$(timeout 600 "$work/smtpload" -mode peak -target "127.0.0.1:$MXPORT_SMTP_PORT" \
				-sink "$SINK_ADDR:$SINK_PORT" -zones "$ZONES" -size "$size" -sessions "$SESSIONS" \
				-n "$MESSAGES" -drain 120s -timeout 540s "${flags[@]}")
			c1=$(proc_ticks "$mx_pid")
			res=$(grep '^RESULT' <<<"$out")
			cpu=$(awk -v t=$((c1 - c0)) -v hz="$hz" -v n="$MESSAGES" 'BEGIN { printf "%.3f", t * 1000 / hz / n }')
			echo "$r,$commit,$size,$mode,$(field sent "$res"),$(field failed "$res"),$(field lost "$res"),$(field delivered_per_s "$res"),$cpu" >>"$csv"
			mx_stop
			mx_log_summary "$logf"
		done
	done
done
column -t -s, "$csv"
