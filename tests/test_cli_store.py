"""One way to name the store: every `idnode` command that reads a store takes `--data`, `--config` and
IDNODE_DATA_DIR alike, by one rule (flag > environment > configuration file > the default file), through
resolver/cli_store.py. Each command runs in this process (`resolver.cli.main`) on a copy of the demo store,
with the other sources pointing at a decoy directory that does not exist: the command succeeds only if it took
the store from the source that should win, and the decoy is never created."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from resolver import settings
from resolver.cli import main
from storage.backup import backup_store
from storage.store import Store

REPO = Path(__file__).resolve().parents[1]
HANDLE = "88.100.1/BATCH-2024-000001"  #: in the demo store (tests/conftest.py)
TEMPLATE = {"prefix": "88.100.1", "templates": [{"name": "batch", "suffixPattern": "BATCH-.*", "fields": [
    {"name": "note", "index": 2001, "type": "NOTE", "required": False}]}]}  # fmt: skip

#: every subcommand that reads a store: (argv, exit status). `{tmp}` is a scratch directory of the test.
COMMANDS = {
    "stats": (["stats", "--json"], 0),
    "report": (["report"], 0),
    "check": (["check", "--json"], 0),
    "audit": (["audit"], 0),
    "backup": (["backup", "{tmp}/backup-new"], 0),
    "restore": (["restore", "{tmp}/backup"], 0),
    "load": (["load", "--quiet", "{tmp}/one.ndjson"], 0),
    "prefix add": (["prefix", "add", "88.100.99", "--org", "Test Co"], 0),
    "prefix list": (["prefix", "list"], 0),
    "prefix disable": (["prefix", "disable", "88.100.2"], 0),
    "prefix enable": (["prefix", "enable", "88.100.2"], 0),
    "prefix credential": (["prefix", "credential", "88.100.3", "--json"], 0),
    "operator set-secret": (["operator", "set-secret"], 0),
    "template set": (["template", "set", "{tmp}/template.json"], 0),
    "template show": (["template", "show", "88.100.1"], 0),
    "template delete": (["template", "delete", "88.100.1"], 0),
    "register": (["register", "{tmp}/one.ndjson"], 0),
    "scenario load": (["scenario", "load", str(REPO / "deploy/scenarios/automotive")], 0),
    "trace": (["trace", HANDLE], 0),
    "export-zone": (["export-zone", "--quiet", "-o", "{tmp}/zone"], 0),
    "dns-name": (["dns-name", HANDLE], 0),
    "seclog status": (["seclog", "status", "--json"], 0),
}


@pytest.fixture()
def scene(tmp_path, demo_store_copy, monkeypatch):
    """The store (with a template, a backup of it, and input files beside it), a decoy, and no default file."""
    monkeypatch.setattr(settings, "DEFAULT_CONFIG_PATH", tmp_path / "no-default.toml")
    for name in ("IDNODE_DATA_DIR", "IDNODE_CONFIG", "IDNODE_SECURITY_LOG_QUEUE_DIR"):
        monkeypatch.delenv(name, raising=False)
    from resolver.templates import set_templates

    with Store(demo_store_copy) as store:
        set_templates(store, TEMPLATE)
        backup_store(store, tmp_path / "backup")
    (tmp_path / "template.json").write_text(json.dumps(TEMPLATE))
    record = {
        "handle": "88.100.1/BATCH-NEW-1",
        "values": [{"index": 1, "type": "URL", "data": "https://x.test/1"}],
    }
    (tmp_path / "one.ndjson").write_text(json.dumps(record) + "\n")
    return demo_store_copy, tmp_path / "decoy"


def _config(tmp_path: Path, name: str, data_dir: Path) -> Path:
    path = tmp_path / name
    path.write_text(f'data_dir = "{data_dir}"\n')
    return path


@pytest.mark.parametrize("way", ["flag", "environment", "config"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_takes_the_store_from_flag_environment_or_config(
    command, way, scene, tmp_path, monkeypatch, capsys
):
    store, decoy = scene
    argv, status = COMMANDS[command]
    argv = [part.replace("{tmp}", str(tmp_path)) for part in argv]
    if way == "flag":  # the flag wins over the environment and the file
        monkeypatch.setenv("IDNODE_DATA_DIR", str(decoy))
        argv += ["--data", str(store), "--config", str(_config(tmp_path, "decoy.toml", decoy))]
    elif way == "environment":  # the environment wins over the file
        monkeypatch.setenv("IDNODE_DATA_DIR", str(store))
        argv += ["--config", str(_config(tmp_path, "decoy.toml", decoy))]
    else:
        argv += ["--config", str(_config(tmp_path, "idnode.toml", store))]
    assert main(argv) == status, capsys.readouterr()
    assert not decoy.exists()
    if command == "stats":
        assert json.loads(capsys.readouterr().out)["identifiers"] == 2000
    if command == "seclog status":
        assert json.loads(capsys.readouterr().out)["queue"] == str(store / "security-queue")


def test_idnode_config_names_the_file_and_the_default_file_comes_last(tmp_path, monkeypatch):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    default = _config(tmp_path, "default.toml", c)
    monkeypatch.setattr(settings, "DEFAULT_CONFIG_PATH", default)
    named = _config(tmp_path, "named.toml", b)
    assert settings.store_dir(a, named, {"IDNODE_DATA_DIR": "/env"}) == a
    assert settings.store_dir(None, named, {"IDNODE_DATA_DIR": "/env"}) == Path("/env")
    assert settings.store_dir(None, named, {}) == b
    assert settings.store_dir(None, None, {"IDNODE_CONFIG": str(named)}) == b
    assert settings.store_dir(None, None, {}) == c
    assert settings.store_dir(None, None, {}, default_file=False) is None
    no_data = tmp_path / "nodata.toml"
    no_data.write_text("workers = 2\n")
    with pytest.raises(settings.ConfigError, match=r"nodata.toml: data_dir: not set"):
        settings.store_dir(None, no_data, {})


def test_a_command_without_a_store_says_how_to_name_one(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(settings, "DEFAULT_CONFIG_PATH", tmp_path / "no-default.toml")
    monkeypatch.delenv("IDNODE_DATA_DIR", raising=False)
    monkeypatch.delenv("IDNODE_CONFIG", raising=False)
    assert main(["stats"]) == 2
    assert "which store? give --data DIR or --config FILE, or set IDNODE_DATA_DIR" in capsys.readouterr().err


def test_seclog_status_takes_the_queue_dir_of_the_configuration_file(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("IDNODE_SECURITY_LOG_QUEUE_DIR", raising=False)
    path = tmp_path / "idnode.toml"
    path.write_text(f'data_dir = "{tmp_path}"\n\n[security_log]\nqueue_dir = "{tmp_path / "q"}"\n')
    assert main(["seclog", "status", "--config", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["queue"] == str(tmp_path / "q")
