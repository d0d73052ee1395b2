#!/usr/bin/env bash
# lookout against the Python peer (OpenCV + onnxruntime, the same model file, every frame analysed) on
# the same clip and the same machine, interleaved, several rounds; writes BENCHMARKS.md.
#
#   scripts/bench-peer.sh [ROUNDS]      (default 5; BENCH_CLIP=path/to.mjpeg for another clip)
#
# Installs what it needs: a Python venv (target/peer-venv) with pinned onnxruntime, OpenCV and numpy from
# PyPI, and ffmpeg (Debian) for the still-street clip. Each round runs, one after the other: the peer with
# 1 onnxruntime thread, the peer with onnxruntime's default threads, `lookout bench --json` with the
# default config, with one engine and gating off (every frame analysed), and with the default config but
# tract's own depthwise and max pool kernels. Every figure is what the program measured of itself: frames a
# second from the first decision to the last, start-up from the process's start (the kernel's start
# time, 10 ms steps) to the first decision, per-frame latency, peak resident memory (getrusage / VmHWM).
# Ratios are taken round by round (both in the same minute of the same machine), then the median.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
clip=${BENCH_CLIP:-tests/data/bikes.mjpeg}
tdir=${CARGO_TARGET_DIR:-target}
venv=${PEER_VENV:-$tdir/peer-venv}
out=${BENCH_OUT:-BENCHMARKS.md}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if ! "$venv/bin/python" -c "import onnxruntime, cv2, numpy" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q onnxruntime==1.32.0 opencv-python-headless==5.0.0.93 numpy==2.4.6
fi
command -v ffmpeg >/dev/null || { apt-get update -qq && apt-get install -y -qq ffmpeg >/dev/null; }
cargo build --release --locked -q
lk=$tdir/release/lookout
py=$venv/bin/python

load() { cut -d' ' -f1-3 /proc/loadavg; }
load_before=$(load)
printf '[inference]\nengines = 1\n[gate]\nenabled = false\n' > "$work/one-nogate.toml"
printf '[inference]\nkernels = "tract"\n' > "$work/tract-kernels.toml"

for r in $(seq "$rounds"); do
    echo "round $r/$rounds"
    "$py" scripts/peer.py --model models/fastestdet.onnx --source "$clip" --threads 1 | sed "s/^/peer1 $r /" >> "$work/runs"
    "$py" scripts/peer.py --model models/fastestdet.onnx --source "$clip" --threads 0 | sed "s/^/peerN $r /" >> "$work/runs"
    "$lk" bench --json --source "$clip" 2>/dev/null | sed "s/^/lookout $r /" >> "$work/runs"
    "$lk" bench --json --source "$clip" --config "$work/one-nogate.toml" 2>/dev/null | sed "s/^/lookout1 $r /" >> "$work/runs"
    "$lk" bench --json --source "$clip" --config "$work/tract-kernels.toml" 2>/dev/null | sed "s/^/lookoutT $r /" >> "$work/runs"
done

# Inference alone, per model: tract (`lookout bench`, one engine, no gating: its inference stage) and
# onnxruntime (1 thread, one fixed input).
for m in fastestdet-fp32 fastestdet-lean-fp32 fastestdet-int8 fastestdet-lean-int8; do
    "$lk" bench --json --source "$clip" --config "$work/one-nogate.toml" --model "models/$m.toml" 2>/dev/null |
        sed "s/^/tract-$m 0 /" >> "$work/runs"
done
for f in fastestdet.onnx fastestdet.int8.onnx; do
    "$py" scripts/peer.py --model "models/$f" --source "$clip" --threads 1 --infer-only 300 | sed "s/^/ort-$f 0 /" >> "$work/runs"
done

# The still street: frame 0 of the shipped clip held for 10 s with sensor noise in every frame.
ffmpeg -loglevel error -y -i tests/data/bikes.mp4 -frames:v 1 "$work/frame0.png"
ffmpeg -loglevel error -y -loop 1 -framerate 25 -i "$work/frame0.png" -t 10 -vf "noise=alls=8:allf=t" \
    -pix_fmt yuv420p -f yuv4mpegpipe "$work/still.y4m"
"$lk" bench --json --source "$work/still.y4m" 2>/dev/null | sed "s/^/still 0 /" >> "$work/runs"

load_after=$(load)
"$py" - "$work/runs" "$out" "$rounds" "$clip" "$load_before" "$load_after" <<'EOF'
import json, os, platform, statistics as st, subprocess, sys
runs_path, out, rounds, clip, load_before, load_after = sys.argv[1:]
runs = {}
for line in open(runs_path):
    kind, r, js = line.split(" ", 2)
    runs.setdefault(kind, {})[int(r)] = json.loads(js)
med = lambda xs: st.median(xs) if xs else float("nan")
def col(kind, key):
    return [v[key] for v in runs[kind].values()]
def ratio(a, b, key, inv=False):
    rs = [(runs[b][r][key] / runs[a][r][key]) if inv else (runs[a][r][key] / runs[b][r][key]) for r in runs[a] if r in runs[b]]
    return med(rs), min(rs), max(rs)
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
lk = runs["lookout"][1]
lines = []
w = lines.append
w("# Benchmarks")
w("")
w(f"Made by `scripts/bench-peer.sh {rounds}` on {os.cpu_count()} cores ({cpu}, {platform.machine()}), "
  f"load average {load_before} before and {load_after} after; clip `{clip}`, every frame analysed by both.")
w("Each figure is the median of the rounds; ratios are taken round by round (the two ran in the same minute), "
  "then the median, with the range. The peer is `scripts/peer.py`: OpenCV decode and bilinear resize, "
  "onnxruntime 1.32.0 on `models/fastestdet.onnx` (the original graph), the same decoding and NMS.")
w("")
w("| | fps | e2e p50 ms | e2e p99 ms | peak RSS MB | start-up to first decision ms |")
w("|---|---|---|---|---|---|")
names = {
    "peer1": "Python peer, onnxruntime 1 thread",
    "peerN": "Python peer, onnxruntime default threads",
    "lookout": f"lookout, default config ({lk['engines']} engines, {lk['model']}, gating on)",
    "lookout1": "lookout, 1 engine, gating off",
    "lookoutT": "lookout, default config but tract's own depthwise and max pool (`kernels = \"tract\"`)",
}
for k, name in names.items():
    w(f"| {name} | {med(col(k,'fps')):.1f} | {med(col(k,'e2e_ms_p50')):.2f} | {med(col(k,'e2e_ms_p99')):.2f} | "
      f"{med(col(k,'peak_rss_kb'))/1024:.1f} | {med(col(k,'startup_ms')):.0f} |")
w("")
w("lookout's end-to-end latency runs from the moment the capture thread starts reading a frame to its "
  "decision, so with a file read as fast as possible it includes the wait in the ring (4 slots) behind "
  "frames not yet analysed; the peer's is one frame's decode to decision, with nothing queued.")
w("")
w("| ratio (lookout / peer with 1 thread) | median | min | max | acceptance |")
w("|---|---|---|---|---|")
f = ratio("lookout", "peer1", "fps")
w(f"| fps, default config | {f[0]:.2f} | {f[1]:.2f} | {f[2]:.2f} | >= 1.2 |")
f1 = ratio("lookout1", "peer1", "fps")
w(f"| fps, 1 engine, gating off | {f1[0]:.2f} | {f1[1]:.2f} | {f1[2]:.2f} | |")
ft = ratio("lookoutT", "peer1", "fps")
w(f"| fps, default config with tract's kernels | {ft[0]:.2f} | {ft[1]:.2f} | {ft[2]:.2f} | |")
m = ratio("lookout", "peer1", "peak_rss_kb")
w(f"| peak RSS, default config | {m[0]:.2f} | {m[1]:.2f} | {m[2]:.2f} | <= 0.33 |")
m1 = ratio("lookout1", "peer1", "peak_rss_kb")
w(f"| peak RSS, 1 engine, gating off | {m1[0]:.2f} | {m1[1]:.2f} | {m1[2]:.2f} | |")
s = ratio("lookout", "peer1", "startup_ms")
w(f"| start-up, default config | {s[0]:.2f} | {s[1]:.2f} | {s[2]:.2f} | <= 0.5 |")
w("")
one = runs["lookout1"]
eff = [v["fps"] * v["infer_ms_p50"] / 1000 for v in one.values()]
w(f"One engine against its own inference: fps x tract's inference p50 = {med(eff):.3f} "
  f"(min {min(eff):.3f}, max {max(eff):.3f}; 1.0 would be a pipeline that costs nothing; acceptance >= 0.95).")
w("")
w("## Inference alone, per model")
w("")
w("| model | tract 0.23.9, `lookout bench` p50 ms (1 engine) | onnxruntime 1.32.0, 1 thread, p50 ms |")
w("|---|---|---|")
ort = {"fastestdet-fp32": "ort-fastestdet.onnx", "fastestdet-int8": "ort-fastestdet.int8.onnx"}
for mname in ["fastestdet-fp32", "fastestdet-lean-fp32", "fastestdet-int8", "fastestdet-lean-int8"]:
    t = runs[f"tract-{mname}"][0]["infer_ms_p50"]
    o = runs.get(ort.get(mname, ""), {}).get(0, {}).get("infer_ms_p50")
    w(f"| {mname} | {t:.2f} | {'%.2f' % o if o else '-'} |")
w("")
still = runs["still"][0]
w("## Motion gating on a still street")
w("")
w(f"Frame 0 of the shipped clip held for 10 s at 25 fps with ffmpeg's noise filter (strength 8, new in "
  f"every frame): {still['frames']} frames, {still['skipped']} skipped "
  f"({100*still['skipped']/max(1,still['frames']):.1f}%), {still['analysed']} analysed (a re-check a second); "
  f"{still['fps']:.0f} frames/s. tests/engines.rs shows the same on a still street that a car then drives into.")
w("")
w("## Allocations")
w("")
w(f"`lookout bench --json`, default config, round 1: {lk['allocs_per_frame']} heap allocations per frame in the "
  f"steady state outside tract (the JPEG decoder's come from its arena: {lk['jpeg_arena_overflows']} overflows), "
  f"{lk['allocs_per_frame_tract']} inside tract's run.")
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
echo "bench-peer: wrote $out"
