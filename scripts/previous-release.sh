#!/usr/bin/env bash
# Builds the previous release's `duet` binary (U4's mixed-version test runs
# it beside this tree's): a git worktree of the release's commit, built
# into its own target directory. Prints the binary's path. A second run
# reuses both (cargo builds only what changed: nothing).
#
# The release is the one named in scripts/last-release ("<tag> <commit>"):
# its tag where the clone has tags, else the commit.
set -euo pipefail
cd "$(dirname "$0")/.."
read -r tag commit < scripts/last-release
ref=$(git rev-parse -q --verify "refs/tags/$tag^{commit}" || echo "$commit")
base=target/previous-release
src="$base/src-$ref"
if [ ! -e "$src/Cargo.toml" ]; then
    rm -rf "$src"
    git worktree prune
    git worktree add --detach "$src" "$ref" >&2
fi
CARGO_TARGET_DIR="$PWD/$base/target" cargo build --locked --manifest-path "$src/Cargo.toml" -p duet-unit --bin duet >&2
echo "$PWD/$base/target/debug/duet"
