"""msabench suites: problems, grids, the runner and its CLI.

``python -m suites`` (or the ``msabench`` console script) is the command line; see
``suites/__main__.py``. This package's import is kept cheap (no framework imports): the
CLI answers bad input without loading torch or JAX.

Every msabench command shares one error contract (``msaresults.cli``, re-exported here):
bad input prints one line ``msabench: error: ...`` on stderr and exits with status 2. The
results schema is ``msaresults.schema`` (``suites.schema`` is the same module).
"""

from __future__ import annotations

from msaresults.cli import PROG, Parser, fail

__all__ = ["PROG", "Parser", "fail"]
