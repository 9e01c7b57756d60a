"""cnirun.cli.progress: Docker's pull progress as the docker CLI draws it (no engine needed)."""

from __future__ import annotations

import io

from cnirun.cli.progress import ProgressDisplay, human_size, progress_text


def test_progress_text_and_sizes() -> None:
    assert human_size(0) == "0B"
    assert human_size(999) == "999B"
    assert human_size(1_234_567) == "1.235MB"
    assert progress_text({}) == ""
    assert progress_text({"current": 1_200_000}) == "1.2MB"
    half = progress_text({"current": 1_700_000, "total": 3_400_000})
    assert half == "[" + "=" * 25 + ">" + " " * 25 + "] 1.7MB/3.4MB"
    assert progress_text({"current": 1_700_000, "total": 3_400_000}, bar=False) == "1.7MB/3.4MB"
    assert progress_text({"current": 5, "total": 3}) == "[" + "=" * 50 + ">] 5B"


def test_display_redraws_layer_lines_in_place_on_a_terminal() -> None:
    out = io.StringIO()
    display = ProgressDisplay(out, tty=True, width=120)
    for event in (
        {"status": "Pulling from x", "id": "1"},
        {"status": "Pulling fs layer", "id": "aaa", "progressDetail": {}},
        {"status": "Pulling fs layer", "id": "bbb", "progressDetail": {}},
        {"status": "Downloading", "id": "aaa", "progressDetail": {"current": 1, "total": 2}},
        {"status": "Pull complete", "id": "bbb", "progressDetail": {}},
        {"status": "Digest: sha256:0"},
    ):
        display.show(event)
    assert out.getvalue() == (
        "1: Pulling from x\n"
        "\x1b[2Kaaa: Pulling fs layer\n"
        "\x1b[2Kbbb: Pulling fs layer\n"
        "\x1b[2A\x1b[2K\raaa: Downloading [" + "=" * 25 + ">" + " " * 25 + "] 1B/2B\r\x1b[2B"
        "\x1b[1A\x1b[2K\rbbb: Pull complete\r\x1b[1B"
        "Digest: sha256:0\n"
    )
    narrow = io.StringIO()
    ProgressDisplay(narrow, tty=True, width=40).show(
        {"status": "Downloading", "id": "ccc", "progressDetail": {"current": 1, "total": 2}}
    )
    assert narrow.getvalue() == "\x1b[2Kccc: Downloading 1B/2B\n"
