"""`--bandwidth`: the grammar of rates and sizes, and the CNI `bandwidth` capability it becomes.

`ingress=RATE[,egress=RATE][,ingress-burst=SIZE][,egress-burst=SIZE]`, in either order and with
either direction alone. Ingress is traffic into the container, egress traffic out of it (the
bandwidth plugin's words). Units follow tc(8):

- RATE: `bit`, `kbit`, `mbit`, `gbit`, `tbit` (bits per second, powers of 1000), `bps`, `kbps`,
  `mbps`, `gbps`, `tbps` (bytes per second), and the IEC `kibit`, `mibit`, `gibit`, `kibps`,
  `mibps`, `gibps` (powers of 1024). A decimal number: `1.5gbit`.
- SIZE: `b`, `kb`/`k`, `mb`/`m`, `gb`/`g` (bytes, powers of 1024, as tc counts them; `kib`,
  `mib`, `gib` too).

A number needs its unit (tc reads a bare one as bits for a rate and bytes for a size; cnirun
asks). The plugin wants rate and burst of a direction together, in bits per second and bits;
a burst not given is what the rate sends in 10 ms, and at least 64kb. Stdlib only.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from cnirun.errors import UsageError

__all__ = ["Bandwidth", "format_rate", "format_size", "parse_bandwidth", "parse_rate"]

FLAG = "--bandwidth"
CAPABILITY = "bandwidth"

_RATE_UNITS: dict[str, int] = {  # -> bits per second
    "bit": 1,
    "kbit": 10**3,
    "mbit": 10**6,
    "gbit": 10**9,
    "tbit": 10**12,
    "kibit": 2**10,
    "mibit": 2**20,
    "gibit": 2**30,
    "bps": 8,
    "kbps": 8 * 10**3,
    "mbps": 8 * 10**6,
    "gbps": 8 * 10**9,
    "tbps": 8 * 10**12,
    "kibps": 8 * 2**10,
    "mibps": 8 * 2**20,
    "gibps": 8 * 2**30,
}
_SIZE_UNITS: dict[str, int] = {  # -> bytes
    "b": 1,
    **dict.fromkeys(("k", "kb", "kib"), 2**10),
    **dict.fromkeys(("m", "mb", "mib"), 2**20),
    **dict.fromkeys(("g", "gb", "gib"), 2**30),
}
_NUMBER = re.compile(r"(\d+(?:\.\d*)?|\.\d+)([a-z]*)")

# Bounds the plugin and the kernel can hold. The tbf it programs counts rates in bytes per
# second and its queue limit in 32 bits of bytes; the burst is handed over as the time it
# takes at the rate, a 32-bit count of scheduler ticks that overflows past about 274 s.
MIN_RATE = 8_000  # 8kbit: 1000 bytes per second
MAX_RATE = 32 * 10**9  # 32gbit
MIN_BURST = 2 * 2**10  # 2kb: a full-size packet must fit, or tbf drops it
MAX_BURST = 2**30  # 1gb
MAX_BURST_SECONDS = 250
DEFAULT_BURST = 64 * 2**10  # 64kb
DEFAULT_BURST_SECONDS = 0.010

_KEYS = ("ingress", "egress", "ingress-burst", "egress-burst")


class Bandwidth(NamedTuple):
    """Rates in bits per second and bursts in bits, per direction; 0 = not limited."""

    ingress_rate: int = 0
    ingress_burst: int = 0
    egress_rate: int = 0
    egress_burst: int = 0

    def to_cni(self) -> dict[str, int]:
        """The `runtimeConfig.bandwidth` object: only the directions that are limited."""
        out: dict[str, int] = {}
        if self.ingress_rate:
            out.update(ingressRate=self.ingress_rate, ingressBurst=self.ingress_burst)
        if self.egress_rate:
            out.update(egressRate=self.egress_rate, egressBurst=self.egress_burst)
        return out

    @classmethod
    def from_cni(cls, value: object) -> Bandwidth | None:
        """The limits of a recorded capability object (None when it is not one)."""
        if not isinstance(value, dict):
            return None
        numbers = [value.get(k, 0) for k in ("ingressRate", "ingressBurst", "egressRate")]
        numbers.append(value.get("egressBurst", 0))
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in numbers):
            return None
        return cls(*numbers)

    def text(self) -> str:
        """The `--bandwidth` value that asks for exactly these limits."""
        parts = []
        for name, rate, burst in (
            ("ingress", self.ingress_rate, self.ingress_burst),
            ("egress", self.egress_rate, self.egress_burst),
        ):
            if rate:
                parts += [f"{name}={format_rate(rate)}", f"{name}-burst={format_size(burst // 8)}"]
        return ",".join(parts)


def _fail(value: str, reason: str) -> UsageError:
    return UsageError(f"invalid {FLAG} {value!r}: {reason}")


def _number(text: str, units: dict[str, int], what: str) -> float:
    match = _NUMBER.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(f"{text!r} is not a {what} (e.g. {_EXAMPLES[what]})")
    number, unit = match.groups()
    if not unit:
        raise ValueError(f"{text!r} needs a unit (e.g. {_EXAMPLES[what]})")
    if unit not in units:
        raise ValueError(f"unknown {what} unit {unit!r} in {text!r} (use {', '.join(units)})")
    return float(number) * units[unit]


_EXAMPLES = {"rate": "10mbit, 500kbit, 2mbps", "size": "64kb, 1mb"}


def parse_rate(text: str) -> int:
    """A rate in bits per second (ValueError naming the bad part)."""
    bits = round(_number(text, _RATE_UNITS, "rate"))
    if not MIN_RATE <= bits <= MAX_RATE:
        raise ValueError(f"rate {text!r} is outside 8kbit-32gbit")
    return bits


def parse_size(text: str) -> int:
    """A size in bytes (ValueError naming the bad part)."""
    size = round(_number(text, _SIZE_UNITS, "size"))
    if not MIN_BURST <= size <= MAX_BURST:
        raise ValueError(f"burst {text!r} is outside 2kb-1gb")
    return size


def default_burst(rate: int) -> int:
    """A burst in bytes for `rate` (bits per second): 10 ms of it in whole kb, at least 64kb."""
    kilobytes = -(-round(rate / 8 * DEFAULT_BURST_SECONDS) // 2**10)
    return max(DEFAULT_BURST, kilobytes * 2**10)


def parse_bandwidth(value: str, given: Bandwidth | None = None) -> Bandwidth:
    """One `--bandwidth` value, added to the limits of earlier ones (`given`).

    Raises:
        UsageError: one line naming the flag and the bad part.
    """
    found: dict[str, str] = {}
    for item in value.split(","):
        key, sep, text = item.partition("=")
        key = key.strip().lower()
        if not sep or key not in _KEYS:
            raise _fail(value, f"{item!r} is not one of {'=, '.join(_KEYS)}=")
        if key in found:
            raise _fail(value, f"{key}= is given twice")
        found[key] = text
    numbers: dict[str, int] = {}
    try:
        for key, text in found.items():
            numbers[key] = parse_size(text) if key.endswith("burst") else parse_rate(text)
    except ValueError as e:
        raise _fail(value, str(e)) from None
    limits = dict(zip(Bandwidth._fields, given or Bandwidth(), strict=True))
    for direction in ("ingress", "egress"):
        rate, burst = numbers.get(direction), numbers.get(f"{direction}-burst")
        if rate is None and burst is None:
            continue
        if limits[f"{direction}_rate"]:
            raise _fail(value, f"{direction} is limited by an earlier {FLAG}")
        if rate is None:
            raise _fail(value, f"{direction}-burst= needs {direction}=RATE")
        burst = burst or default_burst(rate)
        if burst * 8 / rate > MAX_BURST_SECONDS:
            raise _fail(
                value,
                f"{direction}-burst={format_size(burst)} takes over"
                f" {MAX_BURST_SECONDS} s at {format_rate(rate)} (the plugin's tbf cannot hold it)",
            )
        limits[f"{direction}_rate"], limits[f"{direction}_burst"] = rate, burst * 8
    return Bandwidth(**limits)


def format_rate(bits: int) -> str:
    """A rate as the largest unit that shows it exactly: `8mbit`, `1500kbit`."""
    for unit in ("tbit", "gbit", "mbit", "kbit"):
        if bits % _RATE_UNITS[unit] == 0:
            return f"{bits // _RATE_UNITS[unit]}{unit}"
    return f"{bits}bit"


def format_size(size: int) -> str:
    """A size in bytes as the largest unit that shows it exactly: `64kb`, `1500b`."""
    for unit in ("gb", "mb", "kb"):
        if size % _SIZE_UNITS[unit] == 0:
            return f"{size // _SIZE_UNITS[unit]}{unit}"
    return f"{size}b"
