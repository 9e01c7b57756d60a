"""Finding, parsing and validating network configurations (`.conflist`, `.conf`, `.json`).

Follows libcni's discovery rules: lists before single configs, byte-order sort of full paths,
first match by name wins, and any unreadable or malformed file stops a lookup. Every error
names the file it comes from.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, NamedTuple

from cnirun.cni import gojson
from cnirun.cni.types import go_json_error, go_json_kind, go_marshal, go_quote
from cnirun.cni.version import CURRENT, VersionError, parse_version
from cnirun.errors import ConfigError, NetworkNotFoundError, NoConfigsFoundError
from cnirun.files import read_limited

JSONDict = dict[str, Any]

# No network configuration comes near this; a bigger file is refused before it is read.
MAX_CONFIG_BYTES = 4 << 20


class PluginConfig(NamedTuple):
    """One plugin's configuration object, kept as parsed JSON with its raw bytes."""

    raw: JSONDict
    bytes: bytes

    @property
    def type(self) -> str:
        return str(self.raw["type"])

    @property
    def name(self) -> str:
        """The plugin-level `name` (usually absent); used only in error messages."""
        name = self.raw.get("name")
        return name if isinstance(name, str) else ""

    @property
    def capabilities(self) -> dict[str, bool]:
        caps = self.raw.get("capabilities") or {}
        return dict(caps)

    def describe(self) -> str:
        """`type="bridge"` or `type="bridge" name="x"`, as libcni names plugins in errors."""
        text = f"type={go_quote(self.type)}"
        return f"{text} name={go_quote(self.name)}" if self.name else text


class NetworkConfigList(NamedTuple):
    """A network: its name, chosen cniVersion, flags and plugin chain.

    `bytes` is what libcni caches: the conflist file itself, or the upconverted JSON of a `.conf`.
    """

    name: str
    cni_version: str
    plugins: tuple[PluginConfig, ...]
    bytes: bytes
    disable_check: bool
    disable_gc: bool
    load_only_inlined_plugins: bool
    source: str  # the file it came from ("" if none)
    raw: JSONDict


def go_type(value: Any) -> str:
    """The Go type name encoding/json gives a decoded JSON value (for libcni-style messages)."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "[]interface {}"
    return "map[string]interface {}"


def _unmarshal_error(value: Any, field_name: str, want: str) -> ConfigError:
    return ConfigError(
        f"json: cannot unmarshal {go_json_kind(value)} into Go struct field "
        f"PluginConf.{field_name} of type {want}"
    )


def _check_plugin_fields(raw: JSONDict) -> None:
    """Type-check the fields libcni decodes into its typed PluginConf (JSON null is allowed
    anywhere, as Go's decoder leaves the field unset)."""
    for key in ("cniVersion", "name", "type"):
        if key in raw and raw[key] is not None and not isinstance(raw[key], str):
            raise _unmarshal_error(raw[key], key, "string")
    caps = raw.get("capabilities")
    if caps is not None:
        if not isinstance(caps, dict):
            raise _unmarshal_error(caps, "capabilities", "map[string]bool")
        for cap, enabled in caps.items():
            if enabled is not None and not isinstance(enabled, bool):
                raise _unmarshal_error(enabled, f"capabilities.{cap}", "bool")
    ipam = raw.get("ipam")
    if ipam is not None:
        if not isinstance(ipam, dict):
            raise _unmarshal_error(ipam, "ipam", "types.IPAM")
        if "type" in ipam and ipam["type"] is not None and not isinstance(ipam["type"], str):
            raise _unmarshal_error(ipam["type"], "ipam.type", "string")
    dns = raw.get("dns")
    if dns is not None:
        if not isinstance(dns, dict):
            raise _unmarshal_error(dns, "dns", "types.DNS")
        for key in ("nameservers", "search", "options"):
            items = dns.get(key)
            if items is None:
                continue
            if not isinstance(items, list):
                raise _unmarshal_error(items, f"dns.{key}", "[]string")
            for item in items:
                if item is not None and not isinstance(item, str):
                    raise _unmarshal_error(item, f"dns.{key}", "string")
        if dns.get("domain") is not None and not isinstance(dns["domain"], str):
            raise _unmarshal_error(dns["domain"], "dns.domain", "string")
    prev = raw.get("prevResult")
    if prev is not None and not isinstance(prev, dict):
        raise _unmarshal_error(prev, "prevResult", "map[string]interface {}")
    valid = raw.get("cni.dev/valid-attachments")
    if valid is not None:
        if not isinstance(valid, list):
            raise _unmarshal_error(valid, "cni.dev/valid-attachments", "[]types.GCAttachment")
        for item in valid:
            if item is not None and not isinstance(item, dict):
                raise _unmarshal_error(item, "cni.dev/valid-attachments", "types.GCAttachment")
            for key in ("containerID", "ifname"):
                value = (item or {}).get(key)
                if value is not None and not isinstance(value, str):
                    raise _unmarshal_error(value, f"cni.dev/valid-attachments.{key}", "string")
    if not raw.get("type"):
        raise ConfigError("missing 'type'")


def plugin_from_object(raw: Any) -> PluginConfig:
    """Build a PluginConfig from a decoded JSON object.

    Raises:
        ConfigError: `error parsing configuration: ...` for a wrongly typed or missing field.
    """
    if not isinstance(raw, dict):
        raise ConfigError(
            "error parsing configuration: json: cannot unmarshal "
            f"{go_json_kind(raw)} into Go value of type types.PluginConf"
        )
    try:
        _check_plugin_fields(raw)
    except ConfigError as e:
        raise ConfigError(f"error parsing configuration: {e}") from None
    return PluginConfig(raw=raw, bytes=go_marshal(raw))


def plugin_from_bytes(data: bytes) -> PluginConfig:
    """Parse one plugin configuration (a `.conf` file's contents)."""
    try:
        raw = gojson.loads(data)
    except ValueError as e:
        raise ConfigError(f"error parsing configuration: {go_json_error(data, e)}") from None
    plugin = plugin_from_object(raw)
    return PluginConfig(raw=plugin.raw, bytes=data)


def _read_bool(raw: JSONDict, key: str) -> bool:
    if key not in raw:
        return False
    value = raw[key]
    if isinstance(value, bool):
        return value
    if not isinstance(value, str):
        raise ConfigError(
            f"error parsing configuration list: invalid type {go_type(value)} for {key}"
        )
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    raise ConfigError(
        f"error parsing configuration list: invalid value {go_quote(lowered)} for {key}"
    )


def _select_version(raw: JSONDict) -> str:
    version = raw.get("cniVersion", "")
    if version is None:
        version = ""
    if not isinstance(version, str):
        raise ConfigError(
            f"error parsing configuration list: invalid cniVersion type {go_type(version)}"
        )
    if "cniVersions" not in raw:
        return version
    entries = raw["cniVersions"]
    if not isinstance(entries, list):
        # libcni prints the type of its (empty) target slice here, not of the value.
        raise ConfigError(
            "error parsing configuration list: invalid type for cniVersions: []interface {}"
        )
    usable: list[str] = []
    current = parse_version(CURRENT)
    for index, entry in enumerate(entries):
        if not isinstance(entry, str):
            raise ConfigError(
                "error parsing configuration list: "
                f"invalid type for cniVersions index {index}: {go_type(entry)}"
            )
        try:
            if parse_version(entry) <= current:
                usable.append(entry)
        except VersionError as e:
            raise ConfigError(
                "error parsing configuration list: "
                f"invalid cniVersions entry {entry} at index {index}: {e}"
            ) from None
    if version:
        try:
            if parse_version(version) <= current:
                usable.append(version)
        except VersionError as e:
            raise ConfigError(
                f"error parsing configuration list: invalid cniVersion {version}: {e}"
            ) from None
    if usable:
        return max(usable, key=parse_version)
    return version


def list_from_bytes(
    data: bytes, source: str = "", subdir_base: str | None = None
) -> NetworkConfigList:
    """Parse a network configuration list.

    Args:
        data: the file's bytes.
        source: the file path, kept for messages.
        subdir_base: the directory whose `<name>/` subdirectory may add plugins (`.conflist` only).

    Raises:
        ConfigError: with libcni's wording (without the file name; callers add it).
    """
    try:
        raw = gojson.loads(data)
    except ValueError as e:
        raise ConfigError(f"error parsing configuration list: {go_json_error(data, e)}") from None
    if raw is None:  # Go decodes `null` into an empty map, which then has no name
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            "error parsing configuration list: json: cannot unmarshal "
            f"{go_json_kind(raw)} into Go value of type map[string]interface {{}}"
        )
    if "name" not in raw:
        raise ConfigError("error parsing configuration list: no name")
    name = raw["name"]
    if not isinstance(name, str):
        raise ConfigError(f"error parsing configuration list: invalid name type {go_type(name)}")
    version = _select_version(raw)
    disable_check = _read_bool(raw, "disableCheck")
    disable_gc = _read_bool(raw, "disableGC")
    inlined_only = _read_bool(raw, "loadOnlyInlinedPlugins")

    plugins: list[PluginConfig] = []
    if "plugins" not in raw:
        if inlined_only:
            raise ConfigError(
                "error parsing configuration list: "
                "`loadOnlyInlinedPlugins` is true, and no 'plugins' key"
            )
    else:
        entries = raw["plugins"]
        if not isinstance(entries, list):
            raise ConfigError(
                f"error parsing configuration list: invalid 'plugins' type {go_type(entries)}"
            )
        if not entries:
            raise ConfigError("error parsing configuration list: no plugins in list")
        for index, entry in enumerate(entries):
            try:
                plugins.append(plugin_from_object(entry))
            except ConfigError as e:
                raise ConfigError(f"failed to parse plugin config {index}: {e}") from None

    if subdir_base is not None and not inlined_only:
        plugins.extend(_subdir_plugins(subdir_base, name))
    if not plugins:
        raise ConfigError("no plugin configs found")
    return NetworkConfigList(
        name=name,
        cni_version=version,
        plugins=tuple(plugins),
        bytes=data,
        disable_check=disable_check,
        disable_gc=disable_gc,
        load_only_inlined_plugins=inlined_only,
        source=source,
        raw=raw,
    )


def _subdir_plugins(base: str, name: str) -> list[PluginConfig]:
    """Plugins from `<base>/<name>/*.conf`, appended after the inline ones.

    libcni joins the name into a path unchecked. A name that is not a single path element
    (`""`, `.`, `..`, or anything with `/`) would point outside `<base>/`, so such a network
    gets no subdirectory plugins; the name itself is rejected later, at ADD.
    """
    if name in ("", ".", "..") or "/" in name or "\0" in name:
        return []
    subdir = os.path.join(base, name)
    try:
        files = conf_files(subdir, (".conf",))
    except ConfigError as e:
        raise ConfigError(f"failed to read plugin config files in {subdir}: {e}") from None
    plugins = []
    for path in _sorted_paths(files):
        plugins.append(_load_file(path, plugin_from_bytes))
    return plugins


def _sorted_paths(paths: Iterable[str]) -> list[str]:
    # Go's sort.Strings compares bytes; this also orders undecodable names the same way.
    return sorted(paths, key=os.fsencode)


def _ext(filename: str) -> str:
    # Go's filepath.Ext: from the last dot of the final element, dot included.
    dot = filename.rfind(".")
    return filename[dot:] if dot >= 0 else ""


def conf_files(directory: str, extensions: Iterable[str]) -> list[str]:
    """Files in `directory` (not recursive) whose extension is one of `extensions`, unsorted.

    A missing directory is an empty list; other read errors are raised.
    """
    wanted = tuple(extensions)
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return []
    except OSError as e:
        raise ConfigError(f"{directory}: {e.strerror or e}") from None
    return [
        entry.path
        for entry in entries
        if not entry.is_dir(follow_symlinks=False) and _ext(entry.name) in wanted
    ]


def read_file(path: str) -> bytes:
    """A config file's bytes: a regular file (symlinks followed) of at most MAX_CONFIG_BYTES.

    Raises:
        ConfigError: `<path>: error reading file: ...`.
    """
    try:
        return read_limited(path, MAX_CONFIG_BYTES)
    except OSError as e:
        raise ConfigError(f"{path}: error reading file: {e.strerror or e}") from None


def _load_file(path: str, parse: Any) -> Any:
    data = read_file(path)
    try:
        return parse(data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def list_from_file(path: str) -> NetworkConfigList:
    """Load a `.conflist` file, with plugins from its network's subdirectory."""
    base = os.path.dirname(path)
    return _load_file(path, lambda data: list_from_bytes(data, path, subdir_base=base))  # type: ignore[no-any-return]


def list_from_plugin(plugin: PluginConfig, source: str = "") -> NetworkConfigList:
    """Upconvert a single `.conf` into a one-plugin list, as libcni does.

    Top-level flags such as disableCheck are dropped, since only cniVersion and name are lifted.
    """
    version = plugin.raw.get("cniVersion") or ""
    name = plugin.raw.get("name") or ""
    wrapper = {"cniVersion": version, "name": name, "plugins": [plugin.raw]}
    data = go_marshal(wrapper)
    try:
        return list_from_bytes(data, source)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def conf_from_file(path: str) -> PluginConfig:
    """Load a single-plugin `.conf`/`.json` file."""
    return _load_file(path, plugin_from_bytes)  # type: ignore[no-any-return]


def load_network(directory: str, name: str) -> NetworkConfigList:
    """Find the network called `name` in `directory` (libcni's `LoadNetworkConf`).

    Raises:
        NoConfigsFoundError, NetworkNotFoundError, ConfigError.
    """
    lists = _sorted_paths(conf_files(directory, (".conflist",)))
    for path in lists:
        network = list_from_file(path)
        if network.name == name:
            return network
    singles = _sorted_paths(conf_files(directory, (".conf", ".json")))
    if not singles:
        if lists:
            raise NetworkNotFoundError(f'no net configuration with name "{name}" in {directory}')
        raise NoConfigsFoundError(f"no net configurations found in {directory}")
    for path in singles:
        plugin = conf_from_file(path)
        if (plugin.raw.get("name") or "") == name:
            return list_from_plugin(plugin, path)
    raise NetworkNotFoundError(f'no net configuration with name "{name}" in {directory}')
