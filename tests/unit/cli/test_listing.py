"""cnirun.cli.listing: the `--format` template subset, filters, and the one time format."""

from __future__ import annotations

import re

import pytest

from cnirun.cli import listing
from cnirun.cli.listing import Template, parse_format
from cnirun.errors import UsageError

ROW = {
    "Names": "web",
    "Networks": ["a", "b"],
    "Ports": "0.0.0.0:8080->80/tcp",
    "results": {"a": {"ips": [{"address": "10.0.0.2/24"}]}},
    "Nets": {"b": {"IPAddress": "10.0.1.2"}, "a": {"IPAddress": "10.0.0.2"}},
    "default": True,
    "none": None,
}


@pytest.mark.parametrize(
    ("template", "text"),
    [
        ("{{.Names}}", "web"),
        ("{{ .Names }}: {{.Ports}}", "web: 0.0.0.0:8080->80/tcp"),
        ("{{.Networks}}", "a,b"),
        ('{{join .Networks " "}}', "a b"),
        ("{{json .Networks}}", '["a", "b"]'),
        ("{{range .Networks}}[{{.}}]{{end}}", "[a][b]"),
        ("{{range .Nets}}{{.IPAddress}} {{end}}", "10.0.0.2 10.0.1.2 "),  # a map: by key
        ("{{.results.a.ips}}", '{"address": "10.0.0.2/24"}'),
        ("{{.default}} {{.none}}.", "true ."),
        ("{{json .}}", None),
        ("x\\ty", "x\ty"),
    ],
)
def test_template_subset(template: str, text: str | None) -> None:
    rendered = Template(template).render(ROW)
    if text is None:
        assert rendered.startswith('{"Names": "web"')
    else:
        assert rendered == text


def test_table_templates_have_a_header() -> None:
    form = Template("table {{.Names}}\\t{{.Ports}}")
    assert form.table and form.header() == ["NAMES", "PORTS"]
    assert form.render(ROW).split("\t") == ["web", "0.0.0.0:8080->80/tcp"]


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{.Nope}}", "no field 'Nope'"),
        ("{{range .Networks}}x", "without {{end}}"),
        ("{{printf .Names}}", "is not supported"),
    ],
)
def test_template_errors_are_usage_errors(template: str, message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        Template(template).render(ROW)


def test_parse_format() -> None:
    assert parse_format("table") == "table" and parse_format("json") == "json"
    assert isinstance(parse_format("{{.ID}}"), Template)
    with pytest.raises(UsageError, match="use table, json or a {{.Field}} template"):
        parse_format("yaml")


def test_filters() -> None:
    assert listing.parse_filters(["name=web", "label=a=b"], ("name", "label")) == [
        ("name", "web"), ("label", "a=b"),
    ]  # fmt: skip
    for bad in ("name", "color=red"):
        with pytest.raises(UsageError, match="use KEY=VALUE with KEY one of name, label"):
            listing.parse_filters([bad], ("name", "label"))


def test_times() -> None:
    assert listing.rfc3339(0) == "1970-01-01T00:00:00Z"
    assert listing.rfc3339(1764583200.7) == "2025-12-01T10:00:00Z"
    assert listing.ago(100, now=100.5) == "Less than a second ago"
    assert listing.ago(100, now=105) == "5 seconds ago"
    assert listing.ago(0, now=3600) == "About an hour ago"
    assert listing.ago(0, now=2 * 86400) == "2 days ago"
