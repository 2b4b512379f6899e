#!/usr/bin/env bash
# Starts the gateway (with its embedded NATS) and the workers in the
# background, waits until each is ready, and says where the logs are.
# Workers whose binaries are not built are not started.
set -euo pipefail

ROOT=${STEVEDORE_ROOT:-/var/lib/stevedore}
BIN=${BIN:-$(cd "$(dirname "$0")/.." && pwd)/bin}
FETCHERS=${FETCHERS:-2}
RUN=$ROOT/run
LOGS=$ROOT/logs
TIMEOUT=${UP_TIMEOUT:-30}
mkdir -p "$RUN" "$LOGS"

# running: the pid file names a running process that is this worker of
# this root (a stale pid file's pid may belong to anything by now).
running() {
	[ -f "$RUN/$1.pid" ] || return 1
	local cmd
	cmd=$(tr '\0' ' ' <"/proc/$(cat "$RUN/$1.pid")/cmdline" 2>/dev/null) || return 1
	[[ $cmd == *"/${1%%-*} "*"--root $ROOT "* ]]
}

# alive: the process this script just started is still there.
alive() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

started=()
start() {
	local name=$1; shift
	if running "$name"; then
		echo "  $name already running (pid $(cat "$RUN/$name.pid"))"
		return
	fi
	rm -f "$RUN/$name.ready"
	setsid "$@" --root "$ROOT" --ready-file "$RUN/$name.ready" >>"$LOGS/$name.log" 2>&1 </dev/null &
	echo $! >"$RUN/$name.pid"
	started+=("$name")
}

wait_ready() {
	local name=$1 i
	for ((i = 0; i < TIMEOUT * 10; i++)); do
		[ -f "$RUN/$name.ready" ] && return 0
		if ! alive "$name"; then
			echo "$name exited while starting; the end of $LOGS/$name.log:" >&2
			tail -n 20 "$LOGS/$name.log" >&2
			exit 1
		fi
		sleep 0.1
	done
	echo "$name not ready after ${TIMEOUT}s; the end of $LOGS/$name.log:" >&2
	tail -n 20 "$LOGS/$name.log" >&2
	exit 1
}

echo "Starting Stevedore (state root $ROOT)"
start gateway "$BIN/gateway"
wait_ready gateway
for ((i = 1; i <= FETCHERS; i++)); do
	start "fetcher-$i" "$BIN/fetcher"
done
for w in unpacker executor; do
	[ -x "$BIN/$w" ] && start "$w" "$BIN/$w"
done
for name in "${started[@]}"; do
	wait_ready "$name"
	echo "  $name ready (pid $(cat "$RUN/$name.pid"))"
done
# The gateway listens where STEVEDORE_NATS_LISTEN says (up.sh passes no --listen).
echo "Stevedore is up. NATS: nats://${STEVEDORE_NATS_LISTEN:-127.0.0.1:4222}  logs: $LOGS/*.log  stop: make down"
