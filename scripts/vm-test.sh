#!/usr/bin/env bash
# scripts/vm-test.sh aarch64|armv7
#
# lookout on a real kernel camera driver, in an emulated ARM board: builds lookout for the target, boots
# Debian's own kernel for that architecture in qemu-system (TCG, `virt` machine, 2 CPUs) from an initramfs
# with busybox, v4l2-ctl, the binary, its glibc, the vivid module chain and a config, and runs `lookout run`
# on vivid's /dev/video0 (YUYV 640x480 at 25 fps, the most vivid's webcam input offers at that size), with
# the alarm and camera_lost lines on the board's PL061 GPIO chip and the sentences on a PCI 16550 serial
# port whose output lands in a host file. The guest's script, step by step:
#   1. `lookout probe` with no camera; lookout starts with none (a camera missing at boot); vivid loads.
#   2. vivid drops every buffer (v4l2-ctl: the device stays, frames stop: a stall), then streams again.
#   3. vivid's device is unbound from its driver (the camera vanishes), then bound again.
#   4. SIGTERM; then 50-frame runs in NV12 and GREY, the other formats vivid offers that lookout takes.
#   5. `[[gpio.output]]` on the real chip: a 12-frame clip with a car (an alert, its clear at the end of
#      the file) through a pulse, a follow, an active-low latched and a camera_lost output, their levels
#      read from debugfs every 0.2 s.
# While the camera is gone (each of the three times) and after, it reads the camera_lost line from debugfs.
#
# The host then checks, and exits 0 only if all hold: every sentence has a valid checksum and sequence
# numbers increase; camera_lost + camera_restored arrive three times; heartbeats inside each streaming
# stretch report >= 20 fps captured; the camera_lost line read high each time the camera was gone and low
# after; the stall was reported as a timeout; probe said "no camera" without vivid and listed its YUYV
# with it; lookout exited 0 on SIGTERM; the NV12 and GREY runs captured 50 frames, none corrupt; the
# outputs started at their safe levels (the active-low one high), the pulse line went on and off again
# while the follow and latched lines stayed on for the alert, camera_lost never on, every line released
# after the exit; no panic
# (kernel or Rust) in the console log. Last line: a one-line summary. Work files stay in
# target/vm/<arch>/ (console.log, serial.out; under $CARGO_TARGET_DIR when that is set). The VM has no
# network card (-nic none): it needs none, and the virt board's default NIC needs a boot ROM
# (efi-virtio.rom, package ipxe-qemu) that a minimal qemu install lacks.
#
# Needs (what .ci/run installs): qemu-system-arm, kmod (depmod, modprobe), cpio, python3, the ARM cross
# toolchains, and the dpkg architectures arm64/armhf for `apt-get download` of the kernel and userland.
set -euo pipefail
cd "$(dirname "$0")/.."
arch=${1:?usage: scripts/vm-test.sh aarch64|armv7 [--fetch]}
fetch_only=${2:-}
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
tdir=${CARGO_TARGET_DIR:-target}
work=$tdir/vm/$arch
debs=$tdir/vm/debs
mkdir -p "$work" "$debs"
t0=$(date +%s)

# 1. Debian's kernel, busybox and v4l2-ctl (v4l-utils and the libraries it needs) for the target, by
#    package name (the kernel metapackage names the current kernel ABI), downloaded once. `--fetch` stops
#    here (.ci/run downloads with it).
kpkg=$(apt-cache depends "linux-image-$flavour:$debarch" | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
kpkg=${kpkg%:*}
[ -n "$kpkg" ] || { echo "vm-test: cannot resolve linux-image-$flavour:$debarch (dpkg --add-architecture $debarch; apt-get update)"; exit 1; }
kver=${kpkg#linux-image-}
fetch() { # package:arch
    ls "$debs/${1%%:*}"_*"_${1##*:}.deb" >/dev/null 2>&1 || (cd "$debs" && apt-get download -q "$1" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
    ls "$debs/${1%%:*}"_*"_${1##*:}.deb" >/dev/null 2>&1 || { echo "vm-test: could not download $1"; exit 1; }
}
userland=(busybox-static v4l-utils libv4l-0 libv4lconvert0 libv4l2rds0 libudev1 libjpeg62-turbo)
fetch "$kpkg:$debarch"
for p in "${userland[@]}"; do fetch "$p:$debarch"; done
[ "$fetch_only" = --fetch ] && { echo "vm-test: $arch packages in $debs"; exit 0; }

# 2. The binary.
scripts/build-arm.sh "$arch" >/dev/null
bin=$tdir/$triple/release/lookout

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
user=$work/userland
rm -rf "$user"
for p in "${userland[@]}"; do dpkg-deb -x "$(ls "$debs/$p"_*"_$debarch.deb")" "$user"; done
cp "$user/bin/busybox" "$user/usr/bin/v4l2-ctl" "$ird/bin/"
for l in libv4l2.so.0 libv4lconvert.so.0 libv4l2rds.so.0 libudev.so.1 libjpeg.so.62; do cp -L "$user/usr/lib/$gnu/$l" "$ird/lib/"; done
"$gnu-strip" -o "$ird/bin/lookout" "$bin"
for l in "$ld" libc.so.6 libm.so.6 libgcc_s.so.1 libstdc++.so.6; do cp -L "/usr/$gnu/lib/$l" "$ird/lib/"; done
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
interval_ms = 3000
EOF
for f in nv12 grey; do
    sed -e "s/^format = .*/format = \"$f\"/" -e '/^port = /d' "$ird/lookout.toml" > "$ird/lookout-$f.toml"
done
# Frames 15..26 of the shipped clip: the car top right is confirmed in the third (alert), and cleared at
# the end of the file.
python3 - tests/data/bikes.mjpeg "$ird/clip.mjpeg" 15 27 <<'PY'
import sys
data, out, lo, hi = open(sys.argv[1], "rb").read(), [], int(sys.argv[3]), int(sys.argv[4])
i = 0
while len(out) < hi:
    assert data[i:i + 2] == b"\xff\xd8", f"no SOI at {i}"
    j = i + 2
    while True:  # marker segments up to SOS, then entropy-coded data up to EOI
        m = data[j + 1]
        if m == 0xDA:
            j += 2 + int.from_bytes(data[j + 2:j + 4], "big")
            while not (data[j] == 0xFF and data[j + 1] not in (0x00, *range(0xD0, 0xD8))):
                j += 1
            if data[j + 1] == 0xD9:
                j += 2
                break
            continue
        j += 2 + int.from_bytes(data[j + 2:j + 4], "big")
    out.append(data[i:j])
    i = j
open(sys.argv[2], "wb").write(b"".join(out[lo:hi]))
PY
# Lines 2, 4, 5, 6: the virt board's device tree gives line 3 to a gpio-keys power button (with it, the armhf
# run exited 1).
cat > "$ird/lookout-modes.toml" <<'EOF'
[camera]
name = "vm"

[source]
kind = "mjpeg"
path = "/clip.mjpeg"

[gpio]
chip = "/dev/gpiochip0"

[[gpio.output]]
line = 2
mode = "pulse"
pulse_ms = 1500

[[gpio.output]]
line = 4
mode = "follow"

[[gpio.output]]
line = 5
mode = "latched"
active_low = true

[[gpio.output]]
line = 6
event = "camera_lost"

[heartbeat]
interval_ms = 0
EOF
cat > "$ird/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t debugfs debugfs /sys/kernel/debug
say() { echo "VMTEST $*"; }
gpio() { grep lookout /sys/kernel/debug/gpio | sed "s/^/VMTEST gpio-$1: /"; }
for m in $(cat /modules); do insmod "$m" || say "insmod $m failed"; done
# 1. No camera: probe says so, and lookout starts anyway (camera_lost, fault line up).
/bin/lookout probe | sed 's/^/VMTEST probe-none: /'
RUST_LOG=info RUST_LOG_STYLE=never /bin/lookout run --config /lookout.toml &
pid=$!
sleep 10
gpio start
# The camera appears: only the video capture node, webcam input first (the default).
say "loading vivid"
insmod /mod/vivid.ko n_devs=1 node_types=0x1 || say "insmod vivid failed"
sleep 1
say "video devices: $(ls /dev/video* 2>/dev/null | tr '\n' ' ')"
/bin/lookout probe | sed 's/^/VMTEST probe: /'
sleep 20
# 2. A stall: the device stays, frames stop (vivid drops every buffer), then flow again.
say "stalling the camera"
v4l2-ctl -d /dev/video0 -c percentage_of_dropped_buffers=100 || say "v4l2-ctl failed"
sleep 6
gpio stalled
v4l2-ctl -d /dev/video0 -c percentage_of_dropped_buffers=0 || say "v4l2-ctl failed"
say "camera unstalled"
sleep 20
# 3. The camera vanishes (vivid's device unbound from its driver) and comes back.
pdev=$(basename "$(readlink -f /sys/class/video4linux/video0/device)")
say "unbinding $pdev (camera gone)"
echo "$pdev" > /sys/bus/platform/drivers/vivid/unbind
sleep 6
gpio lost
say "binding $pdev again"
echo "$pdev" > /sys/bus/platform/drivers/vivid/bind
sleep 20
gpio after
kill -TERM "$pid"
wait "$pid"
say "lookout exit $?"
# 4. The other raw formats vivid offers that lookout takes, 50 frames each.
for f in nv12 grey; do
    RUST_LOG=info RUST_LOG_STYLE=never /bin/lookout run --config /lookout-$f.toml --frames 50 2>&1 | grep -E 'fps$|done:|corrupt|WARN|ERROR' | sed "s/^/VMTEST $f: /"
done
# 5. The output modes on the real chip.
RUST_LOG=info RUST_LOG_STYLE=never /bin/lookout run --config /lookout-modes.toml > /tmp/modes.out 2> /tmp/modes.err &
pid=$!
while kill -0 "$pid" 2>/dev/null; do
    grep lookout-output /sys/kernel/debug/gpio | tr -s ' ' | sed 's/^/VMTEST modes: /'
    echo "VMTEST modes: --"
    sleep 0.2
done
wait "$pid"
say "modes exit $?"
say "modes alerts $(grep -c LKALR /tmp/modes.out) clears $(grep -c LKCLR /tmp/modes.out)"
grep -E 'done:|ERROR|^lookout:' /tmp/modes.err | sed 's/^/VMTEST modes log: /'
grep lookout /sys/kernel/debug/gpio | sed 's/^/VMTEST modes after: /'
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
timeout 600 "${qemu[@]}" -accel tcg -smp 2 -m 1024 -nographic -no-reboot -nic none \
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
events = [f[4] for f in sentences if f[0] == "LKEVT"]
if events != ["camera_lost", "camera_restored"] * 3:
    fail.append(f"events {events}, want camera_lost + camera_restored three times (missing at start, stall, unbind)")
ev_at = [i for i, f in enumerate(sentences) if f[0] == "LKEVT"]
ev_at = (ev_at + [None] * 6)[:6] + [len(sentences)]
hb = [(i, float(f[4]), float(f[5]), int(f[6])) for i, f in enumerate(sentences) if f[0] == "LKHBT"]
# Heartbeats in each streaming stretch: after a restore, before the next loss (or the end).
stretches = []
for k, (lo, hi) in enumerate([(ev_at[1], ev_at[2]), (ev_at[3], ev_at[4]), (ev_at[5], ev_at[6])]):
    got = [h for h in hb if lo is not None and hi is not None and lo < h[0] < hi]
    stretches.append(got)
    # The first heartbeat of a stretch covers part of the outage before it, and the last one before a loss
    # part of the stall timeout; the ones between cover streaming only.
    inner = got[1:-1] if k < 2 else got[1:]
    if not inner or min(h[1] for h in inner) < 20:
        fail.append(f"capture fps in streaming stretch {k + 1}: {[h[1] for h in got]}, want >= 20 inside it")
def gpio(tag):
    got = [l.split(tag, 1)[1].split()[-1] for l in console.splitlines() if tag in l and "lookout-camera-lost" in l]
    return got[0] if got else "?"
lines = {t: gpio(f"VMTEST gpio-{t}:") for t in ("start", "stalled", "lost", "after")}
if [lines[t] for t in ("start", "stalled", "lost", "after")] != ["hi", "hi", "hi", "lo"]:
    fail.append(f"camera_lost line {lines}, want hi with no camera, hi stalled, hi unbound, lo after")
if "VMTEST lookout exit 0" not in console:
    fail.append("lookout did not exit 0 on SIGTERM")
if "VMTEST probe-none: no camera: there are no video devices" not in console:
    fail.append("lookout probe without vivid did not say 'no camera'")
if 'usable as format = "yuyv"' not in console:
    fail.append("lookout probe did not list vivid's YUYV")
if "timed out" not in console.split("VMTEST stalling the camera", 1)[-1].split("VMTEST camera unstalled", 1)[0]:
    fail.append("no timeout reported while the camera was stalled")
formats = {}
for f in ("nv12", "grey"):
    done = [l for l in console.splitlines() if l.startswith(f"VMTEST {f}: ") and "done:" in l]
    formats[f] = "ok" if done and "50 frames captured" in done[0] and " 0 corrupt" in done[0] else "FAIL"
    if formats[f] != "ok":
        fail.append(f"{f}: no clean 50-frame run: {done}")
# 5. The output modes: samples of every lookout-output line, separated by "--".
samples, cur = [], {}
for l in console.splitlines():
    if not l.startswith("VMTEST modes: "):
        continue
    body = l[len("VMTEST modes: "):]
    if body == "--":
        samples.append(cur)
        cur = {}
        continue
    m = re.search(r"gpio-\d+ \(.*\|lookout-output-(\d+) *\) out (hi|lo)", body)
    if m:
        cur[int(m.group(1))] = m.group(2)
samples = [x for x in samples if len(x) == 4]
seen = lambda line: "".join("1" if x[line] == "hi" else "0" for x in samples)
modes = {n: seen(n) for n in (2, 4, 5, 6)} if samples else {}
if not samples:
    fail.append("modes: no sample with all four outputs: " + " / ".join(l for l in console.splitlines() if "VMTEST modes log" in l))
else:
    first = samples[0]
    if (first[2], first[4], first[5], first[6]) != ("lo", "lo", "hi", "lo"):
        fail.append(f"modes: first levels {first}, want pulse lo, follow lo, latched (active low) hi, camera_lost lo")
    on = [i for i, x in enumerate(samples) if x[4] == "hi"]
    if not on:
        fail.append(f"modes: the follow line was never on: {modes}")
    elif not any(samples[i][2] == "hi" for i in on) or samples[on[-1]][2] != "lo":
        fail.append(f"modes: the pulse did not go on and off again while the alert was active: {modes}")
    elif any(samples[i][5] != "lo" for i in on):
        fail.append(f"modes: the latched (active-low) line was not on while the alert was: {modes}")
    if "1" in modes[6]:
        fail.append(f"modes: camera_lost on with a file source: {modes[6]}")
if "VMTEST modes exit 0" not in console:
    fail.append("modes: lookout did not exit 0")
ma = re.search(r"VMTEST modes alerts (\d+) clears (\d+)", console)
if not ma or int(ma.group(1)) < 1 or ma.group(1) != ma.group(2):
    fail.append(f"modes: alerts/clears {ma.groups() if ma else None}, want at least one alert and its clear")
if "VMTEST modes after:" in console:
    fail.append("modes: lookout lines still requested after the exit")
for bad in ("panicked", "Kernel panic", "Oops", "BUG:"):
    if bad in console:
        fail.append(f"{bad!r} in the console log")
for f in fail:
    print("vm-test: FAIL:", f)
fps = lambda hs: "/".join(f"{h[1]:.1f}" for h in hs) or "-"
print(f"vm-test {arch}: {'PASS' if not fail else 'FAIL'}: {len(sentences)} sentences, checksums ok, seq "
      f"{seqs[0] if seqs else '-'}..{seqs[-1] if seqs else '-'} increasing; capture fps {' | '.join(fps(x) for x in stretches)}; "
      f"infer fps {hb[-1][2] if hb else '-'}; lost+restored x{events.count('camera_restored')} (absent at start, stalled, "
      f"unbound); camera_lost line {lines['start']}/{lines['stalled']}/{lines['lost']} while gone, {lines['after']} after; "
      f"nv12 {formats['nv12']}, grey {formats['grey']}; exit {'0' if 'VMTEST lookout exit 0' in console else 'not 0'}; "
      f"outputs over {len(samples)} samples: pulse {modes.get(2, '-')}, follow {modes.get(4, '-')}, "
      f"latched (active low) {modes.get(5, '-')}, camera_lost {modes.get(6, '-')}")
sys.exit(1 if fail else 0)
EOF
