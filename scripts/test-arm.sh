#!/usr/bin/env bash
# The test suite for an ARM target, run under qemu-user:
#   scripts/test-arm.sh aarch64|armv7
# Cargo runs the test binaries through the runner in .cargo/config.toml; the tests also start the
# `lookout` binary itself, which the kernel hands to qemu through binfmt_misc (registered here if needed).
# Emulated tract inference takes about 2 s a frame, so the tests use the first LOOKOUT_TEST_FRAMES
# (default 40) frames of the clip instead of all 250 (see tests/common/mod.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
    aarch64) triple=aarch64-unknown-linux-gnu; sysroot=/usr/aarch64-linux-gnu; qemu=qemu-aarch64; cpu=cortex-a72 ;;
    armv7) triple=armv7-unknown-linux-gnueabihf; sysroot=/usr/arm-linux-gnueabihf; qemu=qemu-arm; cpu=cortex-a15 ;;
    *) echo "usage: $0 aarch64|armv7" >&2; exit 2 ;;
esac
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
if [ ! -e "/proc/sys/fs/binfmt_misc/$qemu" ]; then
    cat "/usr/lib/binfmt.d/$qemu.conf" > /proc/sys/fs/binfmt_misc/register
fi
export QEMU_LD_PREFIX=$sysroot
# A concrete CPU: qemu's default "max" CPU offers 512-bit SVE, which tract then uses and qemu emulates
# about 7x slower than NEON (measured with `lookout bench`: 16.7 s vs 2.3 s a frame).
export QEMU_CPU=$cpu
export LOOKOUT_TEST_FRAMES=${LOOKOUT_TEST_FRAMES:-40}
# A stop waits for the frame being inferred: about 2 s emulated (tests/faults.rs).
export LOOKOUT_TEST_STOP_MS=${LOOKOUT_TEST_STOP_MS:-6000}
# tests/faults.rs, tests/rules.rs and tests/delivery.rs (the real binary fed hostile input, rules on clips, a
# controller on a pty: many runs of the emulated model, 250 s for rules.rs alone under qemu-aarch64) run
# natively and for armv7, the 32-bit target, where integer widths differ; aarch64 is 64-bit like the native
# run, and its VM test runs the output stage on a real kernel.
tests=(--lib --bins)
for f in tests/*.rs; do
    n=$(basename "$f" .rs)
    [ "$1" = aarch64 ] && case "$n" in faults | rules | delivery) continue ;; esac
    # The MQTT tests run a broker on the host and whole clips in real time: natively only. The engines and
    # gating tests (tests/engines.rs) run a clip eight times, about 2 s an emulated frame: natively only
    # (the engines themselves run under qemu in every other test: `auto` is one per host core).
    [ "$n" = mqtt ] && continue
    [ "$n" = engines ] && continue
    # The steady state's allocation count (205 s under qemu-arm) runs natively and under qemu-aarch64;
    # left out for armv7 to keep the whole test command within its hour here.
    [ "$1" = armv7 ] && [ "$n" = steady_state ] && continue
    tests+=(--test "$n")
done
start=$(date +%s)
cargo test --release --locked --target "$triple" "${tests[@]}"
echo "test-arm: $1: tests under qemu-user passed in $(( $(date +%s) - start ))s"
