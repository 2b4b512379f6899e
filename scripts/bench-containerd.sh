#!/usr/bin/env bash
# Benchmarks Stevedore against containerd's ctr on this machine (issue 6):
# installs what is missing (Debian packages), builds the binaries and runs
# bench/ (a Go program), which prints a Markdown table of ratios and writes
# it to bench/results.md. Idempotent; run as root. See bench/README.md.
#
#   BENCH_RUNS=5 BENCH_FS=disk,tmpfs BENCH_PPROF=0 scripts/bench-containerd.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
	echo "bench-containerd: must run as root (containerd, runc, overlayfs, tmpfs)" >&2
	exit 1
fi

# command → Debian package
declare -A pkgs=(
	[containerd]=containerd [ctr]=containerd [containerd-shim-runc-v2]=containerd
	[runc]=runc [debootstrap]=debootstrap [docker-registry]=docker-registry
	[zstd]=zstd [pigz]=pigz
)
[ "${BENCH_PPROF:-0}" = 1 ] && pkgs[perf]=linux-perf
missing=()
for cmd in "${!pkgs[@]}"; do
	command -v "$cmd" >/dev/null 2>&1 || missing+=("${pkgs[$cmd]}")
done
# A static busybox for the run image (busybox-static installs /bin/busybox).
if ! dpkg-query -W -f '${Status}' busybox-static 2>/dev/null | grep -q 'ok installed'; then
	missing+=(busybox-static)
fi
if ((${#missing[@]})); then
	mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
	echo "bench-containerd: installing ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's containerd package may start a system containerd where systemd
# runs; the suite starts its own daemons on their own roots and sockets and
# never touches that one.

BIN=${BENCH_BIN:-$PWD/bench/.cache/bin}
mkdir -p "$BIN"
echo "bench-containerd: building the binaries into $BIN"
go build -o "$BIN/" ./cmd/gateway ./cmd/fetcher ./cmd/unpacker ./cmd/executor ./cmd/ctl ./bench
BENCH_REPO=$PWD BENCH_BIN=$BIN exec "$BIN/bench"
