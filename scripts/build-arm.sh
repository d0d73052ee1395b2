#!/usr/bin/env bash
# Release binaries for the boards, with cargo and Debian's cross compilers (no Docker needed):
#   scripts/build-arm.sh aarch64   -> target/aarch64-unknown-linux-gnu/release/lookout        (Pi 4/5 64-bit OS, Jetson)
#   scripts/build-arm.sh armv7     -> target/armv7-unknown-linux-gnueabihf/release/lookout    (Pi 32-bit OS)
#   scripts/build-arm.sh all
# (under $CARGO_TARGET_DIR instead of target/ when that is set). No libclang: the V4L2 bindings are
# pre-generated (vendor/v4l2-sys-mit).
# Needs: rustup target add aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf
#        apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross gcc-arm-linux-gnueabihf libc6-dev-armhf-cross
set -euo pipefail
cd "$(dirname "$0")/.."
tdir=${CARGO_TARGET_DIR:-target}
triple() {
    case "$1" in
        aarch64) echo aarch64-unknown-linux-gnu ;;
        armv7) echo armv7-unknown-linux-gnueabihf ;;
        *) echo "usage: $0 aarch64|armv7|all" >&2; exit 2 ;;
    esac
}
case "${1:-all}" in
    all) arches="aarch64 armv7" ;;
    *) arches="$1" ;;
esac
for a in $arches; do
    t=$(triple "$a")
    start=$(date +%s)
    cargo build --release --locked --target "$t"
    echo "build-arm: $a: $tdir/$t/release/lookout in $(( $(date +%s) - start ))s"
    file "$tdir/$t/release/lookout" 2>/dev/null || true
done
