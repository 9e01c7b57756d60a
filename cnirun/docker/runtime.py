"""The Docker side: the infra container and lookups by label, through the Engine API.

Uses cnirun.docker.engine (a few raw HTTP requests on the Docker socket) rather than the Docker SDK,
whose import alone costs ~150 ms of CPU on every run; every engine error becomes one readable
DockerRuntimeError line. The workload itself is run by the docker CLI, not here, so that every
`docker run` flag behaves exactly as in Docker.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from cnirun import __version__
from cnirun.docker import engine, pause
from cnirun.docker.endpoint import Endpoint, resolve
from cnirun.docker.engine import EventStream
from cnirun.errors import DockerRuntimeError

if TYPE_CHECKING:
    from cnirun.docker.pull import PullDisplay

log = logging.getLogger(__name__)

LABEL_SANDBOX = "io.cnirun.sandbox"
LABEL_ROLE = "io.cnirun.role"
LABEL_VERSION = "io.cnirun.version"
LABEL_STATE_DIR = "io.cnirun.state-dir"
ROLE_INFRA = "infra"
ROLE_WORKLOAD = "workload"


def _same_netns(pid: int) -> bool:
    """Whether process `pid` is in cnirun's own network namespace."""
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat("/proc/self/ns/net").st_ino
    except OSError as e:
        raise DockerRuntimeError(f"cannot read the infra's network namespace: {e}") from None


def connect(environ: Mapping[str, str]) -> Docker:
    """The Docker engine the docker CLI would use with this environment (nothing is sent yet).

    Raises:
        DockerRuntimeError: the endpoint is one cnirun cannot use (TLS, ssh, unknown context).
    """
    return Docker(resolve(environ))


def infra_name(sandbox_id: str) -> str:
    """The infra container's deterministic name."""
    return f"cnirun-infra-{sandbox_id}"


class InfraSpec(NamedTuple):
    """What the infra container is created with (the UTS flags Docker refuses on the workload)."""

    sandbox_id: str
    image: str
    labels: dict[str, str]
    hostname: str | None = None
    domainname: str | None = None


class Infra(NamedTuple):
    """A running infra container."""

    id: str
    name: str
    pid: int
    hostname: str
    domainname: str


def _field(answer: Any, key: str, kind: type, doing: str) -> Any:
    """`answer[key]`, which must be of type `kind`, else a DockerRuntimeError."""
    value = answer.get(key) if isinstance(answer, dict) else None
    if not isinstance(value, kind):
        raise DockerRuntimeError(f"cannot {doing}: the answer has no {key}")
    return value


class Docker:
    """The Docker engine, as cnirun uses it."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.engine = engine.Engine(endpoint.host)
        self._engine_id: str | None = None

    def _call(self, doing: str, method: str, path: str, **kwargs: Any) -> Any:
        log.debug("docker: %s %s", method, path)
        try:
            return self.engine.request(method, path, **kwargs)
        except engine.EngineError as e:
            if e.status == 0:  # no daemon: Docker's own words say it all
                raise DockerRuntimeError(e.message) from None
            raise DockerRuntimeError(f"cannot {doing}: {e.message}") from None

    def _try(
        self, method: str, path: str, expected: tuple[int, ...] = (), **kwargs: Any
    ) -> tuple[int, Any]:
        """A request whose 404/409/304 (and `expected`) answers are expected: (status, answer)."""
        log.debug("docker: %s %s", method, path)
        try:
            return 200, self.engine.request(method, path, **kwargs)
        except engine.EngineError as e:
            if e.status in (304, 404, 409, *expected):
                return e.status, e.message
            if e.status == 0:
                raise DockerRuntimeError(e.message) from None
            raise DockerRuntimeError(f"docker {method} {path}: {e.message}") from None

    def engine_id(self) -> str:
        """The engine's ID (`docker info`'s ID), asked once: which engine a sandbox is on."""
        if self._engine_id is None:
            info = self._call("ask the Docker engine its ID", "GET", "/info")
            found = info.get("ID") if isinstance(info, dict) else None
            self._engine_id = found if isinstance(found, str) else ""
        return self._engine_id

    def image_exists(self, ref: str) -> bool:
        """Whether the engine has image `ref` locally (nothing is pulled); an invalid
        reference (400, such as an upper-case name) is no image either."""
        status, _ = self._try("GET", engine.api_path("/images/{}/json", ref), expected=(400,))
        return status == 200

    def container_id(self, name: str) -> str | None:
        """The ID of the container of this name or ID (in any state), or None."""
        status, answer = self._try("GET", engine.api_path("/containers/{}/json", name))
        return str(answer.get("Id") or name) if status == 200 and isinstance(answer, dict) else None

    def ensure_infra_image(
        self, image: str, pull_policy: str | None = None, display: PullDisplay | None = None
    ) -> None:
        """Make sure the infra image exists: build cnirun's pause image, pull any other.

        `pull_policy` is `--pull` (see cnirun.docker.pull) and `display` shows the pull (None
        under `-q`); the built-in pause image is never pulled, whatever the policy.
        """
        present = self.image_exists(image)
        if image != pause.PAUSE_IMAGE:
            from cnirun.docker import pull

            pull.ensure_image(
                self.endpoint,
                image,
                present=present,
                policy=pull_policy,
                display=display,
                role="infra image",
            )
            return
        if present:
            return
        log.debug("building %s", image)
        answer = self._call(
            f"build the pause image {image}",
            "POST",
            "/images/create",
            query={
                "fromSrc": "-",
                "repo": pause.PAUSE_REPOSITORY,
                "tag": pause.PAUSE_TAG,
                "changes": pause.PAUSE_IMAGE_CHANGES,
            },
            raw_body=pause.pause_image_tar(),
            content_type="application/x-tar",
        )
        if isinstance(answer, dict) and answer.get("error"):
            raise DockerRuntimeError(f"cannot build the pause image {image}: {answer['error']}")

    def create_infra(
        self, spec: InfraSpec, created: Callable[[str], None] = lambda _: None
    ) -> Infra:
        """Create and start the infra container: network mode none, labelled, restarted by
        Docker unless cnirun removed it (a workload Docker restarts after an engine restart
        needs its infra running again to join; cnirun then repairs the network).

        `created` gets the container's ID as soon as the engine answers the create, so the
        caller can record it before anything else can fail (teardown then removes by ID).

        With NetworkDisabled, Docker makes no network sandbox for it (that alone costs more
        than starting a container) and runc gives it a fresh network namespace with only `lo`,
        up: what CNI needs. Docker then writes no hosts or resolv.conf: see cnirun.etcfiles.
        """
        name = infra_name(spec.sandbox_id)
        labels = {
            LABEL_SANDBOX: spec.sandbox_id,
            LABEL_ROLE: ROLE_INFRA,
            LABEL_VERSION: __version__,
            **spec.labels,
        }
        body: dict[str, Any] = {
            "Image": spec.image,
            "Labels": labels,
            "NetworkDisabled": True,
            "HostConfig": {"NetworkMode": "none", "RestartPolicy": {"Name": "unless-stopped"}},
        }
        if spec.hostname:
            body["Hostname"] = spec.hostname
        if spec.domainname:
            body["Domainname"] = spec.domainname
        answer = self._call(
            f"create the infra container {name}",
            "POST",
            "/containers/create",
            query={"name": name},
            body=body,
        )
        container_id = _field(answer, "Id", str, f"create the infra container {name}")
        created(container_id)
        self._call(
            f"start the infra container {name}",
            "POST",
            engine.api_path("/containers/{}/start", container_id),
        )
        info = self._call(
            f"inspect {name}", "GET", engine.api_path("/containers/{}/json", container_id)
        )
        infra = _running_infra(name, info, container_id)
        if infra is None:
            raise DockerRuntimeError(f"the infra container {name} exited right after it started")
        log.debug("docker: started infra %s, pid %d", name, infra.pid)
        return infra

    def adopt_infra(self, sandbox_id: str, state_dir: str) -> Infra | None:
        """The running infra container made earlier for `sandbox_id` (a pooled one); None
        when it is gone, not running, paused, or not labelled as that sandbox's of
        `state_dir` (what a name alone cannot prove)."""
        name = infra_name(sandbox_id)
        status, info = self._try("GET", engine.api_path("/containers/{}/json", name))
        if status != 200 or not isinstance(info, dict):
            return None
        config = info.get("Config")
        labels = (config.get("Labels") if isinstance(config, dict) else None) or {}
        state = info.get("State")
        if (
            labels.get(LABEL_SANDBOX) != sandbox_id
            or labels.get(LABEL_ROLE) != ROLE_INFRA
            or labels.get(LABEL_STATE_DIR) != state_dir
            or not isinstance(state, dict)
            or state.get("Paused")
            or state.get("Restarting")
        ):
            return None
        try:
            return _running_infra(name, info)
        except DockerRuntimeError:
            return None
            # CNI would then configure the host's own network: never go on.

    def inspect(self, container: str) -> dict[str, Any] | None:
        """`docker inspect` of a container; None when there is no such container."""
        status, info = self._try("GET", engine.api_path("/containers/{}/json", container))
        return info if status == 200 and isinstance(info, dict) else None

    def pid(self, container: str) -> int | None:
        """The main process of a running container; None when it is gone or not running."""
        info = self.inspect(container)
        if info is None:
            return None
        state = info.get("State")
        if not isinstance(state, dict):
            return None
        pid = state.get("Pid")
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
            return None
        return pid if state.get("Running") else None

    def remove(self, container: str) -> None:
        """Force-remove a container; one that is already gone (or going) is fine."""
        self._try(
            "DELETE", engine.api_path("/containers/{}", container), query={"force": 1, "v": 1}
        )

    def containers(
        self, sandbox_id: str | None = None, role: str | None = None, **labels: str
    ) -> list[Any]:
        """Containers carrying cnirun's labels (all states), as `docker ps` JSON rows."""
        wanted = [f"{LABEL_SANDBOX}={sandbox_id}" if sandbox_id else LABEL_SANDBOX]
        if role:
            wanted.append(f"{LABEL_ROLE}={role}")
        wanted += [f"{k}={v}" for k, v in labels.items()]
        found = self._call(
            "list containers",
            "GET",
            "/containers/json",
            query={"all": 1, "filters": json.dumps({"label": wanted})},
        )
        if not isinstance(found, list):
            raise DockerRuntimeError("cannot list containers: the answer is not a list")
        # Only rows of the shape every caller reads (an Id, labels as a map).
        return [
            {**row, "Labels": row.get("Labels") if isinstance(row.get("Labels"), dict) else {}}
            for row in found
            if isinstance(row, dict) and isinstance(row.get("Id"), str)
        ]

    def created_since(self, since: float, sandbox_id: str, role: str) -> bool:
        """Whether the daemon has created a container of this sandbox and role since `since`.

        Reads the event log, so it also sees containers that are already removed again.
        """
        filters = {
            "type": ["container"],
            "event": ["create"],
            "label": [f"{LABEL_SANDBOX}={sandbox_id}", f"{LABEL_ROLE}={role}"],
        }
        until = time.time() + 0.001  # the log is read up to now; `until` ends the stream
        query = {"since": f"{since:.6f}", "until": f"{until:.6f}", "filters": json.dumps(filters)}
        return self._call("read Docker events", "GET", "/events", query=query) is not None

    def watch_for_exit(self, sandbox_id: str, role: str) -> EventStream:
        """An event stream that speaks once a container of this sandbox and role dies."""
        filters = {
            "type": ["container"],
            "event": ["die"],
            "label": [f"{LABEL_SANDBOX}={sandbox_id}", f"{LABEL_ROLE}={role}"],
        }
        log.debug("docker: GET /events (until the %s dies)", role)
        try:
            return self.engine.open_stream("/events", {"filters": json.dumps(filters)})
        except engine.EngineError as e:
            raise DockerRuntimeError(f"cannot watch Docker events: {e.message}") from None

    def kill(self, container: str) -> None:
        """SIGKILL a running container; a stopped or missing one is fine."""
        self._try("POST", engine.api_path("/containers/{}/kill", container))

    def stop(self, container: str, timeout: int | None = None) -> None:
        """Stop a container like `docker stop`: its stop signal, then SIGKILL after `timeout`
        seconds (None: the container's own --stop-timeout, else Docker's 10)."""
        query = {} if timeout is None else {"t": timeout}
        self._try("POST", engine.api_path("/containers/{}/stop", container), query=query)

    def restart(self, container: str, timeout: int | None = None) -> None:
        """`docker restart`: stop (as `stop`), then start again.

        Raises:
            DockerRuntimeError: it is gone, or Docker cannot restart it.
        """
        query = {} if timeout is None else {"t": timeout}
        path = engine.api_path("/containers/{}/restart", container)
        status, answer = self._try("POST", path, query=query)
        if status in (404, 409):
            raise DockerRuntimeError(f"cannot restart container {container[:12]}: {answer}")

    def start(self, container: str) -> None:
        """Start a created or stopped container (one already running is fine).

        Raises:
            DockerRuntimeError: it is gone, or Docker cannot start it (in Docker's words).
        """
        status, answer = self._try("POST", engine.api_path("/containers/{}/start", container))
        if status in (404, 409):
            raise DockerRuntimeError(f"cannot start container {container[:12]}: {answer}")

    def version(self) -> dict[str, Any]:
        """The engine's `/version` answer (Version, ApiVersion, ...)."""
        answer: dict[str, Any] = self._call("ask the Docker engine its version", "GET", "/version")
        return answer

    def network_subnets(self) -> list[str]:
        """The subnets of Docker's own networks (for choosing a CNI subnet that misses them)."""
        networks = self._call("list Docker networks", "GET", "/networks")
        found: list[str] = []
        for network in networks if isinstance(networks, list) else []:
            for config in ((network or {}).get("IPAM") or {}).get("Config") or []:
                subnet = config.get("Subnet") if isinstance(config, dict) else None
                if isinstance(subnet, str):
                    found.append(subnet)
        return found


def _running_infra(name: str, info: Any, container_id: str = "") -> Infra | None:
    """The Infra an inspect answer describes; None when it is not running.

    Raises:
        DockerRuntimeError: the answer is not an inspect's, or the container shares this
            host's network namespace (CNI would then configure the host's own network).
    """
    container_id = container_id or _field(info, "Id", str, f"inspect {name}")
    state = _field(info, "State", dict, f"inspect {name}")
    config = _field(info, "Config", dict, f"inspect {name}")
    pid = state.get("Pid") or 0
    if not state.get("Running") or not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None
    if _same_netns(pid):
        raise DockerRuntimeError(f"the infra container {name} shares this host's network namespace")
    return Infra(
        id=container_id,
        name=name,
        pid=pid,
        hostname=str(config.get("Hostname") or ""),
        domainname=str(config.get("Domainname") or ""),
    )
