#!/usr/bin/env bash
# Runs Stevedore's benchmarks and prints their results.
set -euo pipefail
cd "$(dirname "$0")/.."
go test -run '^$' -bench . -benchmem -count "${BENCH_COUNT:-3}" ./pkg/content/local/ ./pkg/events/jetstream/ | tee /tmp/stevedore-bench.txt
