"""Config discovery and loading (reference sections 1 and 7, scenarios 1-8).

Every load error carries libcni's text, prefixed by cnirun with the path of the file at fault.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest

from cnirun.cni import config
from cnirun.cni.config import conf_files, list_from_bytes, load_network
from cnirun.cni.version import VersionError, parse_version
from cnirun.errors import CNIError, ConfigError, NetworkNotFoundError, NoConfigsFoundError
from tests.unit.conftest import CniEnv

LIST_PREFIX = "error parsing configuration list: "


def load_error(env: CniEnv, name: str = "net") -> str:
    with pytest.raises(ConfigError) as exc:
        env.load(name)
    return str(exc.value)


def plugin_types(env: CniEnv, name: str = "net") -> list[str]:
    return [p.type for p in env.load(name).plugins]


# -- scenario 1: precedence and sort order ---------------------------------------------------


def test_lists_beat_single_configs_and_first_in_sort_order_wins(cni_env: CniEnv) -> None:
    cni_env.write("05-a.conf", {"name": "a", "type": "fake", "tag": "conf"})
    cni_env.write("20-a.conflist", {"name": "a", "plugins": [{"type": "fake", "tag": "20"}]})
    cni_env.write("30-a.conflist", {"name": "a", "plugins": [{"type": "fake", "tag": "30"}]})
    net = cni_env.load("a")
    assert [p.raw["tag"] for p in net.plugins] == ["20"]
    assert net.source == str(cni_env.netconf / "20-a.conflist")
    assert net.bytes == (cni_env.netconf / "20-a.conflist").read_bytes()


def test_sort_is_byte_order_of_full_paths(cni_env: CniEnv) -> None:
    # "10-a" < "9-b" as bytes, although 9 < 10 as numbers.
    cni_env.write("9-b.conflist", {"name": "x", "plugins": [{"type": "fake", "tag": "9"}]})
    cni_env.write("10-a.conflist", {"name": "x", "plugins": [{"type": "fake", "tag": "10"}]})
    assert [p.raw["tag"] for p in cni_env.load("x").plugins] == ["10"]


def test_files_after_the_first_match_are_never_read(cni_env: CniEnv) -> None:
    cni_env.write("10-ok.conflist", {"name": "ok", "plugins": [{"type": "fake"}]})
    cni_env.write("20-bad.conflist", "{")
    cni_env.write("30-bad.conf", "{")
    assert plugin_types(cni_env, "ok") == ["fake"]


def test_conf_files_are_searched_whenever_no_list_matched(cni_env: CniEnv) -> None:
    cni_env.write("10-other.conflist", {"name": "other", "plugins": [{"type": "fake"}]})
    cni_env.write("90-n.conf", {"name": "n", "type": "fake"})
    assert plugin_types(cni_env, "n") == ["fake"]


# -- scenario 2: .json fallback and upconversion ---------------------------------------------


def test_json_fallback_upconverts_and_drops_top_level_flags(cni_env: CniEnv) -> None:
    body = {"name": "n", "type": "fake", "cniVersion": "1.0.0", "disableCheck": True, "x": 1}
    cni_env.write("50-n.json", body)
    net = cni_env.load("n")
    assert len(net.plugins) == 1
    assert net.cni_version == "1.0.0"
    assert net.disable_check is False
    # list.Bytes is the generated list (compact, sorted keys), not the file.
    assert json.loads(net.bytes) == {"cniVersion": "1.0.0", "name": "n", "plugins": [body]}
    assert net.bytes == (
        b'{"cniVersion":"1.0.0","name":"n","plugins":[{"cniVersion":"1.0.0",'
        b'"disableCheck":true,"name":"n","type":"fake","x":1}]}'
    )
    cni_env.cni().check_network_list(net, cni_env.rt())
    (call,) = cni_env.calls()
    assert call["env"]["CNI_COMMAND"] == "CHECK"  # the dropped flag did not stop CHECK
    assert call["stdin"]["x"] == 1


def test_upconverted_conf_without_name_or_version(cni_env: CniEnv) -> None:
    cni_env.write("50-x.conf", {"type": "fake"})
    net = cni_env.load("")
    assert (net.name, net.cni_version) == ("", "")
    assert json.loads(net.bytes) == {"cniVersion": "", "name": "", "plugins": [{"type": "fake"}]}


def test_upconverted_conf_does_not_load_a_subdirectory(cni_env: CniEnv) -> None:
    cni_env.write("50-n.conf", {"name": "n", "type": "fake"})
    cni_env.write("10-x.conf", {"type": "x"}, directory=cni_env.netconf / "n")
    assert plugin_types(cni_env, "n") == ["fake"]


def test_upconversion_bytes_are_utf8_with_go_html_escapes(cni_env: CniEnv) -> None:
    cni_env.write("50-n.conf", {"name": "n", "type": "fake", "note": "é<&>"})
    net = cni_env.load("n")
    assert "é".encode() in net.bytes
    assert b"\\u003c\\u0026\\u003e" in net.bytes
    assert json.loads(net.bytes)["plugins"][0]["note"] == "é<&>"


# -- scenario 3: a broken file stops the lookup ----------------------------------------------


def test_broken_file_stops_the_whole_lookup(cni_env: CniEnv) -> None:
    bad = cni_env.write("00-bad.conflist", "{")
    cni_env.write("50-ok.conflist", {"name": "ok", "plugins": [{"type": "fake"}]})
    assert load_error(cni_env, "ok") == f"{bad}: {LIST_PREFIX}unexpected end of JSON input"
    bad.rename(cni_env.netconf / "60-bad.conflist")
    assert plugin_types(cni_env, "ok") == ["fake"]


def test_broken_conf_stops_the_fallback_lookup(cni_env: CniEnv) -> None:
    bad = cni_env.write("10-bad.conf", "{")
    cni_env.write("20-n.conf", {"name": "n", "type": "fake"})
    text = load_error(cni_env, "n")
    assert text == f"{bad}: error parsing configuration: unexpected end of JSON input"


def test_go_wording_of_json_syntax_errors(cni_env: CniEnv) -> None:
    bad = cni_env.write("10-bad.conflist", "oops")
    text = load_error(cni_env)
    assert text == f"{bad}: {LIST_PREFIX}invalid character 'o' looking for beginning of value"


def test_unreadable_entry_stops_the_lookup(cni_env: CniEnv, tmp_path: Path) -> None:
    # A symlink to a directory is not skipped (DirEntry.IsDir is false) and fails to read.
    (tmp_path / "somedir").mkdir()
    link = cni_env.netconf / "10-dir.conflist"
    link.symlink_to(tmp_path / "somedir")
    cni_env.write("20-ok.conflist", {"name": "net", "plugins": [{"type": "fake"}]})
    text = load_error(cni_env)
    assert text.startswith(f"{link}: error reading")


# -- scenario 4: not found -------------------------------------------------------------------


def test_missing_directory(cni_env: CniEnv) -> None:
    missing = cni_env.root / "nope"
    with pytest.raises(NoConfigsFoundError) as exc:
        load_network(str(missing), "net")
    assert str(exc.value) == f"no net configurations found in {missing}"


def test_empty_directory(cni_env: CniEnv) -> None:
    with pytest.raises(NoConfigsFoundError) as exc:
        cni_env.load("net")
    assert str(exc.value) == f"no net configurations found in {cni_env.netconf}"


def test_unknown_name_with_only_lists_is_not_found(cni_env: CniEnv) -> None:
    cni_env.write("10-a.conflist", {"name": "a", "plugins": [{"type": "fake"}]})
    with pytest.raises(NetworkNotFoundError) as exc:
        cni_env.load("zz")
    assert str(exc.value) == f'no net configuration with name "zz" in {cni_env.netconf}'


def test_unknown_name_with_conf_files_is_not_found(cni_env: CniEnv) -> None:
    cni_env.write("10-a.conf", {"name": "a", "type": "fake"})
    with pytest.raises(NetworkNotFoundError) as exc:
        cni_env.load("zz")
    assert str(exc.value) == f'no net configuration with name "zz" in {cni_env.netconf}'


def test_subdirectories_are_not_searched(cni_env: CniEnv) -> None:
    cni_env.write("50-n.conflist", {"name": "n", "plugins": [{"type": "fake"}]},
                  directory=cni_env.netconf / "sub")
    with pytest.raises(NoConfigsFoundError):
        cni_env.load("n")
    cni_env.write("10-a.conflist", {"name": "a", "plugins": [{"type": "fake"}]})
    with pytest.raises(NetworkNotFoundError):
        cni_env.load("n")


def test_extension_is_the_last_dot_and_case_sensitive(cni_env: CniEnv) -> None:
    for name in ("10-n.conflist.bak", "20-n.CONFLIST", "30-n.Conf", "40-n"):
        cni_env.write(name, {"name": "n", "type": "fake", "plugins": [{"type": "fake"}]})
    with pytest.raises(NoConfigsFoundError):
        cni_env.load("n")
    found = conf_files(str(cni_env.netconf), (".conflist", ".conf", ".json", ".bak"))
    assert [os.path.basename(p) for p in found] == ["10-n.conflist.bak"]


def test_a_regular_file_as_directory_is_an_error(cni_env: CniEnv) -> None:
    not_dir = cni_env.write("plain", "x")
    with pytest.raises(ConfigError) as exc:
        load_network(str(not_dir), "net")
    assert str(not_dir) in str(exc.value)


# -- scenario 5: top-level and plugin-object errors ------------------------------------------

TOP_LEVEL_ERRORS: list[tuple[Any, str]] = [
    ({"plugins": [{"type": "fake"}]}, LIST_PREFIX + "no name"),
    ({"name": 5, "plugins": [{"type": "fake"}]}, LIST_PREFIX + "invalid name type float64"),
    ({"name": True, "plugins": [{"type": "fake"}]}, LIST_PREFIX + "invalid name type bool"),
    ({"name": "net", "cniVersion": 1, "plugins": [{"type": "fake"}]},
     LIST_PREFIX + "invalid cniVersion type float64"),
    ({"name": "net", "plugins": []}, LIST_PREFIX + "no plugins in list"),
    ({"name": "net", "plugins": "x"}, LIST_PREFIX + "invalid 'plugins' type string"),
    ({"name": "net", "plugins": None}, LIST_PREFIX + "invalid 'plugins' type <nil>"),
    ({"name": "net", "plugins": {}},
     LIST_PREFIX + "invalid 'plugins' type map[string]interface {}"),
    ({"name": "net", "plugins": [{}]},
     "failed to parse plugin config 0: error parsing configuration: missing 'type'"),
    ({"name": "net", "plugins": [{"type": ""}]},
     "failed to parse plugin config 0: error parsing configuration: missing 'type'"),
    ({"name": "net", "plugins": [{"type": None}]},
     "failed to parse plugin config 0: error parsing configuration: missing 'type'"),
    ({"name": "net", "plugins": [{"type": "fake"}, {"x": 1}]},
     "failed to parse plugin config 1: error parsing configuration: missing 'type'"),
    ({"name": "net", "loadOnlyInlinedPlugins": True},
     LIST_PREFIX + "`loadOnlyInlinedPlugins` is true, and no 'plugins' key"),
    ([], LIST_PREFIX
     + "json: cannot unmarshal array into Go value of type map[string]interface {}"),
    (None, LIST_PREFIX + "no name"),
    ({"name": "net", "cniVersions": "1.0.0", "plugins": [{"type": "fake"}]},
     LIST_PREFIX + "invalid type for cniVersions: []interface {}"),
    ({"name": "net", "cniVersions": ["1.0.0", 1], "plugins": [{"type": "fake"}]},
     LIST_PREFIX + "invalid type for cniVersions index 1: float64"),
    ({"name": "net", "cniVersions": ["1.0.f"], "plugins": [{"type": "fake"}]},
     LIST_PREFIX + 'invalid cniVersions entry 1.0.f at index 0: failed to convert micro version '
     'part "f": strconv.Atoi: parsing "f": invalid syntax'),
    ({"name": "net", "cniVersion": "x", "cniVersions": [], "plugins": [{"type": "fake"}]},
     LIST_PREFIX + 'invalid cniVersion x: failed to convert major version part "x": '
     'strconv.Atoi: parsing "x": invalid syntax'),
]


@pytest.mark.parametrize(("body", "expected"), TOP_LEVEL_ERRORS)
def test_top_level_errors_have_libcni_text_and_the_path(
    cni_env: CniEnv, body: Any, expected: str
) -> None:
    path = cni_env.write("10-net.conflist", json.dumps(body))
    assert load_error(cni_env) == f"{path}: {expected}"
    assert cni_env.calls() == []  # nothing executed


PLUGIN_TYPE_ERRORS: list[dict[str, Any]] = [
    {"type": 1},
    {"type": "fake", "name": 1},
    {"type": "fake", "cniVersion": 1.0},
    {"type": "fake", "capabilities": {"mac": "yes"}},
    {"type": "fake", "capabilities": ["mac"]},
    {"type": "fake", "ipam": "host-local"},
    {"type": "fake", "ipam": {"type": 1}},
    {"type": "fake", "dns": "1.1.1.1"},
    {"type": "fake", "dns": {"nameservers": "1.1.1.1"}},
    {"type": "fake", "dns": {"search": [1]}},
    {"type": "fake", "dns": {"options": {}}},
    {"type": "fake", "dns": {"domain": 1}},
    {"type": "fake", "prevResult": []},
    {"type": "fake", "prevResult": "x"},
    {"type": "fake", "cni.dev/valid-attachments": {}},
    {"type": "fake", "cni.dev/valid-attachments": [1]},
    {"type": "fake", "cni.dev/valid-attachments": [{"containerID": 1}]},
]


@pytest.mark.parametrize("plugin", PLUGIN_TYPE_ERRORS)
def test_plugin_field_type_errors_fail_the_load(cni_env: CniEnv, plugin: dict[str, Any]) -> None:
    path = cni_env.write("10-net.conflist", {"name": "net", "plugins": [plugin]})
    text = load_error(cni_env)
    prefix = "failed to parse plugin config 0: error parsing configuration: json: cannot unmarshal "
    assert text.startswith(f"{path}: {prefix}")


def test_plugin_object_that_is_not_an_object(cni_env: CniEnv) -> None:
    path = cni_env.write("10-net.conflist", {"name": "net", "plugins": ["fake"]})
    assert load_error(cni_env) == (
        f"{path}: failed to parse plugin config 0: error parsing configuration: "
        "json: cannot unmarshal string into Go value of type types.PluginConf"
    )


def test_nulls_and_unknown_keys_are_accepted_and_kept(cni_env: CniEnv) -> None:
    plugin = {
        "type": "fake",
        "name": None,
        "capabilities": {"mac": None, "ips": True},
        "ipam": {"type": None, "ranges": [[{"subnet": "10.0.0.0/8"}]]},
        "dns": {"nameservers": [None, "1.1.1.1"], "domain": None},
        "prevResult": None,
        "custom": {"deep": [1, {"x": None}]},
    }
    net = cni_env.network([plugin])
    assert net.plugins[0].raw == plugin
    assert net.plugins[0].capabilities == {"mac": None, "ips": True}


def test_single_conf_errors_have_the_path(cni_env: CniEnv) -> None:
    path = cni_env.write("10-n.conf", {"name": "n", "type": 7})
    text = load_error(cni_env, "n")
    assert text.startswith(f"{path}: error parsing configuration: json: cannot unmarshal number")
    path.write_text("[]")
    assert load_error(cni_env, "n") == (
        f"{path}: error parsing configuration: json: cannot unmarshal array "
        "into Go value of type types.PluginConf"
    )


# -- scenario 6: boolean coercion ------------------------------------------------------------


@pytest.mark.parametrize("key", ["disableCheck", "disableGC", "loadOnlyInlinedPlugins"])
@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, True), (False, False), ("TRUE", True), ("true", True), ("False", False),
     ("false", False)],
)
def test_bool_flags_accept_json_bools_and_true_false_strings(
    cni_env: CniEnv, key: str, value: Any, expected: bool
) -> None:
    net = cni_env.network(**{key: value})
    attr = {"disableCheck": "disable_check", "disableGC": "disable_gc",
            "loadOnlyInlinedPlugins": "load_only_inlined_plugins"}[key]
    assert getattr(net, attr) is expected


@pytest.mark.parametrize("key", ["disableCheck", "disableGC", "loadOnlyInlinedPlugins"])
@pytest.mark.parametrize(
    ("value", "message"),
    [("yes", 'invalid value "yes" for {key}'), ("YES", 'invalid value "yes" for {key}'),
     ("", 'invalid value "" for {key}'), (1, "invalid type float64 for {key}"),
     (None, "invalid type <nil> for {key}"), ([], "invalid type []interface {} for {key}")],
)
def test_bool_flags_reject_other_values(
    cni_env: CniEnv, key: str, value: Any, message: str
) -> None:
    path = cni_env.write("10-net.conflist", {"name": "net", key: value, "plugins": [{"type": "x"}]})
    assert load_error(cni_env) == f"{path}: {LIST_PREFIX}{message.replace('{key}', key)}"


def test_top_level_capabilities_and_unknown_keys_are_ignored(cni_env: CniEnv) -> None:
    net = cni_env.network(capabilities={"mac": "yes"}, extra=[1])
    assert net.raw["extra"] == [1]


# -- scenario 7: plugins from the network's subdirectory -------------------------------------


def _subdir(env: CniEnv, name: str = "net") -> Path:
    sub = env.netconf / name
    env.write("10-x.conf", {"type": "x"}, directory=sub)
    env.plugin("x")
    return sub


def test_subdir_plugins_run_after_the_inline_ones(cni_env: CniEnv) -> None:
    _subdir(cni_env)
    net = cni_env.chain(1)
    assert [p.type for p in net.plugins] == ["P1", "x"]
    assert net.plugins[1].bytes == (cni_env.netconf / "net" / "10-x.conf").read_bytes()
    assert net.bytes == (cni_env.netconf / "50-net.conflist").read_bytes()
    cni_env.cni().add_network_list(net, cni_env.rt())
    assert cni_env.trace() == [("P1", "ADD"), ("x", "ADD")]


def test_only_inlined_plugins_ignores_the_subdir(cni_env: CniEnv) -> None:
    _subdir(cni_env)
    net = cni_env.network([{"type": "fake"}], loadOnlyInlinedPlugins=True)
    assert [p.type for p in net.plugins] == ["fake"]


def test_only_inlined_plugins_without_plugins_key_is_an_error(cni_env: CniEnv) -> None:
    _subdir(cni_env)
    path = cni_env.write("50-net.conflist", {"name": "net", "loadOnlyInlinedPlugins": "true"})
    assert load_error(cni_env) == (
        f"{path}: {LIST_PREFIX}`loadOnlyInlinedPlugins` is true, and no 'plugins' key"
    )


def test_no_plugins_key_takes_the_subdir_plugins(cni_env: CniEnv) -> None:
    _subdir(cni_env)
    cni_env.write("50-net.conflist", {"name": "net", "cniVersion": "1.0.0"})
    assert plugin_types(cni_env) == ["x"]


def test_no_plugins_at_all(cni_env: CniEnv) -> None:
    path = cni_env.write("50-net.conflist", {"name": "net", "cniVersion": "1.0.0"})
    assert load_error(cni_env) == f"{path}: no plugin configs found"


def test_subdir_reads_only_dot_conf_files_in_name_order_one_level(cni_env: CniEnv) -> None:
    sub = cni_env.netconf / "net"
    cni_env.write("20-y.conf", {"type": "y"}, directory=sub)
    cni_env.write("10-x.conf", {"type": "x"}, directory=sub)
    cni_env.write("30-z.json", {"type": "z"}, directory=sub)
    cni_env.write("40-z.conflist", {"type": "z"}, directory=sub)
    cni_env.write("50-z.conf", {"type": "z"}, directory=sub / "deeper")
    cni_env.write("50-net.conflist", {"name": "net"})
    assert plugin_types(cni_env) == ["x", "y"]


def test_bad_subdir_file_fails_the_load(cni_env: CniEnv) -> None:
    bad = cni_env.write("10-x.conf", {"name": "x"}, directory=cni_env.netconf / "net")
    path = cni_env.write("50-net.conflist", {"name": "net", "plugins": [{"type": "fake"}]})
    assert load_error(cni_env) == f"{path}: {bad}: error parsing configuration: missing 'type'"


def test_subdir_that_is_a_file_fails_the_load(cni_env: CniEnv) -> None:
    cni_env.write("net", "not a dir")
    path = cni_env.write("50-net.conflist", {"name": "net", "plugins": [{"type": "fake"}]})
    text = load_error(cni_env)
    assert text.startswith(f"{path}: failed to read plugin config files in {cni_env.netconf}/net")


@pytest.mark.parametrize("name", ["../x", "..", ".", "a/../../x"])
def test_network_name_cannot_pull_plugins_from_outside_the_directory(
    cni_env: CniEnv, name: str
) -> None:
    outside = cni_env.root / "x"
    cni_env.write("10-evil.conf", {"type": "evil"}, directory=outside)
    cni_env.write("10-evil.conf", {"type": "evil"}, directory=cni_env.netconf)
    cni_env.write("10-evil.conf", {"type": "evil"}, directory=cni_env.root)
    cni_env.write("50-net.conflist", {"name": name, "plugins": [{"type": "fake"}]})
    assert plugin_types(cni_env, name) == ["fake"]
    cni_env.write("50-net.conflist", {"name": name})
    assert load_error(cni_env, name).endswith(": no plugin configs found")


def test_escaping_network_name_is_rejected_at_add(cni_env: CniEnv) -> None:
    net = cni_env.network(name="../x", filename="50-x.conflist")
    with pytest.raises(CNIError) as exc:
        cni_env.cni().add_network_list(net, cni_env.rt())
    assert exc.value.code == 7
    assert str(exc.value) == (
        'plugin type="fake" failed (add): invalid characters found in network name; ../x'
    )
    assert cni_env.calls() == []


# -- scenario 8: version selection -----------------------------------------------------------


@pytest.mark.parametrize(
    ("top", "expected"),
    [
        ({"cniVersions": ["1.1.0", "0.4.0", "1.0.0"]}, "1.1.0"),
        ({"cniVersions": ["99.0.0", "1.0.0"]}, "1.0.0"),
        ({"cniVersions": ["99.0.0", "1.1.0", "0.3.1"]}, "1.1.0"),
        ({"cniVersion": "1.0.0", "cniVersions": ["0.1.0", "0.4.0"]}, "1.0.0"),
        ({"cniVersion": "0.3.1", "cniVersions": ["0.4.0"]}, "0.4.0"),
        ({"cniVersion": "2.0.0", "cniVersions": ["0.4.0"]}, "0.4.0"),
        ({"cniVersion": "2.0.0", "cniVersions": ["3.0.0"]}, "2.0.0"),
        ({"cniVersion": "1.0.0", "cniVersions": []}, "1.0.0"),
        ({"cniVersions": []}, ""),
        ({"cniVersion": "1.2.3"}, "1.2.3"),
        ({}, ""),
    ],
)
def test_version_selection_reaches_the_plugin(
    cni_env: CniEnv, top: dict[str, Any], expected: str
) -> None:
    cni_env.write("50-net.conflist", {"name": "net", "plugins": [{"type": "fake"}], **top})
    net = cni_env.load("net")
    assert net.cni_version == expected
    cni_env.cni().del_network_list(net, cni_env.rt())
    (call,) = cni_env.calls()
    assert call["stdin"]["cniVersion"] == expected


def test_unparsable_cni_version_alone_is_used_as_written(cni_env: CniEnv) -> None:
    net = cni_env.network(version="broken")
    assert net.cni_version == "broken"
    with pytest.raises(CNIError) as exc:
        cni_env.cni().add_network_list(net, cni_env.rt())
    assert str(exc.value) == (
        'plugin type="fake" failed (add): unsupported CNI result version "broken"'
    )
    assert cni_env.calls()[0]["stdin"]["cniVersion"] == "broken"
    with pytest.raises(CNIError) as exc:  # DEL parses the list version before anything runs
        cni_env.cni().del_network_list(net, cni_env.rt())
    assert str(exc.value).startswith('failed to convert major version part "broken"')


def test_unparsable_cni_versions_entry_is_a_load_error(cni_env: CniEnv) -> None:
    path = cni_env.write(
        "50-net.conflist", {"name": "net", "cniVersions": ["1.0.f"], "plugins": [{"type": "x"}]}
    )
    assert load_error(cni_env).startswith(f"{path}: {LIST_PREFIX}invalid cniVersions entry 1.0.f")


def test_no_version_means_no_prev_result_on_del_and_no_check(cni_env: CniEnv) -> None:
    net = cni_env.network(version=None)
    cni = cni_env.cni()
    result = cni.add_network_list(net, cni_env.rt())
    assert result.cni_version == "0.1.0"  # the empty request version reads as 0.1.0
    cni.del_network_list(net, cni_env.rt())
    assert "prevResult" not in cni_env.calls()[-1]["stdin"]
    with pytest.raises(CNIError) as exc:
        cni.check_network_list(net, cni_env.rt())
    assert str(exc.value) == 'configuration version "" does not support the CHECK command'


# -- version strings -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parsed"),
    [("", (0, 1, 0)), ("1", (1, 0, 0)), ("1.1", (1, 1, 0)), ("0.4.0", (0, 4, 0)),
     ("+1.-1.01", (1, -1, 1)), ("01.02.03", (1, 2, 3))],
)
def test_parse_version_follows_atoi(text: str, parsed: tuple[int, int, int]) -> None:
    assert parse_version(text) == parsed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1.0.0-rc1", 'failed to convert micro version part "0-rc1": strconv.Atoi: '
                      'parsing "0-rc1": invalid syntax'),
        ("v1", 'failed to convert major version part "v1": strconv.Atoi: '
               'parsing "v1": invalid syntax'),
        ("1..0", 'failed to convert minor version part "": strconv.Atoi: '
                 'parsing "": invalid syntax'),
        ("1.0.0.0", 'invalid version "1.0.0.0": too many parts'),
        ("1.0.f", 'failed to convert micro version part "f": strconv.Atoi: '
                  'parsing "f": invalid syntax'),
    ],
)
def test_parse_version_errors(text: str, message: str) -> None:
    with pytest.raises(VersionError) as exc:
        parse_version(text)
    assert str(exc.value) == message


def test_parsed_versions_compare_numerically() -> None:
    assert parse_version("0.10.0") >= parse_version("0.4.0")
    assert parse_version("1") >= parse_version("1.0.0")
    assert not parse_version("") >= parse_version("0.2.0")


# -- other entry points ----------------------------------------------------------------------


def test_list_from_bytes_and_plugin_bytes() -> None:
    data = b'{"name":"n","cniVersion":"1.0.0","plugins":[{"type":"t","z":1,"a":2}]}'
    net = list_from_bytes(data, "src")
    assert net.bytes == data
    assert net.source == "src"
    assert net.plugins[0].bytes == b'{"a":2,"type":"t","z":1}'
    assert net.plugins[0].describe() == 'type="t"'
    named = list_from_bytes(b'{"name":"n","plugins":[{"type":"t","name":"p\\"1"}]}')
    assert named.plugins[0].describe() == 'type="t" name="p\\"1"'


def test_config_module_exposes_go_type_names() -> None:
    values: list[Any] = [None, True, 1, 1.5, "s", [], {}]
    assert [config.go_type(v) for v in values] == [
        "<nil>", "bool", "float64", "float64", "string", "[]interface {}",
        "map[string]interface {}",
    ]


def test_cached_config_bytes_decode_back_to_the_conflist(cni_env: CniEnv) -> None:
    net = cni_env.network()
    cni_env.cni().add_network_list(net, cni_env.rt())
    entry = json.loads(cni_env.cache_file().read_bytes())
    assert base64.b64decode(entry["config"]) == (cni_env.netconf / "50-net.conflist").read_bytes()
