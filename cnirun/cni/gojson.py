"""The one JSON decoder for everything cnirun reads (configs, plugin output and error objects,
the result cache, sandbox records), decoding as Go's encoding/json does for libcni:

- `NaN`, `Infinity` and a byte-order mark are syntax errors; a number too large for a float64
  (`1e400`) cannot be decoded;
- invalid UTF-8 and lone UTF-16 surrogate escapes (`"\\ud800"`) become U+FFFD;
- nesting deeper than MAX_DEPTH is refused (Go allows 10000; nothing real comes near this cap,
  and deeper values would exhaust Python's recursion limit wherever they are walked).

Every failure is a JSONError (a ValueError) with Go's wording where it has one.
Also Go's `%q` quoting (go_quote), which messages about plugin output use.
"""

from __future__ import annotations

import json
import math
import re
from itertools import accumulate
from typing import Any

MAX_DEPTH = 200

_GO_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
    "\\": "\\\\",
    '"': '\\"',
}


def go_quote(text: str) -> str:
    """Quote like Go's `%q`, so messages match what libcni users know.

    Bytes that were not valid UTF-8 (decoded with "surrogateescape") come out as `\\xNN`.
    """
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif 0xDC80 <= code <= 0xDCFF:  # an undecodable byte
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch.isprintable():
            out.append(ch)
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def go_json_error(data: bytes | str, error: ValueError) -> str:
    """Go's encoding/json wording for the common syntax errors, else Python's own text."""
    text = data.decode(errors="replace") if isinstance(data, bytes) else data
    if not isinstance(error, json.JSONDecodeError):
        return str(error)
    if error.pos >= len(text.rstrip()):
        return "unexpected end of JSON input"
    ch = text[error.pos]
    shown = "'\\''" if ch == "'" else "'" + go_quote(ch)[1:-1].replace('\\"', '"') + "'"
    if error.msg == "Expecting value" or error.msg.startswith("Unexpected UTF-8 BOM"):
        return f"invalid character {shown} looking for beginning of value"
    if error.msg == "Extra data":
        return f"invalid character {shown} after top-level value"
    return str(error)


class JSONError(ValueError):
    """Input that Go's encoding/json would not decode (message in Go's wording)."""


def _constant(name: str) -> Any:
    if name.startswith("-"):
        raise JSONError(f"invalid character {name[1]!r} in numeric literal")
    raise JSONError(f"invalid character {name[0]!r} looking for beginning of value")


def _float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise JSONError(f"json: cannot unmarshal number {text} into Go value of type float64")
    return value


def _int(text: str) -> int:
    value = int(text)
    if len(text) > 308:  # beyond a float64, Go's type for a number in an interface{}
        _float(text)
    return value


# A string literal (its brackets are no nesting).
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
# An escaped backslash, or a UTF-16 escape that may be half a pair.
_SURROGATE = re.compile(
    r"\\\\|\\u[dD][89abAB][0-9a-fA-F]{2}(?:\\u[dD][c-fC-F][0-9a-fA-F]{2})?|"
    r"\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)
_BRACKETS = re.compile(rb"[^\[\]{}]")
_STEP = [0] * 256
for _ch in b"[{":
    _STEP[_ch] = 1
for _ch in b"]}":
    _STEP[_ch] = -1


def _lone_surrogate(match: re.Match[str]) -> str:
    text = match.group(0)
    return "\\ufffd" if len(text) == 6 else text  # an escaped backslash or a pair stays


def _check_depth(data: bytes) -> None:
    if data.count(b"[") + data.count(b"{") <= MAX_DEPTH:
        return  # the common case, at C speed
    brackets = _BRACKETS.sub(b"", _STRING.sub(b"", data))
    if brackets and max(accumulate(map(_STEP.__getitem__, brackets))) > MAX_DEPTH:
        raise JSONError(f"exceeded max depth of {MAX_DEPTH}")


def loads(data: bytes | str) -> Any:
    """Decode one JSON value the way Go's encoding/json does (see the module docstring).

    Raises:
        JSONError: for anything Go would not decode, and for nesting beyond MAX_DEPTH.
    """
    # A str may hold surrogates (undecodable argv bytes): they become invalid UTF-8, so U+FFFD.
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    text = raw.decode("utf-8", "replace")
    try:
        _check_depth(raw)
        if "\\u" in text:
            text = _SURROGATE.sub(_lone_surrogate, text)
        return json.loads(text, parse_constant=_constant, parse_float=_float, parse_int=_int)
    except JSONError:
        raise
    except RecursionError:
        raise JSONError(f"exceeded max depth of {MAX_DEPTH}") from None
    except ValueError as e:
        raise JSONError(go_json_error(text, e)) from None
