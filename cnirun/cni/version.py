"""CNI version strings: parsing and comparison with libcni's rules.

`""` means 0.1.0; each dot-separated part is a Go `strconv.Atoi` integer; missing parts are 0.
"""

from __future__ import annotations

import re

CURRENT = "1.1.0"

# What Go's strconv.Atoi accepts: optional sign, decimal digits (leading zeros allowed).
_ATOI = re.compile(r"[+-]?[0-9]+")
_PART_NAMES = ("major", "minor", "micro")


class VersionError(ValueError):
    """Raised when a version string cannot be parsed."""


def parse_version(version: str) -> tuple[int, int, int]:
    """Parse a CNI version into (major, minor, micro).

    Raises:
        VersionError: with libcni's wording, e.g. `invalid version "1.0.f": ...`.
    """
    if version == "":
        return (0, 1, 0)
    parts = version.split(".")
    if len(parts) >= 4:
        raise VersionError(f'invalid version "{version}": too many parts')
    numbers = [0, 0, 0]
    for index, part in enumerate(parts):
        if not _ATOI.fullmatch(part):
            raise VersionError(
                f'failed to convert {_PART_NAMES[index]} version part "{part}": '
                f'strconv.Atoi: parsing "{part}": invalid syntax'
            )
        numbers[index] = int(part)
    return (numbers[0], numbers[1], numbers[2])
