# shellcheck shell=bash disable=SC2154  # suite, mirror and debs are the caller's
# Shared by make-base-image.sh and make-debian-image.sh (sourced, not run): build a Debian
# root filesystem with debootstrap and import it as an image, without any container registry.
# The caller defines say() and die(), and sets suite, mirror and debs (the .deb cache).

# Print IMAGE and exit if it exists; else take LOCK (concurrent builders then build once: the
# others wait here and reuse the result) and look again.
reuse_or_lock() {
    local image=$1 lock=$2
    if docker image inspect "$image" >/dev/null 2>&1; then
        echo "$image"
        exit 0
    fi
    mkdir -p /run/lock
    exec 9>"/run/lock/$lock.lock"
    flock 9
    if docker image inspect "$image" >/dev/null 2>&1; then
        echo "$image"
        exit 0
    fi
}

# debootstrap minbase with the comma-separated PACKAGES into a new $root (under $work), which
# is removed when the script exits.
bootstrap_root() {
    local packages=$1
    work=$(mktemp -d /tmp/cnirun-debian.XXXXXX)
    root=$work/root
    trap _remove_root EXIT
    say "debootstrap $suite (minbase, $packages) from $mirror"
    mkdir -p "$debs"
    debootstrap --variant=minbase --include="$packages" --cache-dir="$debs" \
        "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 ||
        { tail -n 20 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
}

_remove_root() {
    # debootstrap mounts proc/sys inside the target; never let rm descend into them.
    local m
    for m in dev/pts dev proc sys; do
        mountpoint -q "$root/$m" 2>/dev/null && umount -l "$root/$m"
    done
    rm -rf --one-file-system "$work"
}

# What an image does not need, then `docker import` of $root as IMAGE with LABEL (key=value).
import_root() {
    local image=$1 label=$2
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
        "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
        "$root"/usr/share/locale/*
    say "importing as $image"
    tar --numeric-owner --one-file-system -C "$root" -c . |
        docker import \
            --change "LABEL $label" \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'CMD ["/bin/bash"]' \
            - "$image" >/dev/null
}

# Remove the images labelled LABEL (a key) other than KEEP that match GLOB: ones built from
# other inputs, not reusable any more (`docker rmi` refuses those still in use).
drop_stale() {
    local label=$1 keep=$2 glob=$3 old
    docker images --filter "label=$label" --format '{{.Repository}}:{{.Tag}}' |
        while read -r old; do
            # shellcheck disable=SC2053  # $glob is a pattern on purpose
            [[ $old == $glob && $old != "$keep" ]] || continue
            if docker rmi "$old" >/dev/null 2>&1; then
                say "removed the stale $old"
            fi
        done
}
