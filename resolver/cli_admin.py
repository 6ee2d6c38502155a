"""`idnode` subcommands for running the node's enterprises and scenarios, on a store directly (`--data`,
`--config` or IDNODE_DATA_DIR, resolver/cli_store.py):

    idnode prefix add|list|disable|enable|credential    enterprises, their prefixes and credentials
    idnode template set|show|delete                      metadata templates per prefix
    idnode operator set-secret                           the operator's credential for the HTTP admin API
    idnode register FILE...                              register NDJSON with template checks (like the API)
    idnode scenario load DIR...                          install an application scenario (deploy/scenarios/)
    idnode trace HANDLE                                  follow identifier references, print the chain
    idnode report                                        acceptance figures against the call's thresholds

Their changes are entries of the store's write log: sent to the node's writer when a node serves the store
(`writer.sock` in the data directory, or $IDNODE_WRITER_SOCKET), else appended and applied by the command
itself with the same code (resolver/writer/client.py, `open_for_writes`). Workers pick prefix changes up
within a second. Registered from resolver/cli.py's parser by `register(sub)`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path


def _store(args: argparse.Namespace):
    from resolver.cli_store import open_store  # --data, --config or IDNODE_DATA_DIR, as every command

    return open_store(args)


@contextlib.contextmanager
def _writes(args: argparse.Namespace):
    """(store to read, where writes go): the node's writer when one serves the store, else the store itself."""
    from resolver.cli_store import store_dir
    from resolver.writer.client import WriterUnavailable, open_for_writes, socket_for
    from storage.store import StoreError

    data_dir = store_dir(args)
    try:
        with open_for_writes(data_dir, socket_for(data_dir, getattr(args, "config", None))) as pair:
            yield pair
    except (StoreError, WriterUnavailable) as exc:
        raise _fail(exc) from exc


def _fail(exc: Exception):
    from resolver.cli_errors import CliError

    return CliError(str(exc))


# -- prefixes ------------------------------------------------------------------------------------------------


def _node_prefix(args: argparse.Namespace) -> str:
    """The node's own prefix, as `idnode serve` takes it: --node-prefix > $IDNODE_NODE_PREFIX > `node_prefix`
    of the configuration file > the default."""
    import os

    from resolver import settings
    from resolver.config import DEFAULT_NODE_PREFIX

    if args.node_prefix:
        return args.node_prefix
    if os.environ.get(settings.env_name("node_prefix")):
        return os.environ[settings.env_name("node_prefix")]
    path = settings.config_path(args, os.environ)
    if path is not None:
        try:
            return str(settings.read_file(path).get("node_prefix", DEFAULT_NODE_PREFIX))
        except settings.ConfigError as exc:
            raise _fail(exc) from exc
    return DEFAULT_NODE_PREFIX


def cmd_prefix_add(args: argparse.Namespace) -> int:
    from storage.enterprises import EnterpriseError, add_prefix, identifiers_held

    node_prefix = _node_prefix(args)
    with _writes(args) as (store, target):
        try:
            info = add_prefix(target, args.prefix, args.org, args.site, node_prefix=node_prefix, force=args.force,
                              outside_node_prefix=args.outside_node_prefix)  # fmt: skip
        except EnterpriseError as exc:
            raise _fail(exc) from exc
        held = identifiers_held(store, info.prefix) if args.force and args.site else 0
    where = f"served by its own node at {args.site}" if args.site else "hosted here"
    note = " (disabled; `idnode prefix enable` to serve it)" if info.state == "disabled" else ""
    print(f"prefix {info.prefix} ({info.org}): {where}{note}")
    if held:
        print(f"{held:,} identifiers held here under {info.prefix} no longer resolve here (--force)", file=sys.stderr)
    return 0


def cmd_prefix_list(args: argparse.Namespace) -> int:
    from resolver.recursion.probe import annotate
    from storage.enterprises import enterprises

    with _store(args) as store:
        listed = annotate(enterprises(store), Path(store.path))
    if args.json:
        print(json.dumps(listed, ensure_ascii=False, indent=2))
        return 0
    rows = [("prefix", "state", "credential", "last seen (UTC)", "connected", "node", "site", "organisation")]
    for e in listed:
        seen = time.strftime("%Y-%m-%d %H:%M", time.gmtime(e["lastSeen"])) if e["lastSeen"] else "never"
        rows.append((e["prefix"], e["state"], "yes" if e["credential"] else "no", seen,
                     "yes" if e["connected"] else "no", _node_cell(e["node"]), e["site"] or "-", e["org"]))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1])
    connected = sum(1 for e in listed if e["connected"])
    print(
        f"\n{len(listed)} prefixes, {connected} enterprise nodes connected (authenticated in the last 24 h, "
        "or answering the node's probes)"
    )
    return 0


def _node_cell(node: dict | None) -> str:
    """The probe result of an enterprise node: up and its latency, down since when, or '-' (not probed)."""
    if not node:
        return "-"
    since = time.strftime("%m-%d %H:%M", time.gmtime(node["since"]))
    if node["up"]:
        return f"up {node['latency_ms']:.1f} ms"
    return f"down since {since}"


def _set_enabled(args: argparse.Namespace, enabled: bool) -> int:
    from storage.enterprises import EnterpriseError, set_prefix_enabled

    with _writes(args) as (_, target):
        try:
            info = set_prefix_enabled(target, args.prefix, enabled)
        except EnterpriseError as exc:
            raise _fail(exc) from exc
    print(f"prefix {info.prefix}: {info.state}")
    return 0


def cmd_prefix_disable(args: argparse.Namespace) -> int:
    return _set_enabled(args, False)


def cmd_prefix_enable(args: argparse.Namespace) -> int:
    return _set_enabled(args, True)


def cmd_prefix_credential(args: argparse.Namespace) -> int:
    from storage.enterprises import EnterpriseError, issue_credential

    if args.public_key:
        return _register_public_key(args)
    from storage.handlekeys import load_node_key

    with _writes(args) as (store, target):
        try:  # the secret also serves the Handle protocol (HS_SECKEY 300), encrypted with the node key
            user, secret = issue_credential(target, args.prefix, node_key=load_node_key(store.path, create=True))
        except EnterpriseError as exc:
            raise _fail(exc) from exc
    if args.json:
        print(json.dumps({"user": user, "secret": secret}))
    else:
        print(f"user    {user}\nsecret  {secret}")
        print("the secret is shown this once; only its salted hash is stored (issue a new one to rotate)",
              file=sys.stderr)  # fmt: skip
    return 0


def _register_public_key(args: argparse.Namespace) -> int:
    """`--public-key FILE`: an RSA, DSA or SM2 public key (PEM, DER, or the Handle HS_PUBKEY encoding) becomes
    the HS_PUBKEY at `--index` of `<prefix>/ADMIN` (default 301 RSA, 302 DSA, 303 SM2)."""
    from pathlib import Path

    from resolver.admin.crypto import DEFAULT_KEY_INDEX, KeyError_, read_public_key
    from resolver.handle.keys import encode_public_key
    from storage.enterprises import EnterpriseError, register_public_key

    try:
        key = read_public_key(Path(args.public_key).read_bytes())
    except OSError as exc:
        reason = exc.strerror or exc
        raise _fail(EnterpriseError(f"public key: cannot read {args.public_key}: {reason}")) from exc
    except KeyError_ as exc:
        raise _fail(EnterpriseError(f"public key: {args.public_key}: {exc}")) from exc
    index = args.index or DEFAULT_KEY_INDEX[key.key_type]
    with _writes(args) as (_, target):
        try:
            identity = register_public_key(target, args.prefix, index, encode_public_key(key))
        except EnterpriseError as exc:
            raise _fail(exc) from exc
    print(json.dumps({"identity": identity, "keyType": key.key_type}) if args.json else
          f"identity  {identity}\nkey       {key.key_type}")  # fmt: skip
    return 0


# -- operator ------------------------------------------------------------------------------------------------


def cmd_operator_set_secret(args: argparse.Namespace) -> int:
    from storage.enterprises import OPERATOR_USER, EnterpriseError, new_secret, set_operator_secret

    if args.secret_file:
        lines = Path(args.secret_file).read_text(encoding="utf-8").splitlines()
        secret = lines[0].strip() if lines else ""
        generated = False
    else:
        secret, generated = new_secret(), True
    with _writes(args) as (_, target):
        try:
            set_operator_secret(target, secret)
        except EnterpriseError as exc:
            raise _fail(exc) from exc
    if generated:
        print(f"user    {OPERATOR_USER}\nsecret  {secret}")
        print("the secret is shown this once; only its salted hash is stored", file=sys.stderr)
    else:
        print(f"operator secret set from {args.secret_file}", file=sys.stderr)
    return 0


# -- templates -----------------------------------------------------------------------------------------------


def cmd_template_set(args: argparse.Namespace) -> int:
    from resolver.templates import TemplateError, set_templates

    documents = []
    for path in args.files:
        try:
            obj = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise _fail(f"{path}: {exc}") from exc
        documents += [(path, d) for d in (obj if isinstance(obj, list) else [obj])]
    with _writes(args) as (_, target):
        for path, document in documents:
            try:
                template_set = set_templates(target, document)
            except TemplateError as exc:
                raise _fail(f"{path}: {exc}") from exc
            names = ", ".join(t.name for t in template_set.templates)
            print(
                f"{template_set.prefix}: templates {names}"
                + (f" ({template_set.scenario})" if template_set.scenario else "")
            )
    return 0


def cmd_template_show(args: argparse.Namespace) -> int:
    from resolver.templates import get_templates

    with _store(args) as store:
        document = get_templates(store, args.prefix)
    if document is None:
        raise _fail(f"no templates for {args.prefix}")
    print(json.dumps(document, ensure_ascii=False, indent=2))
    return 0


def cmd_template_delete(args: argparse.Namespace) -> int:
    from resolver.templates import delete_templates

    with _writes(args) as (_, target):
        if not delete_templates(target, args.prefix):
            raise _fail(f"no templates for {args.prefix}")
    print(f"templates of {args.prefix} deleted")
    return 0


# -- registering with checks, scenarios ----------------------------------------------------------------------


def register_file(store, path: Path, atomic: bool, target=None) -> tuple[int, int, list[dict]]:
    """Register the NDJSON records of `path` as `POST /api/batch` does (templates checked, one entry per
    2,000), as the operator: (created, replaced, failures). With `atomic`, a failure stops at its batch.
    `target`: where the writes go (default: `store` itself)."""
    import orjson

    from storage.jsonvalues import ValueEncoder
    from storage.writes import MAX_BATCH_ITEMS, REGISTRATIONS_CLI, parse_batch_item, put_batch

    target = store if target is None else target
    encoder = ValueEncoder(int(time.time()))
    created = replaced = 0
    failures: list[dict] = []
    with path.open("rb") as f:
        numbered = [(n, line) for n, line in enumerate(f, 1) if line.strip()]
    for start in range(0, len(numbered), MAX_BATCH_ITEMS):
        items = []
        for n, line in numbered[start : start + MAX_BATCH_ITEMS]:
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                obj = exc
            items.append(parse_batch_item(n, obj, encoder, store))
        result = put_batch(target, items, atomic=atomic, checker=True, counter_kind=REGISTRATIONS_CLI)
        created += result.created
        replaced += result.replaced
        failures += [{"file": str(path), **r} for r in result.results if r["responseCode"] != 1]
        if atomic and not result.written:
            break
    return created, replaced, failures


def _print_failures(failures: list[dict]) -> None:
    for f in failures[:20]:
        print(f"{f['file']}:line {f['position']}: {f.get('handle', '')} {f['message']}", file=sys.stderr)
    if len(failures) > 20:
        print(f"... and {len(failures) - 20} more", file=sys.stderr)


def cmd_register(args: argparse.Namespace) -> int:
    with _writes(args) as (store, target):
        total_created = total_replaced = 0
        failures: list[dict] = []
        for path in args.files:
            created, replaced, failed = register_file(store, Path(path), args.atomic, target)
            total_created, total_replaced, failures = (
                total_created + created,
                total_replaced + replaced,
                failures + failed,
            )
    _print_failures(failures)
    print(
        f"registered {total_created:,} new and {total_replaced:,} replaced identifiers; {len(failures):,} refused"
    )
    return 1 if failures else 0


def load_scenario(store, directory: Path, target=None) -> tuple[str, int, list[dict]]:
    """Install a scenario directory (scenario.json: prefixes, template documents, data file): register its
    prefixes, set its templates, register its data all or nothing. Safe to repeat. `target`: where the
    writes go (default: `store` itself)."""
    from resolver.templates import set_templates
    from storage.enterprises import add_prefix

    target = store if target is None else target
    manifest = json.loads((directory / "scenario.json").read_text(encoding="utf-8"))
    for entry in manifest.get("prefixes", []):
        add_prefix(target, entry["prefix"], entry["org"], entry.get("site"))
    for document in manifest.get("templates", []):
        set_templates(target, document)
    created = replaced = 0
    failures: list[dict] = []
    if manifest.get("data"):
        created, replaced, failures = register_file(store, directory / manifest["data"], True, target)
    return manifest.get("name", directory.name), created + replaced, failures


def cmd_scenario_load(args: argparse.Namespace) -> int:
    from resolver.templates import TemplateError
    from storage.enterprises import EnterpriseError

    with _writes(args) as (store, target):
        for directory in args.dirs:
            try:
                name, count, failures = load_scenario(store, Path(directory), target)
            except (OSError, ValueError, KeyError, TemplateError, EnterpriseError) as exc:
                raise _fail(f"{directory}: {exc}") from exc
            if failures:
                _print_failures(failures)
                raise _fail(
                    f"{directory}: {len(failures)} records refused; nothing of its data was registered"
                )
            print(f"scenario {name}: {count} identifiers registered")
    return 0


# -- trace and report ----------------------------------------------------------------------------------------


def cmd_trace(args: argparse.Namespace) -> int:
    from resolver.templates import format_trace, trace, trace_to_json

    with _store(args) as store:
        node = trace(store, args.handle)
    if args.json:
        print(json.dumps(trace_to_json(node), ensure_ascii=False, indent=2))
    else:
        print("\n".join(format_trace(node, values=args.values)))
    return 1 if node.missing else 0


def cmd_report(args: argparse.Namespace) -> int:
    from resolver.reports import acceptance_report, format_report

    with _store(args) as store:
        report = acceptance_report(store)
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        print(format_report(report))
    return 0


def _data(parser: argparse.ArgumentParser) -> None:
    from resolver.cli_store import add_store_arguments

    add_store_arguments(parser)


def register(sub: argparse._SubParsersAction) -> None:
    prefix = sub.add_parser("prefix", help="enterprises: their prefixes, nodes and credentials")
    prefix_sub = prefix.add_subparsers(dest="prefix_command", required=True)
    add = prefix_sub.add_parser("add", help="register a prefix, or update its organisation and site")
    add.add_argument("prefix", help="the enterprise prefix, e.g. 88.100.7")
    add.add_argument("--org", required=True, help="the enterprise's name")
    add.add_argument(
        "--site", help="HOST:PORT of the enterprise's own node (then resolutions are referred there)"
    )
    add.add_argument(
        "--force", action="store_true", help="give --site even though identifiers held here would stop resolving"
    )
    add.add_argument(
        "--outside-node-prefix", action="store_true",
        help="add a prefix that is not below the node's own prefix (node_prefix)",
    )  # fmt: skip
    add.add_argument(
        "--node-prefix", help="the node's own prefix (default: $IDNODE_NODE_PREFIX, node_prefix of --config, 88.100)"
    )
    _data(add)
    add.set_defaults(func=cmd_prefix_add)
    listing = prefix_sub.add_parser("list", help="prefixes with state, credential, last seen, connected")
    listing.add_argument("--json", action="store_true")
    _data(listing)
    listing.set_defaults(func=cmd_prefix_list)
    for name, func, text in (
        ("disable", cmd_prefix_disable, "stop serving a prefix and refuse its credential"),
        ("enable", cmd_prefix_enable, "serve a disabled prefix again"),
        (
            "credential",
            cmd_prefix_credential,
            "issue or rotate the secret of 300:<prefix>/ADMIN (printed once)",
        ),
    ):
        command = prefix_sub.add_parser(name, help=text)
        command.add_argument("prefix")
        if name == "credential":
            command.add_argument("--json", action="store_true", help="print {user, secret} as JSON")
            command.add_argument("--public-key", metavar="FILE",
                                 help="register this RSA/DSA/SM2 public key (PEM, DER or HS_PUBKEY data) instead")
            command.add_argument("--index", type=int, help="its index in <prefix>/ADMIN (default 301/302/303)")
        _data(command)
        command.set_defaults(func=func)

    operator = sub.add_parser("operator", help="the operator's credential for the HTTP admin API")
    operator_sub = operator.add_subparsers(dest="operator_command", required=True)
    secret = operator_sub.add_parser(
        "set-secret", help="set the secret of user 'operator' (printed once if generated)"
    )
    secret.add_argument("--secret-file", help="read the secret from the first line of this file instead")
    _data(secret)
    secret.set_defaults(func=cmd_operator_set_secret)

    template = sub.add_parser("template", help="metadata templates per prefix")
    template_sub = template.add_subparsers(dest="template_command", required=True)
    tset = template_sub.add_parser("set", help="store template documents (JSON: one document or a list)")
    tset.add_argument("files", nargs="+")
    _data(tset)
    tset.set_defaults(func=cmd_template_set)
    for name, func in (("show", cmd_template_show), ("delete", cmd_template_delete)):
        command = template_sub.add_parser(name, help=f"{name} the template document of a prefix")
        command.add_argument("prefix")
        _data(command)
        command.set_defaults(func=func)

    register = sub.add_parser(
        "register", help="register NDJSON records with template checks, like POST /api/batch"
    )
    register.add_argument("files", nargs="+")
    register.add_argument(
        "--atomic", action="store_true", help="a refused record refuses its whole batch of 2,000"
    )
    _data(register)
    register.set_defaults(func=cmd_register)

    scenario = sub.add_parser("scenario", help="industry application scenarios (deploy/scenarios/)")
    scenario_sub = scenario.add_subparsers(dest="scenario_command", required=True)
    sload = scenario_sub.add_parser("load", help="install scenario directories: prefixes, templates, data")
    sload.add_argument("dirs", nargs="+")
    _data(sload)
    sload.set_defaults(func=cmd_scenario_load)

    trace = sub.add_parser("trace", help="follow an identifier's references and print the chain")
    trace.add_argument("handle")
    trace.add_argument("--json", action="store_true")
    trace.add_argument("--values", action="store_true", help="print each identifier's values under it")
    _data(trace)
    trace.set_defaults(func=cmd_trace)

    report = sub.add_parser("report", help="acceptance figures against the call's thresholds")
    report.add_argument("--json", action="store_true")
    _data(report)
    report.set_defaults(func=cmd_report)
