"""`cnirun [OPTIONS] IMAGE [COMMAND...]`: the main job, from the command line to the outcome."""

from __future__ import annotations

import sys

from cnirun.cli.output import report, require_root, say, setup_logging, warn
from cnirun.errors import ExitCode, UsageError
from cnirun.settings import DEFAULT_CNI_TIMEOUT, Settings

# What `cnirun run --help` (and `--help` anywhere among a run's options) prints. Kept here,
# not in typer: a run never imports typer.
RUN_USAGE = f"""\
Usage: cnirun [run] [OPTIONS] IMAGE [COMMAND] [ARG...]

Run a Docker container whose network is set up by CNI plugins, as `docker run` would.

cnirun's options:
  --network, --net string  CNI network to attach (repeatable: eth0, eth1, ... in order);
                           default: the first config that loads, else the built-in
                           default network; `host` and `none` mean Docker's own
  --netconf-dir string     Network config dir (default $NETCONFPATH, else /etc/cni/net.d)
  --cni-path string        Plugin dirs, colon-separated (default $CNI_PATH, else
                           /opt/cni/bin:/usr/libexec/cni:/usr/lib/cni)
  --infra-image string     Image of the infra container (default cnirun/pause:1, built
                           locally, never pulled)
  --cni-args list          A CNI_ARGS pair KEY=VALUE (repeatable)
  --network-alias name     One more name the other sandboxes on its networks reach it
                           by (repeatable; its --name, hostname and short ID work too)
  --cni-timeout seconds    Seconds each plugin call may take (default {DEFAULT_CNI_TIMEOUT:g})
  --bandwidth limits       Limit the rates: ingress=RATE,egress=RATE (either or both), with
                           ingress-burst=SIZE, egress-burst=SIZE; RATE as tc writes it
                           (500kbit, 10mbit, 1.5gbit; kbps, mbps: bytes/s), SIZE in b, kb,
                           mb, gb; a burst defaults to 10 ms at the rate, at least 64kb.
                           Needs the bandwidth plugin in the chain (the built-in default
                           network has it; `cnirun network create --bandwidth NAME`)
  --debug                  Log every plugin call and Docker request to stderr

and every `docker run` flag (see `docker run --help`). -p/--publish, --ip, --ip6,
--mac-address, -h/--hostname, --domainname, --dns*, --add-host are done through CNI and
the infra container; -P, --expose, --link and --link-local-ip are refused.

Examples:
  cnirun --rm busybox ifconfig
  cnirun --rm -it busybox sh
  cnirun --rm --network mynet -p 8080:80 busybox httpd -f -p 80
  cnirun --rm --bandwidth ingress=10mbit,egress=2mbit busybox wget -O- http://10.0.0.1/
  cnirun -d --name web busybox httpd -f -p 80
  cnirun -d --name db --network-alias cache busybox httpd -f -p 80
"""


def run(argv: list[str], settings: Settings) -> int:
    """Run a container networked by CNI: every `docker run` flag.

    Parses `docker run`'s grammar plus cnirun's options, runs the sandbox, reports the outcome.
    """
    from cnirun import dockerargs
    from cnirun.docker.runtime import connect
    from cnirun.sandbox import session
    from cnirun.sandbox.plan import make_plan
    from cnirun.sandbox.records import RecordStore

    try:
        args = dockerargs.parse_run_args(argv)
    except dockerargs.HelpRequested:
        say(RUN_USAGE.rstrip("\n"))
        return 0
    except UsageError as e:
        raise UsageError(str(e)).hinted("See 'cnirun run --help'.") from None
    if args.debug:
        setup_logging(True)
    settings = settings.with_flags(
        netconf_dir=args.netconf_dir, cni_path=args.cni_path, cni_timeout=args.cni_timeout
    )
    if not args.docker_network:
        require_root("CNI plugins and network namespaces need it")
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
