#!/usr/bin/env bash
# Builds the container image of one duet unit (default tag duet:local):
# a FROM scratch image holding the five duet binaries, duetctl, nft and the
# shared libraries they need, copied from this host. No registry needed.
#
#   deploy/build-image.sh                 # cargo build --release, then the image
#   SKIP_CARGO=1 deploy/build-image.sh    # use the binaries already in target/release
#   IMAGE=duet:test deploy/build-image.sh # another tag
#
# Needs: cargo (unless SKIP_CARGO=1), docker, ldd, strip, the nft binary
# (Debian package nftables). The image contains only what the host has, so
# build it on the same distribution family as the binaries were built on.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
IMAGE=${IMAGE:-duet:local}
SKIP_CARGO=${SKIP_CARGO:-0}
# 1: keep the line tables (bigger image, file:line in panic backtraces).
KEEP_DEBUG=${KEEP_DEBUG:-0}
target=${CARGO_TARGET_DIR:-$top/target}
release=$target/release

# `duet unit` runs its four services from the duet binary itself (started
# under each service's name), so the image needs no separate service
# binaries.
services=(duet)
tools=(duetctl)

say() { printf '%s\n' "build-image: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

for t in docker ldd strip setcap tar; do
    command -v "$t" >/dev/null || die "$t not found"
done
nft=$(command -v nft || true)
[ -n "$nft" ] || nft=/usr/sbin/nft
[ -x "$nft" ] || die "nft not found: install nftables (the replicator's data plane runs it)"

if [ "$SKIP_CARGO" != 1 ]; then
    command -v protoc >/dev/null || die "protoc not found: install protobuf-compiler libprotobuf-dev (etcd-client, the witness's client, runs it when built)"
    say "cargo build --release --workspace --bins --locked (waits for cargo's lock if another build runs)"
    (cd "$top" && cargo build --release --workspace --bins --locked)
fi
for b in "${services[@]}" "${tools[@]}"; do
    [ -x "$release/$b" ] || die "$release/$b missing: run without SKIP_CARGO=1"
done

work=$(mktemp -d "${TMPDIR:-/tmp}/duet-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs
mkdir -p "$rootfs"/{usr/local/bin,usr/sbin,etc/duet,var/lib/duet,tmp,proc,sys,dev,run}
chmod 1777 "$rootfs/tmp"
chmod 0700 "$rootfs/var/lib/duet"

# The binaries. Debug line tables are stripped (about 70 MB -> 10 MB each);
# the symbol table stays, so a panic backtrace still names functions.
for b in "${services[@]}" "${tools[@]}"; do
    install -m 0755 "$release/$b" "$rootfs/usr/local/bin/$b"
    [ "$KEEP_DEBUG" = 1 ] || strip --strip-debug "$rootfs/usr/local/bin/$b"
done
install -m 0755 "$nft" "$rootfs/usr/sbin/nft"

# Every shared library they load, at the path the loader looks for it
# (the dynamic loader included: ldd prints it as an absolute path).
copy_lib() {
    local src=$1 dst=$rootfs$1
    [ -e "$dst" ] && return 0
    mkdir -p "$(dirname "$dst")"
    cp -L "$src" "$dst"
}
libs=$(for f in "$rootfs"/usr/local/bin/* "$rootfs/usr/sbin/nft"; do
    ldd "$f" | awk '/=> \// { print $3 } /^[[:space:]]*\// { print $1 }'
done | sort -u)
[ -n "$libs" ] || die "ldd found no libraries (static binaries are fine, but then say so here)"
for l in $libs; do
    copy_lib "$l"
done
# Nothing in the image may need a library that was not copied.
for f in "$rootfs"/usr/local/bin/* "$rootfs/usr/sbin/nft"; do
    if ldd "$f" | grep -q 'not found'; then
        die "$f: $(ldd "$f" | grep 'not found')"
    fi
done

# Minimal /etc. Rust's std and the services need none of these; they are
# for nft (protocol and service names), name lookups (an OTLP endpoint
# given by name: Docker mounts /etc/hosts and /etc/resolv.conf) and tools
# that print user names.
cat >"$rootfs/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/nonexistent
duet:x:10001:10001:duet:/var/lib/duet:/nonexistent
nobody:x:65534:65534:nobody:/nonexistent:/nonexistent
EOF
cat >"$rootfs/etc/group" <<'EOF'
root:x:0:
duet:x:10001:
nogroup:x:65534:
EOF
# The unit runs as duet (10001), not root: its state is its own, and the
# duet binary carries the two capabilities it needs as file capabilities
# without the effective bit (+p): duet makes them effective itself and
# passes them to its services and nft (ambient), and a container started
# without cap_add gets duet's one-line explanation, not an exec failure.
chown -R 10001:10001 "$rootfs/var/lib/duet"
setcap cap_net_admin,cap_net_raw+p "$rootfs/usr/local/bin/duet"
cat >"$rootfs/etc/nsswitch.conf" <<'EOF'
passwd: files
group:  files
hosts:  files dns
protocols: files
services:  files
EOF
for f in /etc/protocols /etc/services; do
    if [ -r "$f" ]; then cp "$f" "$rootfs$f"; fi
done
: >"$rootfs/etc/hosts"
: >"$rootfs/etc/resolv.conf"
: >"$rootfs/etc/hostname"

# What went in, for the record (also inside the image).
{
    echo "duet image built $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -srm)"
    echo "git: $(git -C "$top" describe --always --dirty 2>/dev/null || echo unknown)"
    (cd "$rootfs" && find . -type f -printf '%P %s\n' | sort)
} >"$rootfs/etc/duet/IMAGE-CONTENTS"

cp "$here/Dockerfile" "$work/Dockerfile"
say "rootfs: $(du -sh "$rootfs" | cut -f1)"
# The root filesystem goes in with `docker import`, which keeps the file
# capabilities (the classic builder's COPY drops them), and the Dockerfile
# adds the rest on top of it (no base image, no registry).
base="${IMAGE%%:*}-rootfs:${IMAGE#*:}"
[ "$base" != "$IMAGE" ] || base="$IMAGE-rootfs"
say "docker import -> $base"
tar --xattrs --xattrs-include='security.capability' --numeric-owner -C "$rootfs" -cf "$work/rootfs.tar" .
docker import "$work/rootfs.tar" "$base" >/dev/null
rm -rf "$rootfs" "$work/rootfs.tar"
say "docker build -t $IMAGE"
# The classic builder: works with any Docker Engine and needs no buildx.
revision=$(git -C "$top" rev-parse HEAD 2>/dev/null || echo unknown)
version=$(git -C "$top" describe --tags --always --dirty 2>/dev/null || echo unknown)
DOCKER_BUILDKIT=0 docker build --quiet -t "$IMAGE" --build-arg BASE="$base" \
    --build-arg VERSION="$version" --build-arg REVISION="$revision" \
    --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$work" >/dev/null
docker image ls "$IMAGE" --format 'build-image: {{.Repository}}:{{.Tag}} {{.ID}} {{.Size}}' >&2
