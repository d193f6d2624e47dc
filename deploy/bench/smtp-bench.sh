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
# The mxport set-up (build, private Redis, zone import, serve) is mxport-lib.sh's.
set -euo pipefail
MXPORT_SMTP_PORT=${MXPORT_SMTP_PORT:-2500}
REDIS_PORT=${REDIS_PORT:-6392}
SINK_PORT=${SINK_PORT:-2525}
ZONES=${ZONES:-1000}
WORK_NAME=mxport-smtp
# shellcheck source=deploy/bench/mxport-lib.sh
source "$(dirname "$0")/mxport-lib.sh"
need smtp-source smtp-sink postfix postconf
export SINK_ADDR SINK_PORT RELAY_PORT=${RELAY_PORT:-2526} BENCH_DIR
export REF=${REF:-postfix} # ratios to Postfix, same round and size
# 2 rounds of the harness's default sizes and counts take a few minutes here
export ROUNDS=${ROUNDS:-2}
port_free 127.0.0.1 "$RELAY_PORT" || die "port $RELAY_PORT is taken"

postfix_started=
bench_cleanup() {
	[ -n "$postfix_started" ] && "$SHARED_BENCH/smtp-postfix.sh" stop >/dev/null 2>&1
	mx_cleanup
}
mx_init
trap bench_cleanup EXIT

# A private Redis holding the zones, the queue mirror and the delivery log; the
# harness's relay_domains, every one forwarded to the sink; mxport serve, smtp only.
mx_redis_start
mx_import_zones
mx_start "$work/serve.log"

postfix_started=1
"$SHARED_BENCH/smtp-postfix.sh" start
log "postfix mail_version $(postconf -d -h mail_version), $(redis-server --version | cut -d" " -f1-3), $(go version | cut -d" " -f3)"

# The harness starts the one sink and runs ROUNDS x SIZES x targets.
"$SHARED_BENCH/smtp-compare.sh" direct=SINK postfix=127.0.0.1:"$RELAY_PORT" mxport=127.0.0.1:"$MXPORT_SMTP_PORT"

mx_log_summary "$work/serve.log"
