"""Validation of IDs, names and CNI_ARGS (reference section 4), with libcni's codes and texts."""

from __future__ import annotations

import pytest

from cnirun.cni import validate
from cnirun.errors import CNIError


def error(func: object, *args: object) -> tuple[int, str, str]:
    with pytest.raises(CNIError) as exc:
        func(*args)  # type: ignore[operator]
    return exc.value.code, exc.value.msg, exc.value.details


# -- container IDs and network names ---------------------------------------------------------


@pytest.mark.parametrize("cid", ["c1", "0", "a.b-c_d", "A" * 300, "1-"])
def test_valid_container_ids(cid: str) -> None:
    validate.container_id(cid)


@pytest.mark.parametrize("cid", ["some-%%container-id", "c1\n", "-c1", ".c1", "_c1", "c 1",
                                 "c/1", "é", "c1\x00"])
def test_invalid_container_ids(cid: str) -> None:
    assert error(validate.container_id, cid) == (4, "invalid characters in containerID", cid)


def test_missing_container_id() -> None:
    assert error(validate.container_id, "") == (3, "missing containerID", "")


@pytest.mark.parametrize("name", ["net", "a-b", "my.net_1"])
def test_valid_network_names(name: str) -> None:
    validate.network_name(name)


@pytest.mark.parametrize("name", ["bad net", "../x", "a/b", "net\n", ".", "..", "-x"])
def test_invalid_network_names(name: str) -> None:
    assert error(validate.network_name, name) == (
        7, "invalid characters found in network name", name,
    )


def test_missing_network_name_keeps_its_trailing_colon() -> None:
    assert error(validate.network_name, "") == (7, "missing network name:", "")
    with pytest.raises(CNIError) as exc:
        validate.network_name("")
    assert str(exc.value) == "missing network name:"


# -- interface names -------------------------------------------------------------------------

SPACE_MSG = "interface name contains / or : or whitespace characters"


@pytest.mark.parametrize(
    "ifname",
    ["eth0", "é" * 7, "x" * 15, "eth0.100", "a\x1cb", "a\x1fb", "a\u200bb", "-", "..."],
)
def test_valid_interface_names(ifname: str) -> None:
    validate.interface_name(ifname)


@pytest.mark.parametrize(
    ("ifname", "msg", "details"),
    [
        ("", "interface name is empty", ""),
        ("1234567890123456", "interface name is too long",
         "interface name should be less than 16 characters"),
        ("é" * 8, "interface name is too long",
         "interface name should be less than 16 characters"),
        (".", "interface name is . or ..", ""),
        ("..", "interface name is . or ..", ""),
        ("a/b", SPACE_MSG, ""),
        ("a:b", SPACE_MSG, ""),
        ("a b", SPACE_MSG, ""),
        ("a\tb", SPACE_MSG, ""),
        ("a\nb", SPACE_MSG, ""),
        ("a\vb", SPACE_MSG, ""),
        ("a\x85b", SPACE_MSG, ""),
        ("a\xa0b", SPACE_MSG, ""),
        ("a\u2000b", SPACE_MSG, ""),
        ("a\u200ab", SPACE_MSG, ""),
        ("a\u2028b", SPACE_MSG, ""),
        ("a\u3000b", SPACE_MSG, ""),
    ],
)
def test_invalid_interface_names(ifname: str, msg: str, details: str) -> None:
    assert error(validate.interface_name, ifname) == (4, msg, details)


def test_interface_name_length_counts_undecodable_bytes() -> None:
    raw = b"\xff" * 16
    with pytest.raises(CNIError, match="too long"):
        validate.interface_name(raw.decode(errors="surrogateescape"))
    validate.interface_name((b"\xff" * 15).decode(errors="surrogateescape"))


def test_the_order_of_interface_checks() -> None:
    # length before ". or ..", and both before the character check
    assert error(validate.interface_name, "a/" * 8)[1] == "interface name is too long"


# -- CNI_ARGS --------------------------------------------------------------------------------


def test_parse_cni_args() -> None:
    assert validate.parse_cni_args("") == ()
    assert validate.parse_cni_args("IgnoreUnknown=1;IP=10.1.2.3/24") == (
        ("IgnoreUnknown", "1"), ("IP", "10.1.2.3/24"),
    )
    assert validate.cni_args_pairs(["K1=V1", "K2=V2"]) == (("K1", "V1"), ("K2", "V2"))


@pytest.mark.parametrize("pair", ["A=", "=B", "A=B=C", "A", "", "="])
def test_invalid_cni_args_pairs(pair: str) -> None:
    assert error(validate.cni_args_pair, pair) == (4, f'invalid CNI_ARGS pair "{pair}"', "")
    assert error(validate.cni_args_pairs, [pair])[1] == f'invalid CNI_ARGS pair "{pair}"'


@pytest.mark.parametrize(("text", "bad"), [("A=1;B", "B"), ("A=1;", ""), (";A=1", ""),
                                           ("A=1;B=2=3", "B=2=3")])
def test_parse_cni_args_names_the_bad_pair(text: str, bad: str) -> None:
    assert error(validate.parse_cni_args, text)[1] == f'invalid CNI_ARGS pair "{bad}"'


def test_cni_args_pair_is_go_quoted() -> None:
    assert error(validate.cni_args_pair, 'a"b')[1] == 'invalid CNI_ARGS pair "a\\"b"'


def test_check_cni_args() -> None:
    validate.check_cni_args([("K", "V"), ("IP", "10.1.2.3/24")])
    for pair, shown in [(("A", ""), "A="), (("", "B"), "=B"), (("A", "B=C"), "A=B=C"),
                        (("A;B", "C"), "A;B=C")]:
        assert error(validate.check_cni_args, [pair])[1] == f'invalid CNI_ARGS pair "{shown}"'
