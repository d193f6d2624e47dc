#!/usr/bin/env bash
# store-bench.sh: the store benchmarks of deploy/bench/RESULTS.md ("Store").
# Runs from the repository root whatever the current directory; needs Go and
# redis-server (the benchmarks start their own on a free loopback port).
#
#   deploy/bench/store-bench.sh                  100,000 zones × 20 records
#   MXPORT_BENCH_ZONES=10000 deploy/bench/store-bench.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
if ! command -v go >/dev/null 2>&1; then
	export PATH="/usr/local/go/bin:$PATH"
fi
command -v go >/dev/null 2>&1 || { echo "store-bench: go not found on PATH nor in /usr/local/go/bin" >&2; exit 1; }
command -v redis-server >/dev/null 2>&1 || { echo "store-bench: redis-server not found (make deps installs it)" >&2; exit 1; }

zones="${MXPORT_BENCH_ZONES:-100000}"

echo "== machine"
echo "nproc: $(nproc)"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "redis: $(redis-server --version)"
echo "go: $(go version)"

echo "== snapshot: LoadAll of $zones zones × 20 records"
MXPORT_BENCH_ZONES="$zones" go test -run '^$' -bench 'LoadAll' -benchtime 1x -timeout 30m ./store/

echo "== writes: event latency and AddRecord"
go test -run '^$' -bench 'EventLatency|AddRecord' -benchtime 5000x ./store/
