"""The product's command lines: their exit codes, and a usage error on one line.

argparse echoes what the user typed (``unrecognized arguments: ...``), and what
they typed may hold a carriage return or a newline; such characters are shown
escaped, so the reason stays on one line whatever the argument was.
"""

from __future__ import annotations

import argparse
from typing import NoReturn

EXIT_OK = 0
EXIT_USAGE = 2  # invalid configuration or arguments
EXIT_REFUSED = 3  # poolctl: the service refused the command
EXIT_UNREACHABLE = 4  # the target (poolsvc) or the service (poolctl) cannot be reached
EXIT_LEAK = 5  # an audit found a leak, or could not rule one out
EXIT_THRESHOLD = 99  # a threshold failed (k6's code)


def one_line(text: str) -> str:
    """``text`` with every unprintable character escaped (``\\r``, ``\\x1b``)."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {one_line(message)}\n")
