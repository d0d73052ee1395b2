#!/usr/bin/env bash
# What one inference of each model costs on the boards' CPUs, estimated by counting the instructions
# lookout's aarch64 build executes under qemu-user, with the CPU models of a Pi 4 and a Pi 5:
#   scripts/arm-insn-count.sh [runs]     (default 3 runs a model; writes docs/arm-instruction-counts.md)
#
# -cpu cortex-a72 (Pi 4: NEON, no dot-product instructions) and -cpu cortex-a76 (Pi 5; an Orin's A78AE
# has the same instruction set for this: NEON with SDOT/UDOT and fp16). tract picks its kernels from the
# CPU features it sees (qemu reports the model's), so each count is of the code that board would run.
# Per inference = (count with 1 + runs inferences - count with 1) / runs, which cancels start-up (model
# load, optimization, the self-test) and exit: `lookout bench --ops --frames N` runs the model N times.
#
# What this can tell: how much work each model makes tract do on each instruction set; where a model
# runs other kernels on one CPU than on the other (SDOT int8 on the A76). What it cannot: time. An
# instruction count ignores how many cycles each takes (the two cores differ there), memory stalls (the
# caches differ) and clock; an SDOT does 16 multiply-adds in one instruction
# where NEON f32 does 4, so fewer instructions there is real work saved, but not in proportion. Only a
# board can say how fast; this says which model asks the least of it.
#
# Models: the four shipped manifests, and the QOperator int8 (integer convolutions in tract) that
# scripts/quantize_int8.py makes, when a Python venv with onnxruntime is there (PEER_VENV, default
# $CARGO_TARGET_DIR/peer-venv, as scripts/bench-peer.sh installs it; onnx and pillow, which
# scripts/lookout_ref.py needs, are added to it here).
# Needs what scripts/test.sh installs for aarch64 (the cross compiler, qemu-user), and cc. LOOKOUT_AARCH64_BIN
# names an aarch64 lookout already built (then nothing is built).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
case "$runs" in '' | *[!0-9]* | 0) echo "usage: $0 [runs >= 1]" >&2; exit 2 ;; esac
tdir=${CARGO_TARGET_DIR:-target}
venv=${PEER_VENV:-$tdir/peer-venv}
out=${INSN_OUT:-docs/arm-instruction-counts.md}
triple=aarch64-unknown-linux-gnu
bin=${LOOKOUT_AARCH64_BIN:-$tdir/$triple/release/lookout}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

[ -n "${LOOKOUT_AARCH64_BIN:-}" ] || scripts/build-arm.sh aarch64 >&2
cc -O2 -Wall -Wextra -shared -fPIC -o "$work/libinsn.so" scripts/qemu-insn-count.c

manifests=(models/fastestdet-fp32.toml models/fastestdet-lean-fp32.toml models/fastestdet-int8.toml
    models/fastestdet-lean-int8.toml)
qop_note="not measured: no venv with onnxruntime at $venv (scripts/bench-peer.sh installs one)"
if "$venv/bin/python" -c "import onnxruntime.quantization, cv2, numpy" 2>/dev/null; then
    "$venv/bin/python" -c "import onnx, PIL" 2>/dev/null || "$venv/bin/pip" install -q onnx==1.23.2 pillow==13.0.0
    # The manifest for it lives beside links to the shipped files it names (license, self-test input).
    mkdir -p "$work/m/selftest"
    ln -s "$PWD/models/fastestdet.LICENSE" "$work/m/"
    ln -s "$PWD/models/selftest/bikes-352x352.ppm" "$work/m/selftest/"
    "$venv/bin/python" scripts/quantize_int8.py models/fastestdet-lean.onnx "$work/m/fastestdet-lean.qop.onnx" >&2
    sha=$(sha256sum "$work/m/fastestdet-lean.qop.onnx" | cut -d' ' -f1)
    # Loosely self-tested (atol 1.0): the manifest is for counting, not shipping.
    sed -e 's/^name = .*/name = "fastestdet-lean-qop-int8"/' -e 's/^file = .*/file = "fastestdet-lean.qop.onnx"/' \
        -e "s/^sha256 = .*/sha256 = \"$sha\"/" \
        -e 's/^description = .*/description = "lean FastestDet, QOperator int8 by scripts\/quantize_int8.py (counting only)"/' \
        -e 's/^expected = .*/expected = "selftest\/fastestdet-lean-qop.expected.f32"/' \
        -e 's/^atol = .*/atol = 1.0/' -e 's/^max_mismatch = .*/max_mismatch = 0.05/' \
        models/fastestdet-lean-fp32.toml > "$work/m/fastestdet-lean-qop-int8.toml"
    # Its self-test reference: onnxruntime's run on the self-test input through the reference
    # preprocessing every other fixture was made with (scripts/lookout_ref.py, as scripts/make_fixtures.py).
    "$venv/bin/python" - "$work/m/fastestdet-lean-qop-int8.toml" <<'EOF'
import sys

import numpy as np

sys.path.insert(0, "scripts")
from lookout_ref import Manifest  # noqa: E402

m = Manifest(sys.argv[1])
st = m.m["selftest"]
ppm = (m.dir / st["input"]).read_bytes()
img = np.frombuffer(ppm[len(ppm) - m.w * m.h * 3 :], np.uint8).reshape(m.h, m.w, 3)  # P6, maxval 255
outs = m.run(m.tensor(img.astype(np.float32)))
(m.dir / st["expected"]).write_bytes(b"".join(np.ascontiguousarray(o, dtype="<f4").tobytes() for o in outs))
EOF
    manifests+=("$work/m/fastestdet-lean-qop-int8.toml")
    qop_note="made now by scripts/quantize_int8.py from models/fastestdet-lean.onnx"
fi

# count CPU MANIFEST N [VAR=VALUE]: instructions lookout executes for N inferences (and everything
# around them), with that environment variable set if one is given.
count() {
    local log=$work/qemu.log
    rm -f "$log"
    env ${4:+"$4"} qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu "$1" -plugin "$work/libinsn.so" -d plugin -D "$log" \
        "$bin" bench --ops --model "$2" --frames "$3" > "$work/ops.txt" 2> "$work/err.txt" || {
        echo "arm-insn-count: lookout failed under qemu ($1, $2):" >&2
        cat "$work/err.txt" >&2
        exit 1
    }
    sed -n 's/^insns: //p' "$log"
}

rows=()
# row NAME MANIFEST [VAR=VALUE]: one table row, both CPUs.
row() {
    local name=$1 m=$2 env=${3:-} cpu one more per top line
    line="| $name"
    for cpu in cortex-a72 cortex-a76; do
        one=$(count "$cpu" "$m" 1 "$env")
        more=$(count "$cpu" "$m" $((1 + runs)) "$env")
        [ -n "$one" ] && [ -n "$more" ] || { echo "arm-insn-count: no count for $name on $cpu" >&2; exit 1; }
        per=$(( (more - one) / runs ))
        # The ops that took longest under emulation (an indication only: qemu's time, not a board's).
        top=$(awk 'NR > 2 && $1 != "all" { printf "%s%s %s", (n++ ? ", " : ""), $1, $4 } n == 3 { exit }' "$work/ops.txt")
        echo "arm-insn-count: $name on $cpu: $per instructions an inference ($one with 1 run, $more with $((1 + runs)))" >&2
        line="$line | $(awk -v p="$per" 'BEGIN { printf "%.1f", p / 1e6 }') | $top"
    done
    rows+=("$line |")
}
for m in "${manifests[@]}"; do
    row "$(awk -F'"' '/^name = /{ print $2; exit }' "$m")" "$m"
done
# The same integer graph with tract's SDOT kernels switched off (its own knob): what SDOT changes on the A76.
case "${manifests[*]}" in
    *qop*) row "fastestdet-lean-qop-int8, SDOT off (TRACT_DOTPROD_DISABLE=1)" "${manifests[-1]}" TRACT_DOTPROD_DISABLE=1 ;;
esac

{
    echo "# Instructions per inference on the boards' CPUs (qemu-user)"
    echo
    echo "Made by \`scripts/arm-insn-count.sh $runs\` on $(date -u +%Y-%m-%d), $(qemu-aarch64 --version | head -1), lookout $(git describe --always --dirty 2>/dev/null || echo '?'), tract $(sed -n 's/^tract-onnx = "=\(.*\)"/\1/p' Cargo.toml); load average $(cut -d' ' -f1-3 /proc/loadavg) at the end."
    echo "Each figure is (instructions with $((1 + runs)) inferences - with 1) / $runs, in millions, counted by scripts/qemu-insn-count.c; the QOperator int8 model was $qop_note."
    echo
    echo "| model | Cortex-A72 (Pi 4) M instructions | A72: ops that took longest under qemu | Cortex-A76 (Pi 5, Orin-class) M instructions | A76: ops that took longest under qemu |"
    echo "|---|---|---|---|---|"
    printf '%s\n' "${rows[@]}"
    echo
    echo "An instruction count is work, not time: it leaves out cycles per instruction, memory stalls and clock, and an SDOT (A76) does 16 multiply-adds where a NEON f32 instruction does 4. Fewer instructions for a model on one CPU says it asks less of that CPU; only a board says how much faster it runs. The op names are tract's; their share is qemu's time, which weighs instructions differently from a core."
} > "$out"
echo "arm-insn-count: wrote $out" >&2
