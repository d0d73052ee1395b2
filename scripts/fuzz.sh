#!/usr/bin/env bash
# Fuzzes the parsers that read files and streams, one target after another (cargo-fuzz, libFuzzer):
#   scripts/fuzz.sh [SECONDS] [TARGET...]    default 600 s each, targets config mjpeg y4m manifest
# Installs cargo-fuzz (pinned) if missing; needs the nightly toolchain (`rustup toolchain install
# nightly`). New interesting inputs land in fuzz/corpus/<target>/ (commit the small ones: the normal test
# run replays them, tests/fuzz_corpus.rs); crashes land in fuzz/artifacts/<target>/ and make this fail.
# Prints executions and corpus size per target.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO_FUZZ_VERSION=0.13.2
secs=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(config mjpeg y4m manifest)
if ! cargo fuzz --version 2>/dev/null | grep -q " $CARGO_FUZZ_VERSION"; then
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi
status=0
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    log=$(mktemp)
    # -rss_limit_mb: a parser that allocates without bound is a finding too.
    if cargo +nightly fuzz run -O "$t" -- -max_total_time="$secs" -rss_limit_mb=2048 \
        -max_len=262144 -print_final_stats=1 >"$log" 2>&1; then
        result=ok
    else
        result=CRASH
        status=1
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
    [ "$result" = ok ] || ls fuzz/artifacts/"$t"/
    echo "fuzz: $t: $result, ${execs:-?} executions in ${secs}s, corpus $(ls "fuzz/corpus/$t" | wc -l) inputs"
    [ "$result" = ok ] || tail -n 40 "$log"
    rm -f "$log"
done
exit $status
