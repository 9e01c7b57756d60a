"""The command line: the one command table, dispatch, and the one place errors become exit codes.

`cnirun [docker run flags] IMAGE [COMMAND...]` (and `cnirun run ...`) go to the run parser
(cnirun.cli.run) without importing typer; every word of COMMANDS is a typer command. A
command raises CnirunError (or OSError) for a failure and may return a non-zero exit code;
`_mapped` turns both into one stderr line and the status, for every command alike.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from cnirun import __version__
from cnirun.cli.output import report, say, setup_logging, system_error
from cnirun.errors import CnirunError, ExitCode

if TYPE_CHECKING:
    import typer

_F = TypeVar("_F", bound=Callable[..., Any])

HELP = """Run a Docker container whose network is set up by CNI plugins.

  cnirun [OPTIONS] IMAGE [COMMAND [ARG...]]   same as `docker run`, networked by CNI

Examples:

  sudo cnirun --rm busybox ifconfig

  sudo cnirun --rm --network mynet -p 8080:80 busybox httpd -f -p 80

  sudo cnirun -d --name web -p 8080:80 busybox httpd -f -p 80; sudo cnirun ps

  sudo cnirun net add mynet /run/netns/test
"""

# The one command table: word -> (module, attribute, context settings). A module attribute
# named `app` is a typer group; anything else is a command function. Every other first word
# starts a `run`, which is why this table is read without importing typer.
COMMANDS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "net": ("cnirun.cli.net", "app", {}),
    "network": ("cnirun.cli.network", "app", {}),
    "ps": ("cnirun.cli.sandbox", "ps", {}),
    "inspect": ("cnirun.cli.sandbox", "inspect", {}),
    "stop": ("cnirun.cli.sandbox", "stop", {}),
    "rm": ("cnirun.cli.sandbox", "rm", {}),
    "gc": ("cnirun.cli.sandbox", "gc", {}),
    "priv-net-run": ("cnirun.cli.privnet", "priv_net_run", {"allow_interspersed_args": False}),
    "doctor": ("cnirun.cli.doctor", "doctor", {}),
}
SUBCOMMANDS = frozenset(COMMANDS) | {"run"}
TYPER_OPTIONS = frozenset({"--help", "--version", "--install-completion", "--show-completion"})
# Commands that do not reconcile first: gc does it all itself, doctor never changes anything.
NO_RECONCILE = frozenset({"gc", "doctor"})


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

    @app.command(
        "run",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        add_help_option=False,
    )
    def run_command() -> None:
        """Run a container networked by CNI: `cnirun run [OPTIONS] IMAGE [COMMAND...]`.

        Takes every `docker run` flag plus --network NAME (repeatable), --netconf-dir,
        --cni-path, --infra-image, --cni-args K=V, --cni-timeout SECONDS and --debug.
        """
        # Never reached: main() hands `run` to the Docker-grammar parser first.

    for name, (module, attribute, context) in COMMANDS.items():
        target = getattr(importlib.import_module(module), attribute)
        if attribute == "app":
            app.add_typer(target, name=name)
        else:
            register(app, name, target, context_settings=context)
    return app


def main(argv: Sequence[str]) -> int:
    """Dispatch `argv` (without the program name) and return the exit status."""
    from cnirun.settings import Settings

    args = list(argv)
    words = [a for a in args if a != "--debug"]
    first = words[0] if words else None
    try:
        settings = Settings.load(debug="--debug" in args[: args.index(first)] if first else False)
    except CnirunError as e:
        setup_logging(False)
        report(e)
        return e.exit_code
    setup_logging(settings.debug)
    if first == "run":
        del args[args.index("run")]
        if words == ["run", "--help"]:
            return _typer(["run", "--help"], settings)
        return _run(args, settings)
    if first is not None and first.split("=", 1)[0] not in SUBCOMMANDS | TYPER_OPTIONS:
        return _run(args, settings)
    if first in SUBCOMMANDS - NO_RECONCILE and "--help" not in args:
        from cnirun.sandbox.registry import reconcile_quietly

        reconcile_quietly(settings)  # detached sandboxes whose workload ended are reclaimed
    return _typer(args, settings)


def _run(args: list[str], settings: Settings) -> int:
    from cnirun.cli.run import run

    try:
        return run(args, settings)
    except CnirunError as e:
        report(e)
        return e.exit_code
    except OSError as e:
        report(system_error(e))
        return ExitCode.CNIRUN_ERROR


def _typer(args: list[str], settings: Settings) -> int:
    import typer

    try:
        result = typer.main.get_command(build_app()).main(
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
        report(CnirunError(f"{text}\nSee 'cnirun --help'."))
        return ExitCode.CNIRUN_ERROR
    return result if isinstance(result, int) else ExitCode.SUCCESS


if TYPE_CHECKING:
    from cnirun.settings import Settings
