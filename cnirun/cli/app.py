"""The command line: the one command table, dispatch, and the one place errors become exit codes.

`cnirun [docker run flags] IMAGE [COMMAND...]` (and `cnirun run ...`) go to the run parser
(cnirun.cli.run) without importing typer, as do the other `raw` words of COMMANDS (the Docker
verbs, `help`); every other word is a typer command. A command raises CnirunError (or
OSError) for a failure and may return a non-zero exit code; `_mapped` (typer commands) and
`_guarded` (raw ones) turn both into one stderr line and the status, for every command alike.
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from cnirun import __version__
from cnirun.cli.output import report, require_root, say, setup_logging, system_error
from cnirun.errors import CnirunError, ExitCode, UsageError, closest

if TYPE_CHECKING:
    import typer

_F = TypeVar("_F", bound=Callable[..., Any])

HELP = """Run a Docker container whose network is set up by CNI plugins.

\b
  cnirun [OPTIONS] IMAGE [COMMAND [ARG...]]   same as `docker run`, networked by CNI
  cnirun run --help                           cnirun's run options

\b
Examples:
  sudo cnirun --rm busybox ifconfig
  sudo cnirun --rm --network mynet -p 8080:80 busybox httpd -f -p 80
  sudo cnirun -d --name web -p 8080:80 busybox httpd -f -p 80; sudo cnirun ps
  sudo cnirun net add mynet /run/netns/test
"""


class Command(NamedTuple):
    """One word of the command table. `raw` commands take docker's grammar and are parsed by
    cnirun itself (`function(argv, settings) -> int`), never by typer; a module attribute
    named `app` is a typer group; anything else is a typer command function."""

    module: str
    attribute: str
    context: dict[str, Any] | None = None
    raw: bool = False
    root: bool = False  # refused up front when cnirun is not root (`run` checks itself)


# The one command table. A first word that is none of these is an image when it clearly is
# one (see `_not_a_command`), else it is refused; this table is read without importing typer.
COMMANDS: dict[str, Command] = {
    "run": Command("cnirun.cli.run", "run", raw=True),
    "ps": Command("cnirun.cli.sandbox", "ps"),
    "inspect": Command("cnirun.cli.sandbox", "inspect"),
    "logs": Command("cnirun.cli.verbs", "logs", raw=True),
    "exec": Command("cnirun.cli.verbs", "exec_", raw=True),
    "port": Command("cnirun.cli.verbs", "port", raw=True),
    "top": Command("cnirun.cli.verbs", "top", raw=True),
    "wait": Command("cnirun.cli.verbs", "wait", raw=True),
    "kill": Command("cnirun.cli.verbs", "kill", raw=True),
    "stop": Command("cnirun.cli.sandbox", "stop", root=True),
    "start": Command("cnirun.cli.sandbox", "start", root=True),
    "restart": Command("cnirun.cli.sandbox", "restart", root=True),
    "rm": Command("cnirun.cli.sandbox", "rm", root=True),
    "gc": Command("cnirun.cli.sandbox", "gc", root=True),
    "update": Command("cnirun.cli.sandbox", "update", root=True),
    "network": Command("cnirun.cli.network", "app"),
    "net": Command("cnirun.cli.net", "app"),
    "priv-net-run": Command(
        "cnirun.cli.privnet", "priv_net_run", {"allow_interspersed_args": False}, root=True
    ),
    "doctor": Command("cnirun.cli.doctor", "doctor"),
    "version": Command("cnirun.cli.version", "version"),
    "help": Command("cnirun.cli.app", "help_command", raw=True),
}
SUBCOMMANDS = frozenset(COMMANDS)
TYPER_OPTIONS = frozenset({"--help", "--version", "--install-completion", "--show-completion"})
# Commands that do not reconcile first: gc does it all itself, doctor never changes anything,
# version needs no state. Raw commands never do: a run reconciles in its session, and the
# Docker verbs must still find a sandbox whose workload just exited (`wait`, `logs`).
NO_RECONCILE = frozenset({"gc", "doctor", "version"})


class UnknownCommandError(UsageError):
    """A first word that is neither a command nor an image (Docker: "unknown command")."""

    label = ""


def _mapped(command: Callable[..., int | None]) -> Callable[..., None]:
    """The command, with cnirun's errors as one line and an exit code (Docker's 125)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        import typer

        try:
            code = command(*args, **kwargs)
        except CnirunError as e:
            report(e)
            raise typer.Exit(e.exit_code) from None
        except OSError as e:
            report(system_error(e))
            raise typer.Exit(ExitCode.CNIRUN_ERROR) from None
        if code:
            raise typer.Exit(code)

    return wrapper


def register(target: typer.Typer, name: str, command: Callable[..., int | None], **kw: Any) -> None:
    """Add one command to a typer app or group, its errors mapped."""
    target.command(name, **kw)(_mapped(command))


def command(target: typer.Typer, name: str, **kw: Any) -> Callable[[_F], _F]:
    """`register` as a decorator, for the commands of a group (`cnirun net add`)."""

    def decorate(function: _F) -> _F:
        register(target, name, function, **kw)
        return function

    return decorate


@functools.cache
def build_app() -> typer.Typer:
    """The typer app for every subcommand (built on demand: typer costs ~60 ms to import)."""
    import typer

    app = typer.Typer(
        help=HELP,
        add_completion=True,
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        context_settings={"help_option_names": ["--help"]},
    )

    def version_callback(value: bool) -> None:
        if value:
            say(f"cnirun version {__version__}")
            raise typer.Exit()

    @app.callback()
    def root(
        debug: bool = typer.Option(
            False, "--debug", help="Log every plugin and Docker call (and tracebacks) to stderr."
        ),
        version: bool = typer.Option(
            False, "--version", callback=version_callback, is_eager=True, help="Print the version."
        ),
    ) -> None:
        if debug:
            setup_logging(True)

    for name, entry in COMMANDS.items():
        target = getattr(importlib.import_module(entry.module), entry.attribute)
        if entry.attribute == "app":
            app.add_typer(target, name=name)
        elif entry.raw:  # listed (and completed) by typer, dispatched by main()
            app.command(
                name,
                help=target.__doc__,
                add_help_option=False,
                context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
            )(_sandbox_verb() if entry.module == "cnirun.cli.verbs" else _dispatched_by_main)
        else:
            register(app, name, target, context_settings=entry.context)
    return app


@functools.cache
def build_command() -> Any:
    """The app as a click command (typer's vendored click or plain click), its metavars in
    Docker's words (`string`, `list`, `NAME`)."""
    import typer

    from cnirun.cli.helpstyle import docker_metavars

    command = typer.main.get_command(build_app())
    docker_metavars(command)
    return command


def _dispatched_by_main() -> None:
    """Never called: main() hands raw commands to their own parser first."""


def _sandbox_verb() -> Callable[..., None]:
    """`_dispatched_by_main` for a Docker verb: typer completes its SANDBOX argument."""
    import typer

    from cnirun.cli.common import complete_sandboxes

    sandboxes = typer.Argument(None, autocompletion=complete_sandboxes)

    def verb(words: list[str] | None = sandboxes) -> None:
        """Never called: main() hands the Docker verbs to cnirun.cli.verbs first."""

    return verb


def help_command(argv: list[str], settings: Settings) -> int:
    """Show the help of cnirun or of a command."""
    return main([*argv, "--help"])


def main(argv: Sequence[str]) -> int:
    """Dispatch `argv` (without the program name) and return the exit status."""
    from cnirun.settings import Settings

    args = list(argv)
    if args == ["--version"]:  # the answer needs neither settings nor typer
        say(f"cnirun version {__version__}")
        return ExitCode.SUCCESS
    words = [a for a in args if a != "--debug"]
    first = words[0] if words else None
    try:
        settings = Settings.load(debug="--debug" in args[: args.index(first)] if first else False)
    except CnirunError as e:
        setup_logging(False)
        report(e)
        return e.exit_code
    setup_logging(settings.debug)
    if first is not None and first.split("=", 1)[0] not in SUBCOMMANDS | TYPER_OPTIONS:
        if not first.startswith("-"):
            refused = _guarded(_not_a_command, first, settings)
            if refused is not None:
                return refused
        return _raw(COMMANDS["run"], args, settings)  # `cnirun [OPTIONS] IMAGE ...`
    entry = COMMANDS.get(first or "")
    if entry is not None and entry.root and "--help" not in args:
        refused = _guarded(require_root)
        if refused is not None:
            return refused
    if first is not None and entry is not None and entry.raw:
        return _raw(entry, args[args.index(first) + 1 :], settings)
    if first in SUBCOMMANDS - NO_RECONCILE and "--help" not in args and _has_records(settings):
        from cnirun.sandbox.registry import reconcile_quietly

        reconcile_quietly(settings)  # detached sandboxes whose workload ended are reclaimed
    direct = _direct(args, settings)
    if direct is not None:
        return direct
    return _typer(args, settings)


def _has_records(settings: Settings) -> bool:
    """False when the state dir holds no sandbox record (no `sandboxes/*.json`, as
    RecordStore.ids lists them): then reconcile has nothing to do, and its imports (the
    sandbox layer, the Docker client) are not paid for. Any doubt means True."""
    try:
        names = os.listdir(os.path.join(settings.state_dir, "sandboxes"))
    except FileNotFoundError:
        return False
    except OSError:
        return True  # reconcile reports it (at debug level), as it always did
    return any(n.endswith(".json") and not n.startswith(".") for n in names)


def _direct(args: list[str], settings: Settings) -> int | None:
    """A command line cnirun.cli.direct runs without typer: its status; else None."""
    from cnirun.cli import direct
    from cnirun.cli.context import use_settings

    use_settings(settings)
    if not args:
        words = direct.completion(settings.environ)
        if words is None:
            return None
        say("\n".join(words))
        return ExitCode.SUCCESS
    function = direct.command(args)
    if function is None:
        return None
    return _guarded(function) or ExitCode.SUCCESS


def _not_a_command(word: str, settings: Settings) -> None:
    """Refuse a first word that is no command and not clearly an image: one that has a
    registry, tag or digest (`/`, `:`, `@`) or exists locally. Nothing is created or pulled."""
    if any(c in word for c in "/:@"):
        return None
    from cnirun.docker.runtime import connect

    if connect(settings.environ).image_exists(word):
        return None
    near = closest(word, sorted(COMMANDS))
    advice = f"Did you mean '{near}'?" if near else "See 'cnirun --help'."
    raise UnknownCommandError(
        f"'{word}' is not a cnirun command, nor a local image"
        f" (`cnirun run {word}` pulls and runs one)."
    ).hinted(advice)


def _raw(entry: Command, args: list[str], settings: Settings) -> int:
    function = getattr(importlib.import_module(entry.module), entry.attribute)
    code = _guarded(function, args, settings)
    return code or ExitCode.SUCCESS


def _guarded(function: Callable[..., int | None], *args: Any) -> int | None:
    """function(*args), with cnirun's errors reported as one line and their exit code."""
    try:
        return function(*args)
    except CnirunError as e:
        report(e)
        return e.exit_code
    except OSError as e:
        report(system_error(e))
        return ExitCode.CNIRUN_ERROR


def _command_path(args: list[str]) -> str:
    """`cnirun network ls`: the (sub)command a command line names, for "See '... --help'"."""
    words = ["cnirun"]
    command = build_command()
    for arg in args:
        commands = getattr(command, "commands", None)
        if arg.startswith("-") or not commands or arg not in commands:
            if not arg.startswith("-"):
                break
            continue
        command = commands[arg]
        words.append(arg)
    return " ".join(words)


def _typer(args: list[str], settings: Settings) -> int:
    import typer

    from cnirun.cli.common import use_settings

    use_settings(settings)

    try:
        result = build_command().main(
            args=args, prog_name="cnirun", standalone_mode=False, obj=settings
        )
    except typer.Abort:
        return ExitCode.CTRL_C
    except typer.Exit as e:
        return e.exit_code
    except typer.TyperException as e:  # click's usage errors, vendored by typer
        text = e.format_message() if hasattr(e, "format_message") else str(e)
        if type(e).__name__ == "NoArgsIsHelpError":  # a bare group: its help is the answer
            say(text)
            return ExitCode.SUCCESS
        report(CnirunError(text).hinted(f"See '{_command_path(args)} --help'."))
        return ExitCode.CNIRUN_ERROR
    return result if isinstance(result, int) else ExitCode.SUCCESS


if TYPE_CHECKING:
    from cnirun.settings import Settings
