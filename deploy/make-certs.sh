#!/usr/bin/env bash
# Makes the example pair's peer-link certificates (configsync and
# replicator, mutual TLS) in deploy/certs/: ca.pem, lb1.pem/lb1.key,
# lb2.pem/lb2.key (and ca.key, which no container mounts). Private keys
# never go into git (deploy/certs/.gitignore).
#
#   deploy/make-certs.sh            # only if deploy/certs/ca.pem is missing
#   deploy/make-certs.sh --force    # a new CA and new unit certificates
#
# Uses duetctl from target/release (build it first, or set DUETCTL), or,
# failing that, the duet:local image (DUET_IMAGE).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$here/certs
units=${UNITS:-lb1,lb2}
if [ -e "$out/ca.pem" ] && [ "${1:-}" != --force ]; then
    echo "make-certs: $out/ca.pem exists; keeping it (--force for new ones)" >&2
    exit 0
fi
mkdir -p "$out"
duetctl=${DUETCTL:-$here/../target/release/duetctl}
image=${DUET_IMAGE:-duet:local}
# `duetctl certs` needs no unit file (DUET_CONFIG is ignored for it).
if [ -x "$duetctl" ]; then
    "$duetctl" certs --out "$out" --pair duet-example --units "$units"
elif docker image inspect "$image" >/dev/null 2>&1; then
    docker run --rm --network none --user "$(id -u):$(id -g)" -v "$out:/out" \
        --entrypoint /usr/local/bin/duetctl "$image" certs --out /out --pair duet-example --units "$units"
else
    echo "make-certs: no duetctl: run deploy/build-image.sh first (or set DUETCTL)" >&2
    exit 1
fi
# The containers run as duet (uid 10001): they read the keys as their
# owner. The keys stay 0600.
chmod 0644 "$out"/*.pem
chmod 0600 "$out"/*.key
if [ "$(id -u)" = 0 ]; then
    chown 10001:10001 "$out"/*.key
else
    echo "make-certs: note: the units run as uid 10001, so they can read a 0600 key only" >&2
    echo "  if 10001 owns it: sudo chown 10001:10001 $out/*.key" >&2
fi
