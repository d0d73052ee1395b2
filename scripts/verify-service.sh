#!/usr/bin/env bash
# Checks board/systemd/lookout.service with `systemd-analyze verify` in a scratch root that holds the
# binary at /usr/bin/lookout and the host's system units, and fails on any complaint (verify reports
# some problems, such as unknown keys, only as messages).
# usage: scripts/verify-service.sh [path/to/lookout]   (default target/release/lookout, or under $CARGO_TARGET_DIR)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-${CARGO_TARGET_DIR:-target}/release/lookout}
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/usr/bin" "$root/etc/systemd/system" "$root/lib/systemd"
cp "$bin" "$root/usr/bin/lookout"
cp -a /lib/systemd/system "$root/lib/systemd/"
cp board/systemd/lookout.service "$root/etc/systemd/system/"
out=$(systemd-analyze verify --root="$root" --man=no lookout.service 2>&1) || { echo "$out"; exit 1; }
if [ -n "$out" ]; then echo "$out"; exit 1; fi
echo "verify-service: board/systemd/lookout.service is clean"
