"""The default infra image: a pause program of a few dozen bytes, built locally.

No registry is needed: the image is a hand-assembled static ELF that blocks in a syscall
forever, imported into Docker as a one-file image the first time it is needed.
"""

from __future__ import annotations

import io
import os
import struct

from cnirun.errors import DockerRuntimeError

PAUSE_REPOSITORY = "cnirun/pause"
PAUSE_TAG = "1"
PAUSE_IMAGE = f"{PAUSE_REPOSITORY}:{PAUSE_TAG}"

_LOAD_ADDRESS = 0x400000
_EHDR_SIZE = 64
_PHDR_SIZE = 56

# machine number (e_machine), code: an endless loop around a blocking syscall.
_PROGRAMS: dict[str, tuple[int, bytes]] = {
    # loop: mov eax, 34 (pause); syscall; jmp loop
    "x86_64": (62, bytes.fromhex("b8220000000f05ebf7")),
    # loop: mov x8, #73 (ppoll); mov x0..x3, xzr (no fds, no timeout); svc #0; b loop
    "aarch64": (
        183,
        struct.pack(
            "<7I",
            0xD2800928,
            0xAA1F03E0,
            0xAA1F03E1,
            0xAA1F03E2,
            0xAA1F03E3,
            0xD4000001,
            0x17FFFFFA,
        ),
    ),
}
_ALIASES = {"amd64": "x86_64", "arm64": "aarch64"}


def pause_binary(machine: str | None = None) -> bytes:
    """A static ELF executable for `machine` (default: this host) that never exits."""
    arch = machine or os.uname().machine
    arch = _ALIASES.get(arch, arch)
    if arch not in _PROGRAMS:
        raise DockerRuntimeError(
            f"no built-in pause program for {arch}: pass --infra-image with a pause image"
        )
    e_machine, code = _PROGRAMS[arch]
    size = _EHDR_SIZE + _PHDR_SIZE + len(code)
    entry = _LOAD_ADDRESS + _EHDR_SIZE + _PHDR_SIZE
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)  # 64-bit, little-endian, SysV
    header = struct.pack(
        "<16sHHIQQQIHHHHHH",
        ident, 2, e_machine, 1, entry, _EHDR_SIZE, 0, 0, _EHDR_SIZE, _PHDR_SIZE, 1, 0, 0, 0,
    )  # fmt: skip
    # One PT_LOAD segment, readable and executable, mapping the whole file.
    segment = struct.pack("<IIQQQQQQ", 1, 5, 0, _LOAD_ADDRESS, _LOAD_ADDRESS, size, size, 0x1000)
    return header + segment + code


def pause_image_tar(machine: str | None = None) -> bytes:
    """A root filesystem tarball holding only `/pause`."""
    import tarfile  # only the first run on a host builds the image

    binary = pause_binary(machine)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("pause")
        info.size = len(binary)
        info.mode = 0o755
        tar.addfile(info, io.BytesIO(binary))
    return buffer.getvalue()


# Dockerfile instructions applied when the tarball is imported.
PAUSE_IMAGE_CHANGES = ['ENTRYPOINT ["/pause"]', "LABEL io.cnirun.pause=1"]
