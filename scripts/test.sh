#!/usr/bin/env bash
# Runs the whole test suite: what CI runs (as root, with CI=true).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh --test
echo "== gofmt"
unformatted=$(gofmt -l cmd internal pkg tests)
if [ -n "$unformatted" ]; then
	echo "gofmt would change:"
	echo "$unformatted"
	exit 1
fi
echo "== go vet"
go vet ./...
echo "== go test"
# -p 2: the machine has 2 cores; end-to-end tests start real processes.
go test -count=1 -p 2 -timeout 20m ./... 2>&1 | tee /tmp/stevedore-test.log
