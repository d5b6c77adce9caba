#!/usr/bin/env bash
# One command for a newcomer: build duet and run a pair in network
# namespaces (needs root). See the README.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --bins --locked
exec target/release/duet-demo "$@"
