"""Backup and restore of a store: `idnode backup` and `idnode restore`.

A backup is a directory with `data.mdb` (LMDB's compacting copy, taken in one read transaction, so it is
consistent while the node keeps serving and writing) and `backup.json` (when, from where, how many
identifiers, size and SHA-256 of data.mdb). It is written under DEST.partial and renamed into place only when
complete and verified, so a DEST that exists is a whole backup.

Restore copies data.mdb into the data directory next to the live one, checks it, and only then swaps it in
with renames; the store it replaces is kept in DATA/replaced-<time>/ until the operator deletes it. Whether
the store is live (a server holds its lock, or processes hold LMDB read transactions) is the caller's
question; see resolver.cli_ops. Never imports the servers.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
from pathlib import Path

import lmdb

from storage.store import MAX_DBS, Store

MANIFEST = "backup.json"  #: written next to data.mdb in a backup directory
MANIFEST_FORMAT = 1  #: version of backup.json
HASH_CHUNK_BYTES = 8 << 20  #: read size while hashing data.mdb


class BackupError(Exception):
    """A backup or restore cannot be done as asked; nothing was changed."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def backup_store(store: Store, dest: Path) -> dict:
    """Write a compacted, consistent copy of `store` to the directory `dest` (which must not exist, or be
    empty). Returns the manifest."""
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BackupError(f"{dest} already exists and is not an empty directory")
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        started = datetime.datetime.now(datetime.UTC)
        store.env.copy(str(partial), compact=True)
        data = partial / "data.mdb"
        identifiers, prefixes, position = _count(partial)
        manifest = {
            "format": MANIFEST_FORMAT,
            "created": started.isoformat(timespec="seconds"),
            "source": str(Path(store.path).resolve()),
            "identifiers": identifiers,
            "prefixes": prefixes,
            # the write-log position the copy holds everything up to: a new cluster member restored from it
            # replays the log from the next position (README, "Cluster")
            "log_position": position,
            "bytes": data.stat().st_size,
            "sha256": sha256_file(data),
        }
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        _fsync_path(data)
        _fsync_path(partial / MANIFEST)
        if dest.exists():
            dest.rmdir()
        partial.rename(dest)
        _fsync_path(dest.parent)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return manifest


def _count(directory: Path) -> tuple[int, int, int]:
    """(identifiers, prefixes, applied log position) of an LMDB copy, read without creating a lock file."""
    env = lmdb.open(str(directory), readonly=True, lock=False, max_dbs=MAX_DBS, readahead=False)
    try:
        with env.begin() as txn:
            counts = []
            for name in (b"handles", b"prefixes"):
                try:
                    db = env.open_db(name, txn=txn, create=False)
                except lmdb.NotFoundError:
                    counts.append(0)
                    continue
                counts.append(txn.stat(db)["entries"])
            meta = env.open_db(b"meta", txn=txn, create=False)
            raw = txn.get(b"applied_position", db=meta)
        return counts[0], counts[1], int.from_bytes(raw, "big") if raw else 0
    finally:
        env.close()


def read_backup(src: Path) -> tuple[Path, dict | None]:
    """(data.mdb, manifest or None) of a backup directory, or of a bare data.mdb file."""
    src = Path(src)
    data = src / "data.mdb" if src.is_dir() else src
    if not data.is_file():
        raise BackupError(f"{src}: no data.mdb (give a directory written by `idnode backup`)")
    manifest = None
    manifest_path = data.parent / MANIFEST
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BackupError(f"{manifest_path}: unreadable: {exc}") from None
    return data, manifest


def live_readers(data_dir: Path) -> list[int]:
    """Pids (other than ours) holding LMDB read transactions on the store in `data_dir`: a server
    answers from a long-lived one, so a non-empty list means the store is in use."""
    if not (Path(data_dir) / "data.mdb").exists():
        return []
    env = lmdb.open(str(data_dir), readonly=True, max_dbs=MAX_DBS, readahead=False)
    try:
        env.reader_check()  # drop slots of processes that died
        pids = set()
        for line in env.readers().splitlines()[1:]:
            fields = line.split()
            if fields and fields[0].isdigit() and int(fields[0]) != os.getpid():
                pids.add(int(fields[0]))
        return sorted(pids)
    finally:
        env.close()


def restore_store(src: Path, data_dir: Path, stamp: str | None = None) -> dict:
    """Put the backup `src` in place as the store of `data_dir`. Returns what was done: the manifest,
    identifiers restored, and where the replaced store was moved (None when there was none)."""
    data, manifest = read_backup(src)
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    incoming = data_dir / "restore.partial"
    shutil.rmtree(incoming, ignore_errors=True)
    incoming.mkdir()
    try:
        shutil.copyfile(data, incoming / "data.mdb")
        if manifest and manifest.get("sha256"):
            actual = sha256_file(incoming / "data.mdb")
            if actual != manifest["sha256"]:
                raise BackupError(
                    f"{data}: SHA-256 {actual} differs from the manifest's {manifest['sha256']}"
                )
        try:
            identifiers, _, _ = _count(incoming)
        except lmdb.Error as exc:
            raise BackupError(f"{data}: not a readable LMDB store: {exc}") from None
        _fsync_path(incoming / "data.mdb")
        replaced = None
        if (data_dir / "data.mdb").exists():
            stamp = stamp or datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
            replaced = data_dir / f"replaced-{stamp}"
            replaced.mkdir()
            # lock.mdb moves too: processes still using the old store keep their lock file, and the next
            # opener of the restored one starts a fresh lock table that matches it.
            for name in ("data.mdb", "lock.mdb"):
                if (data_dir / name).exists():
                    (data_dir / name).rename(replaced / name)
        (incoming / "data.mdb").rename(data_dir / "data.mdb")
        _fsync_path(data_dir)
    finally:
        shutil.rmtree(incoming, ignore_errors=True)
    return {"manifest": manifest, "identifiers": identifiers, "replaced": str(replaced) if replaced else None}
