#!/usr/bin/env bash
# Installs what Stevedore needs from Debian's packages, if it is missing.
#   scripts/deps.sh          everything for the quick start
#   scripts/deps.sh --test   what the test suite needs
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
if ! have go; then
	echo "Go 1.26 or newer is required on PATH (https://go.dev/doc/install)." >&2
	exit 1
fi
# The quick start serves its demo image from Debian's registry and builds it
# from busybox-static; runc runs containers.
have docker-registry || need+=(docker-registry)
[ -x /bin/busybox ] || need+=(busybox-static)
have runc || need+=(runc)
have git || need+=(git)

if [ ${#need[@]} -gt 0 ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "missing packages: ${need[*]} — run as root or: sudo apt-get install ${need[*]}" >&2
		exit 1
	fi
	echo "== installing ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
