#!/usr/bin/env bash
# Build (once) a local Debian bookworm image with python3, python3-venv and ca-certificates,
# made with debootstrap from this machine's own apt mirror, and import it into docker as
# $1 (default sms-mta-base:bookworm). An image of that name that already exists is reused, so
# only the first run pays the ~1 minute of debootstrap. No container registry is involved.
# Rebuild after changing this script: docker image rm sms-mta-base:bookworm
set -euo pipefail
NAME="${1:-sms-mta-base:bookworm}"
if docker image inspect "$NAME" >/dev/null 2>&1; then
    echo "base image $NAME: cached"
    exit 0
fi
command -v debootstrap >/dev/null || { echo "debootstrap is missing: apt-get install debootstrap" >&2; exit 1; }

# The mirror this machine's apt already uses: deb822 .sources files first, then sources.list.
mirror=""
for f in /etc/apt/sources.list.d/*.sources; do
    [[ -e "$f" ]] || continue
    mirror="$(awk '/^URIs:/ {for (i = 2; i <= NF; i++) if ($i !~ /security/) {print $i; exit}}' "$f")"
    [[ -n "$mirror" ]] && break
done
if [[ -z "$mirror" && -e /etc/apt/sources.list ]]; then
    mirror="$(awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' /etc/apt/sources.list)"
fi
[[ -n "$mirror" ]] || { echo "no Debian mirror found in /etc/apt/sources.list(.d)" >&2; exit 1; }

dir="$(mktemp -d /var/tmp/sms-mta-base.XXXXXX)"
trap 'rm -rf "$dir"' EXIT
echo "base image $NAME: debootstrap bookworm from $mirror (about a minute)"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$dir" "$mirror" >"$dir.log" 2>&1 || { tail -30 "$dir.log" >&2; exit 1; }
rm -f "$dir.log"
# Containers built from it use the same mirror for apt-get.
printf 'deb %s bookworm main\n' "$mirror" >"$dir/etc/apt/sources.list"
# Trust what this machine trusts (its network may re-sign TLS with a local CA), and make pip
# use that store instead of its own bundle: pip inside image builds then reaches PyPI as the
# host does.
cp /etc/ssl/certs/ca-certificates.crt "$dir/etc/ssl/certs/ca-certificates.crt"
printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$dir/etc/pip.conf"
rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
tar -C "$dir" -c . | docker import \
    -c 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'CMD ["/bin/bash"]' - "$NAME" >/dev/null
echo "base image $NAME: built"
