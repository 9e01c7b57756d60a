"""What the commands share that needs no typer: the Settings of the command line being run,
and the shell-completion callbacks (cnirun.cli.common re-exports them beside the options)."""

from __future__ import annotations

from cnirun.settings import Settings


def check_format(output: str) -> None:
    """Refuse a --format other than table or json."""
    from cnirun.errors import UsageError

    if output not in ("table", "json"):
        raise UsageError(f"unknown --format {output!r}: use table or json")


# The Settings main() resolved for the command line being run (see `use_settings`).
_current: list[Settings] = []


def use_settings(settings: Settings) -> None:
    """Make `settings` what `command_settings` builds on (main() calls it before dispatch;
    typer's vendored click keeps its own context, out of plain click's reach)."""
    _current[:] = [settings]


def command_settings(
    *,
    netconf_dir: str | None = None,
    cni_path: str | None = None,
    cache_dir: str | None = None,
    cni_timeout: float | None = None,
) -> Settings:
    """The Settings `main()` resolved for this command line, with the command's flags on top."""
    base = _current[0] if _current else Settings.load()  # Settings.load: a call outside main()
    return base.with_flags(
        netconf_dir=netconf_dir, cni_path=cni_path, cache_dir=cache_dir, cni_timeout=cni_timeout
    )


# -- shell completion (typer calls these with the word being completed) ----------------------


def complete_sandboxes(incomplete: str) -> list[str]:
    """Sandbox names (and IDs of unnamed ones) for <TAB>; nothing when Docker cannot say."""
    from cnirun.errors import CnirunError
    from cnirun.sandbox import registry

    try:
        found, _ = registry.load_all(*registry.opened(command_settings()))
    except (CnirunError, OSError):
        return []
    words = [(s.names() or [s.record.id[:12]])[0] for s in found]
    return sorted(w for w in words if w.startswith(incomplete))


def complete_networks(incomplete: str) -> list[str]:
    """The network names of the config dir, for <TAB>."""
    from cnirun.errors import CnirunError
    from cnirun.netconf.select import scan

    try:
        networks = scan(command_settings().netconf_dir).networks
    except (CnirunError, OSError):
        return []
    return sorted({n.name for n in networks if n.name and n.name.startswith(incomplete)})


FORMATS = ("table", "json", "{{.Names}}", "table {{.Names}}\\t{{.Status}}")


def complete_formats(incomplete: str) -> list[str]:
    """`--format` values, for <TAB>."""
    return [f for f in FORMATS if f.startswith(incomplete)]
