#!/usr/bin/env bash
# Build a tiny busybox image offline, from the host's static busybox (no registry is reachable).
# Usage: scripts/make-busybox-image.sh [IMAGE]   (default: $IMAGE, else busybox:latest)
# Environment: BUSYBOX=/path/to/static/busybox (default /bin/busybox, from busybox-static).
set -euo pipefail

image=${1:-${IMAGE:-busybox:latest}}
busybox=${BUSYBOX:-/bin/busybox}

die() { echo "make-busybox-image: $*" >&2; exit 1; }

[[ -x $busybox ]] || die "$busybox not found; install busybox-static (sudo make setup)"
# A dynamic busybox would need the host's libc inside the image.
if ldd "$busybox" >/dev/null 2>&1; then
    die "$busybox is dynamically linked; install busybox-static instead of busybox"
fi
command -v docker >/dev/null || die "docker CLI not found"

root=$(mktemp -d /tmp/cnirun-busybox-root.XXXXXX)
trap 'rm -rf "$root"' EXIT

mkdir -p "$root"/{bin,etc,tmp,proc,sys,dev,root}
chmod 1777 "$root/tmp"
chmod 0700 "$root/root"
install -m 0755 "$busybox" "$root/bin/busybox"

# One relative symlink per applet, all in /bin (on PATH below).
count=0
while read -r applet; do
    [[ -n $applet && $applet != busybox && ! -e $root/bin/$applet ]] || continue
    ln -s busybox "$root/bin/$applet"
    count=$((count + 1))
done < <("$busybox" --list)
[[ -e $root/bin/sh ]] || die "$busybox has no sh applet"

# Names for `id`/`whoami`; Docker itself needs neither file for the default root user.
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' \
    >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"

tar --numeric-owner --owner=0 --group=0 -C "$root" -cf - . |
    docker import \
        -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        -c 'CMD ["sh"]' \
        -m "built offline by cnirun scripts/make-busybox-image.sh" \
        - "$image" >/dev/null

echo "make-busybox-image: built $image ($count applets) from $busybox"
