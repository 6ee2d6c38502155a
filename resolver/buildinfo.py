"""What build of idnode this is: the package version (from its installed metadata), the git commit it was built
from, and the Python running it; for `idnode --version` and the `idnode_build_info` metric.

The commit comes from resolver/BUILD_COMMIT, which setup.py writes into a built package (wheel, `pip install .`)
when the source is a git checkout; a source checkout run in place (`pip install -e .`, `python -m resolver.cli`)
asks git instead. Neither: no commit is shown.
"""

from __future__ import annotations

import functools
import platform
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGE = "idnode"
COMMIT_FILE = Path(__file__).with_name("BUILD_COMMIT")  #: written by setup.py's build_py
COMMIT_CHARS = 12  #: unique in any repository of this size, short enough to read out
GIT_TIMEOUT_S = 2.0  #: git answers rev-parse in milliseconds; a hung one must not hold up --version


def version() -> str:
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def python_version() -> str:
    return platform.python_version()


@functools.cache
def commit() -> str:
    """The git commit (12 hex digits) of this build, or "" when it is not known."""
    try:
        text = COMMIT_FILE.read_text(encoding="ascii").strip()
    except OSError:
        text = ""
    if text:
        return text[:COMMIT_CHARS]
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():  # installed elsewhere: a git repository around it is not ours
        return ""
    try:
        done = subprocess.run(
            ["git", "-C", str(root), "rev-parse", f"--short={COMMIT_CHARS}", "HEAD"],
            capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def describe() -> str:
    """`idnode 0.1.0 (commit 0123456789ab, Python 3.11.7)`."""
    built = f"commit {commit()}, " if commit() else ""
    return f"{PACKAGE} {version()} ({built}Python {python_version()})"
