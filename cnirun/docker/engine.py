"""A minimal Docker Engine API client for cnirun's hot path (unix or plain tcp endpoints).

Every `cnirun run` needs a handful of requests (create, start, inspect, remove); importing the
Docker SDK for them would cost ~150 ms of CPU, more than all the rest of cnirun. This speaks
HTTP/1.1 over a socket directly, one connection per request. The SDK stays in use where its
weight pays off (image pulls with registry auth). cnirun.docker.endpoint says which daemon.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import urllib.parse
from typing import Any

TIMEOUT = 120.0


def api_path(template: str, *params: str) -> str:
    """An API path with each `{}` of `template` replaced by a parameter, escaped whole
    (`/containers/{}/kill`): no ID or name can add a path segment, a query or a header."""
    return template.format(*(urllib.parse.quote(p, safe="") for p in params))


class EngineError(Exception):
    """An error answer from the engine (status and message), or no answer at all (status 0)."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(message)


class Engine:
    """Requests to the Docker Engine API, version-negotiated on first use."""

    def __init__(self, host: str) -> None:
        self.host = host
        self._prefix: str | None = None

    def _connect(self) -> socket.socket:
        url = urllib.parse.urlsplit(self.host)
        try:
            if url.scheme == "unix":
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(TIMEOUT)
                sock.connect(url.path)
            else:
                sock = socket.create_connection((url.hostname or "localhost", url.port or 2375))
                sock.settimeout(TIMEOUT)
        except PermissionError:
            denied = f"permission denied on the Docker daemon socket at {self.host}"
            if os.geteuid() == 0:  # root refused (SELinux, a sandbox): nothing sudo would fix
                raise EngineError(0, denied) from None
            raise EngineError(0, f"cnirun needs root: run it with sudo ({denied})") from None
        except OSError as e:
            # Docker's own words; the reason only when it is not the usual one.
            usual = e.errno in (errno.ENOENT, errno.ECONNREFUSED)
            raise EngineError(
                0,
                f"Cannot connect to the Docker daemon at {self.host}. Is the docker daemon "
                f"running?{'' if usual else f' ({e.strerror or e})'}",
            ) from None
        return sock

    def request(
        self,
        method: str,
        path: str,
        query: dict[str, Any] | None = None,
        body: Any = None,
        raw_body: bytes | None = None,
        content_type: str = "application/json",
    ) -> Any:
        """Send one request; return the decoded JSON answer (None when empty).

        Raises:
            EngineError: for any status but 2xx (with the engine's message), and for an
                answer that is not HTTP or not the JSON it says it is (status 0).
        """
        target = self._target(path, query)
        payload = raw_body if raw_body is not None else b""
        if body is not None:
            payload = json.dumps(body).encode()
        head = (
            f"{method} {target} HTTP/1.1\r\nHost: docker\r\nUser-Agent: cnirun\r\n"
            f"Connection: close\r\nContent-Length: {len(payload)}\r\n"
        )
        if payload:
            head += f"Content-Type: {content_type}\r\n"
        sock = self._connect()
        try:
            sock.sendall(head.encode() + b"\r\n" + payload)
            status, headers, data = _read_response(sock)
            decoded = _decode(headers, data)
        except OSError as e:
            raise EngineError(0, f"the Docker daemon at {self.host} did not answer: {e}") from None
        except (ValueError, IndexError, RecursionError) as e:
            raise EngineError(
                0, f"the Docker daemon at {self.host} sent a malformed answer: {e}"
            ) from None
        finally:
            sock.close()
        if not 200 <= status < 300:
            message = decoded.get("message") if isinstance(decoded, dict) else None
            raise EngineError(status, str(message or data.decode(errors="replace").strip()))
        if path == "/_ping":
            return headers.get("api-version", "")
        return decoded

    def open_stream(self, path: str, query: dict[str, Any] | None = None) -> EventStream:
        """GET an endpoint that answers with a stream (such as /events), headers read.

        Raises:
            EngineError: if the engine cannot be reached or refuses the request.
        """
        target = self._target(path, query)
        sock = self._connect()
        try:
            sock.sendall(
                f"GET {target} HTTP/1.1\r\nHost: docker\r\nUser-Agent: cnirun\r\n\r\n".encode()
            )
            status, _, rest = _read_head(sock)
        except (OSError, ValueError, IndexError) as e:
            sock.close()
            raise EngineError(0, f"the Docker daemon at {self.host} did not answer: {e}") from None
        if not 200 <= status < 300:
            sock.close()
            raise EngineError(status, f"GET {path} answered {status}")
        return EventStream(sock, rest)

    def _target(self, path: str, query: dict[str, Any] | None) -> str:
        """The request target: API version prefix (negotiated on first use), path, query."""
        if self._prefix is None and path != "/_ping":
            self._negotiate()
        target = (self._prefix or "") + path
        if query:
            target += "?" + urllib.parse.urlencode(
                {k: v for k, v in query.items() if v is not None}, doseq=True
            )
        if not target.isascii() or not target.isprintable() or " " in target:
            # A parameter left unescaped (see api_path) must not smuggle a request.
            raise EngineError(0, f"refusing a request for {target!r}: unescaped characters")
        return target

    def _negotiate(self) -> None:
        version = str(self.request("GET", "/_ping"))
        self._prefix = f"/v{version}" if version else ""


class EventStream:
    """The body of a streaming answer; `close` (from any thread) ends a waiting `wait`."""

    def __init__(self, sock: socket.socket, pending: bytes) -> None:
        self._sock = sock
        self._pending = pending

    def wait(self) -> bytes:
        """Block until the stream sends something besides whitespace; b"" once it is closed."""
        data, self._pending = self._pending, b""
        self._sock.settimeout(None)
        while not data.strip():
            try:
                chunk = self._sock.recv(4096)
            except OSError:
                return b""
            if not chunk:
                return b""
            data += chunk
        return data

    def close(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes a recv in another thread
        except OSError:
            pass
        self._sock.close()


def _decode(headers: dict[str, str], data: bytes) -> Any:
    """The JSON of an answer (None when empty or not JSON).

    Raises:
        ValueError: it says it is JSON and is not.
    """
    if not (data and headers.get("content-type", "").startswith("application/json")):
        return None
    try:
        return json.loads(data)
    except ValueError:
        # Streaming endpoints send one JSON object per line; keep the last.
        lines = [ln for ln in data.splitlines() if ln.strip()]
        return json.loads(lines[-1]) if lines else None


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    status, headers, rest = _read_head(sock)
    while True:  # Connection: close — read to the end, then undo chunking if used
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    if headers.get("transfer-encoding", "").lower() == "chunked":
        rest = _unchunk(rest)
    return status, headers, rest


def _read_head(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status and headers of an answer, and what of its body came with them."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise OSError("connection closed before the response headers")
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return status, headers, rest


def _unchunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2 :]
    return bytes(out)
