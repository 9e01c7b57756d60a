#!/usr/bin/env bash
# Prepare this Debian 12 host for cnirun's development and e2e tests: packages, a running
# dockerd, the offline busybox:latest image, /etc/cni/net.d, IP forwarding and the project.
# Idempotent, and quick when everything is already in place. Must run as root.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dockerd_log=/var/log/cnirun-dockerd.log
docker_wait=60
image=busybox:latest
stamp_dir=/var/cache/cnirun-setup
export DEBIAN_FRONTEND=noninteractive

say() { echo "setup-host: $*"; }
die() { echo "setup-host: ERROR: $*" >&2; exit 1; }

[[ $EUID -eq 0 ]] || die "must run as root (try: sudo make setup)"

# Serialise concurrent runs (several engineers share this host) so only one starts dockerd.
exec 9>/run/cnirun-setup-host.lock
flock 9

is_installed() {
    [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]
}

install_packages() {
    local wanted=(docker.io containernetworking-plugins busybox-static iptables iproute2)
    # e2e: a private registry for the pull tests, a Debian rootfs for the image test's base.
    wanted+=(docker-registry debootstrap)
    # make bench: its cnitool reference (scripts/cnitool-ref), built offline against Debian's libcni.
    wanted+=(golang-go golang-github-appc-cni-dev)
    # `network create --dns` and its e2e tests: the dnsname CNI plugin and the dnsmasq it runs.
    wanted+=(golang-github-containernetworking-plugin-dnsname dnsmasq-base)
    command -v make >/dev/null || wanted+=(make)
    command -v python3 >/dev/null || wanted+=(python3)
    python3 -m pip --version >/dev/null 2>&1 || wanted+=(python3-pip)
    [[ -e /etc/ssl/certs/ca-certificates.crt ]] || wanted+=(ca-certificates)
    # dockerd needs apparmor_parser when the kernel enforces AppArmor.
    if [[ $(cat /sys/module/apparmor/parameters/enabled 2>/dev/null) == Y ]]; then
        wanted+=(apparmor)
    fi
    local missing=() pkg
    for pkg in "${wanted[@]}"; do
        is_installed "$pkg" || missing+=("$pkg")
    done
    if ((${#missing[@]} == 0)); then
        say "packages: all present"
        return
    fi
    say "packages: installing ${missing[*]}"
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
    [[ -x /usr/lib/cni/bridge ]] || die "/usr/lib/cni/bridge missing after installing plugins"
}

# Some kernels lack nf_tables; then the legacy iptables backend is the only one that works.
ensure_iptables_backend() {
    iptables -t nat -S >/dev/null 2>&1 && return
    if iptables-legacy -t nat -S >/dev/null 2>&1; then
        say "iptables: nf_tables unusable here, switching to iptables-legacy"
        update-alternatives --set iptables /usr/sbin/iptables-legacy
        update-alternatives --set ip6tables /usr/sbin/ip6tables-legacy
    else
        die "iptables does not work (neither nf_tables nor legacy backend)"
    fi
}

docker_ready() {
    local version
    version=$(timeout 10 docker info --format '{{.ServerVersion}}' 2>/dev/null) || return 1
    [[ -n $version ]]
}

ensure_dockerd() {
    command -v docker >/dev/null || die "docker CLI not found on PATH"
    if docker_ready; then
        say "dockerd: running"
        return
    fi
    local pid=""
    if [[ -d /run/systemd/system ]]; then
        say "dockerd: starting docker.service"
        systemctl start docker
    elif pidof dockerd >/dev/null; then
        say "dockerd: already starting, waiting for it"
    else
        say "dockerd: starting in the background (log: $dockerd_log)"
        # setsid+nohup: the daemon must outlive this script and its process group;
        # 9>&- keeps it from inheriting (and holding) our lock.
        setsid nohup dockerd >>"$dockerd_log" 2>&1 </dev/null 9>&- &
        pid=$!
    fi
    local i
    for ((i = 0; i < docker_wait; i++)); do
        docker_ready && { say "dockerd: ready"; return; }
        if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$dockerd_log" >&2 || true
            die "dockerd exited during start-up; see $dockerd_log"
        fi
        sleep 1
    done
    [[ -n $pid ]] && tail -n 20 "$dockerd_log" >&2
    die "dockerd did not answer 'docker info' within ${docker_wait}s (log: $dockerd_log)"
}

ensure_image() {
    if docker image inspect "$image" >/dev/null 2>&1; then
        say "image: $image present"
        return
    fi
    say "image: building $image offline"
    IMAGE=$image bash "$repo/scripts/make-busybox-image.sh"
}

ensure_host_settings() {
    mkdir -p /etc/cni/net.d
    if [[ $(cat /proc/sys/net/ipv4/ip_forward) != 1 ]]; then
        echo 1 >/proc/sys/net/ipv4/ip_forward || die "cannot enable net.ipv4.ip_forward"
        say "sysctl: net.ipv4.ip_forward=1"
    fi
}

# Reinstall only when pyproject.toml, the interpreter or this checkout changed, or a module vanished.
install_project() {
    local py key stamp
    py=$(readlink -f "$(command -v python3)")
    key=$(cat "$repo/pyproject.toml" <(echo "$py $repo compat") | sha256sum | cut -c1-32)
    stamp="$stamp_dir/pip-$(echo "$repo" | sha256sum | cut -c1-16)"
    if [[ ${CNIRUN_SETUP_FORCE_PIP:-} != 1 && -f $stamp && $(cat "$stamp") == "$key" ]] &&
        python3 -P - "$repo" <<'EOF'
# -P: without it the current directory (often the checkout itself) would satisfy find_spec.
import importlib.util, pathlib, sys
spec = importlib.util.find_spec("cnirun")
ok = spec is not None and spec.origin is not None and pathlib.Path(spec.origin).is_relative_to(sys.argv[1])
for mod in ("docker", "pyroute2", "typer", "pytest", "pytest_randomly", "hypothesis", "mypy", "ruff"):
    ok = ok and importlib.util.find_spec(mod) is not None
sys.exit(0 if ok else 1)
EOF
    then
        say "python: cnirun[dev] already installed (editable)"
        return
    fi
    say "python: pip install -e '.[dev]'"
    # Debian's system Python is "externally managed" (PEP 668); this host is dedicated to cnirun.
    # Compat mode puts the checkout on sys.path with a plain .pth line: the default mode's import
    # finder costs every cnirun command ~20 ms of start-up (pathlib, urllib, ipaddress).
    PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -q --root-user-action=ignore \
        --progress-bar off --config-settings editable_mode=compat -e "$repo[dev]"
    mkdir -p "$stamp_dir"
    echo "$key" >"$stamp"
}

install_packages
ensure_iptables_backend
ensure_host_settings
ensure_dockerd
ensure_image
install_project
say "done"
