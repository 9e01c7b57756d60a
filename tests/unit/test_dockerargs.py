"""Unit tests for cnirun.dockerargs: docker run's flag grammar and cnirun's re-homing."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from cnirun.dockerargs import (
    CNIRUN_OPTIONS,
    DOCKER_RUN_FLAGS,
    DOCKER_RUN_SHORTHANDS,
    HelpRequested,
    PortMapping,
    RunArgs,
    parse_port_spec,
    parse_run_args,
)
from cnirun.errors import CnirunError, UsageError

# Flags in our table that `docker run --help` does not list: hidden aliases, Windows-only ones,
# and ones gated on a daemon API version (listed only when the daemon is new enough).
HIDDEN_OR_GATED = {
    "dns-opt",
    "net",
    "net-alias",
    "cpu-count",
    "cpu-percent",
    "io-maxbandwidth",
    "io-maxiops",
    "annotation",
    "health-start-interval",
    "disable-content-trust",
    "kernel-memory",
}


def parse(line: str | list[str]) -> RunArgs:
    return parse_run_args(line.split() if isinstance(line, str) else line)


def usage_error(argv: str | list[str], match: str) -> None:
    with pytest.raises(UsageError, match=match):
        parse(argv)


# --- the flag table against the real docker CLI ---


def docker_help_flags() -> dict[str, tuple[str | None, bool]]:
    """Parse `docker run --help`: long name -> (shorthand, takes a value)."""
    docker = shutil.which("docker") or "/usr/local/bin/docker"
    out = subprocess.run(
        [docker, "run", "--help"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    flags: dict[str, tuple[str | None, bool]] = {}
    line_re = re.compile(r"^  (?:-(\S), |    )--([a-z0-9-]+)(?: ([a-z0-9-]+))?(?: {2,}|$)")
    for line in out.splitlines():
        m = line_re.match(line)
        if m:
            flags[m.group(2)] = (m.group(1), m.group(3) is not None)
    return flags


def test_flag_table_matches_docker_run_help() -> None:
    helped = docker_help_flags()
    assert len(helped) > 90  # the help really was parsed
    for name, (short, takes_value) in helped.items():
        assert name in DOCKER_RUN_FLAGS, f"docker run --{name} is missing from the table"
        assert DOCKER_RUN_FLAGS[name] == takes_value, f"--{name}: wrong arity"
        if short is not None:
            assert DOCKER_RUN_SHORTHANDS.get(short) == name, f"-{short} should mean --{name}"
    # Table entries docker no longer lists must be known hidden ones (so removals get noticed).
    assert set(DOCKER_RUN_FLAGS) - set(helped) <= HIDDEN_OR_GATED
    helped_shorts = {short for short, _ in helped.values() if short}
    assert set(DOCKER_RUN_SHORTHANDS) == helped_shorts


def test_tables_are_consistent() -> None:
    assert set(DOCKER_RUN_SHORTHANDS.values()) <= set(DOCKER_RUN_FLAGS)
    assert "h" not in DOCKER_RUN_SHORTHANDS or DOCKER_RUN_SHORTHANDS["h"] == "hostname"
    assert CNIRUN_OPTIONS["debug"] is False
    assert all(CNIRUN_OPTIONS[n] for n in CNIRUN_OPTIONS if n != "debug")


# --- grammar ---


def test_minimal() -> None:
    args = parse("busybox")
    assert args == RunArgs(image="busybox")
    assert args.workload_flags == () and args.command == () and args.networks == ()


@pytest.mark.parametrize(
    "argv",
    [
        ["--env", "A=1", "busybox"],
        ["--env=A=1", "busybox"],
        ["-e", "A=1", "busybox"],
        ["-eA=1", "busybox"],
        ["-e=A=1", "busybox"],
    ],
)
def test_value_flag_forms_are_forwarded_verbatim(argv: list[str]) -> None:
    args = parse(argv)
    assert args.workload_flags == tuple(argv[:-1])
    assert args.image == "busybox"


def test_value_is_taken_even_when_it_looks_like_a_flag() -> None:
    args = parse(["-e", "--rm", "--entrypoint", "-x", "busybox"])
    assert args.workload_flags == ("-e", "--rm", "--entrypoint", "-x")
    assert args.remove is False


def test_empty_values() -> None:
    args = parse(["--entrypoint=", "--workdir", "", "busybox"])
    assert args.workload_flags == ("--entrypoint=", "--workdir", "")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--rm"], True),
        (["--rm=true"], True),
        (["--rm=1"], True),
        (["--rm=T"], True),
        (["--rm=false"], False),
        (["--rm=False"], False),
        (["--rm=0"], False),
        (["--rm", "--rm=false"], False),
        (["--rm=false", "--rm"], True),
    ],
)
def test_bool_forms(argv: list[str], expected: bool) -> None:
    args = parse([*argv, "busybox"])
    assert args.remove is expected
    assert args.workload_flags == tuple(argv)


def test_bool_does_not_take_the_next_argument() -> None:
    args = parse(["--rm", "false"])
    assert args.remove is True
    assert args.image == "false"


@pytest.mark.parametrize("value", ["yes", "", "on", "TrUe"])
def test_bad_bool_value(value: str) -> None:
    usage_error([f"--rm={value}", "busybox"], "invalid boolean value .* for --rm")
    usage_error([f"--privileged={value}", "busybox"], "for --privileged")


@pytest.mark.parametrize("group", ["-it", "-ti", "-dit", "-tid"])
def test_combined_short_bools(group: str) -> None:
    args = parse([group, "busybox"])
    assert args.interactive and args.tty
    assert args.detach is ("d" in group)
    assert args.workload_flags == (group,)


def test_short_bool_with_explicit_value() -> None:
    args = parse(["-it=false", "busybox"])
    assert args.interactive is True and args.tty is False
    assert args.workload_flags == ("-it=false",)


def test_combined_group_ending_in_forwarded_value_flag() -> None:
    assert parse(["-ite", "A=1", "busybox"]).workload_flags == ("-ite", "A=1")
    assert parse(["-iteA=1", "busybox"]).workload_flags == ("-iteA=1",)
    args = parse(["-tiu", "0", "busybox", "id"])
    assert args.workload_flags == ("-tiu", "0") and args.command == ("id",)


def test_combined_group_ending_in_rehomed_value_flag() -> None:
    args = parse(["-itp", "80:80", "busybox"])
    assert args.publish == (PortMapping("", 80, 80, "tcp"),)
    assert args.workload_flags == ("-i", "-t")
    args = parse(["-itp8080:80", "busybox"])
    assert args.publish == (PortMapping("", 8080, 80, "tcp"),)
    assert args.workload_flags == ("-i", "-t")


def test_split_group_keeps_explicit_bool_values_and_values() -> None:
    args = parse(["-t=false", "busybox"])
    assert args.workload_flags == ("-t=false",)
    args = parse(["-ihhost1", "busybox"])
    assert args.hostname == "host1" and args.workload_flags == ("-i",)
    args = parse(["-ith", "h1", "busybox"])
    assert args.hostname == "h1" and args.workload_flags == ("-i", "-t")


def test_short_value_flag_swallows_rest_of_group() -> None:
    args = parse(["-eit", "busybox"])
    assert args.workload_flags == ("-eit",)
    assert args.interactive is False and args.tty is False


def test_double_dash_ends_options() -> None:
    args = parse(["--rm", "--", "busybox", "--rm", "-it"])
    assert args.image == "busybox"
    assert args.command == ("--rm", "-it")
    assert args.workload_flags == ("--rm",)


def test_double_dash_without_image() -> None:
    usage_error(["--rm", "--"], "requires at least 1 argument: IMAGE")


def test_command_is_verbatim() -> None:
    command = [
        "sh",
        "-c",
        "echo \"a  b\" 'c' $HOME * ?.txt [x]",
        "--rm",
        "-p",
        "80:80",
        "--",
        "",
        "--network=host",
        "arg with  spaces",
    ]
    args = parse(["--rm", "registry.example:5000/img:tag", *command])
    assert args.image == "registry.example:5000/img:tag"
    assert args.command == tuple(command)
    assert args.publish == () and args.networks == ()


def test_options_after_image_belong_to_the_command() -> None:
    args = parse(["busybox", "-it", "--debug"])
    assert args.command == ("-it", "--debug")
    assert not args.interactive and not args.debug


def test_order_of_forwarded_flags_is_kept() -> None:
    argv = ["-v", "/a:/b", "--rm", "--name", "web", "-e", "X=1", "--read-only", "-w", "/tmp"]
    assert parse([*argv, "busybox"]).workload_flags == tuple(argv)


def test_test_prefix_is_ignored_like_pflag() -> None:
    args = parse(["-test.v", "busybox"])
    assert args.tty is False
    assert args.workload_flags == ("-test.v",)


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--frobnicate", "busybox"], "unknown flag: --frobnicate"),
        (["--frobnicate=1", "busybox"], "unknown flag: --frobnicate"),
        (["-x", "busybox"], "unknown shorthand flag: 'x' in -x"),
        (["-itx", "busybox"], "unknown shorthand flag: 'x' in -itx"),
        (["-d=", "busybox"], "unknown shorthand flag: '=' in -d="),
        (["---rm", "busybox"], "bad flag syntax: ---rm"),
        (["--=x", "busybox"], "bad flag syntax: --=x"),
        (["-e"], "flag needs an argument: 'e' in -e"),
        (["-ite"], "flag needs an argument: 'e' in -ite"),
        (["--env"], "flag needs an argument: --env"),
        (["--network"], "flag needs an argument: --network"),
        ([], "requires at least 1 argument: IMAGE"),
        (["--rm", "-it"], "requires at least 1 argument: IMAGE"),
        (["-"], "invalid IMAGE"),
        ([""], "invalid IMAGE"),
        (["--", "-x"], "invalid IMAGE"),
    ],
)
def test_grammar_errors(argv: list[str], match: str) -> None:
    usage_error(argv, match)


def test_errors_are_one_line_cnirun_errors() -> None:
    for argv in (["--nope", "x"], ["-P", "x"], ["-p", "x:y", "x"], []):
        with pytest.raises(CnirunError) as info:
            parse(argv)
        assert "\n" not in str(info.value) and str(info.value)


def test_help() -> None:
    for argv in (["--help"], ["--rm", "--help", "busybox"], ["--help=true", "busybox"]):
        with pytest.raises(HelpRequested, match="usage: cnirun"):
            parse(argv)
    assert parse(["--help=false", "busybox"]).workload_flags == ()
    # A tokenising error wins over --help, as in docker.
    usage_error(["--help", "--nope"], "unknown flag")
    with pytest.raises(HelpRequested):
        parse(["--help", "-p", "bad", "busybox"])  # but --help wins over a bad value


def test_every_plain_docker_flag_is_forwarded() -> None:
    rehomed_or_own = {
        "add-host", "dns", "dns-opt", "dns-option", "dns-search", "domainname", "hostname",
        "publish", "ip", "ip6", "mac-address", "network", "net", "publish-all", "expose",
        "link", "network-alias", "net-alias", "link-local-ip", "help", "name", "pull",
    }  # fmt: skip
    for name, takes_value in DOCKER_RUN_FLAGS.items():
        if name in rehomed_or_own:
            continue
        argv = [f"--{name}", "v1"] if takes_value else [f"--{name}"]
        assert parse([*argv, "busybox"]).workload_flags == tuple(argv), name


# --- cnirun's own options ---


def test_own_options_are_recorded_and_not_forwarded() -> None:
    args = parse(
        [
            "--rm",
            "--netconf-dir", "/etc/cni/net.d",
            "--cni-path=/opt/cni/bin:/usr/lib/cni",
            "--infra-image", "pause:1",
            "--cni-args", "IgnoreUnknown=1",
            "--cni-args=K8S_POD_NAME=x;FOO=bar",
            "--cni-timeout", "2.5",
            "--debug",
            "-t",
            "busybox",
        ]
    )  # fmt: skip
    assert args.netconf_dir == "/etc/cni/net.d"
    assert args.cni_path == "/opt/cni/bin:/usr/lib/cni"
    assert args.infra_image == "pause:1"
    assert args.cni_args == (("IgnoreUnknown", "1"), ("K8S_POD_NAME", "x"), ("FOO", "bar"))
    assert args.cni_timeout == 2.5
    assert args.debug is True
    assert args.workload_flags == ("--rm", "-t")


def test_last_scalar_own_option_wins() -> None:
    args = parse(["--netconf-dir=/a", "--netconf-dir=/b", "--debug", "--debug=false", "x"])
    assert args.netconf_dir == "/b" and args.debug is False


@pytest.mark.parametrize("pair", ["novalue", "=v", "k=", "k=v=w", "", "a=b;"])
def test_bad_cni_args(pair: str) -> None:
    bad = "" if pair == "a=b;" else pair
    usage_error(["--cni-args", pair, "x"], f'invalid CNI_ARGS pair "{re.escape(bad)}"')


@pytest.mark.parametrize("value", ["0", "-1", "abc", "inf", "nan", "1e3", "", " 2"])
def test_bad_cni_timeout(value: str) -> None:
    usage_error(["--cni-timeout", value, "x"], "--cni-timeout")


@pytest.mark.parametrize(("value", "seconds"), [("10", 10.0), ("0.5", 0.5), (".25", 0.25)])
def test_cni_timeout(value: str, seconds: float) -> None:
    assert parse(["--cni-timeout", value, "x"]).cni_timeout == seconds


@pytest.mark.parametrize("name", ["netconf-dir", "cni-path", "infra-image"])
def test_own_options_need_a_value(name: str) -> None:
    usage_error([f"--{name}=", "x"], f"--{name} needs a non-empty value")


# --- --network / --net ---


def test_networks_in_order() -> None:
    args = parse(["--network", "a", "--net=b", "--net", "c", "--network=d.e_f-1", "x"])
    assert args.networks == ("a", "b", "c", "d.e_f-1")
    assert args.docker_network is None
    assert args.workload_flags == ()


@pytest.mark.parametrize("mode", ["host", "none"])
@pytest.mark.parametrize("form", [["--network", "{}"], ["--net={}"], ["--network={}"]])
def test_plain_docker_networking(mode: str, form: list[str]) -> None:
    tokens = [t.format(mode) for t in form]
    args = parse([*tokens, "--rm", "x"])
    assert args.docker_network == mode and args.networks == ()
    assert args.workload_flags == (*tokens, "--rm")


def test_plain_docker_networking_forwards_rehomed_flags_too() -> None:
    argv = ["--net=host", "-h", "h1", "--dns", "1.1.1.1", "-p", "80:80", "-itp", "81:81"]
    args = parse([*argv, "--ip=10.0.0.2", "--mac-address", "02:00:00:00:00:01", "x"])
    assert args.workload_flags == (
        *argv, "--ip=10.0.0.2", "--mac-address", "02:00:00:00:00:01"
    )  # fmt: skip
    assert args.hostname == "h1" and len(args.publish) == 2


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--network", "host", "--network", "a"], "cannot be combined with CNI networks"),
        (["--network", "a", "--net=none"], "cannot be combined with CNI networks"),
        (["--network", "host", "--network", "none"], "only one of host/none"),
        (["--net=container:web"], "container:web is not supported"),
        (["--network", "a", "--network", "a"], "'a' is given twice"),
        (["--network", ""], "invalid network name ''"),
        (["--network", "bad net"], "invalid network name 'bad net'"),
        (["--network", "-x"], "invalid network name '-x'"),
        (["--network", "name=a,alias=b"], "advanced --network syntax is not supported"),
    ],
)
def test_network_errors(argv: list[str], match: str) -> None:
    usage_error([*argv, "x"], match)


# --- re-homed infra flags ---


def test_infra_flags() -> None:
    args = parse(
        [
            "-h", "web", "--domainname=example.org",
            "--dns", "10.0.0.53", "--dns=2001:db8::53", "--dns", " 0:0:0:0:0:0:0:1 ",
            "--dns-search", "corp.example", "--dns-search=lab.example.", "--dns-search", ".",
            "--dns-option", "ndots:2", "--dns-opt=timeout:1",
            "--add-host", "db:10.0.0.5", "--add-host=gw=host-gateway",
            "--add-host", "v6:2001:db8::5", "--add-host", "b6=[2001:db8::6]",
            "--add-host", "gw2:host-gateway",
            "-e", "A=1",
            "x",
        ]
    )  # fmt: skip
    assert args.hostname == "web" and args.domainname == "example.org"
    assert args.dns == ("10.0.0.53", "2001:db8::53", "::1")
    assert args.dns_search == ("corp.example", "lab.example", ".")
    assert args.dns_options == ("ndots:2", "timeout:1")
    assert args.add_hosts == (
        ("db", "10.0.0.5"),
        ("gw", "host-gateway"),
        ("v6", "2001:db8::5"),
        ("b6", "2001:db8::6"),
        ("gw2", "host-gateway"),
    )
    assert args.workload_flags == ("-e", "A=1")


def test_last_hostname_wins_and_short_forms() -> None:
    args = parse(["-hone", "--hostname", "two", "x"])
    assert args.hostname == "two" and args.workload_flags == ()


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--dns", "dns.google"], "invalid --dns 'dns.google'"),
        (["--dns", "fe80::1%eth0"], "invalid --dns"),
        (["--dns-search", "bad_domain"], "invalid --dns-search"),
        (["--dns-search", "123.456"], "invalid --dns-search"),
        (["--dns-search", "-a.example"], "invalid --dns-search"),
        (["--add-host", "nohost"], "expected HOST:IP or HOST=IP"),
        (["--add-host", ":1.2.3.4"], "expected HOST:IP"),
        (["--add-host", "=1.2.3.4"], "expected HOST:IP"),
        (["--add-host", "a b:1.2.3.4"], "expected HOST:IP"),
        (["--add-host", "h:999.1.1.1"], "'999.1.1.1' is not an IP address"),
        (["--add-host", "h=gateway"], "'gateway' is not an IP address"),
        (["-h", "a" * 65], "invalid hostname"),
        (["--hostname", "a b"], "invalid hostname"),
        (["--domainname", "a b"], "invalid domain name"),
    ],
)
def test_infra_flag_errors(argv: list[str], match: str) -> None:
    usage_error([*argv, "x"], match)


# --- addresses and MAC ---


def test_ip_and_ip6() -> None:
    args = parse(["--ip6", "2001:db8::33", "--ip=172.30.100.104", "x"])
    assert args.ips == ("172.30.100.104", "2001:db8::33")
    assert parse(["--ip", "10.0.0.1", "--ip", "10.0.0.2", "x"]).ips == ("10.0.0.2",)
    assert parse(["--ip6", "2001:DB8:0::1", "x"]).ips == ("2001:db8::1",)
    assert parse(["--ip", "10.0.0.1", "x"]).workload_flags == ()


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--ip", "2001:db8::1"], r"not an IPv4 address \(use --ip6"),
        (["--ip", "10.0.0.1/24"], "not an IPv4 address"),
        (["--ip", "10.0.0"], "not an IPv4 address"),
        (["--ip6", "10.0.0.1"], "not an IPv6 address"),
        (["--ip6", "fe80::1%eth0"], "not an IPv6 address"),
    ],
)
def test_ip_errors(argv: list[str], match: str) -> None:
    usage_error([*argv, "x"], match)


@pytest.mark.parametrize(
    ("value", "mac"),
    [
        ("92:d0:c6:0a:29:33", "92:d0:c6:0a:29:33"),
        ("92:D0:C6:0A:29:33", "92:d0:c6:0a:29:33"),
        ("92-d0-c6-0a-29-33", "92:d0:c6:0a:29:33"),
        ("92d0.c60a.2933", "92:d0:c6:0a:29:33"),
    ],
)
def test_mac(value: str, mac: str) -> None:
    args = parse(["--mac-address", value, "x"])
    assert args.mac == mac and args.workload_flags == ()


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("92:d0:c6:0a:29", "six hex octets"),
        ("92:d0-c6:0a:29:33", "six hex octets"),
        ("92:d0:c6:0a:29:3g", "six hex octets"),
        ("9:d0:c6:0a:29:33", "six hex octets"),
        ("01:00:5e:00:00:01", "multicast"),
        ("00:00:00:00:00:00", "all-zero"),
    ],
)
def test_mac_errors(value: str, match: str) -> None:
    usage_error(["--mac-address", value, "x"], match)


# --- rejected flags ---


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["-P"], "-P is not supported by cnirun: publish ports explicitly with -p"),
        (["--publish-all"], "--publish-all is not supported"),
        (["-itP"], "-P is not supported"),
        (["--expose", "80"], "--expose is not supported.*-p HOSTPORT:PORT"),
        (["--link", "db:db"], "--link is not supported.*--network-alias"),
        (["--link-local-ip", "169.254.1.1"], "--link-local-ip is not supported.*--ip"),
        (["--net=host", "-P"], "-P is not supported"),
    ],
)
def test_rejected_flags(argv: list[str], match: str) -> None:
    usage_error([*argv, "x"], match)


def test_network_aliases_are_cnirun_s_own() -> None:
    """Names peers on its networks know it by (cnirun.sandbox.names): never docker's."""
    args = parse(["--network-alias", "db", "--net-alias=cache", "--network-alias", "db", "x"])
    assert args.aliases == ("db", "cache")
    assert args.workload_flags == ()


@pytest.mark.parametrize("alias", ["-x", "a b", "a\nb", "é", "/db", "x" * 64])
def test_an_alias_that_is_no_name_is_refused(alias: str) -> None:
    usage_error(["--network-alias", alias, "x"], "invalid --network-alias")


def test_rejected_bool_set_to_false_is_dropped() -> None:
    args = parse(["-P=false", "--publish-all=0", "-t", "x"])
    assert args.workload_flags == ("-t",)


# --- recorded-and-forwarded flags ---


def test_recorded_flags() -> None:
    argv = [
        "-d", "--rm", "-i", "-t", "--name", "web-1", "--pull=never",
        "--platform", "linux/amd64", "-q",
    ]  # fmt: skip
    args = parse([*argv, "x"])
    assert (args.detach, args.remove, args.interactive, args.tty, args.quiet) == (
        True, True, True, True, True,
    )  # fmt: skip
    assert (args.name, args.pull, args.platform) == ("web-1", "never", "linux/amd64")
    assert args.workload_flags == tuple(argv)
    long_args = parse(["--detach", "--interactive", "--tty", "--quiet", "x"])
    assert long_args.detach and long_args.interactive and long_args.tty and long_args.quiet


def test_recorded_defaults() -> None:
    args = parse("x")
    assert not (args.detach or args.remove or args.interactive or args.tty or args.quiet)
    assert args.name is None and args.pull is None and args.platform is None


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--pull", "sometimes"], "invalid --pull 'sometimes'"),
        (["--name", "a b"], "invalid container name"),
        (["--name", "x"], "invalid container name"),
        (["--name", "_web"], "invalid container name"),
    ],
)
def test_recorded_flag_errors(argv: list[str], match: str) -> None:
    usage_error([*argv, "x"], match)


def test_other_namespace_modes_are_forwarded() -> None:
    argv = ["--ipc", "container:web", "--pid=host", "--uts", "host", "--userns=host"]
    assert parse([*argv, "x"]).workload_flags == tuple(argv)


# --- -p/--publish ---


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("80", [("", 0, 80, "tcp")]),
        ("8080:80", [("", 8080, 80, "tcp")]),
        ("8080:80/udp", [("", 8080, 80, "udp")]),
        ("8080:80/UDP", [("", 8080, 80, "udp")]),
        ("8080:80/", [("", 8080, 80, "tcp")]),
        ("53/udp", [("", 0, 53, "udp")]),
        (":80", [("", 0, 80, "tcp")]),
        ("0:80", [("", 0, 80, "tcp")]),
        ("127.0.0.1:8080:80", [("127.0.0.1", 8080, 80, "tcp")]),
        ("127.0.0.1::80", [("127.0.0.1", 0, 80, "tcp")]),
        ("0.0.0.0:80:80", [("0.0.0.0", 80, 80, "tcp")]),
        ("[::1]:8080:80", [("::1", 8080, 80, "tcp")]),
        ("[::]:8080:80/udp", [("::", 8080, 80, "udp")]),
        ("[2001:DB8::1]::80", [("2001:db8::1", 0, 80, "tcp")]),
        ("::1:8080:80", [("::1", 8080, 80, "tcp")]),
        ("[10.0.0.1]:1:2", [("10.0.0.1", 1, 2, "tcp")]),
        ("65535:65535", [("", 65535, 65535, "tcp")]),
        ("8000-8002:80-82", [("", 8000, 80, "tcp"), ("", 8001, 81, "tcp"), ("", 8002, 82, "tcp")]),
        ("80-81", [("", 0, 80, "tcp"), ("", 0, 81, "tcp")]),
        ("1.2.3.4::80-81/udp", [("1.2.3.4", 0, 80, "udp"), ("1.2.3.4", 0, 81, "udp")]),
        ("8000-8000:80", [("", 8000, 80, "tcp")]),
        ("published=8080,target=80", [("", 8080, 80, "tcp")]),
        ("target=53,protocol=udp", [("", 0, 53, "udp")]),
        ("published=7000-7001,target=70-71", [("", 7000, 70, "tcp"), ("", 7001, 71, "tcp")]),
    ],
)
def test_port_specs(spec: str, expected: list[tuple[str, int, int, str]]) -> None:
    assert parse_port_spec(spec) == tuple(PortMapping(*e) for e in expected)
    for argv in (["-p", spec], [f"--publish={spec}"], [f"-itp{spec}"]):
        args = parse([*argv, "--rm", "x"])
        assert args.publish == tuple(PortMapping(*e) for e in expected)
        assert args.workload_flags == (("-i", "-t") if argv[0] == f"-itp{spec}" else ()) + ("--rm",)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("", "no container port"),
        ("8080:", "no container port"),
        ("abc", "container port 'abc' is not a port"),
        ("8080:abc", "container port 'abc'"),
        ("x:80", "host port 'x'"),
        ("80/sctp", "sctp cannot be published.*tcp and udp"),
        ("80/icmp", "unknown protocol 'icmp'"),
        ("80/tcp/x", "bad protocol"),
        ("65536:80", "above 65535"),
        ("80:65536", "above 65535"),
        ("0", "container port 0"),
        ("80:0", "container port 0"),
        ("0-5:80-85", "host port 0 can only stand alone"),
        ("82-80", "ends before it starts"),
        ("8000-:80", "not a port"),
        ("1-2-3", "not a port"),
        ("+80", "not a port"),
        (" 80", "not a port"),
        ("8000-8010:80", "host port range for one container port is not supported"),
        ("8000-8001:80-82", "differ in length"),
        ("8000:80-82", "differ in length"),
        ("999.0.0.1:80:80", "'999.0.0.1' is not an IP address"),
        ("[::1:8080:80", "is not an IP address"),
        ("localhost:80:80", "'localhost' is not an IP address"),
        ("[fe80::1%eth0]:80:80", "is not an IP address"),
        ("published=8080", "no target"),
        ("target=80,mode=host", "'mode=host' is not published="),
        ("target=80,x", "'x' is not published="),
    ],
)
def test_port_spec_errors(spec: str, match: str) -> None:
    with pytest.raises(UsageError, match=match) as info:
        parse_port_spec(spec)
    assert str(info.value).startswith(f'invalid port spec "{spec}": ')
    usage_error(["-p", spec, "x"], match)


def test_publish_forms_and_order() -> None:
    args = parse(["-p", "1:1", "-p2:2", "-p=3:3", "--publish", "4:4", "--publish=5:5", "x"])
    assert [m.host_port for m in args.publish] == [1, 2, 3, 4, 5]
    assert args.workload_flags == ()


def test_duplicate_host_ports_are_left_to_the_plan() -> None:
    """Overlapping -p's are refused while planning, by the one overlap rule (see
    tests/unit/sandbox/test_published.py), not by the parser."""
    args = parse(["-p", "80:80", "-p", "80:81", "-p", "127.0.0.1:80:82", "x"])
    assert [m.container_port for m in args.publish] == [80, 81, 82]


@pytest.mark.parametrize(
    "argv",
    [
        ["--uts", "host", "-h", "web", "x"],
        ["-h", "web", "--uts=host", "x"],
        ["--hostname=web", "--uts", "private", "--uts", "host", "x"],
        ["--network", "host", "--uts", "host", "-h", "web", "x"],
    ],
)
def test_uts_host_with_a_hostname_is_dockers_conflict(argv: list[str]) -> None:
    usage_error(argv, r"^conflicting options: hostname and the UTS mode$")


def test_uts_host_without_a_hostname_is_fine() -> None:
    assert parse(["--uts", "host", "-h", "", "x"]).hostname is None
    assert parse(["--uts", "host", "--uts", "", "-h", "web", "x"]).hostname == "web"
    assert "--uts" in parse(["--uts", "host", "x"]).workload_flags


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        (["-l", "io.cnirun.sandbox=x", "x"], "-l io.cnirun.sandbox"),
        (["--label", "io.cnirun.role=infra", "x"], "--label io.cnirun.role"),
        (["--label=io.cnirun.anything", "x"], "--label io.cnirun.anything"),
        (["-dl", "io.cnirun.sandbox=", "x"], "-l io.cnirun.sandbox"),
    ],
)
def test_cnirun_labels_are_reserved(argv: list[str], shown: str) -> None:
    with pytest.raises(UsageError) as info:
        parse(argv)
    text = str(info.value)
    assert text.startswith(f"{shown}: labels starting with io.cnirun. are reserved for cnirun")
    assert "\n" not in text


def test_other_labels_pass_through() -> None:
    args = parse(["-l", "io.cnirunx=1", "--label", "app.io.cnirun.sandbox=2", "-l", "k", "x"])
    assert args.workload_flags == (
        "-l", "io.cnirunx=1", "--label", "app.io.cnirun.sandbox=2", "-l", "k"
    )  # fmt: skip


def test_port_mapping_to_cni() -> None:
    assert PortMapping("", 8080, 80, "tcp").to_cni() == {
        "hostPort": 8080,
        "containerPort": 80,
        "protocol": "tcp",
    }
    assert PortMapping("::1", 0, 53, "udp").to_cni() == {
        "hostPort": 0,
        "containerPort": 53,
        "protocol": "udp",
        "hostIP": "::1",
    }


def test_results_are_immutable() -> None:
    args = parse(["-p", "80", "x"])
    with pytest.raises(AttributeError):
        args.image = "y"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        args.publish[0].host_port = 1  # type: ignore[misc]
    assert isinstance(args.workload_flags, tuple) and isinstance(args.command, tuple)


# --- --bandwidth (issue 16) ---


def test_bandwidth_is_cnirun_s_own_and_never_reaches_docker() -> None:
    args = parse("--rm --bandwidth ingress=10mbit --bandwidth=egress=1mbit,egress-burst=8kb"
                 " busybox true")  # fmt: skip
    assert args.bandwidth is not None
    assert args.bandwidth.to_cni() == {
        "ingressRate": 10_000_000,
        "ingressBurst": 64 * 1024 * 8,
        "egressRate": 1_000_000,
        "egressBurst": 8 * 1024 * 8,
    }
    assert args.workload_flags == ("--rm",)
    assert "bandwidth" not in args.docker_flags
    assert parse("busybox").bandwidth is None


def test_bad_bandwidth_values_are_one_line_usage_errors() -> None:
    usage_error("--bandwidth ingress=10 busybox", r"^invalid --bandwidth 'ingress=10': '10' needs")
    usage_error("--bandwidth", r"^flag needs an argument: --bandwidth$")
    usage_error(
        "--network host --bandwidth ingress=1mbit busybox",
        r"^--bandwidth needs a CNI network, not --network host$",
    )
