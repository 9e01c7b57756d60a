"""The Docker side: the infra container (through the Docker SDK) and lookups by label.

Imports `docker` only inside methods (it costs ~150 ms) and maps every SDK error to
DockerRuntimeError with one readable line. The workload itself is run by the docker CLI,
not here, so that every `docker run` flag behaves exactly as in Docker.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cnirun import __version__, pause
from cnirun.errors import DockerRuntimeError

if TYPE_CHECKING:
    import docker

log = logging.getLogger(__name__)

LABEL_SANDBOX = "io.cnirun.sandbox"
LABEL_ROLE = "io.cnirun.role"
LABEL_VERSION = "io.cnirun.version"
ROLE_INFRA = "infra"
ROLE_WORKLOAD = "workload"


def infra_name(sandbox_id: str) -> str:
    """The infra container's deterministic name."""
    return f"cnirun-infra-{sandbox_id}"


@dataclass(frozen=True)
class InfraSpec:
    """What the infra container is created with (the flags Docker refuses on the workload)."""

    sandbox_id: str
    image: str
    hostname: str | None = None
    domainname: str | None = None
    dns: tuple[str, ...] = ()
    dns_search: tuple[str, ...] = ()
    dns_options: tuple[str, ...] = ()
    extra_hosts: tuple[tuple[str, str], ...] = ()
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Infra:
    """A running infra container."""

    id: str
    name: str
    pid: int
    hostname: str
    domainname: str
    hosts_path: str
    resolv_conf_path: str


def _describe(error: Exception) -> str:
    text = str(getattr(error, "explanation", None) or error)
    if "Connection refused" in text or "No such file or directory" in text or "connect" in text:
        host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        return f"cannot connect to the Docker daemon at {host}: is dockerd running?"
    return text.splitlines()[0] if text else type(error).__name__


class Docker:
    """A lazily connected Docker SDK client."""

    def __init__(self) -> None:
        self._client: docker.DockerClient | None = None

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            import docker

            with self._errors("connect to Docker"):
                self._client = docker.from_env()
                self._client.ping()
        return self._client

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        import docker.errors

        try:
            yield
        except docker.errors.DockerException as e:
            raise DockerRuntimeError(f"cannot {doing}: {_describe(e)}") from e
        except OSError as e:  # requests' connection errors surface as OSError subclasses
            raise DockerRuntimeError(f"cannot {doing}: {_describe(e)}") from e

    def ensure_infra_image(self, image: str) -> None:
        """Make sure the infra image exists; build cnirun's pause image when it is missing."""
        import docker.errors

        api = self.client.api
        try:
            api.inspect_image(image)
            return
        except docker.errors.ImageNotFound:
            pass
        except docker.errors.DockerException as e:
            raise DockerRuntimeError(f"cannot inspect image {image}: {_describe(e)}") from e
        if image != pause.PAUSE_IMAGE:
            raise DockerRuntimeError(
                f"infra image {image} is not present locally: `docker pull {image}` first"
            )
        log.debug("building %s", image)
        with self._errors(f"build the pause image {image}"):
            api.import_image_from_data(
                pause.pause_image_tar(),
                repository=pause.PAUSE_REPOSITORY,
                tag=pause.PAUSE_TAG,
                changes=pause.PAUSE_IMAGE_CHANGES,
            )

    def create_infra(self, spec: InfraSpec) -> Infra:
        """Create and start the infra container (`--net=none`, labelled, restart never)."""
        api = self.client.api
        labels = {
            LABEL_SANDBOX: spec.sandbox_id,
            LABEL_ROLE: ROLE_INFRA,
            LABEL_VERSION: __version__,
            **spec.labels,
        }
        host_config = api.create_host_config(
            network_mode="none",
            dns=list(spec.dns) or None,
            dns_search=list(spec.dns_search) or None,
            dns_opt=list(spec.dns_options) or None,
            extra_hosts=[f"{host}:{ip}" for host, ip in spec.extra_hosts] or None,
            restart_policy={"Name": "no"},
        )
        name = infra_name(spec.sandbox_id)
        with self._errors(f"create the infra container {name}"):
            created = api.create_container(
                image=spec.image,
                name=name,
                hostname=spec.hostname,
                domainname=spec.domainname,
                labels=labels,
                host_config=host_config,
                network_disabled=False,
            )
            container_id: str = created["Id"]
            log.debug("docker: created infra %s (%s)", name, container_id[:12])
        with self._errors(f"start the infra container {name}"):
            api.start(container_id)
            info = api.inspect_container(container_id)
        pid = int(info["State"].get("Pid") or 0)
        if not info["State"].get("Running") or pid <= 0:
            raise DockerRuntimeError(f"the infra container {name} exited right after it started")
        log.debug("docker: started infra %s, pid %d", name, pid)
        return Infra(
            id=container_id,
            name=name,
            pid=pid,
            hostname=info["Config"].get("Hostname") or "",
            domainname=info["Config"].get("Domainname") or "",
            hosts_path=info.get("HostsPath") or "",
            resolv_conf_path=info.get("ResolvConfPath") or "",
        )

    def remove(self, container: str) -> None:
        """Force-remove a container; one that is already gone is fine."""
        import docker.errors

        try:
            self.client.api.remove_container(container, force=True, v=True)
            log.debug("docker: removed %s", container)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as e:
            if "already in progress" in str(e):
                return
            raise DockerRuntimeError(f"cannot remove container {container}: {_describe(e)}") from e
        except docker.errors.DockerException as e:
            raise DockerRuntimeError(f"cannot remove container {container}: {_describe(e)}") from e

    def containers(self, sandbox_id: str | None = None, role: str | None = None) -> list[Any]:
        """Containers carrying cnirun's labels (all states), as inspect-like dicts."""
        filters = [f"{LABEL_SANDBOX}={sandbox_id}" if sandbox_id else LABEL_SANDBOX]
        if role:
            filters.append(f"{LABEL_ROLE}={role}")
        with self._errors("list containers"):
            found: list[Any] = self.client.api.containers(all=True, filters={"label": filters})
        return found

    def kill(self, container: str) -> None:
        """SIGKILL a running container; a stopped or missing one is fine."""
        import docker.errors

        try:
            self.client.api.kill(container)
        except docker.errors.DockerException as e:
            log.debug("docker: kill %s: %s", container, e)

    def stop(self, container: str, timeout: int = 10) -> None:
        """Stop a container like `docker stop` (SIGTERM, then SIGKILL after `timeout`)."""
        import docker.errors

        try:
            self.client.api.stop(container, timeout=timeout)
        except docker.errors.NotFound:
            pass
        except docker.errors.DockerException as e:
            raise DockerRuntimeError(f"cannot stop container {container}: {_describe(e)}") from e
