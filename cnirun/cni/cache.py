"""The result cache, in libcni's `cniCacheV1` format and layout.

`<cache_dir>/results/<network>-<containerID>-<ifname>`: directory 0700, files 0600, written
atomically (cnirun.files); only regular files of root's that only root can write are read,
up to MAX_CACHE_BYTES. Files written here are read by libcni tools and the other way round;
legacy files that hold only a bare result are read too.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from typing import Any, NamedTuple

from cnirun.cni import gojson
from cnirun.cni.types import JSONDict, Result, ResultError, RuntimeConf, go_json_error, go_quote
from cnirun.errors import CacheError
from cnirun.files import drop_partial_writes, read_limited, write_atomic

log = logging.getLogger(__name__)

KIND = "cniCacheV1"
# A result as large as the largest plugin output, plus the config and args around it.
MAX_CACHE_BYTES = 32 << 20


class CacheEntry(NamedTuple):
    """One cached attachment, as recorded after a successful ADD."""

    path: str
    container_id: str
    ifname: str
    network_name: str
    config: bytes
    netns: str = ""
    cni_args: tuple[tuple[str, str], ...] = ()
    capability_args: JSONDict | None = None
    result: JSONDict | None = None

    def runtime_conf(self) -> RuntimeConf:
        """The RuntimeConf the attachment was added with (for DEL and GC)."""
        return RuntimeConf(
            container_id=self.container_id,
            netns=self.netns,
            ifname=self.ifname,
            cni_args=self.cni_args,
            capability_args=self.capability_args,
        )


class ResultCache:
    """Reads and writes cached results under one cache directory."""

    def __init__(self, cache_dir: str) -> None:
        self.cache_dir = cache_dir
        self.results_dir = os.path.join(cache_dir, "results")

    def path(self, network: str, container_id: str, ifname: str) -> str:
        """`<cache_dir>/results/<network>-<containerID>-<ifname>`.

        Raises:
            CacheError: when a part is empty, or could make the path leave `results/`.
        """
        if not network or not container_id or not ifname:
            raise CacheError(
                f"cache file path requires network name ({go_quote(network)}), container ID "
                f"({go_quote(container_id)}), and interface name ({go_quote(ifname)})"
            )
        name = f"{network}-{container_id}-{ifname}"
        # DEL does not validate IDs (as in libcni), so a "/" could otherwise escape the dir.
        if "/" in name or "\0" in name:
            raise CacheError(f"invalid cache file name {go_quote(name)}: contains / or NUL")
        return os.path.join(self.results_dir, name)

    def write(
        self, network: str, config: bytes, rt: RuntimeConf, result: Result, sync: bool = True
    ) -> str:
        """Record a successful ADD atomically; return the file path. `sync=False` for the
        provisional entry of a chain still running (see CNIConfig.add_network_list).

        Raises:
            CacheError: when the directory or file cannot be written.
        """
        path = self.path(network, rt.container_id, rt.ifname)
        entry: JSONDict = {
            "kind": KIND,
            "containerId": rt.container_id,
            "config": base64.b64encode(config).decode(),
            "ifName": rt.ifname,
            "networkName": network,
        }
        if rt.netns:
            entry["netns"] = rt.netns
        if rt.cni_args:
            entry["cniArgs"] = [list(pair) for pair in rt.cni_args]
        if rt.capability_args:
            entry["capabilityArgs"] = rt.capability_args
        entry["result"] = result.to_json()
        data = json.dumps(entry, separators=(",", ":"), ensure_ascii=False).encode(
            "utf-8", "surrogateescape"
        )
        try:
            write_atomic(path, data, 0o600, dir_mode=0o700, sync=sync)
        except OSError as e:
            raise CacheError(f"{e.filename or path}: {e.strerror or e}") from None
        return path

    def read_result(self, network: str, rt: RuntimeConf, to_version: str) -> Result | None:
        """The cached result converted to `to_version`, or None when nothing is cached.

        A file that cannot be read counts as absent, as in libcni (the cache may be gone).

        Raises:
            CacheError: when the IDs cannot form a cache file path.
            ResultError: when the file is corrupt or its version cannot be converted.
        """
        path = self.path(network, rt.container_id, rt.ifname)
        try:
            data = read_limited(path, MAX_CACHE_BYTES, trusted=True)
        except OSError as e:
            if not isinstance(e, FileNotFoundError):
                log.debug("ignoring unreadable cache file %s: %s", path, e)
            return None
        return parse_cached_result(data).convert(to_version)

    def delete(self, network: str, container_id: str, ifname: str) -> None:
        path = self.path(network, container_id, ifname)
        _unlink(path)
        drop_partial_writes(path, lambda pid: False)  # this process's, cut by a signal

    def read_entry(self, path: str) -> CacheEntry | None:
        """Parse a cniCacheV1 file; None (logged) for files that are not usable entries."""
        try:
            obj = gojson.loads(read_limited(path, MAX_CACHE_BYTES, trusted=True))
        except (OSError, ValueError) as e:
            log.debug("skipping cache file %s: %s", path, e)
            return None
        if not isinstance(obj, dict) or obj.get("kind") != KIND:
            log.debug("skipping cache file %s: not %s", path, KIND)
            return None
        try:
            return _entry_from_json(path, obj)
        except (ValueError, TypeError, KeyError) as e:
            log.debug("skipping cache file %s: %s", path, e)
            return None

    def attachments(self, container_id: str | None = None) -> list[CacheEntry]:
        """Cached attachments, optionally only those of one container (libcni's rules)."""
        try:
            names = sorted(os.listdir(self.results_dir))
        except FileNotFoundError:
            return []
        except OSError as e:
            raise CacheError(f"{self.results_dir}: {e.strerror or e}") from None
        entries = []
        for name in names:
            if name.startswith("."):  # a write cut short (cnirun.files), never an entry
                continue
            if container_id is not None:
                # Filenames are ambiguous ("a-b"+"c" vs "a"+"b-c"); the JSON decides.
                marker = f"-{container_id}-"
                pos = name.find(marker)
                if pos <= 0 or name.endswith(marker):
                    continue
            entry = self.read_entry(os.path.join(self.results_dir, name))
            if entry is None:
                continue
            if container_id is not None and entry.container_id != container_id:
                continue
            entries.append(entry)
        return entries


def parse_cached_result(data: bytes) -> Result:
    """The result in a cache file: a cniCacheV1 entry, or a legacy bare result."""
    try:
        obj: Any = gojson.loads(data)
    except ValueError as e:
        raise ResultError(
            f"decoding version from network config: {go_json_error(data, e)}"
        ) from None
    if isinstance(obj, dict) and obj.get("kind") == KIND:
        obj = obj.get("result")  # a missing result reads as an empty 0.1.0 one, as in libcni
    return Result.from_json(obj)


def _entry_from_json(path: str, obj: JSONDict) -> CacheEntry:
    cid, ifname, network = obj.get("containerId"), obj.get("ifName"), obj.get("networkName")
    if not (isinstance(cid, str) and cid and isinstance(ifname, str) and ifname):
        raise ValueError("missing containerId or ifName")
    if not (isinstance(network, str) and network):
        raise ValueError("missing networkName")
    pairs = tuple(_arg_pair(pair) for pair in obj.get("cniArgs") or [])
    caps = obj.get("capabilityArgs")
    result = obj.get("result")
    return CacheEntry(
        path=path,
        container_id=cid,
        ifname=ifname,
        network_name=network,
        config=base64.b64decode(obj.get("config") or "", validate=True),
        netns=str(obj.get("netns") or ""),
        cni_args=pairs,
        capability_args=caps if isinstance(caps, dict) else None,
        result=result if isinstance(result, dict) else None,
    )


def _arg_pair(pair: Any) -> tuple[str, str]:
    # Go decodes each pair into a [2]string: missing items are "", extra ones are ignored.
    if not isinstance(pair, list) or not all(isinstance(item, str) for item in pair):
        raise ValueError(f"invalid cniArgs pair {json.dumps(pair)}")
    padded = [*pair, "", ""]
    return padded[0], padded[1]


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except (FileNotFoundError, NotADirectoryError):  # there is no such file: nothing to do
        pass
