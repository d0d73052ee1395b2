#!/usr/bin/env bash
# The project's test command.
#   scripts/test.sh            everything CI runs: native checks and tests, then for aarch64 and armv7 the
#                              release build, the test suite under qemu-user, the Debian package and the
#                              VM test (vivid + PL061 GPIO + serial in qemu-system, scripts/vm-test.sh)
#   scripts/test.sh --native   only the native part (a few minutes once built)
# Needs what .ci/run installs: ffmpeg, libclang, the ARM cross compilers and qemu-user, the ARM rustup
# targets, systemd-analyze and dpkg-deb, qemu-system-arm, kmod, cpio, python3 and the arm64/armhf dpkg
# architectures (for the VM kernels).
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
part() { echo "test.sh: $1 done in $(( $(date +%s) - $2 ))s"; }

s=$(date +%s)
cargo fmt --all -- --check
cargo clippy --release --all-targets -- -D warnings
cargo test --release
scripts/verify-service.sh target/release/lookout
for b in board/*/config.toml; do target/release/lookout check --config "$b"; done
part "native (fmt, clippy, tests, service unit, board profiles)" "$s"

if [ "${1:-}" != "--native" ]; then
    for arch in aarch64 armv7; do
        case $arch in
            aarch64) triple=aarch64-unknown-linux-gnu; elf="ARM aarch64"; qemu="qemu-aarch64 -L /usr/aarch64-linux-gnu"; debarch=arm64 ;;
            armv7) triple=armv7-unknown-linux-gnueabihf; elf="ARM, EABI5"; qemu="qemu-arm -L /usr/arm-linux-gnueabihf"; debarch=armhf ;;
        esac
        s=$(date +%s)
        scripts/build-arm.sh "$arch"
        bin=target/$triple/release/lookout
        file "$bin" | grep -q "$elf" || { echo "test.sh: $bin is not $elf"; exit 1; }
        $qemu "$bin" --version | grep -q "lookout .*($triple, tract" || { echo "test.sh: $bin --version under qemu failed"; exit 1; }
        part "$arch build" "$s"
        s=$(date +%s)
        scripts/test-arm.sh "$arch"
        part "$arch tests under qemu-user" "$s"
        s=$(date +%s)
        scripts/build-deb.sh "$arch"
        deb=$(ls target/debian/lookout_*_"$debarch".deb)
        listing=$(dpkg-deb -c "$deb")
        for f in ./usr/bin/lookout ./usr/share/lookout/models/fastestdet-int8.toml ./usr/share/lookout/models/fastestdet.int8.onnx \
                 ./etc/lookout/config.toml ./lib/systemd/system/lookout.service ./lib/udev/rules.d/60-lookout-gpio.rules \
                 ./usr/lib/sysusers.d/lookout.conf; do
            grep -q " $f\$" <<<"$listing" || { echo "test.sh: $deb lacks $f"; exit 1; }
        done
        part "$arch package ($deb)" "$s"
        s=$(date +%s)
        scripts/vm-test.sh "$arch"
        part "$arch VM test" "$s"
    done
fi
echo "test.sh: all passed in $(( $(date +%s) - t0 ))s"
