#!/usr/bin/env bash
# Extra Docker engines for cnirun's engine-matrix tests (`make test-engines`): Debian trixie's
# docker.io (26.x) and sid's (28.x), each a dockerd running in a debootstrap chroot next to the
# host's own engine, with its own socket, data root, exec root and cgroup parent.
#
#   engines.sh start [SUITE...]   build (once, cached) and start the engines; idempotent
#   engines.sh stop [SUITE...]    remove their containers, stop them, unmount everything
#   engines.sh restart SUITE...   stop and start dockerd only, its containers kept (as an
#                                 engine restart or upgrade does: their restart policies run)
#   engines.sh status             what is built and what is running
#   engines.sh host SUITE         the DOCKER_HOST value of SUITE's engine
#
# Must run as root. Chroots are cached in /var/cache/cnirun/engines/<suite>.
set -euo pipefail

all_suites=(trixie sid)
cache=${CNIRUN_ENGINES_CACHE:-/var/cache/cnirun/engines}
mirror=${CNIRUN_ENGINES_MIRROR:-http://deb.debian.org/debian}
sock_base=/run/cnirun-engines
# procps: `docker top` runs the engine's own ps.
packages=docker.io,ca-certificates,procps
marker=.cnirun-engine-built
start_wait=60
stop_wait=30
# The host engine, whatever DOCKER_HOST the caller has: busybox:latest is copied from it.
host_engine=unix:///var/run/docker.sock
# cnirun's default state dir and pytest's tmp_path parent: the engine resolves bind-mount
# sources (sandbox etc files) in its own root, so both must be the host's, at the same paths.
shared_dirs=(/var/lib/cnirun /tmp)
image=busybox:latest
# Set when start made /var/lib/cnirun: the last stop removes it again if it is still empty (its
# mere existence changes what an unprivileged `cnirun ps` says, which a test checks).
made_state_dir=/run/cnirun-engines.made-state-dir
export DEBIAN_FRONTEND=noninteractive

say() { echo "engines: $*"; }
die() { echo "engines: ERROR: $*" >&2; exit 1; }

expected_version() {
    case $1 in
        trixie) echo 26 ;;
        sid) echo 28 ;;
        *) die "unknown suite '$1' (known: ${all_suites[*]})" ;;
    esac
}

root_of() { echo "$cache/$1"; }
sock_dir() { echo "$sock_base/$1"; }
host_of() { echo "unix://$sock_base/$1/docker.sock"; }
log_of() { echo "/var/log/cnirun-engine-$1.log"; }

# The docker CLI of the host, aimed at one engine (never at a DOCKER_HOST or context of ours).
dk() {
    local host=$1
    shift
    env -u DOCKER_CONTEXT DOCKER_HOST="$host" docker "$@"
}

engine_ready() {
    [[ -S $(sock_dir "$1")/docker.sock ]] &&
        timeout 10 docker -H "$(host_of "$1")" version --format '{{.Server.Version}}' \
            >/dev/null 2>&1
}

# Mount points at or below $1, in /proc/self/mountinfo order (the order they were mounted).
mounts_under() {
    local root=$1 mp
    while read -r _ _ _ _ mp _; do
        mp=$(printf '%b' "$mp") # mountinfo escapes spaces and such as \040
        if [[ $mp == "$root" || $mp == "$root"/* ]]; then
            echo "$mp"
        fi
    done </proc/self/mountinfo
}

# Processes whose root directory is the chroot (dockerd, containerd, shims) or below it (the
# engine's containers).
procs_in() {
    local root=$1 p r
    for p in /proc/[0-9]*; do
        r=$(readlink "$p/root" 2>/dev/null) || continue
        if [[ $r == "$root" || $r == "$root"/* ]]; then
            echo "${p#/proc/}"
        fi
    done
}

# -- build -----------------------------------------------------------------------------------

build_key() { echo "suite=$1 packages=$packages mirror=$mirror"; }

ensure_chroot() {
    local suite=$1 root
    root=$(root_of "$suite")
    if [[ -f $root/$marker && $(head -n1 "$root/$marker") == "$(build_key "$suite")" ]]; then
        return
    fi
    # A half-built (or differently built) chroot is rebuilt from scratch. rm -rf must never
    # run into a bind mount of /tmp or /var/lib/cnirun: refuse while anything is mounted.
    if [[ -n $(mounts_under "$root") ]]; then
        die "$root has mounts but no complete build; run '$0 stop $suite' first"
    fi
    if ! command -v debootstrap >/dev/null; then
        say "installing debootstrap"
        apt-get update -q
        apt-get install -y -q --no-install-recommends debootstrap
    fi
    say "$suite: building chroot in $root (once; cached afterwards)"
    rm -rf "$root"
    mkdir -p "$cache"
    # debootstrap checks the Release signature (gpgv) but not Valid-Until, so sid's Release,
    # "expired" by this machine's clock, still bootstraps with its signature checked.
    debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$mirror" \
        >"$cache/$suite.debootstrap.log" 2>&1 ||
        { tail -n 20 "$cache/$suite.debootstrap.log" >&2; die "debootstrap $suite failed"; }
    # apt inside the chroot would reject that Release as expired: accept it (signatures are
    # still checked), e.g. for `chroot ... apt-get update` when debugging an engine.
    echo 'Acquire::Check-Valid-Until "false";' >"$root/etc/apt/apt.conf.d/99cnirun-valid-until"
    [[ -x $root/usr/sbin/dockerd ]] || die "$suite: no dockerd in $root after debootstrap"
    {
        build_key "$suite"
        chroot "$root" dpkg-query -W docker.io containerd runc
    } >"$root/$marker"
    say "$suite: chroot built"
}

# The version of a package installed in chroot $1.
pkg_version() {
    # shellcheck disable=SC2016 # ${Version} is dpkg-query's, not the shell's
    chroot "$1" dpkg-query -W -f='${Version}' "$2"
}

print_versions() {
    local suite=$1 root version want
    root=$(root_of "$suite")
    version=$(pkg_version "$root" docker.io)
    want=$(expected_version "$suite")
    say "$suite: docker.io $version, containerd $(pkg_version "$root" containerd)," \
        "runc $(pkg_version "$root" runc)"
    # sid moves on: say so loudly when it is no longer the engine major the matrix is about.
    [[ $version == "$want".* ]] || say "WARNING: $suite has docker.io $version, expected $want.x"
}

# -- start -----------------------------------------------------------------------------------

mount_all() {
    local suite=$1 root dir
    root=$(root_of "$suite")
    # The chroot's / must be a mount point: dockerd's chrootarchive (docker load, cp) makes it
    # rslave and pivots into it, which fails with EINVAL on a plain directory.
    mount --bind "$root" "$root"
    mount --make-private "$root"
    mount -t proc proc "$root/proc"
    # rbind: /sys/fs/cgroup and its hierarchies, /dev/pts, /dev/shm come along. rslave: mounts
    # made on the host still show up inside, but an unmount inside never reaches the host.
    mount --rbind /sys "$root/sys"
    mount --make-rslave "$root/sys"
    mount --rbind /dev "$root/dev"
    mount --make-rslave "$root/dev"
    # A fresh /run each start: no stale pidfile, exec root or containerd socket survives.
    mount -t tmpfs -o mode=755 tmpfs "$root/run"
    mkdir -p "$root$(sock_dir "$suite")"
    mount --bind "$(sock_dir "$suite")" "$root$(sock_dir "$suite")"
    for dir in "${shared_dirs[@]}"; do
        mkdir -p "$root$dir"
        mount --rbind "$dir" "$root$dir"
        mount --make-rslave "$root$dir"
    done
}

start_one() {
    local suite=$1 root log pid i
    root=$(root_of "$suite")
    log=$(log_of "$suite")
    ensure_chroot "$suite"
    print_versions "$suite"
    if engine_ready "$suite"; then
        say "$suite: running ($(host_of "$suite"))"
    else
        # Whatever a crashed or killed engine left (processes, mounts) goes first.
        [[ -z $(procs_in "$root") && -z $(mounts_under "$root") ]] || stop_one "$suite"
        mkdir -p "$(sock_dir "$suite")"
        if [[ ! -d /var/lib/cnirun ]]; then
            install -d -m 0700 /var/lib/cnirun
            touch "$made_state_dir"
        fi
        mount_all "$suite"
        local had_docker0=no
        ip link show docker0 >/dev/null 2>&1 && had_docker0=yes
        say "$suite: starting dockerd (log: $log)"
        # setsid+nohup: the daemon outlives this script; env -i: nothing of the caller's
        # environment (DOCKER_HOST, proxies) steers it; 9>&-: it must not hold our lock.
        # No bridge, NAT or iptables of its own: cnirun's CNI plugins do the networking, and
        # the host engine's rules stay untouched. cgroupfs: there is no systemd here.
        # unshare --net: a dockerd with --bridge=none deletes any `docker0` it sees, and
        # the host engine's is in this namespace. The daemon needs no network itself (its
        # socket is a file; runc gives each container its own namespace).
        setsid nohup env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
            unshare --net chroot "$root" /usr/sbin/dockerd \
            --host "$(host_of "$suite")" \
            --data-root /var/lib/docker \
            --exec-root /run/docker \
            --pidfile /run/docker.pid \
            --exec-opt native.cgroupdriver=cgroupfs \
            --cgroup-parent "cnirun-engine-$suite" \
            --iptables=false --ip6tables=false --ip-masq=false --ip-forward=false \
            --bridge=none \
            >>"$log" 2>&1 </dev/null 9>&- &
        pid=$!
        for ((i = 0; i < start_wait * 2; i++)); do
            engine_ready "$suite" && break
            if ! kill -0 "$pid" 2>/dev/null; then
                tail -n 20 "$log" >&2 || true
                stop_one "$suite" >/dev/null || true
                die "$suite: dockerd exited during start-up; see $log"
            fi
            sleep 0.5
        done
        if ! engine_ready "$suite"; then
            tail -n 20 "$log" >&2 || true
            die "$suite: dockerd did not answer within ${start_wait}s; see $log"
        fi
        if [[ $had_docker0 == yes ]] && ! ip link show docker0 >/dev/null 2>&1; then
            die "$suite: starting its dockerd removed the host engine's docker0 bridge"
        fi
        say "$suite: ready, engine $(docker -H "$(host_of "$suite")" version \
            --format '{{.Server.Version}}') at $(host_of "$suite")"
    fi
    if ! dk "$(host_of "$suite")" image inspect "$image" >/dev/null 2>&1; then
        dk "$host_engine" image inspect "$image" >/dev/null 2>&1 ||
            die "the host engine has no $image: run 'make setup' first"
        say "$suite: loading $image from the host engine"
        dk "$host_engine" save "$image" | dk "$(host_of "$suite")" load -q >/dev/null
    fi
}

# -- stop ------------------------------------------------------------------------------------

stop_one() {
    local suite=$1 root pid i mp left cg
    root=$(root_of "$suite")
    if engine_ready "$suite"; then
        local ids
        ids=$(dk "$(host_of "$suite")" ps -aq)
        if [[ -n $ids ]]; then
            say "$suite: removing $(wc -w <<<"$ids") container(s)"
            # shellcheck disable=SC2086 # one word per container ID
            dk "$(host_of "$suite")" rm -f $ids >/dev/null || true
        fi
    fi
    pid=$(cat "$root/run/docker.pid" 2>/dev/null || true)
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
        say "$suite: stopping dockerd ($pid)"
        kill -TERM "$pid"
    fi
    # dockerd stops its containerd on the way out; wait for every process of the chroot.
    for ((i = 0; i < stop_wait * 2; i++)); do
        [[ -z $(procs_in "$root") ]] && break
        sleep 0.5
    done
    left=$(procs_in "$root")
    if [[ -n $left ]]; then
        say "$suite: killing what did not stop: $(echo "$left" | tr '\n' ' ')"
        # shellcheck disable=SC2086 # one word per PID
        kill -KILL $left 2>/dev/null || true
        sleep 1
    fi
    # Everything under the chroot, the engine's own mounts included, newest first.
    while read -r mp; do
        [[ -n $mp ]] || continue
        umount "$mp" 2>/dev/null || umount -l "$mp"
    done < <(mounts_under "$root" | tac)
    [[ -z $(mounts_under "$root") ]] || die "$suite: still mounted: $(mounts_under "$root")"
    rm -rf "$(sock_dir "$suite")"
    rmdir "$sock_base" 2>/dev/null || true
    if [[ -f $made_state_dir ]] && ! grep -q " $cache/[^/ ]*/var/lib/cnirun " /proc/self/mountinfo
    then
        rmdir /var/lib/cnirun 2>/dev/null || true
        rm -f "$made_state_dir"
    fi
    # The (empty by now) cgroups of its containers' parent.
    while read -r cg; do
        rmdir "$cg" 2>/dev/null || true
    done < <(find /sys/fs/cgroup -depth -type d -path "*/cnirun-engine-$suite*" 2>/dev/null)
    say "$suite: stopped"
}

# -- restart ---------------------------------------------------------------------------------

restart_one() {
    local suite=$1 root pid i
    root=$(root_of "$suite")
    pid=$(cat "$root/run/docker.pid" 2>/dev/null || true)
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
        say "$suite: restarting dockerd ($pid); its containers stay"
        kill -TERM "$pid"
    fi
    for ((i = 0; i < stop_wait * 2; i++)); do
        [[ -z $(procs_in "$root") ]] && break
        sleep 0.5
    done
    start_one "$suite"
}

# -- status ----------------------------------------------------------------------------------

status_one() {
    local suite=$1 root built=no state=stopped
    root=$(root_of "$suite")
    [[ -f $root/$marker ]] && built="docker.io $(pkg_version "$root" docker.io)"
    if engine_ready "$suite"; then
        state="running $(docker -H "$(host_of "$suite")" version --format \
            '{{.Server.Version}}') at $(host_of "$suite"), pid $(cat "$root/run/docker.pid")"
    elif [[ -n $(procs_in "$root") || -n $(mounts_under "$root") ]]; then
        state="not answering, but processes or mounts are left (run: $0 stop $suite)"
    fi
    echo "$suite: built: $built; $state"
}

# -- main ------------------------------------------------------------------------------------

usage() {
    echo "usage: $0 start|stop|restart [SUITE...] | status | host SUITE" >&2
    echo "suites: ${all_suites[*]}" >&2
    exit 2
}

(($# >= 1)) || usage
cmd=$1
shift
suites=("$@")
((${#suites[@]})) || suites=("${all_suites[@]}")
for s in "${suites[@]}"; do expected_version "$s" >/dev/null; done

case $cmd in
    host)
        (($# == 1)) || usage
        host_of "$1"
        exit 0
        ;;
    start | stop | restart | status) ;;
    *) usage ;;
esac

[[ $EUID -eq 0 ]] || die "must run as root"
# One start or stop at a time: two would mount twice or unmount under each other.
exec 9>/run/cnirun-engines.lock
flock 9

for s in "${suites[@]}"; do
    case $cmd in
        start) start_one "$s" ;;
        stop) stop_one "$s" ;;
        restart) restart_one "$s" ;;
        status) status_one "$s" ;;
    esac
done
