"""The command line as a Docker user meets it (issue 14): unknown first words never run
anything, and the Docker verbs (logs, exec, port, top, kill, wait, version) work on a real
detached sandbox. Real Docker and plugins; each test ends with nothing of its own left."""

from __future__ import annotations

import subprocess

import pytest

from tests.e2e.harness import LABEL_SANDBOX, Harness, free_port, one_error_line, sh, wait_for

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(
    ("argv", "close"),
    [(["netwrok", "ls"], "network"), (["lgos", "web"], "logs"), (["hepl"], "help")],
)
def test_unknown_first_words_create_nothing(rig: Harness, argv: list[str], close: str) -> None:
    run = rig.run(*argv, debug=True)
    assert run.returncode == 125, run.explain()
    first, second = run.stderr.splitlines()
    assert first.startswith(f"cnirun: '{argv[0]}' is not a cnirun command"), run.explain()
    assert second == f"Did you mean '{close}'?"
    # The engine was only asked whether such an image exists: no pull, no infra, no CNI.
    requests = [ln for ln in run.debug.splitlines() if "docker: " in ln]
    assert all(" GET /" in ln for ln in requests), requests
    assert any(f"/images/{argv[0]}/json" in ln for ln in requests), requests
    assert list(rig.netconf_dir.iterdir()) == []  # not even the default network was written
    rig.assert_nothing_created(run)


def test_a_local_image_without_flags_still_runs(rig: Harness) -> None:
    rig.network()
    run = rig.run("busybox", "true", debug=True)  # no flags: found locally, so an image
    assert run.returncode == 0, run.explain()
    [sandbox_id] = run.sandbox_ids
    listed = sh("docker", "ps", "-aq", "--filter", f"label={LABEL_SANDBOX}={sandbox_id}")
    workload = listed.stdout.split()
    assert len(workload) == 1
    sh("docker", "rm", *workload)  # no --rm: the exited workload stays, as with docker run
    rig.assert_clean([sandbox_id])


def test_docker_verbs_on_a_detached_sandbox(rig: Harness) -> None:
    rig.network(portmap=True)
    name = rig.name()
    port = free_port()
    started = rig.run(
        "-d", "--name", name, "-p", f"{port}:80", *rig.label,
        "busybox", "sh", "-c", "echo hello-logs; echo second; exec sleep 120",
    )  # fmt: skip
    assert started.returncode == 0, started.explain()
    workload_id = started.stdout.strip()
    [sandbox_id] = rig.records()

    def logged() -> bool:
        return "second" in rig.run("logs", name).stdout

    wait_for(logged, 15, "the workload's output")
    assert rig.run("logs", name).stdout.splitlines() == ["hello-logs", "second"]
    assert rig.run("logs", "--tail", "1", workload_id[:12]).stdout == "second\n"

    piped = rig.run("exec", "-i", name, "sh", "-c", "cat; hostname", input="piped\n")
    assert piped.returncode == 0 and piped.stdout.startswith("piped\n"), piped.explain()
    failed = rig.run("exec", name, "sh", "-c", "exit 3")
    assert failed.returncode == 3  # docker exec's status, as docker gives it
    term = rig.terminal("exec", "-it", name, "sh", TERM="xterm")  # a real terminal
    try:
        term.expect(b"# ", 30)
        term.send(b"echo $((6*7)); tty\r")
        term.expect(b"42\r\n/dev/pts/")
        term.send(b"exit 4\r")
        assert term.exit_code() == 4, bytes(term.seen)
    finally:
        term.close()

    assert rig.run("port", name).stdout == f"80/tcp -> 0.0.0.0:{port}\n"
    assert rig.run("port", sandbox_id, "80").stdout == f"80/tcp -> 0.0.0.0:{port}\n"
    top = rig.run("top", name)
    assert top.returncode == 0 and "sleep 120" in top.stdout, top.explain()

    missing = rig.run("logs", name + "x")
    assert missing.returncode == 125
    assert f'did you mean "{name}"?' in missing.stderr, missing.explain()

    for words in (f"cnirun logs {name[:-1]}", "cnirun inspect "):  # <TAB> knows the sandbox
        env = rig.env(_CNIRUN_COMPLETE="complete_bash", COMP_WORDS=words, COMP_CWORD="2")
        completed = rig.run(env=env, debug=False)
        assert name in completed.stdout.split(), completed.explain()

    killed = rig.run("kill", "-s", "KILL", name)
    assert killed.returncode == 0 and killed.stdout.strip() == workload_id, killed.explain()
    waited = rig.run("wait", name)
    assert (waited.returncode, waited.stdout) == (0, "137\n"), waited.explain()

    # The exited workload keeps its sandbox (listed by `ps -a`) until it is removed.
    assert rig.run("ps", "-aq").stdout.split() == [workload_id[:12]]
    assert rig.run("rm", name).returncode == 0
    rig.assert_clean([sandbox_id])


def test_version_names_docker_and_the_plugins(rig: Harness) -> None:
    run = rig.run("version")
    assert run.returncode == 0, run.explain()
    engine = subprocess.run(
        ["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True, text=True
    ).stdout.strip()
    lines = run.stdout.splitlines()
    assert lines[0].startswith("cnirun:")
    assert any(ln.startswith("docker engine:") and engine in ln for ln in lines), run.stdout
    assert any(ln.startswith("docker client:") for ln in lines), run.stdout
    assert any(ln.startswith("CNI plugin:") and "/usr/lib/cni/bridge" in ln for ln in lines)
    rig.assert_clean()


def test_network_errors_say_what_exists(rig: Harness) -> None:
    net = rig.network()
    typo = rig.run("--rm", "--network", net.name + "x", *rig.label, "busybox", "true")
    assert typo.returncode == 125, typo.explain()
    line = one_error_line(typo.stderr)
    assert f'did you mean "{net.name}"? networks: {net.name})' in line, line
    assert line.endswith("see `cnirun network ls`")
    rig.assert_nothing_created(typo)
    for docker_name in ("bridge", "default"):
        run = rig.run("--rm", "--network", docker_name, *rig.label, "busybox", "true")
        assert run.returncode == 125, run.explain()
        line = one_error_line(run.stderr)
        assert "cnirun's networks are CNI configs, not Docker networks" in line, line
        assert "`cnirun network ls`" in line
        rig.assert_nothing_created(run)
    rig.assert_clean()


def test_what_docker_would_refuse_is_found_before_anything_exists(rig: Harness) -> None:
    """Issue 14, item 4: a container name in use and an image missing under --pull=never."""
    rig.network()
    name = rig.name()
    sh("docker", "create", "--name", name, *rig.label, "busybox", "true")
    taken = rig.run("--rm", "--name", name, *rig.label, "busybox", "true", debug=True)
    assert taken.returncode == 125, taken.explain()
    assert one_error_line(taken.stderr).startswith(
        f'cnirun: error: Conflict. The container name "/{name}" is already in use'
    )
    sh("docker", "rm", name)
    rig.assert_nothing_created(taken)
    missing = rig.run("--rm", "--pull=never", *rig.label, f"busybox:no-{rig.tag}", "true",
                      debug=True)  # fmt: skip
    assert missing.returncode == 125, missing.explain()
    assert f"No such image: busybox:no-{rig.tag}" in one_error_line(missing.stderr)
    rig.assert_nothing_created(missing)
    # --ip outside the host-local range of the network's config.
    network = rig.netname()
    conf = rig.simple_bridge(network, rig.bridge())
    conf["plugins"][0]["capabilities"] = {"ips": True}
    rig.write(f"20-{network}.conflist", conf)
    outside = rig.run("--rm", "--network", network, "--ip", "192.0.2.1", *rig.label,
                      "busybox", "true", debug=True)  # fmt: skip
    assert outside.returncode == 125, outside.explain()
    assert "--ip 192.0.2.1 is outside the address range of network" in outside.stderr
    rig.assert_nothing_created(outside)
    # A flag newer than the engine's API (or the client) is found before anything exists.
    api = sh("docker", "version", "--format", "{{.Server.APIVersion}}").stdout.strip()
    if tuple(int(p) for p in api.split(".")) < (1, 43):
        annotated = rig.run("--rm", "--annotation", "a=b", *rig.label, "busybox", "true",
                            debug=True)  # fmt: skip
        assert annotated.returncode == 125, annotated.explain()
        assert "--annotation needs Docker engine API 1.43" in one_error_line(annotated.stderr)
        rig.assert_nothing_created(annotated)
    rig.assert_clean()


def test_a_slow_plugin_gets_a_note_on_a_terminal_only(rig: Harness) -> None:
    cni_path = rig.fake_plugin()
    rig.network(extra=[{"type": "fake", "fake": {"ADD": {"sleep": 2.6}}}])
    rig.overrides["CNI_PATH"] = cni_path
    note = "still waiting for the CNI plugins of network"
    code, screen = rig.run_on_pty("--rm", *rig.label, "busybox", "true")
    assert code == 0, screen
    assert note in screen, screen
    piped = rig.run("--rm", *rig.label, "busybox", "true")
    assert piped.returncode == 0 and note not in piped.raw_stderr, piped.explain()
    rig.assert_clean()
