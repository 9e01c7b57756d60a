"""The command line: the only code that imports typer or writes to the user; nothing imports it."""

from cnirun.cli.app import main as main
