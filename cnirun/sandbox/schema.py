"""The schema of a sandbox record: every field's type and allowed values, checked on load.

A record steers root (which plugins run, which container is removed, which netns is
released), so a field that does not have the one shape cnirun writes makes the whole record
invalid: IDs are hex, the infra and netns names follow from the sandbox ID, paths are absolute
and normalized, the netns holder is `/run/netns/cnirun-<id>`, CNI args are string pairs.
"""

from __future__ import annotations

import base64
import binascii
import math
import os
import re
from collections.abc import Callable
from typing import Any

from cnirun.cni import validate
from cnirun.docker.runtime import infra_name
from cnirun.dockerargs import HOSTS_NAME
from cnirun.errors import CNIError
from cnirun.host.netns import NETNS_DIR

_INFRA_ID = re.compile(r"[0-9a-f]{64}")
_PROCESS_START = re.compile(r"[0-9]*")
_PENDING = re.compile(r"[1-9][0-9]{0,9}:[0-9]{0,20}")  # PID:START of a connect under way
# Docker's engine ID: a UUID on newer engines, twelve colon-separated groups on older ones.
_ENGINE_ID = re.compile(r"[A-Za-z0-9:-]{0,128}")
MAX_TEXT = 4096  # hostnames, image references, messages: far below this
MAX_ITEMS = 1024  # plugin dirs, attachments, ports, CNI args


class SchemaError(ValueError):
    """A record field without the shape cnirun writes (the message names the field)."""


def _fail(field: str, why: str) -> SchemaError:
    return SchemaError(f"{field}: {why}")


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise _fail(field, "not a string")
    if len(value) > MAX_TEXT or "\0" in value:
        raise _fail(field, "too long, or contains NUL")
    return value


def _path(value: Any, field: str) -> str:
    text = _text(value, field)
    if not os.path.isabs(text) or os.path.normpath(text) != text:
        raise _fail(field, "not an absolute, normalized path")
    return text


def _number(value: Any, field: str, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail(field, "not a number")
    if positive and not value > 0:
        raise _fail(field, "not positive")
    return value


def _flag(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(field, "not true or false")
    return value


def _items(value: Any, field: str) -> list[Any]:
    if not isinstance(value, list) or len(value) > MAX_ITEMS:
        raise _fail(field, f"not a list of at most {MAX_ITEMS} items")
    return value


def _object(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(field, "not an object")
    return value


def _pair(value: Any, field: str) -> list[str]:
    if not (isinstance(value, list) and len(value) == 2):
        raise _fail(field, "not a [key, value] pair")
    return [_text(value[0], f"{field}[0]"), _text(value[1], f"{field}[1]")]


def _cni(check: Callable[[str], None], value: Any, field: str) -> str:
    text = _text(value, field)
    try:
        check(text)
    except CNIError as e:
        raise _fail(field, str(e)) from None
    return text


def _attachment(value: Any, field: str) -> dict[str, Any]:
    raw = _object(value, field)
    expected = {"network", "ifname", "config_b64", "source", "cni_args", "capability_args"}
    if set(raw) - {"pending"} != expected:
        raise _fail(field, f"needs exactly the keys {', '.join(sorted(expected))}")
    args = _items(raw["cni_args"], f"{field}.cni_args")
    pending = raw.get("pending", "")
    if not (isinstance(pending, str) and (pending == "" or _PENDING.fullmatch(pending))):
        raise _fail(f"{field}.pending", "not PID:START")
    return {
        "pending": pending,
        "network": _cni(validate.network_name, raw["network"], f"{field}.network"),
        "ifname": _cni(validate.interface_name, raw["ifname"], f"{field}.ifname"),
        "config_b64": _base64(raw["config_b64"], f"{field}.config_b64"),
        "source": _text(raw["source"], f"{field}.source"),
        "cni_args": [_pair(p, f"{field}.cni_args[{i}]") for i, p in enumerate(args)],
        "capability_args": _object(raw["capability_args"], f"{field}.capability_args"),
    }


def _alias(value: Any, field: str) -> str:
    # Written into other sandboxes' /etc/hosts: one name, nothing that could add a line.
    text = _text(value, field)
    if not HOSTS_NAME.fullmatch(text):
        raise _fail(field, "not a container name")
    return text


def _base64(value: Any, field: str) -> str:
    # A whole network list: longer than other text (MAX_TEXT), bounded by the record's size.
    if not isinstance(value, str):
        raise _fail(field, "not a string")
    try:
        base64.b64decode(value, validate=True)
    except binascii.Error:
        raise _fail(field, "not base64") from None
    return value


REQUIRED = ("infra_name", "netns_name", "cache_dir", "plugin_dirs", "cni_timeout")


def check(raw: Any, sandbox_id: str) -> dict[str, Any]:
    """The record's fields, checked, as SandboxRecord's keyword arguments (`attachments`
    as dicts of AttachmentRecord's fields); `sandbox_id` is the record's file name.

    Raises:
        SchemaError: naming the first field that is wrong.
    """
    obj = _object(raw, "record")
    missing = [key for key in REQUIRED if key not in obj]
    if missing:
        raise _fail(missing[0], "missing")
    out: dict[str, Any] = {"id": sandbox_id}
    for key, value in obj.items():
        out[key] = _field(key, value, sandbox_id)
    if out.get("netns_path", "") not in ("", os.path.join(NETNS_DIR, out["netns_name"])):
        raise _fail("netns_path", f"not {NETNS_DIR}/{out['netns_name']}")
    return out


def _field(key: str, value: Any, sandbox_id: str) -> Any:
    fixed = {
        "id": sandbox_id,
        "infra_name": infra_name(sandbox_id),
        "netns_name": f"cnirun-{sandbox_id}",
    }
    if key in fixed:
        if value != fixed[key]:
            raise _fail(key, f"not {fixed[key]} (the record's file name is its identity)")
        return value
    if key == "cache_dir":
        return _path(value, key)
    if key == "plugin_dirs":
        return [_path(d, f"{key}[{i}]") for i, d in enumerate(_items(value, key))]
    if key in ("cni_timeout", "cni_del_timeout"):
        return _number(value, key, positive=True)
    if key == "created":
        return _number(value, key)
    if key == "infra_id":
        if value != "" and not (isinstance(value, str) and _INFRA_ID.fullmatch(value)):
            raise _fail(key, "not 64 hex digits")
        return value
    if key == "netns_path":
        return _path(value, key) if value != "" else value
    if key in ("hostname", "image", "workload"):
        return _text(value, key)
    if key in ("detach", "remove"):
        return _flag(value, key)
    if key == "ports":
        return [_object(p, f"{key}[{i}]") for i, p in enumerate(_items(value, key))]
    if key == "aliases":
        return [_alias(a, f"{key}[{i}]") for i, a in enumerate(_items(value, key))]
    if key == "network_aliases":
        return {
            _cni(validate.network_name, net, f"{key}.{net}"): [
                _alias(a, f"{key}.{net}[{i}]")
                for i, a in enumerate(_items(aliases, f"{key}.{net}"))
            ]
            for net, aliases in _object(value, key).items()
        }
    if key == "attachments":
        return [_attachment(a, f"{key}[{i}]") for i, a in enumerate(_items(value, key))]
    if key == "results":
        return {_text(k, key): _object(v, f"{key}.{k}") for k, v in _object(value, key).items()}
    if key == "owner_pid":
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise _fail(key, "not a process ID")
        return value
    if key == "infra_pid":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise _fail(key, "not a process ID")
        return value
    if key == "engine_id":
        if not (isinstance(value, str) and _ENGINE_ID.fullmatch(value)):
            raise _fail(key, "not a Docker engine ID")
        return value
    if key in ("owner_start", "infra_start"):
        if not (isinstance(value, str) and _PROCESS_START.fullmatch(value)):
            raise _fail(key, "not a process start time")
        return value
    if key == "updating":
        return _updating(value, key)
    raise _fail(key, "not a field of a sandbox record")


def _updating(value: Any, field: str) -> dict[str, Any]:
    """An update under way: its process, the ports before it, and per attachment (by index)
    the capability args before and after it."""
    raw = _object(value, field)
    if set(raw) != {"pid", "start", "ports", "steps"}:
        raise _fail(field, "needs exactly the keys pid, ports, start, steps")
    pid = raw["pid"]
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        raise _fail(f"{field}.pid", "not a process ID")
    if not (isinstance(raw["start"], str) and _PROCESS_START.fullmatch(raw["start"])):
        raise _fail(f"{field}.start", "not a process start time")
    ports = [_object(p, f"{field}.ports[{i}]") for i, p in enumerate(_items(raw["ports"], field))]
    steps = []
    for i, step in enumerate(_items(raw["steps"], f"{field}.steps")):
        where = f"{field}.steps[{i}]"
        step = _object(step, where)
        index = step.get("attachment")
        if set(step) != {"attachment", "from", "to"}:
            raise _fail(where, "needs exactly the keys attachment, from, to")
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < MAX_ITEMS:
            raise _fail(f"{where}.attachment", "not an attachment's index")
        old, new = _object(step["from"], f"{where}.from"), _object(step["to"], f"{where}.to")
        steps.append({"attachment": index, "from": old, "to": new})
    return {"pid": pid, "start": raw["start"], "ports": ports, "steps": steps}
