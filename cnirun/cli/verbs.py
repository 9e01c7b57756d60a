"""The Docker verbs users type on a sandbox: `logs`, `exec`, `top`, `wait`, `kill` run the
docker CLI on the sandbox's workload (every flag passed through, `-it` works, the exit status
is Docker's); `port` answers from the sandbox's CNI port mappings. A sandbox is named by its
workload's name, ID or unique prefix, or by its sandbox ID.

These never import typer: their flags are docker's, told apart here only far enough to find
the container arguments (pflag's rules, as in cnirun.dockerargs).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

from cnirun.cli.output import say
from cnirun.errors import UsageError
from cnirun.settings import Settings


class Verb(NamedTuple):
    """One docker verb: its flags (long -> takes a value), shorthands, and its arguments."""

    usage: str  # after `cnirun VERB `
    summary: str
    flags: dict[str, bool]
    shorthands: dict[str, str]
    many: bool = False  # CONTAINER... (else one CONTAINER, then the verb's own arguments)
    interspersed: bool = True  # flags may follow the containers (pflag's default)


VERBS: dict[str, Verb] = {
    "logs": Verb(
        "[OPTIONS] SANDBOX",
        "Fetch the logs of a sandbox's workload.",
        {"details": False, "follow": False, "since": True, "tail": True, "timestamps": False,
         "until": True},
        {"f": "follow", "n": "tail", "t": "timestamps"},
    ),
    "exec": Verb(
        "[OPTIONS] SANDBOX COMMAND [ARG...]",
        "Run a command in a sandbox's workload.",
        {"detach": False, "detach-keys": True, "env": True, "env-file": True,
         "interactive": False, "privileged": False, "tty": False, "user": True, "workdir": True},
        {"d": "detach", "e": "env", "i": "interactive", "t": "tty", "u": "user", "w": "workdir"},
        interspersed=False,
    ),
    "top": Verb(
        "SANDBOX [ps OPTIONS]",
        "Show the processes of a sandbox's workload.",
        {}, {}, interspersed=False,
    ),
    "wait": Verb(
        "SANDBOX [SANDBOX...]",
        "Wait for workloads to stop; print exit codes.",
        {}, {}, many=True,
    ),
    "kill": Verb(
        "[OPTIONS] SANDBOX [SANDBOX...]",
        "Send a signal to sandboxes' workloads.",
        {"signal": True}, {"s": "signal"}, many=True,
    ),
    "port": Verb(
        "SANDBOX [PRIVATE_PORT[/PROTO]]",
        "List a sandbox's published ports.",
        {}, {}, interspersed=False,
    ),
}  # fmt: skip


def usage(name: str) -> str:
    """The help text of one verb."""
    verb = VERBS[name]
    lines = [f"Usage: cnirun {name} {verb.usage}", "", verb.summary]
    if name == "port":
        lines.append("The ports are the sandbox's CNI port mappings (-p), as `docker port` lists.")
    else:
        lines.append(f"Runs `docker {name}` on the workload; every `docker {name}` flag is passed.")
    if verb.flags:
        options = []
        short = {long: letter for letter, long in verb.shorthands.items()}
        for flag, takes_value in verb.flags.items():
            spelled = f"-{short[flag]}, --{flag}" if flag in short else f"    --{flag}"
            options.append(f"  {spelled}{' string' if takes_value else ''}")
        lines += ["", "Options (passed to docker):", *options]
    lines += ["", "SANDBOX: the workload's name, ID or unique prefix, or the sandbox ID."]
    return "\n".join(lines)


class Parsed(NamedTuple):
    tokens: list[str]  # argv, in order
    refs: list[int]  # indexes in `tokens` of the sandbox references


def parse(name: str, argv: Sequence[str]) -> Parsed | None:
    """Find the sandbox references among a verb's arguments (None: `--help` was asked for).

    Raises:
        UsageError: an unknown flag, a flag without its value, or no sandbox.
    """
    verb = VERBS[name]
    tokens = list(argv)
    see = f"See 'cnirun {name} --help'."
    refs: list[int] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        positional = token == "-" or not token.startswith("-")
        if token == "--":
            refs += _positional(verb, tokens, i + 1, refs)
            break
        if positional:
            if not refs or verb.many:
                refs.append(i)
            if not verb.interspersed:
                break
            i += 1
            continue
        if token in ("--help", "-h") and "h" not in verb.shorthands:
            return None
        i = _flag(verb, tokens, i, see)
    if not refs:
        raise UsageError(f"cnirun {name} requires at least 1 argument: SANDBOX").hinted(see)
    return Parsed(tokens, refs)


def _positional(verb: Verb, tokens: list[str], start: int, refs: list[int]) -> list[int]:
    if start >= len(tokens):
        return []
    if verb.many:
        return list(range(start, len(tokens)))
    return [] if refs else [start]


def _flag(verb: Verb, tokens: list[str], i: int, see: str) -> int:
    """Check the flag at tokens[i]; return the index after it (and its value)."""
    token = tokens[i]
    if token.startswith("--"):
        name, has_value, _ = token[2:].partition("=")
        takes_value = verb.flags.get(name)
        if takes_value is None:
            raise UsageError(f"unknown flag: --{name}").hinted(see)
        if takes_value and not has_value:
            if i + 1 >= len(tokens):
                raise UsageError(f"flag needs an argument: --{name}").hinted(see)
            return i + 2
        return i + 1
    for k, letter in enumerate(token[1:], start=1):
        long = verb.shorthands.get(letter)
        if long is None:
            raise UsageError(f"unknown shorthand flag: {letter!r} in {token}").hinted(see)
        if verb.flags[long]:
            if k + 1 < len(token):
                return i + 1  # -n5: the value is the rest of the token
            if i + 1 >= len(tokens):
                raise UsageError(f"flag needs an argument: '{letter}' in {token}").hinted(see)
            return i + 2
    return i + 1


def _verb(name: str, argv: list[str], settings: Settings) -> int:
    from cnirun.sandbox import registry

    parsed = parse(name, argv)
    if parsed is None:
        say(usage(name))
        return 0
    docker, store = registry.opened(settings)
    tokens = list(parsed.tokens)
    sandboxes = [registry.find(docker, store, tokens[i]) for i in parsed.refs]
    if name == "port":
        rest = tokens[parsed.refs[0] + 1 :]
        for line in port_lines(sandboxes[0].record.ports, rest[0] if rest else None):
            say(line)
        return 0
    for index, sandbox in zip(parsed.refs, sandboxes, strict=True):
        tokens[index] = registry.workload_id(sandbox)
    from cnirun.docker import workload

    workload.exec_cli([name, *tokens], docker.endpoint.cli_environ(settings.environ))
    return 0  # not reached: the docker CLI replaced this process


def port_lines(ports: Sequence[dict[str, object]], wanted: str | None) -> list[str]:
    """`docker port`'s lines for CNI port mappings, optionally of one PRIVATE_PORT[/PROTO]."""
    lines = []
    for port in ports:
        private = f"{port['containerPort']}/{port.get('protocol', 'tcp')}"
        if wanted is not None and wanted not in (private, str(port["containerPort"])):
            continue
        host_ip = str(port.get("hostIP") or "0.0.0.0")
        host = f"[{host_ip}]" if ":" in host_ip else host_ip
        lines.append(f"{private} -> {host}:{port['hostPort']}")
    if wanted is not None and not lines:
        raise UsageError(f"no public port '{wanted}' published")
    return lines


def _command(name: str) -> Callable[[list[str], Settings], int]:
    """The command-table function of one verb (its docstring is the verb's summary)."""

    def command(argv: list[str], settings: Settings) -> int:
        return _verb(name, argv, settings)

    command.__doc__ = VERBS[name].summary
    command.__name__ = name
    return command


logs = _command("logs")
exec_ = _command("exec")
top = _command("top")
wait = _command("wait")
kill = _command("kill")
port = _command("port")
