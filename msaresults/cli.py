"""The error contract of every msabench command: bad input prints one line
``msabench: error: ...`` on stderr and exits with status 2."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

PROG = "msabench"


def fail(message: str, status: int = 2) -> NoReturn:
    """Print ``msabench: error: <message>`` (one line) on stderr and exit."""
    print(f"{PROG}: error: {' '.join(str(message).split())}", file=sys.stderr)
    raise SystemExit(status)


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (argparse's own print the usage
    first), so scripts can show the message as is."""

    def error(self, message: str) -> NoReturn:
        fail(message)
