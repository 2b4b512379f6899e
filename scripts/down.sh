#!/usr/bin/env bash
# Stops what scripts/up.sh started: SIGTERM, then SIGKILL after 10 s.
set -euo pipefail

ROOT=${STEVEDORE_ROOT:-/var/lib/stevedore}
RUN=$ROOT/run
shopt -s nullglob
pids=()
# Workers first, the gateway (and its embedded NATS) last.
for f in "$RUN"/*.pid; do
	[ "$(basename "$f")" = gateway.pid ] && continue
	pids+=("$f")
done
[ -f "$RUN/gateway.pid" ] && pids+=("$RUN/gateway.pid")

# ours: pid is this worker of this root, not a stranger that reused the pid
# of a process that is long gone.
ours() {
	local cmd
	cmd=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null) || return 1
	[[ $cmd == *"/${2%%-*} "*"--root $ROOT "* ]]
}

for f in "${pids[@]}"; do
	name=$(basename "$f" .pid)
	pid=$(cat "$f")
	if ours "$pid" "$name"; then
		kill -TERM "$pid"
		for ((i = 0; i < 100; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null; then
			echo "  $name did not stop in 10s; killing it"
			kill -KILL "$pid" 2>/dev/null || true
		fi
		echo "  $name stopped"
	fi
	rm -f "$f" "$RUN/$name.ready"
done
echo "Stevedore is down."
