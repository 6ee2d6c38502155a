"""Where the settings of `idnode serve` come from: a TOML file, `IDNODE_*` environment variables and
command-line flags, in that order of strength (flag > environment > file > default), mapped onto
`ServeConfig`.

Every `ServeConfig` field is a setting under the same name: `workers` in the file, `IDNODE_WORKERS` in the
environment, `--workers` on the command line (a few flags keep shorter names: `--data`, `--bind`,
`--tcp-idle-timeout`). A few settings are TOML tables of their own (`TABLES`): `[security_log]` with
`collector = ...` in the file, `IDNODE_SECURITY_LOG_COLLECTOR` in the environment, `--collector` on the
command line (the flags of `SecurityLogConfig.add_arguments`), merged setting by setting in the same order.
Unknown keys and bad values are rejected before anything starts, naming the key and where its value came
from. The file is `--config FILE`, else `$IDNODE_CONFIG`, else /etc/idnode/idnode.toml when it exists and
nothing else says where the data is. Imports no server code.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from resolver.config import LOG_FORMATS, LOG_LEVELS, ServeConfig
from resolver.security.config import SecurityLogConfig
from resolver.tls import TlsSettingError

log = logging.getLogger(__name__)

DEFAULT_CONFIG_PATH = Path("/etc/idnode/idnode.toml")  #: where install.sh puts the configuration
ENV_PREFIX = "IDNODE_"  #: environment variables IDNODE_<KEY> override the file
CONFIG_ENV = "IDNODE_CONFIG"  #: names the configuration file when --config is not given
_NONE_WORDS = ("", "none", "off")  #: what an environment variable says to unset an optional setting
#: ServeConfig fields that are TOML tables of their own, and the dataclass each is read into
TABLES: dict[str, type[SecurityLogConfig]] = {"security_log": SecurityLogConfig}

# Flags whose names differ from `--<key with dashes>` (kept from before the configuration file existed).
FLAG_NAMES: dict[str, tuple[str, ...]] = {
    "data_dir": ("--data", "--data-dir"),
    "binds": ("--bind",),
    "tcp_idle_timeout_s": ("--tcp-idle-timeout",),
    "counter_flush_interval_s": ("--flush-interval",),
    "prefix_reload_interval_s": ("--prefix-reload-interval",),
    "stop_grace_s": ("--stop-grace",),
}

HELP: dict[str, str] = {
    "data_dir": "store directory",
    "binds": "address to listen on (repeatable; IPv4 or IPv6)",
    "handle_port": "Handle UDP+TCP port (0: any free port)",
    "http_port": "HTTP API port (default: no HTTP)",
    "dns_port": "DNS port, UDP and TCP (default: no DNS)",
    "dns_zone": "zone of the DNS view",
    "dns_memo_mb": "MiB per worker for the DNS view's memo of rendered records and whole answers (0: none)",
    "dns_transfer_allow": "address or network allowed zone transfers (AXFR, IXFR) of the DNS view (repeatable; default: none)",
    "dns_notify": "secondary sent a DNS NOTIFY when the zone changes: address, address:port or [address]:port (repeatable)",
    "workers": "worker processes (default and 0: one per CPU)",
    "node_prefix": "this node's own prefix",
    "site_address": "address published in the node's HS_SITE; required unless every bind is loopback",
    "tcp_idle_timeout_s": "seconds before a silent TCP connection closes",
    "counter_flush_interval_s": "seconds between writes of resolution counts to the store",
    "prefix_reload_interval_s": "seconds between checks for prefixes changed by other processes",
    "stop_grace_s": "seconds a stopping or replaced worker may take to drain and flush",
    "log_level": f"one of {', '.join(LOG_LEVELS)}",
    "log_format": f"one of {', '.join(LOG_FORMATS)} (json: one object a line, for journald)",
    "access_log_sample": "share of answered requests written to the access log, 0 to 1 (0: no access log)",
    "metrics_dir": "directory of the Prometheus multiprocess files (default: a private temporary one)",
    "udp_rate_limit_per_s": "UDP requests per second allowed from one source address (0: no limit)",
    "udp_rate_burst": "UDP requests one source may send at once before its rate applies",
    "udp_rate_limit_action": "what a source over its rate gets: drop (nothing) or busy (SERVER_TOO_BUSY)",
    "rate_limit_exempt": "networks never rate-limited and always trusted with large UDP answers (repeatable)",
    "udp_amplification_factor": "a multi-datagram UDP answer may be this many times its request unless the source proved its address over TCP (0: no bound)",
    "udp_batch": "Handle UDP read and answered in batches (recvmmsg/sendmmsg) where the extension is built; false: one datagram per event-loop callback",
    "udp_c_answers": "in batches, plain resolutions (no filter, all values public, one datagram) answered by the extension itself; false: every datagram answered in Python (the same bytes)",
    "tcp_max_connections": "open Handle TCP connections per worker",
    "tcp_max_connections_per_source": "open Handle TCP connections per worker from one address",
    "http_tls_cert": "PEM certificate chain of the HTTP port; with --http-tls-key it serves HTTPS only",
    "http_tls_key": "PEM private key of --http-tls-cert",
    "http_idle_timeout_s": "seconds before an idle HTTP connection (or one slow to send its request head) closes",
    "http_max_connections": "open HTTP connections per worker (more get 503)",
    "http_max_connections_per_source": "open HTTP connections per worker from one address (more get 503)",
    "writer_socket": "Unix socket of the node's writer (default: writer.sock in the data directory)",
    "writer_nice": "CPU priority of the writer process, a nice increment 0-19: serving workers come first",
    "writer_cpus": "CPUs of the writer and of `idnode load` into the served store, as taskset writes them: 1, 2-3 (default: any)",
    "worker_cpus": "CPUs of the serving workers, as taskset writes them: 0, 0,2-5 (default: any)",
    "http_workers": "processes that serve HTTP alone, so API writes and pages never delay a Handle or DNS answer "
    "(default 0: the workers serve HTTP too)",
    "http_cpus": "CPUs of the HTTP workers, as taskset writes them: 1, 2-3 (default: any)",
    "log_retention_entries": "applied write-log entries kept for IXFR and catching-up members, at most",
    "log_retention_s": "seconds applied write-log entries are kept, at most",
    "recursion": "prefixes served by an enterprise node: on-request (REC requests are resolved there), always (every request), off (302)",
    "recursion_timeout_s": "seconds an enterprise node's answer is awaited when resolving there (UDP, then TCP)",
    "probe_interval_s": "seconds between GET_SITE_INFO probes of every enterprise node (0: no probing)",
    "cluster_nats": "NATS server of the cluster's write log, nats://host:port (repeatable; default: no cluster)",
    "cluster_node": "this node's id in the cluster, unique among its members (default: the host name)",
    "cluster_replicas": "copies of the cluster's log that JetStream keeps (when it creates the stream)",
    "cluster_stream": "name of the cluster's JetStream stream",
}


class ConfigError(ValueError):
    """A setting is unknown or has a bad value; the message names the key and its source."""


def fields() -> dict[str, Any]:
    """Every top-level setting: key -> its type (resolved annotations of ServeConfig); tables are apart."""
    hints = typing.get_type_hints(ServeConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(ServeConfig) if f.name not in TABLES}


def table_fields(table: str) -> dict[str, type]:
    """The settings of a table (`security_log`): name -> type (str, int or float, as their defaults)."""
    return {f.name: type(f.default) for f in dataclasses.fields(TABLES[table])}


def _read_table(path: Path, table: str, values: Any) -> dict[str, Any]:
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: {table}: a table [{table}], not {values!r}")
    known = table_fields(table)
    out = {}
    for name, value in values.items():
        if name not in known:
            raise ConfigError(f"{path}: {table}.{name}: unknown setting")
        try:
            out[name] = convert_value(name, known[name], value)
        except ValueError as exc:
            raise ConfigError(f"{path}: {table}.{name}: {exc}") from None
    return out


def defaults() -> dict[str, Any]:
    """key -> default value (data_dir has none)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(ServeConfig):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def env_name(key: str) -> str:
    return ENV_PREFIX + key.upper()


def flag_names(key: str) -> tuple[str, ...]:
    if key in FLAG_NAMES:
        return FLAG_NAMES[key]
    return ("--" + key.removesuffix("_s").replace("_", "-"),)


def _split_optional(tp: Any) -> tuple[Any, bool]:
    """(inner type, optional?) of `X | None`."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _describe(tp: Any) -> str:
    inner, _ = _split_optional(tp)
    if typing.get_origin(inner) is list:
        return "a list of strings"
    return {int: "an integer", float: "a number", str: "a string", Path: "a path", bool: "true or false"}.get(
        inner, str(inner)
    )


def convert_value(key: str, tp: Any, value: Any) -> Any:
    """A value read from TOML, checked against the field's type (no string parsing: TOML is typed)."""
    inner, optional = _split_optional(tp)
    if value is None and optional:
        return None
    if typing.get_origin(inner) is list:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
    elif inner is bool:
        if isinstance(value, bool):
            return value
    elif inner is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif inner is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif inner is str:
        if isinstance(value, str):
            return value
    elif inner is Path:
        if isinstance(value, str) and value:
            return Path(value)
    raise ValueError(f"{value!r} is not {_describe(tp)}")


def parse_text(key: str, tp: Any, text: str) -> Any:
    """A value given as text (environment variable or flag), converted to the field's type."""
    inner, optional = _split_optional(tp)
    if optional and text.strip().lower() in _NONE_WORDS:
        return None
    if typing.get_origin(inner) is list:
        return [part.strip() for part in text.split(",") if part.strip()]
    if inner is bool:
        word = text.strip().lower()
        if word in ("1", "true", "yes", "on"):
            return True
        if word in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{text!r} is not true or false")
    if inner is int:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{text!r} is not an integer") from None
    if inner is float:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a number") from None
    if inner is Path:
        if not text:
            raise ValueError("an empty path")
        return Path(text)
    return text


def node_setting(key: str, config: Path | None = None) -> Any:
    """A serving node's setting as a command beside it finds it (the command has no flags for it): the
    environment's $IDNODE_<KEY>, else `config`'s value, else None. A configuration file that cannot be
    read counts as not naming it (the node itself reports that file's errors)."""
    named = os.environ.get(env_name(key))
    if named:
        return named
    if config:
        try:
            return read_file(Path(config)).get(key)
        except ConfigError:
            return None
    return None


def read_file(path: Path) -> dict[str, Any]:
    """The settings of a TOML file, checked for unknown keys and types (values are checked by ServeConfig)."""
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except PermissionError:
        raise ConfigError(f"{path}: not readable") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    known = fields()
    out = {}
    for key, value in _flatten(raw).items():
        if key in TABLES:
            out[key] = _read_table(path, key, value)
            continue
        if key not in known:
            hint = ""
            if isinstance(value, dict):
                hint = f" (settings are top-level keys, but for the tables {', '.join(f'[{t}]' for t in TABLES)})"
            raise ConfigError(f"{path}: {key}: unknown setting{hint}")
        try:
            out[key] = convert_value(key, known[key], value)
        except ValueError as exc:
            raise ConfigError(f"{path}: {key}: {exc}") from None
    return out


#: TOML tables whose settings are top-level settings named `<table>_<setting>` (`[cluster] nats = [...]`, or
#: `cluster.nats = [...]`, is the setting cluster_nats: IDNODE_CLUSTER_NATS, --cluster-nats)
FLAT_TABLES = ("cluster",)


def _flatten(raw: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in raw.items():
        if key in FLAT_TABLES and isinstance(value, dict):
            out.update({f"{key}_{name}": inner for name, inner in value.items()})
        else:
            out[key] = value
    return out


def read_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """Settings from IDNODE_<KEY> variables. An IDNODE_ variable that names no setting is logged as a warning
    rather than refused: other parts of the node may read variables of their own under the same prefix."""
    known = fields()
    out = {}
    for name, text in environ.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        key = name[len(ENV_PREFIX) :].lower()
        table, inner = _table_key(key)
        if table is not None:
            try:
                out.setdefault(table, {})[inner] = parse_text(inner, table_fields(table)[inner], text)
            except ValueError as exc:
                raise ConfigError(f"environment {name}: {exc}") from None
            continue
        if key not in known:
            log.warning("environment %s names no setting of idnode serve; ignored", name)
            continue
        try:
            out[key] = parse_text(key, known[key], text)
        except ValueError as exc:
            raise ConfigError(f"environment {name}: {exc}") from None
    return out


def _table_key(key: str) -> tuple[str | None, str]:
    """(table, setting) of an environment key like `security_log_collector`; (None, key) for others."""
    for table in TABLES:
        inner = key.removeprefix(table + "_")
        if inner != key and inner in table_fields(table):
            return table, inner
    return None, key


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags for every setting, defaulting to None so that an absent flag lets env, file and default speak."""
    parser.add_argument("--config", type=Path, help=f"TOML configuration file (default: ${CONFIG_ENV})")
    for key, tp in fields().items():
        inner, _ = _split_optional(tp)
        help_text = HELP.get(key, key.replace("_", " "))
        if typing.get_origin(inner) is list:
            parser.add_argument(*flag_names(key), dest=key, action="append", default=None, help=help_text)
        else:
            parser.add_argument(*flag_names(key), dest=key, default=None, metavar=key.upper(), help=help_text)
    # The [security_log] table: --collector, --transport, ... (dest security_log_<name>), as `seclog export`.
    group = parser.add_argument_group("security log upload, the [security_log] table")
    SecurityLogConfig.add_arguments(group)  # type: ignore[arg-type]  # a group takes add_argument too


def read_flags(args: argparse.Namespace) -> dict[str, Any]:
    known = fields()
    out = {}
    for key, tp in known.items():
        value = getattr(args, key, None)
        if value is None:
            continue
        flag = flag_names(key)[0]
        if isinstance(value, list):
            items = [part.strip() for item in value for part in item.split(",") if part.strip()]
            out[key] = items
            continue
        try:
            out[key] = parse_text(key, tp, str(value))
        except ValueError as exc:
            raise ConfigError(f"{flag}: {exc}") from None
    for table in TABLES:
        given = {name: getattr(args, f"{table}_{name}", None) for name in table_fields(table)}
        given = {name: value for name, value in given.items() if value is not None}
        if given:
            out[table] = given
    return out


def config_path(args: argparse.Namespace | None, environ: Mapping[str, str]) -> Path | None:
    """The configuration file to read: --config, $IDNODE_CONFIG, or the default one when it exists and
    neither --data nor IDNODE_DATA_DIR says where the store is."""
    given = getattr(args, "config", None) if args is not None else None
    if given:
        return Path(given)
    if environ.get(CONFIG_ENV):
        return Path(environ[CONFIG_ENV])
    data_flag = getattr(args, "data_dir", None) if args is not None else None
    data_given = data_flag or environ.get(env_name("data_dir"))
    if not data_given and DEFAULT_CONFIG_PATH.is_file():
        return DEFAULT_CONFIG_PATH
    return None


def store_dir(
    data: Path | str | None,
    config: Path | str | None,
    environ: Mapping[str, str],
    *,
    default_file: bool = True,
) -> Path | None:
    """The store directory a command means, by the one rule of every `idnode` command: `--data` >
    $IDNODE_DATA_DIR > `data_dir` of the configuration file (`--config`, else $IDNODE_CONFIG, else
    /etc/idnode/idnode.toml when it exists and `default_file`). None when nothing names one; ConfigError for a
    file that cannot be read or sets no data_dir."""
    if data:
        return Path(data)
    if environ.get(env_name("data_dir")):
        return Path(environ[env_name("data_dir")])
    path = Path(config) if config else None
    if path is None and environ.get(CONFIG_ENV):
        path = Path(environ[CONFIG_ENV])
    if path is None and default_file and DEFAULT_CONFIG_PATH.is_file():
        path = DEFAULT_CONFIG_PATH
    if path is None:
        return None
    values = read_file(path)
    if "data_dir" not in values:
        raise ConfigError(f"{path}: data_dir: not set (the store directory; or give --data DIR)")
    return Path(values["data_dir"])


def _key_of_message(message: str) -> str | None:
    """The setting a ServeConfig validation message is about ("handle port: ..." -> handle_port)."""
    head = message.split(":", 1)[0].strip().replace(" ", "_")
    known = fields()
    for candidate in (head, head + "s", head + "_s"):
        if candidate in known:
            return candidate
    return None


def build_config(
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    path: Path | None = None,
) -> ServeConfig:
    """Merge default < file < environment < flags into a checked ServeConfig."""
    environ = os.environ if environ is None else environ
    layers: list[tuple[str, Mapping[str, Any]]] = []
    if path is not None:
        layers.append((str(path), read_file(path)))
    layers.append(("environment", read_env(environ)))
    layers.append(("flags", dict(flags or {})))
    merged: dict[str, Any] = {}
    source: dict[str, str] = {}
    tables: dict[str, dict[str, Any]] = {table: {} for table in TABLES}
    for name, layer in layers:
        for key, value in layer.items():
            if key in TABLES:  # merged setting by setting
                tables[key].update(value)
                source.update({f"{key}.{inner}": name for inner in value})
                continue
            merged[key] = value
            source[key] = name
    if "data_dir" not in merged:
        raise ConfigError("data_dir: not set (give --data DIR, IDNODE_DATA_DIR or data_dir in the file)")
    if merged.get("workers") == 0:  # 0 means the default: one worker per CPU
        del merged["workers"]
    for table, values in tables.items():
        try:
            merged[table] = TABLES[table](**values)
        except ValueError as exc:  # the message starts with `table.setting:` when one setting is at fault
            head = str(exc).split(":", 1)[0].strip()
            layer = source.get(head)
            raise ConfigError(f"{_table_source_text(head, layer)}{exc}") from None
    try:
        return ServeConfig(**merged)
    except ValueError as exc:
        key = _key_of_message(str(exc))
        where = _source_text(key, source.get(key or "")) if key else ""
        raise ConfigError(f"{where}{exc}") from None


def _table_source_text(head: str, layer: str | None) -> str:
    """Where `table.setting` came from, as a message prefix ("" when the message is not about one setting)."""
    if layer is None:
        return ""
    inner = head.split(".", 1)[1]
    if layer == "environment":
        return f"environment {env_name(head.replace('.', '_'))}: "
    if layer == "flags":
        return f"--{inner.replace('_', '-')}: "
    return f"{layer}: "


def _source_text(key: str, layer: str | None) -> str:
    if layer == "environment":
        return f"environment {env_name(key)}: "
    if layer == "flags":
        return f"{flag_names(key)[0]}: "
    if layer:
        return f"{layer}: "
    return "default: "


def loader_from_args(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> Callable[[], ServeConfig]:
    """A function that builds the configuration again from the same flags, re-reading environment and file
    (the supervisor calls it on SIGHUP)."""
    flags = read_flags(args)

    def load() -> ServeConfig:
        env = os.environ if environ is None else environ
        config = build_config(flags, env, config_path(args, env))
        try:
            config.check_site_address()
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        try:
            # The TLS files are read at start and at every reload, so a bad one is refused before a worker
            # needs it (at reload the node keeps its running configuration).
            config.http_ssl_context()
        except TlsSettingError as exc:
            raise ConfigError(str(exc)) from None
        return config

    return load
