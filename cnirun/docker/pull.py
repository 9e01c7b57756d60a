"""Image pulls cnirun makes itself (a user-chosen infra image), as `docker run` makes them.

Owns the `--pull missing|always|never` decision and the pull through the engine; what the user
sees of it is the caller's `PullDisplay` (the CLI draws Docker's progress lines). The workload
image is not pulled here: the docker CLI that runs it does that with the same flags.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

from cnirun.docker.endpoint import Endpoint
from cnirun.errors import DockerRuntimeError

log = logging.getLogger(__name__)

POLICIES = ("missing", "always", "never")


class PullDisplay(Protocol):
    """What the user sees of a pull: a notice, then each decoded engine event, then close."""

    def notice(self, text: str) -> None: ...

    def show(self, event: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...


def ensure_image(
    endpoint: Endpoint,
    image: str,
    *,
    present: bool,
    policy: str | None = None,
    display: PullDisplay | None = None,
    platform: str | None = None,
    role: str = "image",
) -> None:
    """Pull `image` if `policy` (None or "" mean "missing", as in docker) asks for it.

    `present` says whether the engine already has the image. `role` names the image in
    messages ("infra image"). Progress goes to `display` (None: silent, as with `-q`).

    Raises:
        DockerRuntimeError: the image is missing under `never`, or the pull failed.
    """
    policy = policy or "missing"
    if policy not in POLICIES:
        raise DockerRuntimeError(f"invalid pull policy {policy!r}: want always, missing or never")
    if policy == "never":
        if not present:
            raise DockerRuntimeError(
                f"{role} {image} is not present locally and --pull=never forbids pulling it: "
                f"run `docker pull {image}` first, or drop --pull=never"
            )
        return
    if policy == "missing" and present:
        return
    if policy == "missing" and display is not None:
        display.notice(f"Unable to find {role} '{image}' locally")
    pull(endpoint, image, platform=platform, display=display, role=role)


def pull(
    endpoint: Endpoint,
    image: str,
    *,
    platform: str | None = None,
    display: PullDisplay | None = None,
    role: str = "image",
) -> None:
    """Pull one image (":latest" when untagged) through the engine, showing progress on `display`.

    Uses the Docker SDK, imported only now: it reads registry credentials (config.json and
    credential helpers) as the docker CLI does, which is worth its import time here.

    Raises:
        DockerRuntimeError: the engine or the registry refused or failed the pull.
    """
    import docker
    import requests

    log.debug("docker: pull %s (platform %s)", image, platform or "default")
    try:
        # The daemon the Engine client talks to (TLS and ssh endpoints never get this far).
        client = docker.APIClient(base_url=endpoint.host, version="auto")
        try:
            events = client.pull(image, stream=True, decode=True, platform=platform)
            for event in events:
                error = _event_error(event)
                if error:
                    raise DockerRuntimeError(f"cannot pull {role} {image}: {error}")
                if display is not None:
                    display.show(event)
        finally:
            client.close()
    except docker.errors.APIError as e:
        reason = e.explanation or str(e)
        raise DockerRuntimeError(f"cannot pull {role} {image}: {_one_line(reason)}") from None
    except (docker.errors.DockerException, requests.RequestException, OSError) as e:
        raise DockerRuntimeError(f"cannot pull {role} {image}: {_one_line(str(e))}") from None
    finally:
        if display is not None:
            display.close()


def _event_error(event: Any) -> str:
    if not isinstance(event, Mapping):
        return ""
    detail = event.get("errorDetail")
    message = event.get("error") or (detail.get("message") if isinstance(detail, Mapping) else "")
    return _one_line(str(message)) if message else ""


def _one_line(text: str) -> str:
    return " ".join(text.split())
