#!/usr/bin/env bash
# The project's test command: formatting, lints, then every test (unit, end-to-end, reference,
# steady-state allocation, serial on a pty) against a release build.
# Needs: a Rust toolchain with clippy and rustfmt, and ffmpeg (for the int8 reference test).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --release --all-targets -- -D warnings
cargo test --release
