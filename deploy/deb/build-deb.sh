#!/usr/bin/env bash
# Builds a Debian package of duet (duet, duetctl, the systemd unit
# duet@.service, man pages, shell completions) with dpkg-deb alone.
#
#   deploy/deb/build-deb.sh                      # cargo build --profile dist, then dist/duet_<version>_<arch>.deb
#   SKIP_CARGO=1 BIN_DIR=target/debug deploy/deb/build-deb.sh   # package binaries already built
#   OUT=/tmp/pkgs COMPRESS=none deploy/deb/build-deb.sh
#
# Installing it: `apt install ./duet_*.deb` (it needs nftables), then a
# unit file in /etc/duet/<name>.toml and `systemctl enable --now duet@<name>`.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
target=${CARGO_TARGET_DIR:-$top/target}
BIN_DIR=${BIN_DIR:-$target/dist}
OUT=${OUT:-$top/dist}
COMPRESS=${COMPRESS:-xz}

say() { printf '%s\n' "build-deb: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }
command -v dpkg-deb >/dev/null || die "dpkg-deb not found (Debian's dpkg)"

if [ "${SKIP_CARGO:-0}" != 1 ]; then
    say "cargo build --profile dist --bin duet --bin duetctl"
    (cd "$top" && cargo build --locked --profile dist --bin duet --bin duetctl)
fi
for b in duet duetctl; do
    [ -x "$BIN_DIR/$b" ] || die "$BIN_DIR/$b is missing: build it, or set BIN_DIR"
done

version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$top/Cargo.toml" | head -n1)
[ -n "$version" ] || die "no version in Cargo.toml"
arch=$(dpkg --print-architecture 2>/dev/null || echo amd64)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root=$stage/duet_${version}_${arch}

install -d "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" "$root/usr/share/man/man1" \
    "$root/usr/share/bash-completion/completions" "$root/usr/share/zsh/vendor-completions" \
    "$root/usr/share/fish/vendor_completions.d" "$root/usr/share/doc/duet/examples" "$root/etc/duet"
install -m 0755 "$BIN_DIR/duet" "$BIN_DIR/duetctl" "$root/usr/bin/"
install -m 0644 "$top/deploy/systemd/duet@.service" "$root/lib/systemd/system/"

docs=$stage/docs
"$BIN_DIR/duet" generate-docs --out "$docs" >/dev/null
"$BIN_DIR/duetctl" generate-docs --out "$docs" >/dev/null
for m in "$docs"/man1/*.1; do gzip -9n < "$m" > "$root/usr/share/man/man1/$(basename "$m").gz"; done
install -m 0644 "$docs"/completions/bash/* "$root/usr/share/bash-completion/completions/"
install -m 0644 "$docs"/completions/zsh/* "$root/usr/share/zsh/vendor-completions/"
install -m 0644 "$docs"/completions/fish/* "$root/usr/share/fish/vendor_completions.d/"
install -m 0644 "$top/README.md" "$root/usr/share/doc/duet/"
install -m 0644 "$top/deploy/lb1.toml" "$top/deploy/lb2.toml" "$root/usr/share/doc/duet/examples/"

size=$(du -sk "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<CONTROL
Package: duet
Version: $version
Architecture: $arch
Maintainer: duet developers <duet@localhost>
Installed-Size: $size
Depends: nftables
Recommends: conntrack
Section: net
Priority: optional
Homepage: https://localhost/duet
Description: high availability for a pair of load-balancer units
 Two units act as one: the active owns the shared addresses, the standby
 watches it over a CARP-style protocol (ucarp-compatible) and takes over
 within the HA timeout, with the configuration and the connection tables
 already in place. Runs as duet@<name>.service from /etc/duet/<name>.toml.
CONTROL
cat > "$root/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
    getent group duet >/dev/null || addgroup --system duet >/dev/null
    getent passwd duet >/dev/null || adduser --system --ingroup duet --home /var/lib/duet --no-create-home duet >/dev/null
    install -d -o duet -g duet -m 0750 /var/lib/duet
    chgrp duet /etc/duet && chmod 0750 /etc/duet
    if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
fi
exit 0
POSTINST
chmod 0755 "$root/DEBIAN/postinst"
cat > "$root/DEBIAN/postrm" <<'POSTRM'
#!/bin/sh
set -e
# Purge removes what postinst made: the state directory and the user.
if [ "$1" = purge ]; then
    rm -rf /var/lib/duet
    if getent passwd duet >/dev/null; then deluser --quiet duet >/dev/null 2>&1 || true; fi
    if getent group duet >/dev/null; then delgroup --quiet duet >/dev/null 2>&1 || true; fi
fi
exit 0
POSTRM
chmod 0755 "$root/DEBIAN/postrm"

mkdir -p "$OUT"
deb=$OUT/duet_${version}_${arch}.deb
dpkg-deb --root-owner-group -Z"$COMPRESS" --build "$root" "$deb" >/dev/null
say "$deb"
echo "$deb"
