#!/usr/bin/env bash
# scripts/vm-test.sh aarch64|armv7
#
# lookout on a real kernel camera driver, in an emulated ARM board: builds lookout for the target, boots
# Debian's own kernel for that architecture in qemu-system (TCG, `virt` machine) from an initramfs that
# holds busybox, the binary, its glibc, the vivid module chain and a config, and runs `lookout run` on
# vivid's /dev/video0 (YUYV 640x480 at 25 fps, the most vivid's webcam input offers at that size), with the alarm and the camera_lost lines on the
# board's PL061 GPIO chip and sentences on a PCI 16550 serial port whose output lands in a host file.
# lookout starts before vivid is loaded (a camera missing at boot), then vivid comes; mid-run the guest
# unbinds vivid's device (the camera vanishes), reads the camera_lost line from debugfs, binds it again
# and reads the line once more.
#
# The host then checks, and exits 0 only if all hold: every sentence has a valid checksum and sequence
# numbers increase; heartbeats report >= 20 fps captured both before the loss and after the restore;
# camera_lost then camera_restored arrive, twice (missing at start, then unbound); the camera_lost line read
# high while the camera was gone (both times) and low after; `lookout probe` said "no camera" without vivid
# and listed vivid's YUYV with it; lookout exited 0 on SIGTERM; no panic (kernel or Rust) in the log.
# Last line: a one-line summary. Work files stay in target/vm/<arch>/ (console.log, serial.out).
#
# Needs (what .ci/run installs): qemu-system-arm, kmod (depmod, modprobe), cpio, python3, the ARM
# cross toolchains, and dpkg architectures arm64/armhf for `apt-get download` of the kernel and busybox.
set -euo pipefail
cd "$(dirname "$0")/.."
arch=${1:?usage: scripts/vm-test.sh aarch64|armv7}
case $arch in
    aarch64)
        triple=aarch64-unknown-linux-gnu; debarch=arm64; flavour=arm64; gnu=aarch64-linux-gnu
        ld=ld-linux-aarch64.so.1
        qemu=(qemu-system-aarch64 -M virt -cpu cortex-a72) ;;
    armv7)
        triple=armv7-unknown-linux-gnueabihf; debarch=armhf; flavour=armmp; gnu=arm-linux-gnueabihf
        ld=ld-linux-armhf.so.3
        qemu=(qemu-system-arm -M virt,highmem=off -cpu cortex-a15) ;;
    *) echo "vm-test: unknown architecture $arch (aarch64 or armv7)"; exit 2 ;;
esac
work=target/vm/$arch
debs=target/vm/debs
mkdir -p "$work" "$debs"
t0=$(date +%s)

# 1. The binary.
scripts/build-arm.sh "$arch" >/dev/null
bin=target/$triple/release/lookout

# 2. Debian's kernel and busybox for the target, by package name (the metapackage names the current
#    kernel ABI), downloaded once.
kpkg=$(apt-cache depends "linux-image-$flavour:$debarch" | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
kpkg=${kpkg%:*}
[ -n "$kpkg" ] || { echo "vm-test: cannot resolve linux-image-$flavour:$debarch (dpkg --add-architecture $debarch; apt-get update)"; exit 1; }
kver=${kpkg#linux-image-}
fetch() { # package:arch
    ls "$debs/${1%%:*}"_*"_${1##*:}.deb" >/dev/null 2>&1 || (cd "$debs" && apt-get download -q "$1" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
    ls "$debs/${1%%:*}"_*"_${1##*:}.deb" >/dev/null 2>&1 || { echo "vm-test: could not download $1"; exit 1; }
}
fetch "$kpkg:$debarch"
fetch "busybox-static:$debarch"
root=$work/kernel
if [ ! -f "$root/boot/vmlinuz-$kver" ]; then
    rm -rf "$root"
    dpkg-deb -x "$(ls "$debs/$kpkg"_*"_$debarch.deb")" "$root"
    depmod -b "$root" "$kver"
fi

# 3. The initramfs.
ird=$work/initramfs
rm -rf "$ird"
mkdir -p "$ird"/{bin,lib,proc,sys,dev,tmp,mod}
dpkg-deb --fsys-tarfile "$(ls "$debs"/busybox-static_*_"$debarch".deb)" | tar -x -C "$ird" ./bin/busybox
"$gnu-strip" -o "$ird/bin/lookout" "$bin"
for l in "$ld" libc.so.6 libm.so.6 libgcc_s.so.1; do cp -L "/usr/$gnu/lib/$l" "$ird/lib/"; done
# The vivid chain in load order, as modprobe resolves it from the kernel's own dependency files.
modprobe -d "$root" -S "$kver" --show-depends vivid | awk '$1 == "insmod" {print $2}' > "$work/modules.txt"
: > "$ird/modules"
while read -r m; do
    cp "$m" "$ird/mod/"
    echo "/mod/$(basename "$m")" >> "$ird/modules"
done < "$work/modules.txt"
cat > "$ird/lookout.toml" <<'EOF'
[camera]
name = "vm"

[source]
kind = "v4l2"
device = "/dev/video0"
format = "yuyv"
width = 640
height = 480
fps = 25
stall_timeout_ms = 2000
retry_max_ms = 2000

[serial]
port = "/dev/ttyS0"
baud = 115200

[gpio]
chip = "/dev/gpiochip0"
line = 0
camera_lost_line = 1

[heartbeat]
interval_ms = 4000
EOF
cat > "$ird/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t debugfs debugfs /sys/kernel/debug
say() { echo "VMTEST $*"; }
for m in $(cat /modules); do insmod "$m" || say "insmod $m failed"; done
# First without a camera: probe says so, and lookout starts anyway (camera_lost, fault line up).
/bin/lookout probe | sed 's/^/VMTEST probe-none: /'
RUST_LOG=info RUST_LOG_STYLE=never /bin/lookout run --config /lookout.toml &
pid=$!
sleep 10
grep lookout /sys/kernel/debug/gpio | sed 's/^/VMTEST gpio-start: /'
# The camera appears: only the video capture node, webcam input first (the default).
say "loading vivid"
insmod /mod/vivid.ko n_devs=1 node_types=0x1 || say "insmod vivid failed"
sleep 1
say "video devices: $(ls /dev/video* 2>/dev/null | tr '\n' ' ')"
/bin/lookout probe | sed 's/^/VMTEST probe: /'
pdev=$(basename "$(readlink -f /sys/class/video4linux/video0/device)")
say "vivid platform device: $pdev"
sleep 20
say "unbinding $pdev (camera gone)"
echo "$pdev" > /sys/bus/platform/drivers/vivid/unbind
sleep 6
grep lookout /sys/kernel/debug/gpio | sed 's/^/VMTEST gpio-lost: /'
say "binding $pdev again"
echo "$pdev" > /sys/bus/platform/drivers/vivid/bind
sleep 20
grep lookout /sys/kernel/debug/gpio | sed 's/^/VMTEST gpio-after: /'
kill -TERM "$pid"
wait "$pid"
say "lookout exit $?"
sync
poweroff -f
EOF
# vivid itself is loaded by the init, with parameters, once lookout runs.
grep -v '/vivid.ko$' "$ird/modules" > "$ird/modules.tmp" && mv "$ird/modules.tmp" "$ird/modules"
chmod +x "$ird/init"
(cd "$ird" && find . | cpio -o -H newc --quiet | gzip -1) > "$work/initramfs.gz"
echo "vm-test: $arch kernel $kver, initramfs $(du -h "$work/initramfs.gz" | cut -f1) ($(( $(date +%s) - t0 ))s)"

# 4. Boot. The console (PL011) goes to console.log, the PCI serial port to serial.out.
rm -f "$work/serial.out" "$work/console.log"
s=$(date +%s)
timeout 600 "${qemu[@]}" -accel tcg -smp 2 -m 1024 -nographic -no-reboot \
    -kernel "$root/boot/vmlinuz-$kver" -initrd "$work/initramfs.gz" \
    -append "console=ttyAMA0 rdinit=/init panic=-1 quiet" \
    -chardev "file,id=ser,path=$work/serial.out" -device pci-serial,chardev=ser \
    > "$work/console.log" 2>&1 </dev/null || echo "vm-test: qemu exited $?"
echo "vm-test: $arch VM ran $(( $(date +%s) - s ))s"

# 5. Check.
python3 - "$arch" "$work/console.log" "$work/serial.out" <<'EOF'
import functools, re, sys
arch, console_path, serial_path = sys.argv[1:]
console = open(console_path, errors="replace").read()
serial = open(serial_path, "rb").read().decode(errors="replace") if __import__("os").path.exists(serial_path) else ""
fail = []
sentences = []
for raw in serial.split("\r\n")[:-1]:
    m = re.fullmatch(r"\$([^*]*)\*([0-9A-F]{2})", raw)
    if not m or functools.reduce(lambda a, b: a ^ b, m.group(1).encode(), 0) != int(m.group(2), 16):
        fail.append(f"bad sentence or checksum: {raw!r}")
        continue
    sentences.append(m.group(1).split(","))
seqs = [int(f[1]) for f in sentences]
if seqs != sorted(set(seqs)):
    fail.append(f"sequence numbers do not increase: {seqs}")
kinds = [(f[0], f[4] if f[0] == "LKEVT" else None) for f in sentences]
events = [f[4] for f in sentences if f[0] == "LKEVT"]
if events != ["camera_lost", "camera_restored"] * 2:
    fail.append(f"events {events}, want camera_lost, camera_restored (missing at start), then the same again (unbound)")
ev_at = [i for i, f in enumerate(sentences) if f[0] == "LKEVT"] + [None] * 4
hb = [(i, float(f[4]), float(f[5]), int(f[6])) for i, f in enumerate(sentences) if f[0] == "LKHBT"]
before = [h for h in hb if None not in ev_at[1:3] and ev_at[1] < h[0] < ev_at[2]]
after = [h for h in hb if ev_at[3] is not None and h[0] > ev_at[3]]
# The last heartbeat before the loss and the last one after the restore cover whole streaming intervals.
if not before or before[-1][1] < 20:
    fail.append(f"capture fps before the loss: {[h[1] for h in before]}, want the last >= 20")
if not after or after[-1][1] < 20:
    fail.append(f"capture fps after the restore: {[h[1] for h in after]}, want the last >= 20")
def gpio(tag):
    return [l.split(tag, 1)[1].strip() for l in console.splitlines() if tag in l and "lookout-camera-lost" in l]
start_line, lost_line, after_line = gpio("VMTEST gpio-start:"), gpio("VMTEST gpio-lost:"), gpio("VMTEST gpio-after:")
if not (start_line and start_line[0].endswith(" hi")):
    fail.append(f"camera_lost line with no camera at start: {start_line}, want 'out hi'")
if not (lost_line and lost_line[0].endswith(" hi")):
    fail.append(f"camera_lost line while the camera was gone: {lost_line}, want 'out hi'")
if not (after_line and after_line[0].endswith(" lo")):
    fail.append(f"camera_lost line after the restore: {after_line}, want 'out lo'")
if "VMTEST lookout exit 0" not in console:
    fail.append("lookout did not exit 0 on SIGTERM")
if "VMTEST probe-none: no camera: there are no video devices" not in console:
    fail.append("lookout probe without vivid did not say 'no camera'")
if "usable as format = \"yuyv\"" not in console:
    fail.append("lookout probe did not list vivid's YUYV")
for bad in ("panicked", "Kernel panic", "Oops", "BUG:"):
    if bad in console:
        fail.append(f"{bad!r} in the console log")
for f in fail:
    print("vm-test: FAIL:", f)
fps = lambda hs: "/".join(f"{h[1]:.1f}" for h in hs) or "-"
print(f"vm-test {arch}: {'PASS' if not fail else 'FAIL'}: {len(sentences)} sentences, seq {seqs[0] if seqs else '-'}..{seqs[-1] if seqs else '-'}; "
      f"capture fps before loss {fps(before)}, after restore {fps(after)}; infer fps {hb[-1][2] if hb else '-'}; "
      f"events {'+'.join(events) or 'none'}; camera_lost line {start_line[0].split()[-1] if start_line else '?'} at start without camera, "
      f"{lost_line[0].split()[-1] if lost_line else '?'} while unbound, "
      f"{after_line[0].split()[-1] if after_line else '?'} after; exit {'0' if 'VMTEST lookout exit 0' in console else 'not 0'}")
sys.exit(1 if fail else 0)
EOF
