#!/usr/bin/env bash
# Build, without any container registry, a plain Debian bookworm image (debootstrap minbase)
# with the given packages, for tests that need real software (tests/e2e/test_dbjob.py: a
# database server and its client). The same approach as make-base-image.sh, without cnirun's
# Python and docker CLI: .debs come from the Debian mirror through the shared debootstrap
# cache, and an image already built from the same inputs is reused (its tag is a hash of this
# script and the package list). Prints the image name on stdout.
#
# Usage: sudo scripts/make-debian-image.sh NAME PACKAGE...   (image: NAME:<hash>)
# Environment: DEBIAN_MIRROR (default http://deb.debian.org/debian), CNIRUN_DEBOOTSTRAP_CACHE
# (downloaded .debs; default /var/cache/cnirun-debootstrap, shared with make-base-image.sh).
set -euo pipefail

suite=bookworm
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
debs=${CNIRUN_DEBOOTSTRAP_CACHE:-/var/cache/cnirun-debootstrap}

say() { echo "make-debian-image: $*" >&2; }
die() { echo "make-debian-image: ERROR: $*" >&2; exit 1; }

(($# >= 2)) || die "usage: $0 NAME PACKAGE..."
[[ $EUID -eq 0 ]] || die "must run as root (debootstrap and chroot need it)"
command -v debootstrap >/dev/null || die "debootstrap not found: apt-get install debootstrap"
name=$1
shift
packages=$(printf '%s\n' "$@" | sort -u | paste -sd, -)
key=$({
    cat "${BASH_SOURCE[0]}"
    echo "$suite $packages"
} | sha256sum | cut -c1-16)
image=$name:$key

exists() { docker image inspect "$image" >/dev/null 2>&1; }
if exists; then
    echo "$image"
    exit 0
fi

# Concurrent runs build once; the others wait and reuse the result.
mkdir -p /run/lock
exec 9>/run/lock/cnirun-make-debian-image.lock
flock 9
if exists; then
    echo "$image"
    exit 0
fi

work=$(mktemp -d /tmp/cnirun-debian.XXXXXX)
root=$work/root
cleanup() {
    # debootstrap mounts proc/sys inside the target; never let rm descend into them.
    local m
    for m in dev/pts dev proc sys; do
        mountpoint -q "$root/$m" 2>/dev/null && umount -l "$root/$m"
    done
    rm -rf --one-file-system "$work"
}
trap cleanup EXIT

started=$SECONDS
say "debootstrap $suite (minbase, $packages) from $mirror"
mkdir -p "$debs"
debootstrap --variant=minbase --include="$packages" --cache-dir="$debs" \
    "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 ||
    { tail -n 20 "$work/debootstrap.log" >&2; die "debootstrap failed"; }

rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
    "$root"/usr/share/locale/*

say "importing as $image"
tar --numeric-owner --one-file-system -C "$root" -c . |
    docker import \
        --change "LABEL io.cnirun.debian-image=$name" \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["/bin/bash"]' \
        - "$image" >/dev/null
say "built $image in $((SECONDS - started))s"

# Images of this name built from other inputs are not reusable any more: drop the unused ones.
docker images --filter "label=io.cnirun.debian-image=$name" --format '{{.Repository}}:{{.Tag}}' |
    while read -r old; do
        [[ $old != "$image" ]] || continue
        if docker rmi "$old" >/dev/null 2>&1; then
            say "removed the stale $old"
        fi
    done
echo "$image"
