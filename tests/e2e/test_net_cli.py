"""End-to-end bad-input tests of `cnirun net`: broken configs, names, dirs and plugins.

Every case must exit 125 with exactly one stderr line (no traceback) naming the file, field or
plugin at fault, and leave nothing attached; broken plugins sit after a real bridge so the
rollback of a half-done ADD is exercised against the kernel.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.harness import (
    NETNS_DIR,
    PLUGIN_DIR,
    Harness,
    Result,
    assert_gone,
    cnitool_id,
    iptables_lines,
    ns_has_link,
)
from tests.leakcheck import DEFAULT_IPAM_DIR, assert_no_leaks

pytestmark = pytest.mark.e2e

SPY = """#!/bin/sh
# Records each call; answers ADD with an empty 1.0.0 result.
echo "$CNI_COMMAND $CNI_CONTAINERID $CNI_IFNAME" >> "$SPY_LOG"
cat > /dev/null
[ "$CNI_COMMAND" = ADD ] && echo '{"cniVersion":"1.0.0"}'
exit 0
"""


def plugin(rig: Harness, name: str, on_add: str, mode: int = 0o755) -> str:
    """Write a shell plugin to <tmp>/bin that runs `on_add` for ADD and succeeds otherwise."""
    bindir = rig.tmp / "bin"
    bindir.mkdir(exist_ok=True)
    path = bindir / name
    path.write_text(
        f'#!/bin/sh\ncat > /dev/null\nif [ "$CNI_COMMAND" = ADD ]; then\n{on_add}\nfi\nexit 0\n'
    )
    path.chmod(mode)
    return str(bindir)


def assert_one_line_error(proc: Result, *needles: str) -> str:
    """Exit 125, nothing on stdout, one `cnirun: error:` line on stderr holding every needle."""
    assert proc.returncode == 125, proc.explain()
    assert proc.stdout == ""
    assert "Traceback" not in proc.raw_stderr, proc.raw_stderr
    lines = proc.raw_stderr.splitlines()
    assert len(lines) == 1, proc.raw_stderr
    assert lines[0].startswith("cnirun: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


# -- configuration and input errors: no plugin may run ------------------------------------------


@dataclass(frozen=True)
class Case:
    """One bad input. `{dir}`, `{tmp}`, `{ns}` and `{tag}` are filled in at run time."""

    files: dict[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ("add", "spynet", "{ns}")
    env: dict[str, str] = field(default_factory=dict)
    expect: tuple[str, ...] = ()
    cache: bool = True


GOOD = '{"cniVersion":"1.0.0","name":"spynet","plugins":[{"type":"spy"}]}'


def conflist(**top: object) -> str:
    base: dict[str, object] = {"cniVersion": "1.0.0", "name": "spynet"}
    base["plugins"] = [{"type": "spy"}]
    base.update(top)
    return json.dumps(base)


CASES: dict[str, Case] = {
    "truncated-json": Case(
        files={"10-n.conflist": GOOD[:-2]},
        expect=("{dir}/10-n.conflist", "unexpected end of JSON input"),
    ),
    "truncated-json-mid-string": Case(
        files={"10-n.conflist": GOOD[:40]},
        expect=("{dir}/10-n.conflist", "error parsing configuration list"),
    ),
    "malformed-json": Case(
        files={"10-n.conflist": '{"name": "spynet", plugins: []}'},
        expect=("{dir}/10-n.conflist", "error parsing configuration list"),
    ),
    "malformed-single-conf": Case(
        files={"10-n.conf": '{"name": "spynet", "type": spy}'},
        expect=("{dir}/10-n.conf", "error parsing configuration"),
    ),
    "missing-name": Case(
        files={"10-n.conflist": '{"cniVersion":"1.0.0","plugins":[{"type":"spy"}]}'},
        expect=("{dir}/10-n.conflist", "no name"),
    ),
    "name-not-a-string": Case(
        files={"10-n.conflist": conflist(name=5)},
        expect=("{dir}/10-n.conflist", "invalid name type float64"),
    ),
    "cniversion-not-a-string": Case(
        files={"10-n.conflist": conflist(cniVersion=1.0)},
        expect=("{dir}/10-n.conflist", "invalid cniVersion type float64"),
    ),
    "plugins-not-a-list": Case(
        files={"10-n.conflist": conflist(plugins="spy")},
        expect=("{dir}/10-n.conflist", "invalid 'plugins' type string"),
    ),
    "plugins-empty": Case(
        files={"10-n.conflist": conflist(plugins=[])},
        expect=("{dir}/10-n.conflist", "no plugins in list"),
    ),
    "plugin-missing-type": Case(
        files={"10-n.conflist": conflist(plugins=[{"type": "spy"}, {"mtu": 1}])},
        expect=("{dir}/10-n.conflist", "plugin config 1", "missing 'type'"),
    ),
    "plugin-type-not-a-string": Case(
        files={"10-n.conflist": conflist(plugins=[{"type": 7}])},
        expect=("{dir}/10-n.conflist", "plugin config 0", "type"),
    ),
    "capability-not-a-bool": Case(
        files={"10-n.conflist": conflist(plugins=[{"type": "spy", "capabilities": {"mac": 1}}])},
        expect=("{dir}/10-n.conflist", "capabilities.mac"),
    ),
    "ipam-not-an-object": Case(
        files={"10-n.conflist": conflist(plugins=[{"type": "spy", "ipam": "host-local"}])},
        expect=("{dir}/10-n.conflist", "ipam"),
    ),
    "dns-nameservers-not-a-list": Case(
        files={"10-n.conflist": conflist(plugins=[{"type": "spy", "dns": {"nameservers": "x"}}])},
        expect=("{dir}/10-n.conflist", "dns.nameservers"),
    ),
    "disablecheck-bad-value": Case(
        files={"10-n.conflist": conflist(disableCheck="yes")},
        expect=("{dir}/10-n.conflist", 'invalid value "yes" for disableCheck'),
    ),
    "no-config-dir": Case(
        env={"NETCONFPATH": "{tmp}/missing.d"},
        expect=("no net configurations found in {tmp}/missing.d",),
    ),
    "unknown-network": Case(
        files={"10-n.conflist": GOOD},
        args=("add", "nonet{tag}", "{ns}"),
        expect=('no net configuration with name "nonet{tag}" in {dir}',),
    ),
    "invalid-network-name-conf": Case(
        files={"10-n.conf": '{"cniVersion":"1.0.0","name":"bad net","type":"spy"}'},
        args=("add", "bad net", "{ns}"),
        expect=("invalid characters found in network name", "bad net"),
    ),
    "network-name-escaping-dir": Case(
        files={"10-n.conflist": conflist(name="../evil")},
        args=("add", "../evil", "{ns}"),
        expect=("invalid characters found in network name", "../evil"),
    ),
    "invalid-container-id": Case(
        args=("add", "spynet", "{ns}", "--container-id", "bad%id"),
        expect=("invalid characters in containerID", "bad%id"),
    ),
    "invalid-ifname-slash": Case(
        args=("add", "spynet", "{ns}", "--ifname", "a/b"),
        expect=("interface name contains / or : or whitespace characters",),
    ),
    "invalid-ifname-too-long": Case(
        args=("add", "spynet", "{ns}", "--ifname", "abcdefghijklmnop"),
        expect=("interface name is too long",),
    ),
    "invalid-ifname-dotdot": Case(
        args=("add", "spynet", "{ns}", "--ifname", ".."),
        expect=("interface name is . or ..",),
    ),
    "invalid-cni-ifname-env": Case(
        env={"CNI_IFNAME": "a b"},
        expect=("interface name contains / or : or whitespace characters",),
    ),
    "bad-args-flag": Case(
        args=("add", "spynet", "{ns}", "--args", "IgnoreUnknown"),
        expect=('invalid CNI_ARGS pair "IgnoreUnknown"',),
    ),
    "bad-cni-args-env": Case(
        env={"CNI_ARGS": "IgnoreUnknown=1;IP="},
        expect=('invalid CNI_ARGS pair "IP="',),
    ),
    "cap-args-not-json": Case(
        args=("add", "spynet", "{ns}", "--cap-args", '{"portMappings": ['),
        expect=("--cap-args / CAP_ARGS", "not valid JSON"),
    ),
    "cap-args-env-not-an-object": Case(
        env={"CAP_ARGS": "[1, 2]"},
        expect=("--cap-args / CAP_ARGS", "must be a JSON object"),
    ),
    "netns-missing": Case(
        args=("add", "spynet", "/run/netns/cnirun-missing-{tag}"),
        expect=("/run/netns/cnirun-missing-{tag}", "does not exist"),
    ),
    "check-netns-missing": Case(
        args=("check", "spynet", "/run/netns/cnirun-missing-{tag}"),
        expect=("/run/netns/cnirun-missing-{tag}", "does not exist"),
    ),
    "timeout-not-positive": Case(
        args=("add", "spynet", "{ns}", "--timeout", "0"),
        expect=("--timeout",),
    ),
    "unknown-plugin": Case(
        files={"10-n.conflist": conflist(plugins=[{"type": "nosuch{tag}"}])},
        expect=('plugin type="nosuch{tag}" failed (add)', 'failed to find plugin "nosuch{tag}"'),
    ),
    "plugin-type-with-slash": Case(
        files={"10-n.conflist": conflist(plugins=[{"type": "../bin/spy"}])},
        expect=('type="../bin/spy"', "invalid plugin name"),
    ),
    "cache-dir-under-a-file": Case(
        args=("add", "spynet", "{ns}", "--cache-dir", "{tmp}/afile/cache"),
        expect=("{tmp}/afile/cache",),
        cache=False,
    ),
}


def install_spy(rig: Harness) -> tuple[Path, Path]:
    """The spy plugin in the test's own plugin dir; returns (that dir, the spy's log)."""
    bindir = rig.tmp / "bin"
    bindir.mkdir()
    (bindir / "spy").write_text(SPY)
    (bindir / "spy").chmod(0o755)
    return bindir, rig.tmp / "spy.log"


def test_a_broken_file_of_another_network_is_only_a_warning(rig: Harness) -> None:
    """One lookup rule for every command: an unrelated file that does not load is named in a
    warning and never blocks a lookup by name (libcni's lookup would stop on it)."""
    netns = rig.netns()
    bindir, spy_log = install_spy(rig)
    rig.write("00-other.conflist", "{")
    rig.write("50-n.conflist", GOOD)
    env = rig.env(CNI_PATH=str(bindir), SPY_LOG=str(spy_log))
    rig.container_ids.append(cnitool_id(f"{NETNS_DIR}/{netns}"))

    added = rig.net("add", "spynet", netns, env=env)
    assert added.returncode == 0, added.explain()
    assert added.stderr.startswith("cnirun: warning: ") and "00-other.conflist" in added.stderr
    assert "unexpected end of JSON input" in added.stderr
    deleted = rig.net("del", "spynet", netns, env=env)
    assert deleted.returncode == 0, deleted.explain()
    calls = [c.split()[0] for c in spy_log.read_text().splitlines()]
    assert calls == ["ADD", "DEL"]


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(rig: Harness, name: str) -> None:
    case = CASES[name]
    netns = rig.netns()
    bindir, spy_log = install_spy(rig)
    (rig.tmp / "afile").write_text("a regular file, not a directory\n")
    values = {"dir": str(rig.netconf_dir), "tmp": str(rig.tmp), "ns": netns, "tag": rig.tag}

    def fill(text: str) -> str:
        for key, value in values.items():
            text = text.replace("{" + key + "}", value)
        return text

    for filename, text in (case.files or {"10-n.conflist": GOOD}).items():
        rig.write(filename, fill(text))
    env = rig.env(CNI_PATH=str(bindir), SPY_LOG=str(spy_log))
    env.update({k: fill(v) for k, v in case.env.items()})
    rig.container_ids.append(cnitool_id(f"{NETNS_DIR}/{netns}"))

    proc = rig.net(*map(fill, case.args), env=env, cache=case.cache)

    assert_one_line_error(proc, *map(fill, case.expect))
    calls = spy_log.read_text().splitlines() if spy_log.exists() else []
    assert not [c for c in calls if c.startswith("ADD ")], f"a plugin ran ADD: {calls}"
    results = rig.cache_dir / "results"
    assert not results.exists() or not any(results.iterdir())


def test_debug_shows_the_traceback(rig: Harness) -> None:
    """--debug is the one way to get a traceback; the last line is still the error."""
    netns = rig.netns()
    rig.write("10-n.conflist", GOOD[:40])
    proc = rig.net("add", "spynet", netns, debug=True)
    assert proc.returncode == 125
    assert "Traceback" in proc.raw_stderr
    last = proc.raw_stderr.splitlines()[-1]
    assert last.startswith("cnirun: error: ") and "10-n.conflist" in last


# -- broken plugins after a real bridge: the half-done ADD must be rolled back -----------------


@dataclass(frozen=True)
class Broken:
    """A plugin that fails on ADD; `script` is its ADD body, `expect` what stderr must say."""

    script: str
    expect: tuple[str, ...]
    mode: int = 0o755
    timeout: str = "20"


BROKEN: dict[str, Broken] = {
    "hangs": Broken(
        # A grandchild holds stdout open too: the whole process group must be killed.
        script='"$(dirname "$0")/snooze{tag}" 300 & "$(dirname "$0")/snooze{tag}" 300',
        expect=("timed out after 1s",),
        timeout="1",
    ),
    "crashes": Broken(
        script='echo "boom{tag}: cannot frobnicate" >&2; exit 2',
        expect=('netplugin failed: "boom{tag}: cannot frobnicate\\n": exit status 2',),
    ),
    "dies-by-signal": Broken(
        script="kill -SEGV $$",
        expect=("signal: segmentation fault",),
    ),
    "prints-garbage-exit-0": Broken(
        script="echo 'this is not JSON {tag}'",
        expect=("failed to unmarshal raw result",),
    ),
    "prints-garbage-exit-1": Broken(
        script="echo '<html>oops{tag}</html>'; exit 1",
        expect=("error parsing its diagnostic message", "oops{tag}"),
    ),
    "error-json": Broken(
        script='echo \'{{"code":7,"msg":"Invalid Configuration","details":"{tag}"}}\'; exit 1',
        expect=("Invalid Configuration; {tag}",),
    ),
    # Valid JSON Go will not decode, and floods (issue 13 items 5 and 7): one error line,
    # and the bridge before it is still rolled back.
    "prints-a-number-too-large": Broken(
        script="""echo '{{"cniVersion":"1.0.0","ips":[{{"address":"10.1.2.3/24","""
        """"interface":1e400}}]}}'""",
        expect=("failed to unmarshal raw result", "cannot unmarshal number 1e400"),
    ),
    "prints-nan": Broken(
        script="""echo '{{"cniVersion":"1.0.0","dns":NaN}}'""",
        expect=("failed to unmarshal raw result: invalid character 'N'",),
    ),
    "prints-deep-nesting": Broken(
        script="i=0; while [ $i -lt 1000 ]; do printf '['; i=$((i+1)); done",
        expect=("failed to unmarshal raw result: exceeded max depth",),
    ),
    "deep-error-object": Broken(
        script="""printf '{{"msg":'; """
        "i=0; while [ $i -lt 1000 ]; do printf '['; i=$((i+1)); done; exit 1",
        expect=("error parsing its diagnostic message", "exceeded max depth"),
    ),
    "floods-stderr": Broken(
        script="head -c 40000000 /dev/zero >&2; exit 1",
        expect=("wrote more than 16 MiB to stderr and was killed",),
    ),
    "not-executable": Broken(
        script="exit 0",
        expect=("permission denied",),
        mode=0o644,
    ),
}


@pytest.mark.parametrize("name", list(BROKEN))
def test_broken_plugin_after_bridge(rig: Harness, name: str) -> None:
    broken = BROKEN[name]
    ptype = f"bad{rig.tag}"
    bindir = plugin(rig, ptype, broken.script.format(tag=rig.tag), broken.mode)
    os.symlink("/bin/sleep", f"{bindir}/snooze{rig.tag}")
    network, bridge, netns = rig.netname(), rig.bridge(), rig.netns()
    conf = rig.simple_bridge(network, bridge)
    conf["plugins"].append({"type": ptype})
    rig.write("10-b.conflist", conf)
    path = f"{NETNS_DIR}/{netns}"
    cid = cnitool_id(path)
    rig.container_ids.append(cid)
    env = rig.env(CNI_PATH=f"{bindir}:{PLUGIN_DIR}")

    proc = rig.net("add", network, path, "--timeout", broken.timeout, env=env)

    expect = [e.format(tag=rig.tag) for e in broken.expect]
    assert_one_line_error(proc, f'plugin type="{ptype}" failed (add)', *expect)
    if name == "hangs":  # the whole group was killed at the timeout, grandchild and all
        assert_gone(f"snooze{rig.tag}")
    assert_nothing_attached(rig, netns, cid, network, bridge)


def test_unknown_plugin_after_bridge(rig: Harness) -> None:
    """A chain whose second plugin does not exist must not leave the bridge's work behind."""
    network, bridge, netns = rig.netname(), rig.bridge(), rig.netns()
    conf = rig.simple_bridge(network, bridge)
    conf["plugins"].append({"type": f"nosuch{rig.tag}"})
    rig.write("10-u.conflist", conf)
    path = f"{NETNS_DIR}/{netns}"
    cid = cnitool_id(path)
    rig.container_ids.append(cid)

    proc = rig.net("add", network, path)

    assert_one_line_error(proc, f'failed to find plugin "nosuch{rig.tag}"')
    assert_nothing_attached(rig, netns, cid, network, bridge)


def test_cache_write_failure_rolls_back(rig: Harness) -> None:
    """The plugins succeed but the result cannot be cached: ADD is undone, error names the path."""
    network, bridge, netns = rig.netname(), rig.bridge(), rig.netns()
    rig.write("10-c.conflist", rig.simple_bridge(network, bridge))
    (rig.cache_dir / "results").write_text("not a directory\n")
    path = f"{NETNS_DIR}/{netns}"
    cid = cnitool_id(path)
    rig.container_ids.append(cid)

    proc = rig.net("add", network, path)

    assert_one_line_error(
        proc, f'failed to set network "{network}" cached result', str(rig.cache_dir / "results")
    )
    assert_nothing_attached(rig, netns, cid, network, bridge)
    (rig.cache_dir / "results").unlink()


def assert_nothing_attached(rig: Harness, netns: str, cid: str, network: str, bridge: str) -> None:
    """No interface in the netns, no reservation, rule, cache file or bridge port for `cid`."""
    assert not ns_has_link(netns, "eth0"), "the bridge's veth was left in the netns"
    ipam = Path(DEFAULT_IPAM_DIR) / network
    held = [p.name for p in ipam.glob("*") if p.is_file() and cid in p.read_text()]
    assert held == [], f"host-local still holds {held} for {cid}"
    assert iptables_lines(cid) == []
    results = rig.cache_dir / "results"
    if results.is_dir():
        assert not list(results.glob(f"*-{cid}-*"))
    assert_no_leaks([cid], bridges=[bridge], cache_dir=rig.cache_dir)


def test_unreadable_netconf_file_is_named(rig: Harness) -> None:
    """A config file that cannot be read (a dangling symlink) is named in the error."""
    netns = rig.netns()
    (rig.netconf_dir / "10-n.conflist").symlink_to(rig.tmp / "gone.conflist")
    proc = rig.net("add", "spynet", netns)
    assert_one_line_error(proc, f"{rig.netconf_dir}/10-n.conflist")
    assert stat.S_ISLNK(os.lstat(rig.netconf_dir / "10-n.conflist").st_mode)
