"""Listings as Docker prints them: `--format table|json|TEMPLATE`, `-q`, `--filter`, times.

TEMPLATE is a small subset of Go's text/template, as `docker ps --format` takes it:

- `{{.Field}}` and `{{.Field.Sub}}`: a field of the row (a list prints comma-separated);
- `{{json .Field}}` and `{{json .}}`: as JSON;
- `{{join .Field ", "}}`: a list joined with a separator;
- `{{range .Field}}...{{.}}...{{end}}`: once per item of a list (of a map: per value, in
  key order);
- a leading `table ` prints a header row and aligns the columns (`\\t` separates them).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from cnirun.cli.output import json_out, say, table
from cnirun.errors import UsageError

_ACTION = re.compile(r"{{-?\s*(.*?)\s*-?}}")
_FIELD = re.compile(r"\.(?:[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)?")
_JOIN = re.compile(r'join\s+(\S+)\s+"((?:[^"\\]|\\.)*)"')


def rfc3339(timestamp: float) -> str:
    """A Unix time as RFC 3339 in UTC (`2026-12-01T10:00:00Z`), the one time format of JSON."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def ago(timestamp: float, now: float | None = None) -> str:
    """Docker's CREATED column: `5 seconds ago`, `2 hours ago`."""
    seconds = max(0, int((time.time() if now is None else now) - timestamp))
    if seconds < 1:
        return "Less than a second ago"
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds >= size:
            count = seconds // size
            if unit == "hour" and count == 1:
                return "About an hour ago"
            return f"{count} {unit}{'s' if count != 1 else ''} ago"
    return ""  # not reached


def _lookup(row: Any, path: str, template: str) -> Any:
    value = row
    for key in [k for k in path.split(".") if k]:
        if not isinstance(value, Mapping) or key not in value:
            fields = ", ".join(sorted(row)) if isinstance(row, Mapping) else ""
            raise UsageError(f"template {template!r}: no field {key!r} (fields: {fields})")
        value = value[key]
    return value


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ",".join(_text(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


class Template:
    """A parsed `--format` template; `render(row)` gives its text for one row."""

    def __init__(self, text: str) -> None:
        self.source = text
        self.table = text.startswith("table ")
        body = text[len("table ") :] if self.table else text
        self.body = body.replace("\\t", "\t").replace("\\n", "\n")
        self.render({}, check_only=True)

    def header(self) -> list[str]:
        """`table`'s header: each column's field names, upper case (`{{.Names}}` -> NAMES)."""
        cells = []
        for cell in self.body.split("\t"):
            names = [m.split(".")[-1] for m in re.findall(r"\.[A-Za-z_][\w.]*", cell)]
            cells.append(" ".join(n.upper() for n in names) or cell.strip())
        return cells

    def render(self, row: Mapping[str, Any], check_only: bool = False) -> str:
        out: list[str] = []
        self._run(self.body, row, out, check_only)
        return "".join(out)

    def _run(self, body: str, row: Any, out: list[str], check_only: bool) -> None:
        pos = 0
        while True:
            match = _ACTION.search(body, pos)
            if match is None:
                out.append(body[pos:])
                return
            out.append(body[pos : match.start()])
            action = match.group(1)
            pos = match.end()
            if action.startswith("range "):
                end = self._matching_end(body, pos)
                inner = body[pos : end.start()]
                items = [] if check_only else _lookup(row, action[6:].strip(), self.source)
                if isinstance(items, Mapping):  # as Go: a map's values, in key order
                    items = [items[key] for key in sorted(items)]
                for item in items if isinstance(items, list | tuple) else []:
                    self._run(inner, item, out, check_only)
                if check_only:
                    self._run(inner, {}, [], True)
                pos = end.end()
            else:
                out.append("" if check_only else self._action(action, row))

    def _matching_end(self, body: str, pos: int) -> re.Match[str]:
        depth = 0
        for match in _ACTION.finditer(body, pos):
            word = match.group(1)
            if word.startswith("range "):
                depth += 1
            elif word == "end":
                if depth == 0:
                    return match
                depth -= 1
        raise UsageError(f"template {self.source!r}: {{{{range}}}} without {{{{end}}}}")

    def _action(self, action: str, row: Any) -> str:
        if action.startswith("json "):
            return json.dumps(_lookup(row, self._field(action[5:].strip()), self.source))
        join = _JOIN.fullmatch(action)
        if join is not None:
            value = _lookup(row, self._field(join.group(1)), self.source)
            separator = join.group(2).encode().decode("unicode_escape")
            return separator.join(_text(v) for v in value) if isinstance(value, list) else ""
        return _text(_lookup(row, self._field(action), self.source))

    def _field(self, text: str) -> str:
        if not _FIELD.fullmatch(text):
            raise UsageError(
                f"template {self.source!r}: {{{{{text}}}}} is not supported (use {{{{.Field}}}},"
                ' {{json .Field}}, {{join .Field ", "}} or {{range .Field}}...{{end}})'
            )
        return text


def parse_format(value: str) -> str | Template:
    """`--format`: "table", "json", or a Template.

    Raises:
        UsageError: a template cnirun's subset cannot render.
    """
    if value in ("table", "json"):
        return value
    if "{{" not in value:
        raise UsageError(
            f"unknown --format {value!r}: use table, json or a {{{{.Field}}}} template"
        )
    return Template(value)


def emit(
    output: str | Template,
    rows: Sequence[Mapping[str, Any]],
    *,
    json_rows: Callable[[], Any],
    header: Sequence[str],
    cells: Callable[[Mapping[str, Any]], Sequence[str]],
    gap: str = "   ",
) -> None:
    """Print `rows` as `--format` asks: a table (`header`, `cells`), JSON, or a template."""
    if output == "json":
        json_out(json_rows())
    elif isinstance(output, Template):
        lines = [output.render(row) for row in rows]
        if output.table:
            table(output.header(), (line.split("\t") for line in lines), gap=gap)
        else:
            for line in lines:
                say(line)
    else:
        table(header, (cells(row) for row in rows), gap=gap)


def parse_filters(values: Iterable[str], known: Sequence[str]) -> list[tuple[str, str]]:
    """`--filter KEY=VALUE` (repeatable), KEY one of `known`.

    Raises:
        UsageError: a filter without `=`, or with a key cnirun does not know.
    """
    filters = []
    for value in values:
        key, sep, wanted = value.partition("=")
        if not sep or key not in known:
            raise UsageError(
                f"invalid filter {value!r}: use KEY=VALUE with KEY one of {', '.join(known)}"
            )
        filters.append((key, wanted))
    return filters
