"""Builds the optional C extension (workers/lane/_lane.c); pyproject.toml holds everything else.

Optional: without a C compiler or Python's headers, or with POOLSVC_NO_EXTENSIONS=1
set at install time, the package installs without it and runs the pure-Python path
(the reference; workers/lane/fastpath.py says which path a run takes).
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuild(build_ext):
    """Build the extension if this machine can; say why not and go on if it cannot."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # no compiler at all (setuptools' own error types vary)
            _skipped(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # no headers, a compile error
            _skipped(exc)
            self.extensions.remove(ext)  # nothing to copy in place


def _skipped(exc: Exception) -> None:
    print(f"poolsvc: C extension not built ({exc}); the pure-Python path runs", file=sys.stderr)


extensions = []
if os.environ.get("POOLSVC_NO_EXTENSIONS", "") in ("", "0"):
    extensions.append(
        Extension(
            "workers.lane._lane",
            ["workers/lane/_lane.c"],
            extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra"],
        )
    )

setup(ext_modules=extensions, cmdclass={"build_ext": OptionalBuild})
