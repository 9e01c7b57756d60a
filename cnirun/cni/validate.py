"""Validation of container IDs, network names, interface names and CNI_ARGS pairs.

Codes and texts follow libcni's `pkg/utils` so that errors read the same as with other runtimes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from cnirun.cni import types
from cnirun.cni.types import go_quote
from cnirun.errors import CNIError

_ID = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.\-]*")
MAX_IFNAME_BYTES = 15
# Go's unicode.IsSpace; Python's str.isspace() also accepts \x1c-\x1f, which Go does not.
_GO_SPACE = frozenset("\t\n\v\f\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000") | frozenset(
    chr(c) for c in range(0x2000, 0x200B)
)


def container_id(cid: str) -> None:
    """Raise CNIError (code 3 or 4) unless `cid` is a valid container ID."""
    if cid == "":
        raise CNIError(types.ERR_UNKNOWN_CONTAINER, "missing containerID")
    if not _ID.fullmatch(cid):
        raise CNIError(types.ERR_INVALID_ENV, "invalid characters in containerID", cid)


def network_name(name: str) -> None:
    """Raise CNIError (code 7) unless `name` is a valid network name, safe in file paths."""
    if name == "":
        raise CNIError(types.ERR_INVALID_NETWORK_CONFIG, "missing network name:")
    if not _ID.fullmatch(name):
        raise CNIError(
            types.ERR_INVALID_NETWORK_CONFIG, "invalid characters found in network name", name
        )


def interface_name(ifname: str) -> None:
    """Raise CNIError (code 4) unless `ifname` is a valid Linux interface name."""
    if ifname == "":
        raise CNIError(types.ERR_INVALID_ENV, "interface name is empty")
    # Byte length, as the kernel counts it; surrogateescape keeps undecodable argv bytes.
    if len(ifname.encode("utf-8", "surrogateescape")) > MAX_IFNAME_BYTES:
        raise CNIError(
            types.ERR_INVALID_ENV,
            "interface name is too long",
            f"interface name should be less than {MAX_IFNAME_BYTES + 1} characters",
        )
    if ifname in (".", ".."):
        raise CNIError(types.ERR_INVALID_ENV, "interface name is . or ..")
    if any(ch in "/:" or ch in _GO_SPACE for ch in ifname):
        raise CNIError(
            types.ERR_INVALID_ENV, "interface name contains / or : or whitespace characters"
        )


def cni_args_pair(pair: str) -> tuple[str, str]:
    """Split a `K=V` CNI_ARGS pair; both parts must be non-empty and `=` appear once."""
    parts = pair.split("=")
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise CNIError(types.ERR_INVALID_ENV, f"invalid CNI_ARGS pair {go_quote(pair)}")
    return parts[0], parts[1]


def check_cni_args(pairs: Iterable[tuple[str, str]]) -> None:
    """Raise CNIError (code 4) unless every (key, value) survives the `K=V;K=V` encoding."""
    for key, value in pairs:
        pair = f"{key}={value}"
        if ";" in pair:
            raise CNIError(types.ERR_INVALID_ENV, f"invalid CNI_ARGS pair {go_quote(pair)}")
        cni_args_pair(pair)


def parse_cni_args(text: str) -> tuple[tuple[str, str], ...]:
    """Parse a `K1=V1;K2=V2` CNI_ARGS string (an empty string means no args)."""
    if text == "":
        return ()
    return tuple(cni_args_pair(pair) for pair in text.split(";"))


def cni_args_pairs(pairs: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """Parse repeated `K=V` options."""
    return tuple(cni_args_pair(pair) for pair in pairs)
