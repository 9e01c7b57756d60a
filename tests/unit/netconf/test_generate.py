"""cnirun.netconf.generate: writing a conflist."""

from __future__ import annotations

import json
import os
from pathlib import Path

from cnirun.netconf import generate


def test_write_conflist_is_atomic_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "x.conflist"
    path.write_text("old")
    generate.write_conflist(str(path), {"name": "x"})
    assert json.loads(path.read_text()) == {"name": "x"}
    assert os.listdir(tmp_path) == ["x.conflist"]
