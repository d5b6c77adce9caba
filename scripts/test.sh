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

# The last release (scripts/last-release: "<tag> <commit>"), by its tag
# where the clone has tags. A clone without the release's history (a
# shallow one) cannot check against it: said, and skipped.
read -r release_tag release_commit < scripts/last-release
release_ref=$(git rev-parse -q --verify "refs/tags/$release_tag^{commit}" || echo "$release_commit")
if git cat-file -e "$release_ref^{commit}" 2>/dev/null; then
    have_release=1
else
    have_release=0
    echo "WARNING: this clone lacks $release_tag ($release_commit): the breaking-change check and the mixed-version test are skipped" >&2
fi

if [ "$have_release" = 1 ]; then
    step "buf breaking (proto/ against $release_tag)"
    buf breaking --against ".git#ref=$release_ref"
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build the service binaries the end-to-end tests run"
cargo build --workspace --bins --locked

if [ "$have_release" = 1 ]; then
    step "build $release_tag's duet for the mixed-version test"
    DUET_PREVIOUS_BIN=$(scripts/previous-release.sh)
    export DUET_PREVIOUS_BIN
fi

step "cargo test"
cargo test --workspace --locked -- --test-threads="${DUET_TEST_THREADS:-2}"

printf '\n==> all checks passed in %ss\n' "$(( $(date +%s) - start ))"
