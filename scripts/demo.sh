#!/usr/bin/env bash
# One command for a newcomer: build duet and run a pair in network
# namespaces (needs root). See the README.
set -euo pipefail
cd "$(dirname "$0")/.."
# etcd-client (the witness, E14) runs protoc when it is built.
if ! command -v protoc >/dev/null || [ ! -e /usr/include/google/protobuf/timestamp.proto ]; then
    echo "building duet needs protoc and its well-known types: apt-get install protobuf-compiler libprotobuf-dev" >&2
    exit 2
fi
if [ ! -x target/release/duet-demo ]; then
    echo "demo: the first run builds duet in release mode: several minutes (about 5 on 2 cores); later runs start at once" >&2
fi
cargo build --release --workspace --bins --locked
exec target/release/duet-demo "$@"
