"""The workload's `docker run` command line: the docker CLI runs it, so every flag, `-it`,
signals and exit codes are Docker's own; cnirun only adds the network, labels and mounts."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence

from cnirun.docker.runtime import LABEL_ROLE, LABEL_SANDBOX, ROLE_WORKLOAD
from cnirun.errors import CnirunError


def docker_cli() -> str:
    """The docker CLI's path.

    Raises:
        CnirunError: there is none on PATH.
    """
    path = shutil.which("docker")
    if path is None:
        raise CnirunError("the docker command-line client is not installed (no `docker` in PATH)")
    return path


def exec_cli(args: Sequence[str], environ: Mapping[str, str]) -> None:
    """Replace this process with `docker ARGS...`: signals, the terminal and the exit status
    are then Docker's own (a child would be orphaned, its container left running, if cnirun
    were killed).

    Raises:
        CnirunError: the docker CLI is missing or cannot be run.
    """
    import logging
    import os

    argv = [docker_cli(), *args]
    logging.getLogger(__name__).debug("docker: %s", argv)
    try:
        os.execve(argv[0], argv, dict(environ))
    except OSError as e:
        raise CnirunError(f"cannot run {argv[0]}: {e.strerror or e}") from None


# `docker run` flags newer than some docker CLIs and engines still in use (cnirun's table is
# docker CLI 28.2.2's): flag -> (the client release that added it, the engine API it needs).
# The API versions are what Debian's docker CLI 28.5.2 shows the flags from (its help hides
# them below: checked with DOCKER_API_VERSION); 26.1.5's CLI has all but --use-api-socket.
NEWER_FLAGS: dict[str, tuple[tuple[int, int], str | None]] = {
    "quiet": ((23, 0), None),
    "annotation": ((24, 0), "1.43"),
    "health-start-interval": ((25, 0), "1.44"),
    "use-api-socket": ((28, 1), None),
}


def _release(text: str) -> tuple[int, int]:
    parts = [int(p) for p in re.findall(r"\d+", text)[:2]]
    return (parts + [0, 0])[0], (parts + [0, 0])[1]


def client_version(environ: Mapping[str, str]) -> str:
    """The docker CLI's version (`docker version`'s Client.Version), "" when it cannot say."""
    import subprocess

    try:
        done = subprocess.run(
            [docker_cli(), "version", "--format", "{{.Client.Version}}"],
            capture_output=True, text=True, timeout=30, check=False, env=dict(environ),
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip()


def check_flags(
    flags: Iterable[str], client: Callable[[], str], api_version: Callable[[], str]
) -> None:
    """Refuse flags the installed docker CLI or the engine does not have, before anything is
    created (the CLI would refuse them only when it runs the workload). `client` and
    `api_version` are asked only when such a flag is given.

    Raises:
        CnirunError: a flag newer than the client, or than the engine's API.
    """
    newer = sorted(f for f in flags if f in NEWER_FLAGS)
    if not newer:
        return
    version = client()
    api = api_version()
    for flag in newer:
        since, needs_api = NEWER_FLAGS[flag]
        if version and _release(version) < since:
            raise CnirunError(
                f"unknown flag: --{flag}: the installed docker client ({version}) does not have"
                f" it (docker {since[0]}.{since[1]} added it)"
            )
        if needs_api and api and _release(api) < _release(needs_api):
            raise CnirunError(
                f"--{flag} needs Docker engine API {needs_api}; the engine speaks {api}"
            )


def run_argv(
    *,
    infra_id: str,
    sandbox_id: str,
    files: Mapping[str, str],
    read_only: bool,
    flags: Sequence[str],
    image: str,
    command: Sequence[str],
) -> list[str]:
    """`docker run` joining the infra's network namespace, labelled as the sandbox's workload.

    cnirun's labels come after the user's flags: docker applies `--label-file`s first, then
    each `--label` in order, the last one winning, so no label of the user's can replace them.
    `files` maps a path in the container to the host file cnirun wrote for it (hosts,
    resolv.conf); the caller leaves out those the user mounts something of their own on.
    """
    return [
        docker_cli(),
        "run",
        f"--network=container:{infra_id}",
        *bind_mounts(files, read_only),
        *flags,
        "--label",
        f"{LABEL_SANDBOX}={sandbox_id}",
        "--label",
        f"{LABEL_ROLE}={ROLE_WORKLOAD}",
        image,
        *command,
    ]


def bind_mounts(files: Mapping[str, str], read_only: bool) -> list[str]:
    """Bind-mount flags for `files` (target -> source); read-only under --read-only, as
    Docker's own copies of these files are."""
    flags: list[str] = []
    for target, source in files.items():
        if ":" not in source:
            # `z`: relabelled on SELinux hosts (as Docker's own copies are), ignored elsewhere.
            flags += ["-v", f"{source}:{target}:{'ro,z' if read_only else 'z'}"]
            continue
        # -v cannot carry a path with a colon; --mount can (it cannot relabel, though).
        fields = ["type=bind", f"source={source}", f"target={target}"]
        if read_only:
            fields.append("readonly")
        flags += ["--mount", ",".join(_csv_field(f) for f in fields)]
    return flags


def _csv_field(text: str) -> str:
    # --mount is read as one CSV record: quote a field that has a comma or a quote.
    if "," in text or '"' in text:
        return '"' + text.replace('"', '""') + '"'
    return text
