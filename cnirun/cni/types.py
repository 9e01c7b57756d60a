"""CNI results: decoding, validation and conversion between the spec's three result families.

0.1.0/0.2.0 ("ip4"/"ip6"), 0.3.x/0.4.0 ("ips" with "version") and 1.0.0/1.1.0 ("ips" without).
Decoding keeps only the fields the spec defines (as libcni's typed decode does) and checks
every address; unknown keys are dropped, so the decoded result is what gets chained and cached.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any, NamedTuple

from cnirun.cni import gojson
from cnirun.cni.gojson import go_json_error as go_json_error  # re-exported
from cnirun.cni.gojson import go_quote as go_quote  # re-exported
from cnirun.cni.version import CURRENT
from cnirun.errors import CNIError

JSONDict = dict[str, Any]

FAMILY_020 = ("", "0.1.0", "0.2.0")
FAMILY_040 = ("0.3.0", "0.3.1", "0.4.0")
FAMILY_100 = ("1.0.0", "1.1.0")

# CNI error codes (SPEC.md "Error"); 0, 8 and 999 are Go-only.
ERR_UNKNOWN = 0
ERR_INCOMPATIBLE_VERSION = 1
ERR_UNSUPPORTED_FIELD = 2
ERR_UNKNOWN_CONTAINER = 3
ERR_INVALID_ENV = 4
ERR_IO = 5
ERR_DECODING = 6
ERR_INVALID_NETWORK_CONFIG = 7
ERR_INVALID_NETNS = 8
ERR_TRY_AGAIN_LATER = 11
ERR_NOT_AVAILABLE = 50
ERR_NOT_AVAILABLE_DEGRADED = 51
ERR_INTERNAL = 999


class ResultError(CNIError):
    """Raised when a plugin result cannot be decoded or converted."""

    def __init__(
        self, msg: str, details: str = "", context: str = "", code: int = ERR_DECODING
    ) -> None:
        super().__init__(code, msg, details, context)

    def wrap(self, prefix: str) -> CNIError:
        # CNIError.wrap rebuilds with the base signature, which this class does not take.
        return ResultError(self.msg, self.details, prefix + self.context, self.code)


def go_json_kind(value: Any) -> str:
    """How Go's encoding/json names a JSON value's kind in "cannot unmarshal" errors."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def go_marshal(obj: Any) -> bytes:
    """JSON the way Go's json.Marshal writes a decoded map: compact, sorted keys, UTF-8,
    with `<`, `>`, `&`, U+2028 and U+2029 escaped."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(ch, esc)
    text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return text.encode("utf-8", "surrogateescape")


def family(version: str) -> str:
    """The result family ("020", "040" or "100") of a version, or raise ResultError."""
    if version in FAMILY_020:
        return "020"
    if version in FAMILY_040:
        return "040"
    if version in FAMILY_100:
        return "100"
    raise ResultError(f"unsupported CNI result version {go_quote(version)}")


# Go's net.ParseCIDR takes only a decimal prefix length (no netmask form) and no IPv6 zone.
_CIDR = re.compile(r"[^/%]+/[0-9]+")


def _ipnet(value: Any, where: str) -> str:
    if value is None:
        raise ResultError(f"{where}: missing CIDR address")
    if not isinstance(value, str) or not _CIDR.fullmatch(value):
        raise ResultError(f"{where}: invalid CIDR address: {value}")
    try:
        return str(ipaddress.ip_interface(value))
    except ValueError:
        raise ResultError(f"{where}: invalid CIDR address: {value}") from None


def _ip(value: Any, where: str) -> str:
    try:
        if not isinstance(value, str) or "%" in value:
            raise ValueError
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ResultError(f"{where}: invalid IP address: {value}") from None


def _is_v4(cidr_or_ip: str) -> bool:
    return ipaddress.ip_interface(cidr_or_ip).version == 4


def _obj(value: Any, where: str) -> JSONDict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ResultError(f"{where}: expected a JSON object, got {json.dumps(value)}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ResultError(f"{where}: expected a JSON array, got {json.dumps(value)}")
    return value


def _str(value: Any, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ResultError(f"{where}: expected a string, got {json.dumps(value)}")
    return value


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise ResultError(f"{where}: expected an integer, got {json.dumps(value)}")
    return int(value)


def _strings(value: Any, where: str) -> list[str]:
    return [_str(item, f"{where}[{i}]") for i, item in enumerate(_list(value, where))]


def _dns(value: Any) -> JSONDict:
    raw = _obj(value, "dns")
    out: JSONDict = {}
    for key in ("nameservers", "search", "options"):
        items = _strings(raw.get(key), f"dns.{key}")
        if items:
            out[key] = items
    domain = _str(raw.get("domain"), "dns.domain")
    if domain:
        out["domain"] = domain
    # Keep the spec's key order: nameservers, domain, search, options.
    order = ("nameservers", "domain", "search", "options")
    return {key: out[key] for key in order if key in out}


def _route(value: Any, where: str) -> JSONDict:
    raw = _obj(value, where)
    route: JSONDict = {"dst": _ipnet(raw.get("dst"), f"{where}.dst")}
    if raw.get("gw") not in (None, ""):
        route["gw"] = _ip(raw["gw"], f"{where}.gw")
    for key in ("mtu", "advmss", "priority"):
        if raw.get(key) not in (None, 0):
            route[key] = _int(raw[key], f"{where}.{key}")
    for key in ("table", "scope"):  # pointers in Go: an explicit 0 is kept
        if raw.get(key) is not None:
            route[key] = _int(raw[key], f"{where}.{key}")
    return route


def _interface(value: Any, where: str, fam: str) -> JSONDict:
    raw = _obj(value, where)
    out: JSONDict = {}
    keys = ("name", "mac", "mtu", "sandbox", "socketPath", "pciID")
    for key in keys:
        if fam == "040" and key in ("mtu", "socketPath", "pciID"):
            continue
        item = raw.get(key)
        if key == "mtu":
            if item not in (None, 0):
                out[key] = _int(item, f"{where}.mtu")
        elif key == "name" or item not in (None, ""):  # Go always writes "name"
            out[key] = _str(item, f"{where}.{key}")
    return out


def _ip_config(value: Any, where: str, fam: str) -> JSONDict:
    raw = _obj(value, where)
    out: JSONDict = {}
    if fam == "040":
        version = _str(raw.get("version"), f"{where}.version")
        out["version"] = version
    if raw.get("interface") is not None:
        out["interface"] = _int(raw["interface"], f"{where}.interface")
    out["address"] = _ipnet(raw.get("address"), f"{where}.address")
    if raw.get("gateway") not in (None, ""):
        out["gateway"] = _ip(raw["gateway"], f"{where}.gateway")
    return out


def _ip_config_020(value: Any, where: str) -> JSONDict | None:
    if value is None:
        return None
    raw = _obj(value, where)
    out: JSONDict = {"ip": _ipnet(raw.get("ip"), f"{where}.ip")}
    if raw.get("gateway") not in (None, ""):
        out["gateway"] = _ip(raw["gateway"], f"{where}.gateway")
    routes = [
        _route(r, f"{where}.routes[{i}]") for i, r in enumerate(_list(raw.get("routes"), where))
    ]
    if routes:
        out["routes"] = routes
    return out


class Result(NamedTuple):
    """A decoded CNI result; `data` is the normalized JSON of its version, minus cniVersion."""

    cni_version: str
    data: JSONDict

    @classmethod
    def decode(cls, raw: Any, version: str) -> Result:
        """Decode a result object of the given version (already chosen by the caller)."""
        fam = family(version)
        version = version or "0.1.0"  # libcni's 0.2.0 decoder turns "" into 0.1.0
        obj = _obj(raw, "result")
        data: JSONDict = {}
        if fam == "020":
            for key in ("ip4", "ip6"):
                config = _ip_config_020(obj.get(key), key)
                if config is not None:
                    data[key] = config
            data["dns"] = _dns(obj.get("dns"))
            return cls(version, data)
        interfaces = [
            _interface(item, f"interfaces[{i}]", fam)
            for i, item in enumerate(_list(obj.get("interfaces"), "interfaces"))
        ]
        ips = [
            _ip_config(item, f"ips[{i}]", fam)
            for i, item in enumerate(_list(obj.get("ips"), "ips"))
        ]
        routes = [
            _route(item, f"routes[{i}]")
            for i, item in enumerate(_list(obj.get("routes"), "routes"))
        ]
        if interfaces:
            data["interfaces"] = interfaces
        if ips:
            data["ips"] = ips
        if routes:
            data["routes"] = routes
        dns = _dns(obj.get("dns"))
        if dns or fam == "040":  # Go emits an empty 0.4.0 dns object but omits it from 1.x
            data["dns"] = dns
        return cls(version, data)

    @classmethod
    def from_plugin_output(cls, stdout: bytes, request_version: str) -> Result:
        """Decode an ADD plugin's stdout the way libcni does.

        A missing, empty or non-string cniVersion means the request's version.
        """
        if not stdout.strip():
            raise ResultError("failed to unmarshal raw result: unexpected end of JSON input")
        try:
            obj = gojson.loads(stdout)
        except ValueError as e:
            text = go_json_error(stdout, e)
            raise ResultError(f"failed to unmarshal raw result: {text}") from None
        if obj is None:
            obj = {}
        if not isinstance(obj, dict):
            raise ResultError(
                f"failed to unmarshal raw result: json: cannot unmarshal {go_json_kind(obj)} "
                "into Go value of type map[string]interface {}"
            )
        version = obj.get("cniVersion")
        if not isinstance(version, str) or version == "":
            version = request_version or "0.1.0"
        return cls.decode(obj, version)

    @classmethod
    def from_json(cls, obj: Any) -> Result:
        """Decode a result that carries its own cniVersion (a cached one).

        `null` is an empty 0.1.0 result, as in libcni.
        """
        if obj is None:
            obj = {}
        if not isinstance(obj, dict):
            raise ResultError("decoding version from network config: result is not a JSON object")
        version = obj.get("cniVersion", "")
        if not isinstance(version, str):
            raise ResultError(
                "decoding version from network config: "
                f"cniVersion must be a string, got {version!r}"
            )
        return cls.decode(obj, version)

    def to_json(self) -> JSONDict:
        """The result as the JSON object a plugin would print."""
        return {"cniVersion": self.cni_version, **self.data}

    def convert(self, to_version: str) -> Result:
        """Convert to another version with libcni's registered converters.

        Raises:
            ResultError: for an unknown version or when no IP survives a conversion to 0.2.0.
        """
        to_version = to_version or "0.1.0"
        if to_version == self.cni_version:
            return self
        src = family(self.cni_version)
        try:
            dst = family(to_version)
        except ResultError:
            raise ResultError(
                f"no converter for CNI result version {self.cni_version} to {to_version}"
            ) from None
        if src == dst:
            return Result(to_version, self.data)
        if src == "020":
            return Result.decode(_from_020(self.data), "0.4.0").convert(to_version)
        if dst == "020":
            # 1.x goes through 0.4.0 first, so every IP carries its family as "version".
            source = self if src == "040" else self.convert("0.4.0")
            return Result(to_version, _to_020(source.data))
        if dst == "100":  # 0.4 -> 1.x: decoding as 1.x drops the per-IP version
            return Result.decode(self.data, to_version)
        # 1.x -> 0.4: the version comes from the address family; 1.x-only fields go.
        data = dict(self.data)
        data["ips"] = [
            {"version": "4" if _is_v4(ip["address"]) else "6", **ip}
            for ip in self.data.get("ips", [])
        ]
        return Result.decode(data, to_version)

    def addresses(self) -> list[str]:
        """Every assigned address as CIDR text, in result order."""
        if "ips" in self.data:
            return [ip["address"] for ip in self.data["ips"]]
        return [self.data[k]["ip"] for k in ("ip4", "ip6") if k in self.data]

    def gateways(self) -> list[str]:
        """Every gateway the result names, in result order."""
        if "ips" in self.data:
            return [ip["gateway"] for ip in self.data["ips"] if ip.get("gateway")]
        configs = [self.data[k] for k in ("ip4", "ip6") if k in self.data]
        return [config["gateway"] for config in configs if config.get("gateway")]

    def nameservers(self) -> list[str]:
        """The DNS servers the result asks the container to use."""
        servers: list[str] = self.data.get("dns", {}).get("nameservers", [])
        return servers


def _from_020(data: JSONDict) -> JSONDict:
    ips: list[JSONDict] = []
    routes: list[JSONDict] = []
    for key, ver in (("ip4", "4"), ("ip6", "6")):
        config = data.get(key)
        if config is None:
            continue
        ip: JSONDict = {"version": ver, "address": config["ip"]}
        if "gateway" in config:
            ip["gateway"] = config["gateway"]
        ips.append(ip)
        # Only the destination and gateway survive the move to the 0.3+ route list.
        routes.extend({k: r[k] for k in ("dst", "gw") if k in r} for r in config.get("routes", []))
    return {"ips": ips, "routes": routes, "dns": data.get("dns", {})}


def _to_020(data: JSONDict) -> JSONDict:
    # `data` is 0.3/0.4-shaped: the per-IP "version" decides the family, as in libcni.
    out: JSONDict = {}
    for ip in data.get("ips", []):
        key = {"4": "ip4", "6": "ip6"}.get(ip.get("version", ""))
        if key is not None and key not in out:
            out[key] = {
                "ip": ip["address"],
                **({"gateway": ip["gateway"]} if "gateway" in ip else {}),
            }
    if not out:
        raise ResultError("cannot convert: no valid IP addresses")
    for route in data.get("routes", []):
        key = "ip4" if _is_v4(route["dst"]) else "ip6"
        if key in out:
            kept = {k: route[k] for k in ("dst", "gw") if k in route}
            out[key].setdefault("routes", []).append(kept)
    ordered: JSONDict = {k: out[k] for k in ("ip4", "ip6") if k in out}
    ordered["dns"] = data.get("dns", {})
    return ordered


class VersionInfo(NamedTuple):
    """A plugin's answer to VERSION."""

    cni_version: str
    supported_versions: tuple[str, ...]

    @classmethod
    def decode(cls, stdout: bytes) -> VersionInfo:
        """Decode VERSION output with libcni's fallbacks for pre-0.3 plugins."""
        try:
            obj = gojson.loads(stdout)
        except ValueError as e:
            raise ResultError(f"decoding version info: {go_json_error(stdout, e)}") from None
        if not isinstance(obj, dict):
            raise ResultError("decoding version info: expected a JSON object")
        version = obj.get("cniVersion")
        if not isinstance(version, str) or version == "":
            raise ResultError("decoding version info: missing field cniVersion")
        supported = obj.get("supportedVersions")
        if not supported:  # absent, null and [] all count as missing
            if version == "0.2.0":
                return cls.supports("0.1.0", "0.2.0")
            raise ResultError("decoding version info: missing field supportedVersions")
        if not isinstance(supported, list) or not all(isinstance(v, str) for v in supported):
            raise ResultError("decoding version info: supportedVersions must be a list of strings")
        return cls(version, tuple(supported))

    @classmethod
    def supports(cls, *versions: str) -> VersionInfo:
        """What libcni assumes for plugins too old to answer VERSION properly."""
        return cls(CURRENT, versions)


class RuntimeConf(NamedTuple):
    """What identifies one attachment and what the runtime supplies to its plugins."""

    container_id: str
    netns: str
    ifname: str
    cni_args: tuple[tuple[str, str], ...] = ()
    capability_args: JSONDict | None = None

    def caps(self) -> JSONDict:
        return self.capability_args or {}
