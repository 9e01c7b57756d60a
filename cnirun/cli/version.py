"""`cnirun version`: cnirun's, the Docker client's and engine's, and the CNI plugins found."""

from __future__ import annotations

import subprocess

from cnirun import __version__
from cnirun.cli.common import command_settings
from cnirun.cli.output import say
from cnirun.errors import CnirunError
from cnirun.settings import VERSION_TIMEOUT


def version() -> None:
    """Show cnirun, Docker and CNI plugin versions.

    The Docker client's and engine's versions, and every plugin found with the CNI versions
    it supports.

    \b
    Example:
      cnirun version
    """
    from cnirun.cni.api import CNIConfig
    from cnirun.docker import workload
    from cnirun.docker.runtime import connect
    from cnirun.doctor import find_plugins

    settings = command_settings()
    say(f"cnirun:         {__version__}")
    docker = None
    try:
        docker = connect(settings.environ)
        cli = workload.docker_cli()
        client = subprocess.run(
            [cli, "version", "--format", "{{.Client.Version}}"],
            capture_output=True, text=True, timeout=VERSION_TIMEOUT, check=False,
            env=docker.endpoint.cli_environ(settings.environ),
        ).stdout.strip()  # fmt: skip
        say(f"docker client:  {client or '?'} ({cli})")
    except (CnirunError, OSError, subprocess.TimeoutExpired) as e:
        say(f"docker client:  unknown ({e})")
    try:
        if docker is None:
            raise CnirunError("no Docker endpoint")
        info = docker.version()
        say(
            f"docker engine:  {info.get('Version', '?')} (API {info.get('ApiVersion', '?')})"
            f" at {docker.endpoint.describe()}"
        )
    except CnirunError as e:
        say(f"docker engine:  unknown ({e})")
    present, found = find_plugins(settings.plugin_dirs)
    if not found:
        say(f"CNI plugins:    none in {':'.join(settings.plugin_dirs)}")
    cni = CNIConfig(settings.plugin_dirs, settings.cache_dir, timeout=VERSION_TIMEOUT)
    for name, path in found.items():
        try:
            supported = ", ".join(cni.version_info(name).supported_versions)
        except CnirunError as e:
            supported = f"VERSION failed: {e}"
        say(f"CNI plugin:     {name} {path} (CNI {supported})")
