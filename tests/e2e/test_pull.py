"""Image pulls through cnirun, against a private registry on 127.0.0.1 (Debian's docker-registry).

The registry is started by this module with its own config and storage in a temp dir. Every
image it serves is built here with a random blob (so its layer is new to the engine), pushed,
and removed locally, so that cnirun or docker really has to pull it. Each test ends by removing
every image it created or pulled and by checking that its sandboxes left nothing behind.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import re
import shutil
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cnirun.docker.pause import pause_binary
from tests.e2e.common import split_stderr
from tests.leakcheck import assert_no_leaks

PLUGINS = "/usr/lib/cni"
REGISTRY_BIN = "docker-registry"
INFRA_RE = re.compile(r"cnirun-infra-([0-9a-f]{32})")
BAR_RE = re.compile(r"\[=*>\s*\] [\d.]+[kMG]?B/[\d.]+[kMG]?B")
CURSOR_UP_RE = re.compile(r"\x1b\[\d+A")
BLOB_SIZE = 3_000_000
# The legacy builder works offline with local base images whether or not buildx is installed.
BUILD_ENV = dict(os.environ, DOCKER_BUILDKIT="0")


def sh(
    args: list[str], check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False, env=env)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr}")
    return done


def image_id(ref: str) -> str | None:
    found = sh(["docker", "image", "inspect", "-f", "{{.Id}}", ref], check=False)
    return found.stdout.strip() if found.returncode == 0 else None


# -- the registry -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as answer:
            return int(answer.status) == 200
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class Registry:
    """A running private registry, and every local image the tests made for or from it."""

    host: str
    root: Path
    process: subprocess.Popen[bytes]
    refs: set[str] = field(default_factory=set)
    ids: set[str] = field(default_factory=set)

    def build(self, repo: str, tag: str, infra: bool) -> str:
        """Build `host/repo:tag` locally (an infra image blocks forever); return its image ID."""
        ref = f"{self.host}/{repo}:{tag}"
        context = self.root / "build" / uuid.uuid4().hex
        context.mkdir(parents=True)
        (context / "blob").write_bytes(os.urandom(BLOB_SIZE))
        if infra:
            (context / "pause").write_bytes(pause_binary())
            (context / "pause").chmod(0o755)
            steps = 'FROM scratch\nCOPY pause /pause\nCOPY blob /blob\nENTRYPOINT ["/pause"]\n'
        else:
            steps = "FROM busybox:latest\nCOPY blob /blob\n"
        (context / "Dockerfile").write_text(steps)
        self.refs.add(ref)
        sh(["docker", "build", "-q", "-t", ref, str(context)], env=BUILD_ENV)
        shutil.rmtree(context)
        built = image_id(ref)
        assert built is not None
        self.ids.add(built)
        return built

    def push(self, repo: str, tag: str) -> None:
        sh(["docker", "push", "-q", f"{self.host}/{repo}:{tag}"])

    def publish(self, repo: str, tag: str, infra: bool) -> str:
        """Build, push and remove locally: the ref can only come back by a pull."""
        self.build(repo, tag, infra)
        self.push(repo, tag)
        ref = f"{self.host}/{repo}:{tag}"
        self.remove(ref)
        return ref

    def remove(self, *refs: str) -> None:
        for ref in refs:
            sh(["docker", "rmi", "-f", ref], check=False)
            assert image_id(ref) is None, f"image {ref} is still there"

    def remove_everything(self) -> None:
        """Every image this module made or pulled (tags first, then stale IDs they left)."""
        self.remove(*sorted(self.refs))
        for stale in sorted(self.ids):
            sh(["docker", "rmi", "-f", stale], check=False)
        leftovers = sh(
            ["docker", "images", "-q", "--filter", f"reference={self.host}/*/*"]
        ).stdout.split()
        leftovers += [i for i in self.ids if image_id(i) is not None]
        assert not leftovers, f"images left behind: {leftovers}"


def _start_registry(root: Path) -> Registry:
    binary = shutil.which(REGISTRY_BIN)
    if binary is None:
        pytest.fail(
            f"{REGISTRY_BIN} is not installed (apt-get install docker-registry, or `make setup`)",
            pytrace=False,
        )
    for _ in range(5):  # another process may grab the free port before the registry does
        port = _free_port()
        config = root / "config.yml"
        storage = root / "storage"
        config.write_text(
            "version: 0.1\n"
            "log: {level: error, accesslog: {disabled: true}}\n"
            f"storage: {{filesystem: {{rootdirectory: '{storage}'}}, delete: {{enabled: true}}}}\n"
            f"http: {{addr: '127.0.0.1:{port}'}}\n"
        )
        with open(root / "registry.log", "ab") as log:  # the child keeps its own copy
            process = subprocess.Popen(
                [binary, "serve", str(config)], stdout=log, stderr=log, start_new_session=True
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and process.poll() is None:
            if _answers(f"http://127.0.0.1:{port}/v2/"):
                return Registry(host=f"127.0.0.1:{port}", root=root, process=process)
            time.sleep(0.1)
        _stop(process)
    pytest.fail(f"{REGISTRY_BIN} did not start: {(root / 'registry.log').read_text()[-500:]}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    root = tmp_path_factory.mktemp("registry")
    running = _start_registry(root)
    try:
        yield running
    finally:
        try:
            running.remove_everything()
        finally:
            _stop(running.process)
            shutil.rmtree(root, ignore_errors=True)
    assert running.process.poll() is not None, "the registry is still running"


# -- a private cnirun world -------------------------------------------------------------------


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str  # what a user sees (DEBUG lines taken out)
    debug: str
    sandbox_ids: list[str]


@dataclass
class Env:
    """Private netconf, state and cache dirs and one bridge network, all named after `tag`."""

    root: Path
    tag: str
    subnet: str
    sandbox_ids: set[str] = field(default_factory=set)

    @property
    def network(self) -> str:
        return f"pull{self.tag}"

    @property
    def bridge(self) -> str:
        return f"pl{self.tag}"

    @property
    def state_dir(self) -> Path:
        return self.root / f"state-{self.tag}"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    def environ(self) -> dict[str, str]:
        return dict(
            os.environ,
            NETCONFPATH=str(self.root / "net.d"),
            CNI_PATH=PLUGINS,
            CNIRUN_STATE_DIR=str(self.state_dir),
            CNIRUN_CACHE_DIR=str(self.cache_dir),
        )

    def argv(self, *args: str) -> list[str]:
        # The label marks our workloads; the infra containers carry our state dir's path.
        return [sys.executable, "-m", "cnirun", "--label", f"io.cnirun.test={self.tag}", *args]

    def run(self, *args: str, timeout: float = 180) -> Run:
        """cnirun with --debug (to learn the sandbox IDs); DEBUG lines are split off."""
        done = subprocess.run(
            self.argv("--debug", *args),
            env=self.environ(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        user, debug = split_stderr(done.stderr)
        ids = list(dict.fromkeys(INFRA_RE.findall(debug)))
        self.sandbox_ids.update(ids)
        return Run(done.returncode, done.stdout, user, debug, ids)

    def run_on_pty(self, *args: str, columns: int = 160, timeout: float = 180) -> tuple[int, str]:
        """cnirun with stderr on a terminal `columns` wide; return (status, terminal output)."""
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
        output = io.BytesIO()

        def drain() -> None:
            while True:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: every writer has closed the terminal
                    return
                if not chunk:
                    return
                output.write(chunk)

        reader = threading.Thread(target=drain)
        reader.start()
        try:
            proc = subprocess.Popen(
                self.argv(*args),
                env=self.environ(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=slave,
            )
        finally:
            os.close(slave)
        try:
            proc.wait(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            reader.join(timeout=30)
            os.close(master)
        return proc.returncode, output.getvalue().decode(errors="replace")

    def infra_containers(self) -> list[str]:
        listed = sh(
            ["docker", "ps", "-aq", "--filter", f"label=io.cnirun.state-dir={self.state_dir}"]
        )
        return listed.stdout.split()

    def assert_clean(self) -> None:
        records = self.state_dir / "sandboxes"
        assert not records.exists() or not list(records.iterdir()), "sandbox records left"
        results = self.cache_dir / "results"
        assert not results.exists() or not list(results.iterdir()), "CNI cache files left"
        ipam = Path("/var/lib/cni/networks") / self.network
        taken = [p.name for p in ipam.iterdir() if p.name[0].isdigit()] if ipam.exists() else []
        assert taken == [], f"IP reservations left: {taken}"
        assert self.infra_containers() == [], "infra containers left"
        assert_no_leaks(
            [self.tag, *self.sandbox_ids],
            bridges=[self.bridge],
            netns_names=[f"cnirun-{i}" for i in self.sandbox_ids],
            cache_dir=str(self.cache_dir),
        )


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    tag = uuid.uuid4().hex[:8]
    world = Env(root=tmp_path, tag=tag, subnet=f"10.237.{int(tag[:2], 16)}.0/24")
    (tmp_path / "net.d").mkdir()
    conf = {
        "cniVersion": "1.0.0",
        "name": world.network,
        "plugins": [
            {
                "type": "bridge",
                "bridge": world.bridge,
                "isGateway": True,
                "ipMasq": True,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": world.subnet}]]},
            }
        ],
    }
    (tmp_path / "net.d" / f"10-{world.network}.conflist").write_text(json.dumps(conf))
    yield world
    # Whatever a failed test left behind: reclaim it, then drop the bridge.
    subprocess.run([sys.executable, "-m", "cnirun", "gc"], env=world.environ(), capture_output=True)
    for container in world.infra_containers():
        subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False)
    subprocess.run(["ip", "link", "del", world.bridge], capture_output=True, check=False)
    # host-local keeps a network's directory (lock, last reservation) after its last release.
    shutil.rmtree(Path("/var/lib/cni/networks") / world.network, ignore_errors=True)


# -- the tests --------------------------------------------------------------------------------


def test_missing_infra_image_is_pulled_with_live_progress_on_a_terminal(
    registry: Registry, env: Env
) -> None:
    ref = registry.publish(f"cnirun-test/pause-{env.tag}", "1", infra=True)
    status, screen = env.run_on_pty("--rm", "--infra-image", ref, "busybox", "true")
    assert status == 0, screen
    assert f"Unable to find infra image '{ref}' locally" in screen
    assert "Pulling fs layer" in screen and "Pull complete" in screen, screen
    assert CURSOR_UP_RE.search(screen), f"no in-place redraw: {screen!r}"
    assert BAR_RE.search(screen), f"no progress bar: {screen!r}"
    assert f"Status: Downloaded newer image for {ref}" in screen
    assert image_id(ref) is not None

    # Present now: `missing` does not pull again, and the run prints nothing of its own.
    again = env.run("--rm", "--infra-image", ref, "busybox", "true")
    assert again.returncode == 0, again.stderr
    assert again.stderr == ""
    registry.remove(ref)
    env.assert_clean()


def test_pull_without_a_terminal_prints_status_lines_only(registry: Registry, env: Env) -> None:
    ref = registry.publish(f"cnirun-test/pause-{env.tag}", "1", infra=True)
    run = env.run("--rm", "--infra-image", ref, "busybox", "true")
    assert run.returncode == 0, run.stderr
    lines = run.stderr.splitlines()
    assert lines[0] == f"Unable to find infra image '{ref}' locally"
    assert lines[1] == "1: Pulling from " + f"cnirun-test/pause-{env.tag}"
    assert any(line.endswith(": Pull complete") for line in lines), run.stderr
    assert lines[-1] == f"Status: Downloaded newer image for {ref}"
    assert "\x1b" not in run.stderr and not BAR_RE.search(run.stderr)
    assert not any("Downloading" in line or "Extracting" in line for line in lines)
    registry.remove(ref)
    env.assert_clean()


def test_quiet_pull_shows_nothing(registry: Registry, env: Env) -> None:
    ref = registry.publish(f"cnirun-test/pause-{env.tag}", "1", infra=True)
    status, screen = env.run_on_pty("--rm", "-q", "--infra-image", ref, "busybox", "true")
    assert status == 0, screen
    assert screen == "", repr(screen)
    assert image_id(ref) is not None, "-q must still pull"
    registry.remove(ref)
    env.assert_clean()


def test_missing_workload_image_is_pulled_by_docker_through_cnirun(
    registry: Registry, env: Env
) -> None:
    ref = registry.publish(f"cnirun-test/box-{env.tag}", "1", infra=False)
    run = env.run("--rm", ref, "sh", "-c", "wc -c < /blob")
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == [str(BLOB_SIZE)]
    assert f"Unable to find image '{ref}' locally" in run.stderr
    assert "Pull complete" in run.stderr
    assert f"Status: Downloaded newer image for {ref}" in run.stderr
    assert len(run.sandbox_ids) == 1

    # With -q, docker pulls without a word.
    registry.remove(ref)
    quiet = env.run("--rm", "-q", ref, "true")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""
    assert image_id(ref) is not None
    registry.remove(ref)
    env.assert_clean()


def test_pull_never_with_a_missing_infra_image_creates_nothing(
    registry: Registry, env: Env, tmp_path: Path
) -> None:
    ref = registry.publish(f"cnirun-test/pause-{env.tag}", "1", infra=True)
    run = env.run(
        "--rm", "--pull", "never", "--infra-image", ref,
        "-v", f"{tmp_path}:/out", "busybox", "touch", "/out/ran",
    )  # fmt: skip
    assert run.returncode == 125
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("cnirun: error: ") and ref in lines[0] and "--pull=never" in lines[0]
    assert run.sandbox_ids == []
    assert not (tmp_path / "ran").exists(), "the workload ran"
    assert image_id(ref) is None, "--pull never pulled"
    assert not env.state_dir.exists() or not list(env.state_dir.rglob("*.json"))
    env.assert_clean()


def test_pull_failure_is_reported_in_one_error_line(registry: Registry, env: Env) -> None:
    ref = f"{registry.host}/cnirun-test/absent-{env.tag}:1"
    registry.refs.add(ref)
    run = env.run("--rm", "--infra-image", ref, "busybox", "true")
    assert run.returncode == 125
    lines = run.stderr.strip().splitlines()
    assert lines[0] == f"Unable to find infra image '{ref}' locally"
    assert len(lines) == 2, run.stderr
    assert lines[1].startswith(f"cnirun: error: cannot pull infra image {ref}: ")
    assert "not found" in lines[1] or "unknown" in lines[1], lines[1]
    assert run.sandbox_ids == []
    env.assert_clean()


def test_pull_always_pulls_a_newer_infra_image(registry: Registry, env: Env) -> None:
    repo, box_repo = f"cnirun-test/pause-{env.tag}", f"cnirun-test/box-{env.tag}"
    ref = f"{registry.host}/{repo}:1"
    box = registry.publish(box_repo, "1", infra=False)
    old = registry.build(repo, "1", infra=True)
    registry.push(repo, "1")
    new = registry.build(repo, "1", infra=True)
    registry.push(repo, "1")
    # The registry has the new image; the engine keeps the old one under the same name.
    sh(["docker", "tag", old, ref])
    sh(["docker", "rmi", new])
    assert image_id(ref) == old

    # `--pull always` reaches docker too, so the workload comes from the registry as well.
    run = env.run("--rm", "--pull", "always", "--infra-image", ref, box, "true")
    assert run.returncode == 0, run.stderr
    assert f"1: Pulling from {repo}" in run.stderr
    assert f"Status: Downloaded newer image for {ref}" in run.stderr
    assert image_id(ref) == new

    again = env.run("--rm", "--pull", "always", "--infra-image", ref, box, "true")
    assert again.returncode == 0, again.stderr
    assert f"Status: Image is up to date for {ref}" in again.stderr
    assert len(env.sandbox_ids) == 2
    registry.remove(ref, box)
    sh(["docker", "rmi", old], check=False)
    assert image_id(old) is None
    env.assert_clean()


def test_builtin_pause_image_is_never_pulled(env: Env) -> None:
    run = env.run("--rm", "--pull", "never", "busybox", "true")
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    assert "docker: GET /images/cnirun/pause:1/json" in run.debug
    assert "docker: pull" not in run.debug
    env.assert_clean()
