"""`cnirun [OPTIONS] IMAGE [COMMAND...]`: the main job, from the command line to the outcome."""

from __future__ import annotations

import sys

from cnirun.cli.output import report, setup_logging, warn
from cnirun.errors import ExitCode
from cnirun.settings import Settings


def run(argv: list[str], settings: Settings) -> int:
    """Parse `docker run`'s grammar plus cnirun's options, run the sandbox, report the outcome."""
    from cnirun import dockerargs
    from cnirun.docker.runtime import connect
    from cnirun.sandbox import session
    from cnirun.sandbox.plan import make_plan
    from cnirun.sandbox.records import RecordStore

    args = dockerargs.parse_run_args(argv)
    if args.debug:
        setup_logging(True)
    settings = settings.with_flags(
        netconf_dir=args.netconf_dir, cni_path=args.cni_path, cni_timeout=args.cni_timeout
    )
    docker = connect(settings.environ)
    if args.docker_network:
        sys.stdout.flush()
        sys.stderr.flush()
        session.plain_docker(args, docker.endpoint.cli_environ(settings.environ))
    display = None
    if not args.quiet:
        from cnirun.cli.progress import ProgressDisplay

        display = ProgressDisplay(sys.stderr)
    plan = make_plan(args, settings, docker)
    outcome = session.Session(plan, docker, RecordStore(settings.state_dir), display).run()
    if outcome.error is not None:
        report(outcome.error)
    for failure in outcome.teardown_failures:
        warn(f"teardown: {failure}")
    if outcome.teardown_failures:
        warn(f"sandbox {outcome.sandbox_id} was not fully removed; run `cnirun gc` to retry")
        return ExitCode.CNIRUN_ERROR  # what the workload did is done; cnirun's part is not
    return outcome.code
