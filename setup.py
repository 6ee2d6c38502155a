"""Only build hooks; the project is described in pyproject.toml. A built package (wheel, `pip install .`)
records the git commit it was built from in resolver/BUILD_COMMIT, for `idnode --version` and the
idnode_build_info metric (resolver/buildinfo.py). On Linux it also compiles resolver/server/_mmsg.c, the
recvmmsg/sendmmsg batches of the Handle UDP listener: optional, so a machine without a C compiler or Python
headers still installs, and the worker then uses the event loop's datagram transport (one log line says so)."""

import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_py import build_py


class BuildPyWithCommit(build_py):
    def run(self):
        super().run()
        try:
            done = subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return  # no git: the build simply has no commit
        if done.returncode == 0 and done.stdout.strip():
            target = Path(self.build_lib) / "resolver" / "BUILD_COMMIT"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(done.stdout.strip() + "\n", encoding="ascii")


MMSG = Extension(
    "resolver.server._mmsg",
    ["resolver/server/_mmsg.c", "resolver/server/_plain.c"],
    depends=["resolver/server/_plain.h"],
    optional=True,
)

setup(cmdclass={"build_py": BuildPyWithCommit}, ext_modules=[MMSG] if sys.platform.startswith("linux") else [])
