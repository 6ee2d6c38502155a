"""Settings of `idnode serve`: TOML file, IDNODE_* environment and flags, in that order of strength; unknown
keys and bad values refused naming the key and its source; the shipped example lists every setting."""

from __future__ import annotations

import argparse
import os
import re
import tomllib
from pathlib import Path

import pytest

from resolver import settings
from resolver.config import ServeConfig
from resolver.settings import ConfigError, build_config
from tests.servers import idnode

EXAMPLE = Path(__file__).resolve().parents[1] / "deploy" / "idnode.toml.example"


def parse_flags(*argv: str) -> dict:
    parser = argparse.ArgumentParser()
    settings.add_arguments(parser)
    return settings.read_flags(parser.parse_args(argv))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "idnode.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_precedence_is_flag_then_environment_then_file_then_default(tmp_path):
    path = write(
        tmp_path, 'data_dir = "/srv/a"\nworkers = 3\ndns_zone = "file.test."\nnode_prefix = "88.200"\n'
    )
    env = {"IDNODE_WORKERS": "5", "IDNODE_DNS_ZONE": "env.test."}
    config = build_config(parse_flags("--workers", "7"), env, path)
    assert config.workers == 7  # flag over environment and file
    assert config.dns_zone == "env.test."  # environment over file
    assert config.node_prefix == "88.200"  # file over default
    assert config.tcp_idle_timeout_s == ServeConfig(Path("x")).tcp_idle_timeout_s  # default
    assert config.data_dir == Path("/srv/a")


def test_flags_keep_their_old_names_and_lists_repeat_or_split():
    flags = parse_flags(
        "--data", "/d", "--bind", "127.0.0.1", "--bind", "::1,10.0.0.1", "--tcp-idle-timeout", "5"
    )
    assert flags == {
        "data_dir": Path("/d"),
        "binds": ["127.0.0.1", "::1", "10.0.0.1"],
        "tcp_idle_timeout_s": 5.0,
    }
    config = build_config(flags, {})
    assert config.binds == ["127.0.0.1", "::1", "10.0.0.1"]


def test_environment_values_are_parsed_by_type(tmp_path):
    env = {
        "IDNODE_DATA_DIR": str(tmp_path),
        "IDNODE_BINDS": "127.0.0.1, ::1",
        "IDNODE_HTTP_PORT": "8080",
        "IDNODE_ACCESS_LOG_SAMPLE": "0.25",
        "IDNODE_SITE_ADDRESS": "",
    }
    config = build_config({}, env)
    assert config.binds == ["127.0.0.1", "::1"] and config.http_port == 8080
    assert config.access_log_sample == 0.25 and config.site_address is None


def test_an_optional_setting_in_the_file_can_be_unset_by_the_environment(tmp_path):
    path = write(tmp_path, 'data_dir = "/d"\nhttp_port = 8000\n')
    assert build_config({}, {}, path).http_port == 8000
    assert build_config({}, {"IDNODE_HTTP_PORT": "off"}, path).http_port is None


@pytest.mark.parametrize(
    "text, expected",
    [
        ('data_dir = "/d"\nworkerz = 2\n', r"idnode.toml: workerz: unknown setting"),
        (
            'data_dir = "/d"\n[handle]\nport = 1\n',
            r"idnode.toml: handle: unknown setting \(settings are top-level",
        ),
        ('data_dir = "/d"\nworkers = "two"\n', r"idnode.toml: workers: 'two' is not an integer"),
        ('data_dir = "/d"\nworkers = true\n', r"idnode.toml: workers: True is not an integer"),
        ('data_dir = "/d"\nbinds = "0.0.0.0"\n', r"idnode.toml: binds: '0.0.0.0' is not a list of strings"),
        ('data_dir = "/d"\nhandle_port = 70000\n', r"idnode.toml: handle port: 70000 is not a port number"),
        ('data_dir = "/d"\nbinds = ["localhost"]\n', r"idnode.toml: bind: 'localhost' is not an IP address"),
        ('data_dir = "/d"\nlog_format = "xml"\n', r"idnode.toml: log_format: 'xml' is not one of text, json"),
        (
            'data_dir = "/d"\naccess_log_sample = 2\n',
            r"idnode.toml: access_log_sample: 2.0 is not between 0 and 1",
        ),
        ('data_dir = "/d"\nstop_grace_s = 0\n', r"idnode.toml: stop_grace_s: must be positive"),
        ('data_dir = "/d"\nworkers = -1\n', r"idnode.toml: workers: at least 1"),
        ('data_dir = "/d"\nwriter_cpus = "1-"\n', r"idnode.toml: writer_cpus: '1-' is not a CPU number or a range"),
        ('data_dir = "/d"\nworker_cpus = "4096"\n', r"idnode.toml: worker_cpus: CPU 4096 is not available here"),
        ('data_dir = "/d"\nhttp_workers = 1\n', r"idnode.toml: http_workers: the node serves no HTTP"),
        ('data_dir = "/d"\nhttp_port = 8000\nhttp_workers = -1\n', r"idnode.toml: http_workers: 0 \(the workers"),
        ("data_dir = \n", r"idnode.toml: not valid TOML"),
        ("workers = 2\n", r"data_dir: not set"),
    ],
)
def test_bad_files_are_refused_naming_the_key(tmp_path, text, expected):
    with pytest.raises(ConfigError, match=expected):
        build_config({}, {}, write(tmp_path, text))


def test_bad_environment_and_flag_values_name_their_source():
    with pytest.raises(ConfigError, match=r"environment IDNODE_WORKERS: 'x' is not an integer"):
        build_config({}, {"IDNODE_DATA_DIR": "/d", "IDNODE_WORKERS": "x"})
    with pytest.raises(ConfigError, match=r"environment IDNODE_HANDLE_PORT: handle port: 99999"):
        build_config({}, {"IDNODE_DATA_DIR": "/d", "IDNODE_HANDLE_PORT": "99999"})
    with pytest.raises(ConfigError, match=r"--workers: 'many' is not an integer"):
        parse_flags("--workers", "many")
    with pytest.raises(ConfigError, match=r"--log-level: log_level: 'loud'"):
        build_config(parse_flags("--data", "/d", "--log-level", "loud"), {})


def test_unknown_environment_variables_are_ignored_with_a_warning(caplog):
    config = build_config({}, {"IDNODE_DATA_DIR": "/d", "IDNODE_ADMIN_TOKEN": "x"})
    assert config.data_dir == Path("/d")
    assert "IDNODE_ADMIN_TOKEN names no setting" in caplog.text


def test_workers_zero_means_one_per_cpu():
    assert build_config({"data_dir": Path("/d"), "workers": 0}, {}).workers == (os.cpu_count() or 1)


def test_the_default_file_is_read_only_when_nothing_says_where_the_data_is(tmp_path, monkeypatch):
    default = write(tmp_path, 'data_dir = "/from/default"\n')
    monkeypatch.setattr(settings, "DEFAULT_CONFIG_PATH", default)
    args = argparse.Namespace(config=None, data_dir=None)
    assert settings.config_path(args, {}) == default
    assert settings.config_path(argparse.Namespace(config=None, data_dir=Path("/x")), {}) is None
    assert settings.config_path(args, {"IDNODE_DATA_DIR": "/x"}) is None
    assert settings.config_path(args, {"IDNODE_CONFIG": "/etc/other.toml"}) == Path("/etc/other.toml")
    assert settings.config_path(argparse.Namespace(config=Path("/c.toml"), data_dir=None), {}) == Path(
        "/c.toml"
    )


def _example_lines() -> dict[str, tuple[bool, str]]:
    """key -> (commented?, value text) of every `key = value` line of the example."""
    found = {}
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^(#\s*)?([a-z_]+) = (.+)$", line)
        if match and match.group(2) in settings.fields():
            assert match.group(2) not in found, f"{match.group(2)} appears twice in the example"
            found[match.group(2)] = (bool(match.group(1)), match.group(3))
    return found


def test_the_example_lists_every_setting_with_its_default():
    lines = _example_lines()
    assert set(lines) == set(settings.fields()), "every ServeConfig field must be documented in the example"
    defaults = settings.defaults()
    for key, (commented, text) in lines.items():
        if not commented:
            continue
        value = tomllib.loads(f"v = {text}")["v"]
        if defaults.get(key) is None:
            continue  # an optional setting, shown with an example value
        if key == "workers":
            assert value == 0  # 0: one per CPU, the default
            continue
        assert settings.convert_value(key, settings.fields()[key], value) == defaults[key], key


def test_the_example_loads_as_it_is_and_with_every_line_uncommented(tmp_path):
    config = build_config({}, {}, EXAMPLE)
    assert (
        config.data_dir == Path("/var/lib/idnode") and config.log_format == "json" and config.dns_port == 53
    )
    every = "\n".join(re.sub(r"^#\s*([a-z_]+ = )", r"\1", line) for line in EXAMPLE.read_text().splitlines())
    build_config({}, {}, write(tmp_path, every))


def test_serve_reports_a_bad_file_and_exits_2(tmp_path):
    result = idnode("serve", "--config", str(write(tmp_path, 'data_dir = "/d"\nworkers = "x"\n')))
    assert result.returncode == 2
    assert "idnode serve:" in result.stderr and "workers: 'x' is not an integer" in result.stderr


def test_serve_reports_a_bad_flag_value_and_exits_2(tmp_path):
    result = idnode("serve", "--data", str(tmp_path / "store"), "--dns-memo-mb", "lots")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "idnode serve: --dns-memo-mb: 'lots' is not an integer" in result.stderr
