"""Which Docker daemon cnirun talks to: resolved once, with the docker CLI's own precedence.

`DOCKER_HOST` wins; else the context named by `DOCKER_CONTEXT`, else the `currentContext` of
the CLI's config (`$DOCKER_CONFIG/config.json`, default `~/.docker`), else the default socket.
The Engine client, the SDK (pulls) and the docker CLI that runs the workload all use the
result, so the infra container and the workload can never land on two different daemons.
TLS and ssh endpoints are refused with one line: cnirun speaks plain HTTP on a socket.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any, NamedTuple

from cnirun.errors import DockerRuntimeError

DEFAULT_HOST = "unix:///var/run/docker.sock"
DEFAULT_CONTEXT = "default"
_SCHEMES = ("unix://", "tcp://", "http://")
_MAX_META_BYTES = 1 << 20


class Endpoint(NamedTuple):
    """A daemon address, and the context it came from ("" for DOCKER_HOST or the default)."""

    host: str
    context: str = ""

    def describe(self) -> str:
        return f"{self.host} (context {self.context})" if self.context else self.host

    def cli_environ(self, environ: Mapping[str, str]) -> dict[str, str]:
        """The environment for a docker CLI that must reach this same daemon."""
        env = dict(environ)
        if self.context:
            env["DOCKER_CONTEXT"] = self.context  # pinned: config.json may change meanwhile
            env.pop("DOCKER_HOST", None)
        else:
            env["DOCKER_HOST"] = self.host  # DOCKER_HOST beats any context in the CLI too
            env.pop("DOCKER_CONTEXT", None)
        return env


def config_dir(environ: Mapping[str, str]) -> str:
    return environ.get("DOCKER_CONFIG") or os.path.join(environ.get("HOME") or "/root", ".docker")


def _read_json(path: str, what: str) -> Any:
    try:
        with open(path, "rb") as handle:
            data = handle.read(_MAX_META_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise DockerRuntimeError(f"cannot read {what} {path}: {e.strerror or e}") from None
    if len(data) > _MAX_META_BYTES:
        raise DockerRuntimeError(f"{what} {path} is larger than 1 MiB")
    try:
        return json.loads(data)
    except ValueError as e:
        raise DockerRuntimeError(f"{what} {path} is not valid JSON: {e}") from None


def _check_host(host: str, where: str) -> str:
    if not host.startswith(_SCHEMES):
        raise DockerRuntimeError(
            f"{where} {host} is not supported: cnirun talks to Docker over unix:// or plain "
            "tcp:// only (no ssh, no named pipes)"
        )
    return host


def _current_context(environ: Mapping[str, str]) -> str:
    if environ.get("DOCKER_CONTEXT"):
        return environ["DOCKER_CONTEXT"]
    path = os.path.join(config_dir(environ), "config.json")
    config = _read_json(path, "docker CLI config")
    if isinstance(config, dict) and isinstance(config.get("currentContext"), str):
        return str(config["currentContext"])
    return ""


def _context_host(environ: Mapping[str, str], name: str) -> str:
    digest = hashlib.sha256(name.encode()).hexdigest()
    base = os.path.join(config_dir(environ), "contexts")
    meta = _read_json(os.path.join(base, "meta", digest, "meta.json"), f"docker context {name!r}")
    if meta is None:
        raise DockerRuntimeError(
            f"docker context {name!r} not found (named by DOCKER_CONTEXT or `docker context "
            "use`): create it, or choose another with `docker context use`"
        )
    endpoint = (meta.get("Endpoints") or {}).get("docker") if isinstance(meta, dict) else None
    host = endpoint.get("Host") if isinstance(endpoint, dict) else None
    if not isinstance(host, str) or not host:
        raise DockerRuntimeError(f"docker context {name!r} has no docker endpoint host")
    tls = os.path.join(base, "tls", digest, "docker")
    if os.path.isdir(tls) and os.listdir(tls):
        raise DockerRuntimeError(
            f"docker context {name!r} uses TLS ({host}), which cnirun does not support: "
            "use a context with a unix:// or plain tcp:// host"
        )
    return _check_host(host, f"docker context {name!r}: host")


def resolve(environ: Mapping[str, str]) -> Endpoint:
    """The daemon the docker CLI would use with this environment.

    Raises:
        DockerRuntimeError: a TLS, ssh or unknown endpoint, or an unreadable context.
    """
    host = environ.get("DOCKER_HOST", "")
    if host:
        if environ.get("DOCKER_TLS_VERIFY") or environ.get("DOCKER_CERT_PATH"):
            raise DockerRuntimeError(
                f"DOCKER_HOST {host} with DOCKER_TLS_VERIFY/DOCKER_CERT_PATH (TLS) is not "
                "supported: use a unix:// or plain tcp:// DOCKER_HOST"
            )
        return Endpoint(_check_host(host, "DOCKER_HOST"))
    name = _current_context(environ)
    if name in ("", DEFAULT_CONTEXT):
        return Endpoint(DEFAULT_HOST)
    return Endpoint(_context_host(environ, name), name)
