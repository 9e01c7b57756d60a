"""Helpers only the CNI core's tests use. The `cni_env` fixture itself lives in
tests/unit/conftest.py, because other unit tests use it too."""

from __future__ import annotations

import os
from pathlib import Path

from tests.unit.conftest import CniEnv

RESULTS_DATA = Path(__file__).resolve().parents[2] / "data" / "results"

R1 = {"cniVersion": "1.0.0", "ips": [{"address": "10.1.2.3/24"}]}


def assert_no_leftover_cache(env: CniEnv) -> None:
    results = env.cache / "results"
    leftovers = sorted(os.listdir(results)) if results.is_dir() else []
    assert leftovers == []
