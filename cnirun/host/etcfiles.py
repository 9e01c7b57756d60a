"""The workload's /etc/hosts and /etc/resolv.conf, written by cnirun rather than by Docker.

The infra container is created with networking disabled, so Docker builds no network sandbox
for it (a ~90 ms re-exec of dockerd per run) and writes no hosts or resolv.conf files; runc
gives it a fresh network namespace with `lo` up, which is all CNI needs. These files are then
cnirun's to write, and it writes what Docker would, plus what CNI knows: the container's CNI
addresses under its hostname, and the DNS servers a plugin returned. Stdlib only.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import stat
from collections.abc import Iterable, Sequence
from typing import Any

from cnirun.errors import CnirunError
from cnirun.files import check_owned, check_written, open_dir, write_atomic

HOST_RESOLV_CONF = "/etc/resolv.conf"
# What systemd-resolved's stub (127.0.0.53, useless inside a container) stands in front of.
SYSTEMD_RESOLV_CONF = "/run/systemd/resolve/resolv.conf"
SYSTEMD_STUB = "127.0.0.53"
# Docker's choice when the host lists only local resolvers.
FALLBACK_NAMESERVERS = ("8.8.8.8", "8.8.4.4")
FALLBACK_NAMESERVERS_V6 = ("2001:4860:4860::8888", "2001:4860:4860::8844")
HOST_GATEWAY = "host-gateway"
# The files cnirun writes for each sandbox, and where the workload sees them.
ETC_FILES = {"hosts": "/etc/hosts", "resolv.conf": "/etc/resolv.conf"}

# The lines Docker starts every container's /etc/hosts with.
_DEFAULT_HOSTS = (
    ("127.0.0.1", "localhost"),
    ("::1", "localhost ip6-localhost ip6-loopback"),
    ("fe00::0", "ip6-localnet"),
    ("ff00::0", "ip6-mcastprefix"),
    ("ff02::1", "ip6-allnodes"),
    ("ff02::2", "ip6-allrouters"),
)


def hosts(
    hostname: str,
    domainname: str,
    addresses: Iterable[str],
    extra_hosts: Iterable[tuple[str, str]],
    also: Iterable[str] = (),
) -> str:
    """/etc/hosts: Docker's defaults, each CNI address under the hostname (and the names in
    `also`: its container name and aliases), then --add-host."""
    names = f"{hostname}.{domainname} {hostname}" if domainname else hostname
    more = [n for n in also if n and n != hostname]
    names = " ".join([names, *more]) if names else " ".join(more)
    lines = [f"{ip}\t{name}" for ip, name in _DEFAULT_HOSTS]
    if names:
        lines += [f"{cidr.split('/')[0]}\t{names}" for cidr in addresses]
    lines += [f"{ip}\t{host}" for host, ip in extra_hosts]
    return "\n".join(lines) + "\n"


def with_own_addresses(
    text: str,
    added: Sequence[str],
    removed: Sequence[str],
    kept: Sequence[str],
    names: Sequence[str],
) -> str:
    """A hosts file `hosts` wrote, once an interface came or went (`network connect` and
    `disconnect`): the lines of the `removed` addresses dropped, and a line for each `added`
    one, under the names of the line of another own address (`kept`) and `names`, or, when
    there is none, under `names` alone."""
    gone = {ip.split("/")[0] for ip in removed}
    lines = [ln for ln in text.splitlines() if not (ln.split() and ln.split()[0] in gone)]
    others = {ip.split("/")[0] for ip in kept}
    own = [i for i, ln in enumerate(lines) if ln.split() and ln.split()[0] in others]
    where, shown = min(len(_DEFAULT_HOSTS), len(lines)), list(names)
    if own:
        where = own[-1] + 1
        shown = lines[own[-1]].split()[1:]
        shown += [n for n in names if n not in shown]
    new = [f"{ip.split('/')[0]}\t{' '.join(shown)}" for ip in added] if shown else []
    return "\n".join(lines[:where] + new + lines[where:]) + "\n"


def with_dns(
    text: str,
    added: Sequence[str],
    removed: Sequence[str],
    search_added: Sequence[str] = (),
    search_removed: Sequence[str] = (),
) -> str:
    """A resolv.conf once a network that brought DNS came (its servers and search domains
    go first, as a CNI result's do in a run) or went (they go, but never the last server)."""
    lines = text.splitlines()
    kept = [ln for ln in lines if not (_is_nameserver_line(ln) and ln.split()[1] in removed)]
    if _nameservers("\n".join(kept)) or not removed:
        lines = kept
    present = set(_nameservers("\n".join(lines)))
    lines = [f"nameserver {s}" for s in added if s not in present] + lines
    if search_added or search_removed:
        current = _search("\n".join(lines))
        search = [d for d in search_added if d not in current]
        search += [d for d in current if d not in search_removed]
        lines = [ln for ln in lines if not (ln.split() and ln.split()[0] == "search")]
        if search:
            at = max((i + 1 for i, ln in enumerate(lines) if _is_nameserver_line(ln)), default=0)
            lines.insert(at, "search " + " ".join(search))
    return "\n".join(lines) + "\n"


def resolve_host_gateway(
    extra_hosts: Sequence[tuple[str, str]], gateways: Iterable[str]
) -> list[tuple[str, str]]:
    """Replace `--add-host NAME:host-gateway` by the host's own address on the CNI network.

    Docker maps host-gateway to its default bridge; for a CNI container the host is the
    gateway of its first network whose gateway is an address of this host (bridge, ptp).
    """
    if all(ip != HOST_GATEWAY for _, ip in extra_hosts):
        return list(extra_hosts)
    local = next((gw for gw in gateways if is_local_address(gw)), None)
    if local is None:
        raise CnirunError(
            "--add-host ...:host-gateway: no network of this container has the host as its "
            "gateway; give the host's IP address instead"
        )
    return [(host, local if ip == HOST_GATEWAY else ip) for host, ip in extra_hosts]


def is_local_address(ip: str) -> bool:
    """Whether `ip` is assigned to this host (only a local address can be bound)."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((ip, 0))
    except OSError:
        return False
    return True


def host_resolv_conf() -> str:
    """The host's resolv.conf text, skipping systemd-resolved's stub as Docker does."""
    text = _read(HOST_RESOLV_CONF)
    if _nameservers(text) == [SYSTEMD_STUB] and os.path.exists(SYSTEMD_RESOLV_CONF):
        return _read(SYSTEMD_RESOLV_CONF)
    return text


def resolv_conf(
    host_text: str,
    cni_dns: dict[str, Any],
    dns: Sequence[str] = (),
    dns_search: Sequence[str] = (),
    dns_options: Sequence[str] = (),
    ipv6: bool = False,
) -> str:
    """/etc/resolv.conf, in layers: the host's file (or a CNI result's DNS, when it names
    servers), then each of --dns, --dns-search and --dns-option replaces its own part.

    As in Docker, local resolvers (127.0.0.0/8, ::1) are dropped, since they cannot be
    reached from the container, and Google's public servers stand in when none remain.
    """
    if cni_dns.get("nameservers"):
        base_servers = list(cni_dns["nameservers"])
        base_search = list(cni_dns.get("search") or [])
        if not base_search and cni_dns.get("domain"):
            base_search = [cni_dns["domain"]]
        base_options = list(cni_dns.get("options") or [])
    elif not (dns or dns_search or dns_options):
        return _filtered(host_text, ipv6)  # the host's file itself, comments and all
    else:
        base_servers = _nameservers(host_text)
        base_search, base_options = _search(host_text), _options(host_text)
    servers = list(dns) or [s for s in base_servers if not _is_loopback(s)]
    if not servers:
        servers = _fallback(ipv6)
    search = list(dns_search) or base_search
    options = list(dns_options) or base_options
    lines = [f"nameserver {server}" for server in servers]
    if search and search != ["."]:  # `--dns-search .` means: no search domains
        lines.append("search " + " ".join(search))
    if options:
        lines.append("options " + " ".join(options))
    return "\n".join(lines) + "\n"


def _filtered(text: str, ipv6: bool) -> str:
    kept = [
        line
        for line in text.splitlines()
        if not (_is_nameserver_line(line) and _is_loopback(line.split()[1]))
    ]
    if not _nameservers("\n".join(kept)):
        kept += [f"nameserver {server}" for server in _fallback(ipv6)]
    return "\n".join(kept) + "\n"


def _fallback(ipv6: bool) -> list[str]:
    return list(FALLBACK_NAMESERVERS) + (list(FALLBACK_NAMESERVERS_V6) if ipv6 else [])


def _is_nameserver_line(line: str) -> bool:
    fields = line.split()
    return len(fields) >= 2 and fields[0] == "nameserver"


def _nameservers(text: str) -> list[str]:
    return [line.split()[1] for line in text.splitlines() if _is_nameserver_line(line)]


def _last_keyword(text: str, keyword: str) -> list[str]:
    # As in glibc, the last `search` (or `options`) line wins.
    found: list[str] = []
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == keyword:
            found = fields[1:]
    return found


def _search(text: str) -> list[str]:
    return _last_keyword(text, "search")


def _options(text: str) -> list[str]:
    return _last_keyword(text, "options")


def _is_loopback(server: str) -> bool:
    try:
        return ipaddress.ip_address(server.split("%")[0]).is_loopback
    except ValueError:
        return False


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return ""


def write(path: str, text: str) -> None:
    """Write one file (world-readable: the workload may run as any user) into its sandbox's
    own directory, created 0755 if missing; that directory must be root's alone and not a
    symlink (a planted `.etc -> /etc` would have root overwrite the host's files)."""
    try:
        write_atomic(path, text.encode(), 0o644, dir_mode=0o755, follow_dir=False)
    except OSError as e:
        raise CnirunError(f"cannot write {path}: {e.strerror or e}") from None


def rewrite(path: str, text: str) -> None:
    """Replace the contents of a file `write` made, in place: a workload has it bind-mounted,
    and a mount keeps the inode (a rename would leave the workload the old file). Same
    checks as `check_mount_source`; the file is never created or followed.

    Raises:
        CnirunError: it is missing, not the one `write` made, or cannot be written.
    """
    data = text.encode()
    try:
        with open_dir(os.path.dirname(path), follow=False) as dir_fd:
            fd = os.open(
                os.path.basename(path),
                os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                dir_fd=dir_fd,
            )
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise CnirunError(f"cannot rewrite {path}: not a regular file")
            check_owned(st, path)
            os.pwrite(fd, data, 0)
            os.ftruncate(fd, len(data))
        finally:
            os.close(fd)
    except OSError as e:
        raise CnirunError(f"cannot rewrite {path}: {e.strerror or e}") from None


def check_mount_source(path: str) -> None:
    """Check that a file about to be bind-mounted is still the one `write` made: a regular
    file of root's only root can write, in a directory that is not a symlink.

    Raises:
        CnirunError: it is not.
    """
    try:
        with open_dir(os.path.dirname(path), follow=False):
            check_written(path)
    except OSError as e:
        raise CnirunError(f"refusing to bind-mount {path}: {e.strerror or e}") from None
