"""The command line: dispatch, error reporting and logging set-up; no logic of its own.

`cnirun [docker run flags] IMAGE [COMMAND...]` (and `cnirun run ...`) go to the run parser;
every other first word is a subcommand handled by typer. Heavy modules are imported inside
the command bodies so `--help` and `--version` stay fast.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from cnirun import __version__
from cnirun.errors import CnirunError, ExitCode

if TYPE_CHECKING:
    import typer

log = logging.getLogger("cnirun")

T = TypeVar("T")

HELP = """Run a Docker container whose network is set up by CNI plugins.

  cnirun [OPTIONS] IMAGE [COMMAND [ARG...]]   same as `docker run`, networked by CNI

Examples:

  sudo cnirun --rm busybox ifconfig

  sudo cnirun --rm --network mynet -p 8080:80 busybox httpd -f -p 80

  sudo cnirun -d --name web -p 8080:80 busybox httpd -f -p 80; sudo cnirun ps

  sudo cnirun net add mynet /run/netns/test
"""

# Every word typer owns; anything else at the front of the command line starts a `run`.
# Kept here, not read from the app, so `cnirun busybox ...` never imports typer
# (a unit test checks the two agree).
SUBCOMMANDS = frozenset(
    {"net", "network", "ps", "inspect", "stop", "rm", "gc", "priv-net-run", "doctor"}
)
TYPER_OPTIONS = frozenset({"--help", "--version", "--install-completion", "--show-completion"})


def _debug_enabled() -> bool:
    return os.environ.get("CNIRUN_DEBUG", "") not in ("", "0", "false")


def setup_logging(debug: bool) -> None:
    """Send cnirun's own log records to stderr; DEBUG shows every plugin and Docker call."""
    logger = logging.getLogger("cnirun")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("cnirun: %(levelname)s: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(logging.DEBUG if debug else logging.WARNING)


def report(error: BaseException) -> None:
    """Print one line for an error; the traceback only with --debug."""
    if logging.getLogger("cnirun").isEnabledFor(logging.DEBUG):
        logging.getLogger("cnirun").exception("traceback")
    message = str(error).strip() or type(error).__name__
    print(f"cnirun: error: {message}", file=sys.stderr, flush=True)


def system_error(error: OSError) -> CnirunError:
    """A system error nothing more specific caught, as one line (never a traceback)."""
    text = error.strerror or str(error)
    return CnirunError(f"{text}: {error.filename}" if error.filename else text)


def guarded(action: Callable[[], T]) -> T:
    """Run a command body, turning cnirun's errors into one line and exit 125."""
    try:
        return action()
    except CnirunError as e:
        import typer

        report(e)
        raise typer.Exit(e.exit_code) from None
    except OSError as e:
        import typer

        report(system_error(e))
        raise typer.Exit(ExitCode.CNIRUN_ERROR) from None


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
            print(f"cnirun version {__version__}")
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
        setup_logging(debug or _debug_enabled())

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

    from cnirun import doctor, netcmd, networkcmd, privnet, sandboxcmd

    app.add_typer(netcmd.app, name="net")
    sandboxcmd.register(app)
    app.add_typer(networkcmd.app, name="network")
    app.command("priv-net-run", context_settings=privnet.CONTEXT)(privnet.command)
    app.command("doctor")(doctor.command)
    return app


def main(argv: Sequence[str]) -> int:
    """Dispatch `argv` (without the program name) and return the exit status."""
    args = list(argv)
    first = next((a for a in args if a != "--debug"), None)
    if first == "run":
        del args[args.index("run")]
        if [a for a in args if a != "--debug"] == ["--help"]:
            return _typer(["run", "--help"])
        return _run(args)
    if first is not None and first.split("=", 1)[0] not in SUBCOMMANDS | TYPER_OPTIONS:
        return _run(args)
    if first in SUBCOMMANDS - {"gc"} and "--help" not in args:  # gc (--dry-run) does its own
        from cnirun.sandboxes import reconcile_quietly

        reconcile_quietly()  # detached sandboxes whose workload ended are reclaimed by any command
    return _typer(args)


def _typer(args: list[str]) -> int:
    import typer

    try:
        result = typer.main.get_command(build_app()).main(
            args=args, prog_name="cnirun", standalone_mode=False
        )
    except typer.Abort:
        return ExitCode.CTRL_C
    except typer.Exit as e:
        return e.exit_code
    except typer.TyperException as e:  # click's usage errors, vendored by typer
        text = e.format_message() if hasattr(e, "format_message") else str(e)
        if type(e).__name__ == "NoArgsIsHelpError":  # a bare group: its help is the answer
            print(text)
            return ExitCode.SUCCESS
        print(f"cnirun: error: {text}", file=sys.stderr)
        print("See 'cnirun --help'.", file=sys.stderr)
        return ExitCode.CNIRUN_ERROR
    return result if isinstance(result, int) else ExitCode.SUCCESS


def _run(args: list[str]) -> int:
    setup_logging(_debug_enabled())
    try:
        from cnirun import dockerargs, lifecycle

        parsed = dockerargs.parse_run_args(args)
        if parsed.debug:
            setup_logging(True)
        return lifecycle.run(parsed)
    except CnirunError as e:
        report(e)
        return e.exit_code
    except OSError as e:
        report(system_error(e))
        return ExitCode.CNIRUN_ERROR
