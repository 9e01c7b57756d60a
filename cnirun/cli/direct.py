"""Command lines `main()` runs without typer: typer and the command tree it builds cost more
than `cnirun ps` itself (typer's parameter coercion alone loads pydantic).

A plain `cnirun ps ...`, `network ls ...` or `net add|check|del NETWORK NETNS ...` (options of
DIRECT only, spelled as click accepts them) calls the command's function directly, with the
values typer would pass;
a bash completion request for the SANDBOX argument of a Docker verb (`cnirun logs <TAB>`)
prints what typer would. Anything else (--help, an unknown or misspelt option, a missing value,
other shells) returns None, and typer parses it as before, errors and help included.
tests/unit/cli/test_direct.py pins DIRECT to the typer commands' own parameters.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, NamedTuple

Kind = Literal["flag", "value", "multiple", "seconds"]
_SECONDS = re.compile(r"[0-9]+(\.[0-9]+)?")  # a --timeout typer would read the same way


class Option(NamedTuple):
    parameter: str  # the function's keyword
    # A boolean flag, an option with one value (the last wins), a repeatable one, or a
    # number of seconds (a float; only plain decimals here, typer reads the rest).
    kind: Kind


class Direct(NamedTuple):
    module: str
    attribute: str
    options: Mapping[str, Option]  # every spelling (`--all`, `-a`) -> its parameter
    arguments: tuple[str, ...] = ()  # the required positional parameters, in order


def _options(*table: tuple[str, Kind, Sequence[str]]) -> dict[str, Option]:
    return {flag: Option(name, kind) for name, kind, flags in table for flag in flags}


# The command words -> the typer-free function behind the typer command, and its options.
DIRECT: dict[tuple[str, ...], Direct] = {
    ("ps",): Direct(
        "cnirun.cli.lists",
        "ps",
        _options(
            ("all_states", "flag", ("--all", "-a")),
            ("quiet", "flag", ("--quiet", "-q")),
            ("no_trunc", "flag", ("--no-trunc",)),
            ("filters", "multiple", ("--filter", "-f")),
            ("output", "value", ("--format",)),
        ),
    ),
    **{
        ("net", verb): Direct(
            "cnirun.cli.netcmd",
            function,
            _options(
                ("ifname", "value", ("--ifname",)),
                ("container_id", "value", ("--container-id",)),
                ("args", "multiple", ("--args",)),
                ("cap_args", "value", ("--cap-args",)),
                ("netconf_dir", "value", ("--netconf-dir",)),
                ("cni_path", "value", ("--cni-path",)),
                ("cache_dir", "value", ("--cache-dir",)),
                ("timeout", "seconds", ("--timeout",)),
            ),
            ("network", "netns"),
        )
        for verb, function in (("add", "add"), ("check", "check"), ("del", "del_"))
    },
    ("network", "ls"): Direct(
        "cnirun.cli.lists",
        "network_ls",
        _options(
            ("output", "value", ("--format",)),
            ("quiet", "flag", ("--quiet", "-q")),
            ("netconf_dir", "value", ("--netconf-dir",)),
        ),
    ),
}
# The raw Docker verbs whose arguments typer completes with sandbox names (cnirun.cli.app).
SANDBOX_VERBS = frozenset({"logs", "exec", "port", "top", "wait", "kill"})
COMPLETE_VAR = "_CNIRUN_COMPLETE"


def parse(
    options: Mapping[str, Option], tokens: Sequence[str], arguments: Sequence[str] = ()
) -> dict[str, Any] | None:
    """The keyword arguments `tokens` give, or None for anything not plainly one of `options`
    and exactly the positional `arguments` (then typer decides, as it always did)."""
    found: dict[str, Any] = {}
    positional: list[str] = []
    rest = list(tokens)
    while rest:
        token = rest.pop(0)
        if not token.startswith("-"):
            positional.append(token)
            continue
        name, has_value, value = token.partition("=")
        option = options.get(name) if token.startswith("--") else options.get(token)
        if option is None and not token.startswith("--") and len(token) > 2 and token[0] == "-":
            shorts = [options.get(f"-{c}") for c in token[1:]]  # `-aq`
            if not all(o is not None and o.kind == "flag" for o in shorts):
                return None
            found.update((o.parameter, True) for o in shorts if o is not None)
            continue
        if option is None:
            return None
        if option.kind == "flag":
            if has_value and token.startswith("--"):
                return None
            found[option.parameter] = True
            continue
        if not (has_value and token.startswith("--")):
            if not rest or rest[0].startswith("-"):
                return None
            value = rest.pop(0)
        if option.kind == "multiple":
            found.setdefault(option.parameter, []).append(value)
        elif option.kind == "seconds":
            if not _SECONDS.fullmatch(value):
                return None
            found[option.parameter] = float(value)
        else:
            found[option.parameter] = value
    if len(positional) != len(arguments):
        return None
    found.update(zip(arguments, positional, strict=True))
    return found


def command(args: Sequence[str]) -> Callable[[], int | None] | None:
    """The command `args` (without the program name) names, ready to run, when it is one
    `main()` runs itself; None when typer should parse it."""
    words = list(args)
    while words and words[0] == "--debug":  # main() has seen it already
        words.pop(0)
    for names, direct in DIRECT.items():
        if tuple(words[: len(names)]) == names:
            keywords = parse(direct.options, words[len(names) :], direct.arguments)
            if keywords is None:
                return None
            function = getattr(importlib.import_module(direct.module), direct.attribute)
            return lambda: function(**keywords)
    return None


def completion(environ: Mapping[str, str]) -> list[str] | None:
    """The words of a bash completion request for a Docker verb's sandbox, as typer would
    print them, or None when typer should answer (another shell, word or position)."""
    if environ.get(COMPLETE_VAR) != "complete_bash":
        return None
    line = environ.get("COMP_WORDS", "")
    if any(c in line for c in "'\"\\#"):  # quoting: typer's shlex split decides
        return None
    try:
        cword = int(environ.get("COMP_CWORD", ""))
    except ValueError:
        return None
    words = line.split()
    before, incomplete = words[1:cword], (words[cword] if cword < len(words) else "")
    if cword < 2 or len(words) < 2 or before[0] not in SANDBOX_VERBS:
        return None
    if incomplete.startswith("-") or any(w.startswith("-") for w in before):
        return None
    from cnirun.cli.context import complete_sandboxes

    return complete_sandboxes(incomplete)
