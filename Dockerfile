# cnirun in a container, driving the host's Docker engine and CNI plugins; README's "Running
# cnirun from a container" has the `docker run` line with the mounts and namespaces it needs.
#
# Builds offline: BASE is a local image with python3 (>= 3.11), cnirun's dependencies (docker,
# pyroute2, typer), iptables and a docker CLI. scripts/make-base-image.sh makes one from Debian
# packages and prints its name:
#   docker build --build-arg BASE="$(sudo scripts/make-base-image.sh)" -t cnirun .
ARG BASE
FROM ${BASE}

COPY pyproject.toml /opt/cnirun/
COPY cnirun/ /opt/cnirun/cnirun/

# cnirun is pure Python: a .pth entry puts it on the path, no pip or build backend needed.
RUN set -e; \
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || { echo "BASE: python3 is older than 3.11" >&2; exit 1; }; \
    python3 -c 'import docker, pyroute2, typer' \
        || { echo "BASE: python3 lacks cnirun's dependencies (docker, pyroute2, typer)" >&2; exit 1; }; \
    command -v docker >/dev/null || { echo "BASE: no docker CLI on PATH" >&2; exit 1; }; \
    command -v iptables >/dev/null || { echo "BASE: no iptables (the CNI plugins run it)" >&2; exit 1; }; \
    site=$(python3 -c 'import sysconfig; print(sysconfig.get_path("purelib"))'); \
    mkdir -p "$site"; \
    echo /opt/cnirun > "$site/cnirun.pth"; \
    printf '#!/bin/sh\nexec python3 -m cnirun "$@"\n' > /usr/local/bin/cnirun; \
    chmod 0755 /usr/local/bin/cnirun; \
    python3 -m compileall -q /opt/cnirun/cnirun; \
    cnirun --version

ENTRYPOINT ["cnirun"]
