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

# shellcheck source=scripts/debian-rootfs.sh
source "$(dirname "${BASH_SOURCE[0]}")/debian-rootfs.sh"
say() { echo "make-debian-image: $*" >&2; }
die() { echo "make-debian-image: ERROR: $*" >&2; exit 1; }

(($# >= 2)) || die "usage: $0 NAME PACKAGE..."
[[ $EUID -eq 0 ]] || die "must run as root (debootstrap and chroot need it)"
command -v debootstrap >/dev/null || die "debootstrap not found: apt-get install debootstrap"
name=$1
shift
packages=$(printf '%s\n' "$@" | sort -u | paste -sd, -)
key=$({
    cat "${BASH_SOURCE[0]}" "$(dirname "${BASH_SOURCE[0]}")/debian-rootfs.sh"
    echo "$suite $packages"
} | sha256sum | cut -c1-16)
image=$name:$key

reuse_or_lock "$image" cnirun-make-debian-image
started=$SECONDS
bootstrap_root "$packages"
import_root "$image" "io.cnirun.debian-image=$name"
say "built $image in $((SECONDS - started))s"

# Images of this name built from other inputs are not reusable any more: drop the unused ones.
drop_stale "io.cnirun.debian-image=$name" "$image" "$name:*"
echo "$image"
