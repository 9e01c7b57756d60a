"""Help in Docker's style: `--format string`, `--label list`, `SANDBOX [SANDBOX...]`.

Applied once to the click command tree typer builds (typer's vendored click classes or plain
click's, told apart by duck typing only), instead of `<str>`, `<list[str]>` and `{refs}...`.
"""

from __future__ import annotations

from typing import Any

_TYPE_WORDS = {"str": "string", "text": "string", "int": "int", "integer": "int"}


def _type_word(param: Any) -> str:
    """Docker's word for an option's value type (typer's own type name, or click's)."""
    bare = getattr(param, "bare_type", None)
    name = bare() if callable(bare) else getattr(getattr(param, "type", None), "name", "")
    return _TYPE_WORDS.get(str(name), str(name) or "value")


def docker_metavars(command: Any) -> None:
    """Docker's help style for every option and argument of `command` and its subcommands:
    `--format string`, `--label list`, `SANDBOX [SANDBOX...]` (not `<str>`, `{refs}...`)."""
    for param in command.params:  # typer's own (vendored) click classes: told by their kind
        kind = param.param_type_name
        if kind == "option" and not getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = "list" if getattr(param, "multiple", False) else _type_word(param)
        elif kind == "argument":
            param.__class__ = _docker_argument(type(param))
    for sub in getattr(command, "commands", {}).values():
        docker_metavars(sub)


_ARGUMENT_CLASSES: dict[type[Any], type[Any]] = {}


def _docker_argument(base: type[Any]) -> type[Any]:
    """`base` (typer's argument class) with Docker's usage words; one subclass per base."""
    if base in _ARGUMENT_CLASSES:
        return _ARGUMENT_CLASSES[base]

    class DockerArgument(base):  # type: ignore[misc]
        """Docker's `NAME [NAME...]` in the usage line and the Arguments section."""

        def _words(self) -> str:
            name = self.metavar or (self.name or "arg").upper()
            many = f"{name} [{name}...]" if self.nargs != 1 else name
            return many if self.required else f"[{name}...]" if self.nargs != 1 else f"[{name}]"

        def get_usage_pieces(self, ctx: Any) -> list[str]:
            return [self._words()]

        def get_help_record(self, ctx: Any) -> tuple[str, str] | None:
            return None if self.hidden else (self._words(), getattr(self, "help", None) or "")

    _ARGUMENT_CLASSES[base] = DockerArgument
    return DockerArgument
