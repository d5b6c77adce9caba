#!/usr/bin/env bash
# duet's whole test suite: the README's test command, and what CI runs.
# Network tests build their own namespaces and need root; with CI set they
# fail instead of skipping when run without it.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }
start=$(date +%s)

step "buf lint (proto/)"
buf lint

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build the service binaries the end-to-end tests run"
cargo build --workspace --bins --locked

step "cargo test"
cargo test --workspace --locked -- --test-threads="${DUET_TEST_THREADS:-2}"

printf '\n==> all checks passed in %ss\n' "$(( $(date +%s) - start ))"
