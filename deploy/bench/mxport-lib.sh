# mxport-lib.sh: setup shared by smtp-bench.sh, smtp-latency.sh and smtp-memory.sh. Source it after
# setting, if wanted: MXPORT_SMTP_PORT, REDIS_PORT, SINK_PORT, ZONES, and WORK_NAME (the
# directory under $BENCH_DIR). It sources the shared harness's lib.sh (../shared/bench).
#
#   mx_init          ports checked free, mxport and smtpload built, cleanup trap set
#   mx_redis_start   a private redis-server (no persistence) on 127.0.0.1:$REDIS_PORT
#   mx_import_zones  zone0001..$ZONES.test, each forwarded: MX 10 sink ; mxport:port=$SINK_PORT,
#                    sink A 127.0.0.1 (SINK_PORT is where smtpload's sink listens)
#   mx_start         mxport serve, smtp role only, a fresh spool; sets mx_pid
#   mx_stop          stops it (TERM, then KILL after 15 s)
#   mx_log_summary   spool left over, warnings and errors in mxport's log
#
# The cleanup trap stops mxport, any PIDs added to extra_pids, and Redis: only what
# the script started.

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SHARED_BENCH=${SHARED_BENCH:-$root/../shared/bench}
export PATH=$PATH:/usr/local/go/bin:/usr/sbin
# shellcheck source=/dev/null
source "$SHARED_BENCH/lib.sh"
need go redis-server redis-cli ss

MXPORT_SMTP_PORT=${MXPORT_SMTP_PORT:-2540}
REDIS_PORT=${REDIS_PORT:-6396}
SINK_PORT=${SINK_PORT:-2541}
SINK_ADDR=127.0.0.1 # smtpload's sink; loopback only
ZONES=${ZONES:-10}
work=$BENCH_DIR/${WORK_NAME:-mxport-load}
spool=$work/spool
mx_pid= redis_started=
extra_pids=()

mx_cleanup() {
	set +e
	local p
	for p in "${extra_pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
	mx_stop
	[ -n "$redis_started" ] && redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1
	redis_started=
	return 0
}

mx_init() {
	local p
	for p in "$MXPORT_SMTP_PORT" "$REDIS_PORT" "$SINK_PORT"; do
		port_free 127.0.0.1 "$p" || die "port $p is taken"
	done
	mkdir -p "$work"
	trap mx_cleanup EXIT
	trap 'exit 130' INT TERM
	commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
	# others may be editing the tree: say whether the build had uncommitted changes
	dirty=$({ git -C "$root" status --porcelain --untracked-files=no -- cmd forwarder store 2>/dev/null || echo "?"; } | wc -l)
	log "building mxport and smtpload at $commit (uncommitted changed files under cmd/ forwarder/ store/: $dirty)"
	(cd "$root" && go build -o "$work/mxport" ./cmd/mxport && go build -o "$work/smtpload" ./deploy/bench/smtpload)
}

mx_redis_start() {
	redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
		--dir "$work" --pidfile "$work/redis.pid" --logfile "$work/redis.log"
	redis_started=1
	for _ in $(seq 100); do redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
	export MXPORT_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0 MXPORT_MX_HOSTS=mx1.fwd.test
	redis-cli -p "$REDIS_PORT" flushall >/dev/null
}

mx_import_zones() {
	local i z n
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
	find "$work/zones" -name '*.zone' -print0 |
		xargs -0 -P 4 -n 1 "$work/mxport" zone import >"$work/import.log"
	n=$(grep -c ' imported: ' "$work/import.log" || true)
	[ "$n" = "$ZONES" ] || die "imported $n of $ZONES zones (see $work/import.log)"
}

# mx_start LOGFILE: mxport serve, smtp role only, on a fresh spool.
mx_start() {
	local logf=$1
	rm -rf "$spool"
	"$work/mxport" serve --dns "" --http "" --smtp "127.0.0.1:$MXPORT_SMTP_PORT" --spool "$spool" \
		--hostname mx1.fwd.test --mx-hosts mx1.fwd.test --retry-schedule 1s >"$logf" 2>&1 &
	mx_pid=$!
	local deadline=$((SECONDS + 30))
	until grep -q 'smtp listening' "$logf"; do
		kill -0 "$mx_pid" 2>/dev/null || die "mxport exited (see $logf)"
		[ "$SECONDS" -lt "$deadline" ] || die "mxport did not listen in 30 s (see $logf)"
		sleep 0.1
	done
	# the route index must hold the zones before mail arrives (else 451)
	until grep -q 'store loaded' "$logf"; do
		[ "$SECONDS" -lt "$deadline" ] || die "mxport did not load the store in 30 s (see $logf)"
		sleep 0.1
	done
	wait_port tcp 127.0.0.1 "$MXPORT_SMTP_PORT" 5 || die "nothing listens on 127.0.0.1:$MXPORT_SMTP_PORT (see $logf)"
}

mx_stop() {
	[ -n "$mx_pid" ] || return 0
	kill "$mx_pid" 2>/dev/null || true
	for _ in $(seq 150); do kill -0 "$mx_pid" 2>/dev/null || break; sleep 0.1; done
	if kill -0 "$mx_pid" 2>/dev/null; then
		log "mxport did not stop in 15 s: SIGKILL"
		kill -9 "$mx_pid" 2>/dev/null || true
	fi
	wait "$mx_pid" 2>/dev/null || true
	mx_pid=
	wait_port_free 127.0.0.1 "$MXPORT_SMTP_PORT" 5 || true
}

# mx_log_summary LOGFILE: what mxport still holds, and what it logged at warning or above.
mx_log_summary() {
	local logf=$1 left
	left=$(find "$spool/meta" -type f 2>/dev/null | wc -l)
	log "mxport spool: $left messages left in meta/; log: $(grep -c 'level=WARN' "$logf" || true) warnings, $(grep -c 'level=ERROR' "$logf" || true) errors ($logf)"
	grep -E 'level=(WARN|ERROR)' "$logf" | sed 's/ id=[^ ]*//; s/^time=[^ ]* //' | cut -c1-200 | sort | uniq -c | sort -rn | head -10 >&2 || true
}
