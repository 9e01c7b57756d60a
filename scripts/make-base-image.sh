#!/usr/bin/env bash
# Build, without any container registry, a base image for cnirun's Dockerfile: Debian bookworm
# (debootstrap minbase) with python3, iptables, cnirun's Python dependencies and this host's
# docker CLI. Prints the image name on stdout; an image already built from the same inputs is
# reused, so the name carries a hash of them (this script, the dependency list, the docker CLI
# binary and the host's iptables backend).
#
# Usage: sudo scripts/make-base-image.sh [IMAGE]     (default IMAGE: cnirun-base:<hash>)
# Environment: DEBIAN_MIRROR (default http://deb.debian.org/debian), DOCKER_CLI (default: the
# docker on PATH), CNIRUN_DEBOOTSTRAP_CACHE (downloaded .debs; default /var/cache/cnirun-debootstrap).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
suite=bookworm
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
debs=${CNIRUN_DEBOOTSTRAP_CACHE:-/var/cache/cnirun-debootstrap}

# shellcheck source=scripts/debian-rootfs.sh
source "$repo/scripts/debian-rootfs.sh"
say() { echo "make-base-image: $*" >&2; }
die() { echo "make-base-image: ERROR: $*" >&2; exit 1; }

[[ $EUID -eq 0 ]] || die "must run as root (debootstrap and chroot need it)"
command -v debootstrap >/dev/null || die "debootstrap not found: apt-get install debootstrap"
docker_cli=${DOCKER_CLI:-$(command -v docker || true)}
[[ -x $docker_cli ]] || die "no docker CLI to copy into the image (set DOCKER_CLI)"

# cnirun's runtime dependencies, straight from pyproject.toml.
deps=$(python3 -c '
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["dependencies"]))
' "$repo/pyproject.toml")

# The CNI plugins run iptables from inside the container: it must use the host's backend.
backend=nft
if iptables --version 2>/dev/null | grep -q legacy; then
    backend=legacy
fi

key=$({
    cat "${BASH_SOURCE[0]}" "$repo/scripts/debian-rootfs.sh"
    echo "$suite $backend"
    echo "$deps"
    sha256sum <"$docker_cli"
} | sha256sum | cut -c1-16)
image=${1:-cnirun-base:$key}

reuse_or_lock "$image" cnirun-make-base-image
started=$SECONDS
bootstrap_root python3,iptables

if [[ $backend == legacy ]]; then
    chroot "$root" update-alternatives --set iptables /usr/sbin/iptables-legacy >/dev/null
    chroot "$root" update-alternatives --set ip6tables /usr/sbin/ip6tables-legacy >/dev/null
fi

pyver=$(chroot "$root" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
site=$(chroot "$root" python3 -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
say "python $pyver: installing $(echo "$deps" | tr '\n' ' ')into $site"
mapfile -t requirements <<<"$deps"
# Wheels for the image's Python, fetched by this host's pip (the chroot has neither pip nor
# this host's registry settings).
# (Its warnings are about the host's own packages; they go to the log, shown on failure.)
PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --quiet --disable-pip-version-check \
    --root-user-action=ignore --no-compile --only-binary=:all: --implementation cp \
    --python-version "$pyver" --target "$root$site" "${requirements[@]}" >"$work/pip.log" 2>&1 ||
    { tail -n 20 "$work/pip.log" >&2; die "pip could not fetch the dependencies"; }
rm -rf "${root:?}$site/bin"
chroot "$root" python3 -m compileall -q "$site" >/dev/null

install -m 0755 "$docker_cli" "$root/usr/local/bin/docker"
chroot "$root" docker --version >/dev/null || die "$docker_cli does not run in the image"

import_root "$image" "io.cnirun.base=$key"
say "built $image in $((SECONDS - started))s"

# Bases this script made from other inputs are not reusable any more: drop the unused ones.
[[ -n ${1:-} ]] || drop_stale io.cnirun.base "$image" "cnirun-base:*"
echo "$image"
