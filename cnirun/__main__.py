"""Entry point for `cnirun` and `python -m cnirun`."""

from __future__ import annotations

import os
import sys


def main() -> int:
    """Run the CLI; imported lazily so Ctrl-C during start-up exits cleanly."""
    rusage_file = os.environ.get("CNIRUN_RUSAGE_FILE")
    try:
        from cnirun.cli import main as cli_main

        return cli_main(sys.argv[1:])
    except KeyboardInterrupt:
        return 130
    finally:
        if rusage_file:  # the benchmark's probe: this process's own CPU seconds
            import resource

            usage = resource.getrusage(resource.RUSAGE_SELF)
            with open(rusage_file, "w") as handle:
                handle.write(f"{usage.ru_utime + usage.ru_stime}\n")


if __name__ == "__main__":
    sys.exit(main())
