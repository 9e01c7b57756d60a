"""Fixtures of the e2e tests: `rig` (the one harness, tests/e2e/harness.py) and `registry`."""

from __future__ import annotations

import shutil
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Harness, Registry


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, Any]:
    """Keep each phase's report on the item, so `rig` knows whether its test passed."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    """A test's private world. After a passing test: nothing of its cnirun runs is left
    (`assert_clean`). After any test: cleanup, then nothing of the test's is left at all."""
    harness = Harness(tmp_path)
    try:
        try:
            yield harness
            call = getattr(request.node, "rep_call", None)
            if call is not None and call.passed:
                harness.assert_clean()
        finally:
            harness.cleanup()
        leftovers = harness.leftovers()
        assert not leftovers, "left behind after cleanup:\n  " + "\n  ".join(leftovers)
    finally:
        harness.release()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A private registry on 127.0.0.1 for one module; every image it saw is removed after."""
    root = tmp_path_factory.mktemp("registry")
    running = Registry.start(root)
    try:
        yield running
    finally:
        try:
            running.remove_everything()
        finally:
            running.stop()
            shutil.rmtree(root, ignore_errors=True)
    assert running.process.poll() is not None, "the registry is still running"
