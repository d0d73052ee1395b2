#!/usr/bin/env bash
# Soak: lookout at full speed on the built-in clip, looping, for N frames, its memory sampled every second.
#   scripts/soak.sh [--frames N] [--bin PATH]     default 100000 frames, target/release/lookout (built first)
# Fails (exit 1) if the resident memory after warm-up grows by more than 1 MiB: the largest RSS of the
# last fifth of the run against the largest of the warm-up (the first fifth, at least 30 s; on x86-64
# here it is flat at about 63 MiB from the third second on), so the per-frame ups and downs of tract's
# working memory (each run allocates and frees its tensors) cancel out and only creep remains. Prints
# frames, fps, RSS at start, end and max, and which part grew (anonymous memory: the heap; file pages:
# the binary's own code and data, faulted in as first used); the samples stay in target/soak/rss.txt
# (seconds, then VmRSS, RssAnon, RssFile in KiB). CI runs it with --frames 20000 (about 80 s here).
set -euo pipefail
cd "$(dirname "$0")/.."
frames=100000
bin=""
while [ $# -gt 0 ]; do
    case $1 in
        --frames) frames=$2; shift 2 ;;
        --bin) bin=$2; shift 2 ;;
        *) echo "usage: $0 [--frames N] [--bin PATH]" >&2; exit 2 ;;
    esac
done
tdir=${CARGO_TARGET_DIR:-target}
if [ -z "$bin" ]; then
    cargo build --release --locked >/dev/null
    bin=$tdir/release/lookout
fi
work=$tdir/soak
mkdir -p "$work"
cat > "$work/soak.toml" <<'TOML'
# The built-in clip, looping, every frame analysed (pace fast); heartbeats every 10 s.
[source]
loop = true
TOML
: > "$work/rss.txt"
start=$(date +%s.%N)
RUST_LOG=warn "$bin" run --config "$work/soak.toml" --frames "$frames" > "$work/sentences.txt" 2> "$work/stderr.txt" &
pid=$!
t=0
while kill -0 "$pid" 2>/dev/null; do
    rss=$(awk '/^VmRSS:/ {r = $2} /^RssAnon:/ {a = $2} /^RssFile:/ {f = $2} END {if (r != "") print r, a, f}' \
        "/proc/$pid/status" 2>/dev/null || true)
    [ -n "$rss" ] && echo "$t $rss" >> "$work/rss.txt"
    sleep 1
    t=$((t + 1))
done
wait "$pid" && rc=0 || rc=$?
end=$(date +%s.%N)
if [ "$rc" != 0 ]; then
    echo "soak: lookout exited $rc"; tail -n 20 "$work/stderr.txt"; exit 1
fi
python3 - "$work/rss.txt" "$frames" "$start" "$end" "$work/sentences.txt" <<'PY'
import sys
path, frames, start, end, sentences = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
rows = [tuple(map(int, l.split())) for l in open(path) if len(l.split()) == 4]
rss = [r[1] for r in rows]
k = max(30, len(rss) // 5)
if len(rss) < 2 * k:
    print(f"soak: only {len(rss)} RSS samples (1 a second); the warm-up alone is {k}: run more frames"); sys.exit(1)
warm, tail = max(rss[:k]), max(rss[-k:])
growth = tail - warm
anon = [r[2] for r in rows]
files = [r[3] for r in rows]
parts = f"anonymous {max(anon[-k:]) - max(anon[:k])} KiB, file pages {max(files[-k:]) - max(files[:k])} KiB"
alerts = sum(1 for l in open(sentences) if l.startswith("$LKALR"))
secs = end - start
ok = growth <= 1024
print(f"soak: {'PASS' if ok else 'FAIL'}: {frames} frames in {secs:.0f} s ({frames / secs:.1f} fps), {alerts} alerts; "
      f"RSS start {rss[0] / 1024:.1f} MiB, end {rss[-1] / 1024:.1f} MiB, max {max(rss) / 1024:.1f} MiB; "
      f"largest in warm-up (first {k} s) {warm / 1024:.1f} MiB, in the last {k} s {tail / 1024:.1f} MiB: growth {growth} KiB (limit 1024; {parts})")
sys.exit(0 if ok else 1)
PY
