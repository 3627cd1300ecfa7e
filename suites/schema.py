"""The results schema moved to ``msaresults.schema`` (the contract ``suites`` and
``reports`` both depend on); ``suites.schema`` is that same module object, so existing
imports (and monkeypatches) keep working."""

import sys

from msaresults import schema

sys.modules[__name__] = schema
