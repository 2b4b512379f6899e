#!/usr/bin/env bash
# Runs Debian's docker-registry on loopback for the quick start and benchmarks.
#   scripts/registry.sh start|stop
# REGISTRY_ADDR (default 127.0.0.1:5000), REGISTRY_ROOT (default /var/lib/stevedore-registry).
set -euo pipefail

ADDR=${REGISTRY_ADDR:-127.0.0.1:5000}
RROOT=${REGISTRY_ROOT:-/var/lib/stevedore-registry}
mkdir -p "$RROOT/data"
PID=$RROOT/registry.pid

case "${1:-start}" in
start)
	# A pid file can outlive its process (a reboot, a kill) and its pid be
	# reused: trust it only if that pid is the registry and it answers.
	if [ -f "$PID" ] && grep -qs docker-registry "/proc/$(cat "$PID")/cmdline" &&
		(exec 3<>"/dev/tcp/${ADDR%:*}/${ADDR##*:}") 2>/dev/null; then
		echo "registry already running on $ADDR"
		exit 0
	fi
	rm -f "$PID"
	cat >"$RROOT/config.yml" <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $RROOT/data
  delete:
    enabled: true
http:
  addr: $ADDR
YAML
	setsid docker-registry serve "$RROOT/config.yml" >>"$RROOT/registry.log" 2>&1 </dev/null &
	echo $! >"$PID"
	for ((i = 0; i < 100; i++)); do
		if (exec 3<>"/dev/tcp/${ADDR%:*}/${ADDR##*:}") 2>/dev/null; then
			echo "registry listening on $ADDR (log $RROOT/registry.log)"
			exit 0
		fi
		sleep 0.1
	done
	echo "registry did not start; see $RROOT/registry.log" >&2
	exit 1
	;;
stop)
	if [ -f "$PID" ] && grep -qs docker-registry "/proc/$(cat "$PID")/cmdline"; then
		kill "$(cat "$PID")" 2>/dev/null || true
	fi
	rm -f "$PID"
	;;
*)
	echo "usage: $0 start|stop" >&2
	exit 2
	;;
esac
