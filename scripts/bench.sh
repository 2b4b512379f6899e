#!/usr/bin/env bash
# Runs Stevedore's benchmarks and prints their results.
#
# The event log benchmarks (README.md, "Performance"): appends, projection
# (batched against one event per commit) and a view rebuilt from
# SD_BENCH_REBUILD_EVENTS (default 1,000,000) generated events.
set -euo pipefail
cd "$(dirname "$0")/.."
go test -run '^$' -bench . -benchmem -count "${BENCH_COUNT:-3}" ./pkg/content/local/ ./pkg/events/jetstream/ | tee /tmp/stevedore-bench.txt
go test -run '^$' -bench 'Project|Rebuild' -benchtime 1x -timeout 30m ./pkg/gateway/ | tee -a /tmp/stevedore-bench.txt
