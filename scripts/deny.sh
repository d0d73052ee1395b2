#!/usr/bin/env bash
# cargo deny check: advisories, licenses, bans and sources (deny.toml), offline.
#   scripts/deny.sh
# Installs cargo-deny (pinned) if missing. The RustSec advisory database cannot be fetched from here: a
# snapshot is copied from $LOOKOUT_ADVISORY_DB (default ../shared/advisory-db, beside the checkout) to where
# cargo-deny looks for its clone, with the snapshot's own date as its fetch time, and checked offline
# (--offline). Without a snapshot, advisories are skipped (said loudly) and the rest is checked.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO_DENY_VERSION=0.20.2
if ! cargo deny --version 2>/dev/null | grep -q " $CARGO_DENY_VERSION\$"; then
    cargo install cargo-deny --version "$CARGO_DENY_VERSION" --locked
fi
tdir=${CARGO_TARGET_DIR:-target}
# cargo-deny reads `cargo metadata` of every platform (Windows crates too), which a build here never
# downloads: fetch them all first (nothing to do when they are in cargo's cache already).
cargo fetch --locked
src=${LOOKOUT_ADVISORY_DB:-../shared/advisory-db}
if [ -d "$src/crates" ]; then
    # cargo-deny's directory for https://github.com/rustsec/advisory-db: <last path segment>-<xxhash64 of the URL>.
    dest=$tdir/advisory-dbs/advisory-db-3157b0e258782691
    rm -rf "$dest"
    mkdir -p "$dest/.git"
    cp -r "$src/crates" "$dest/"
    # The snapshot's date (from SNAPSHOT.txt) is its fetch time: cargo-deny judges staleness by it.
    when=$(grep -o '[0-9]\{4\}-[0-9]\{2\}-[0-9]\{2\}' "$src/SNAPSHOT.txt" 2>/dev/null | head -n1 || true)
    echo "snapshot" > "$dest/.git/FETCH_HEAD"
    [ -n "$when" ] && touch -d "$when" "$dest/.git/FETCH_HEAD"
    echo "deny: advisory database snapshot of ${when:-unknown date} ($(find "$dest/crates" -name '*.md' | wc -l) advisories)"
    CARGO_TARGET_DIR=$tdir cargo deny --offline --log-level warn check
else
    echo "deny: WARNING: no advisory database at $src (set LOOKOUT_ADVISORY_DB): advisories NOT checked"
    cargo deny --offline --log-level warn check licenses bans sources
fi
echo "deny: ok"
