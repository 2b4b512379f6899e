#!/usr/bin/env bash
# The quick start: start Stevedore, serve a busybox image from a registry on
# loopback, and pull it.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-$PWD/bin}
REF=${DEMO_REF:-127.0.0.1:5000/demo/busybox:latest}

scripts/up.sh
scripts/registry.sh start
echo "== building $REF from /bin/busybox and pushing it"
"$BIN/mkimage" --busybox /bin/busybox "$REF"
echo "== $BIN/ctl pull $REF"
"$BIN/ctl" pull "$REF"
echo "== $BIN/ctl images"
"$BIN/ctl" images
echo "== $BIN/ctl run --rm $REF echo hello from a Stevedore container"
"$BIN/ctl" run --rm "$REF" sh -c 'echo "hello from a Stevedore container: $(uname -s) $(hostname), uid $(id -u)"'
