#!/usr/bin/env bash
# Debian package for a board: binary, models, default config, systemd unit, udev rule, sysusers entry.
#   scripts/build-deb.sh aarch64|armv7|x86_64   -> target/debian/lookout_<version>_<arm64|armhf|amd64>.deb
#   (under $CARGO_TARGET_DIR instead of target/ when that is set)
# Builds the release binary for the target first (scripts/build-arm.sh for the ARM ones).
set -euo pipefail
cd "$(dirname "$0")/.."
tdir=${CARGO_TARGET_DIR:-target}
arch=${1:?usage: $0 aarch64|armv7|x86_64}
case "$arch" in
    aarch64) triple=aarch64-unknown-linux-gnu; debarch=arm64; bin=$tdir/$triple/release/lookout; strip=aarch64-linux-gnu-strip ;;
    armv7) triple=armv7-unknown-linux-gnueabihf; debarch=armhf; bin=$tdir/$triple/release/lookout; strip=arm-linux-gnueabihf-strip ;;
    x86_64) triple=x86_64-unknown-linux-gnu; debarch=amd64; bin=$tdir/release/lookout; strip=strip ;;
    *) echo "usage: $0 aarch64|armv7|x86_64" >&2; exit 2 ;;
esac
if [ "$arch" = x86_64 ]; then cargo build --release --locked; else scripts/build-arm.sh "$arch"; fi
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
install -D -m 0755 "$bin" "$root/usr/bin/lookout"
# The line tables are for backtraces during development; the board gets the stripped binary.
"$strip" "$root/usr/bin/lookout"
install -d "$root/usr/share/lookout/models/selftest"
for f in models/*.toml models/*.onnx models/*.LICENSE; do
    case "$f" in *.bad.*) continue ;; esac   # the known-bad quantization is a test fixture, not a product
    install -m 0644 "$f" "$root/usr/share/lookout/models/"
done
for f in models/selftest/*; do
    case "$f" in *.bad.*) continue ;; esac
    install -m 0644 "$f" "$root/usr/share/lookout/models/selftest/"
done
for b in board/*/config.toml; do
    d=$(basename "$(dirname "$b")")
    install -D -m 0644 "$b" "$root/usr/share/lookout/boards/$d/config.toml"
    [ -f "board/$d/WIRING.md" ] && install -m 0644 "board/$d/WIRING.md" "$root/usr/share/lookout/boards/$d/"
done
install -D -m 0644 board/generic/config.toml "$root/etc/lookout/config.toml"
install -D -m 0644 board/systemd/lookout.service "$root/lib/systemd/system/lookout.service"
install -D -m 0644 board/udev/60-lookout-gpio.rules "$root/lib/udev/rules.d/60-lookout-gpio.rules"
install -D -m 0644 board/systemd/lookout.sysusers "$root/usr/lib/sysusers.d/lookout.conf"
install -D -m 0644 README.md "$root/usr/share/doc/lookout/README.md"
cat models/*.LICENSE > "$root/usr/share/doc/lookout/copyright.models"
install -d "$root/DEBIAN"
size=$(du -sk "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<CONTROL
Package: lookout
Version: $version
Architecture: $debarch
Maintainer: lookout developers <lookout@localhost>
Installed-Size: $size
Depends: libc6 (>= 2.35)
Section: misc
Priority: optional
Description: edge camera sensor: V4L2 camera -> ONNX detector -> serial/GPIO alerts
 Captures from a V4L2 camera into a fixed ring, runs a pinned, self-tested
 quantized ONNX detector with tract, applies plain alert rules and raises
 alerts as checksummed serial sentences and GPIO pulses. Runs as the
 unprivileged user lookout under a hardened systemd unit.
CONTROL
echo /etc/lookout/config.toml > "$root/DEBIAN/conffiles"
cat > "$root/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
    if command -v systemd-sysusers >/dev/null 2>&1; then
        systemd-sysusers /usr/lib/sysusers.d/lookout.conf
    else
        getent group gpio >/dev/null || addgroup --system gpio
        getent passwd lookout >/dev/null || adduser --system --group --home /var/lib/lookout --no-create-home lookout
        for g in video gpio dialout; do adduser lookout "$g" >/dev/null; done
    fi
    if command -v udevadm >/dev/null 2>&1; then udevadm control --reload-rules || true; udevadm trigger --subsystem-match=gpio || true; fi
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload
        systemctl enable lookout.service
        echo "lookout: edit /etc/lookout/config.toml (profiles in /usr/share/lookout/boards/), then: systemctl start lookout"
    fi
fi
POSTINST
cat > "$root/DEBIAN/prerm" <<'PRERM'
#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
    systemctl stop lookout.service || true
    systemctl disable lookout.service || true
fi
PRERM
cat > "$root/DEBIAN/postrm" <<'POSTRM'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
POSTRM
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"
mkdir -p "$tdir/debian"
out="$tdir/debian/lookout_${version}_${debarch}.deb"
dpkg-deb --root-owner-group --build "$root" "$out" >/dev/null
echo "build-deb: $out"
