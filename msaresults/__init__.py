"""The contract between msabench's writer and its readers.

``msaresults.schema`` is the results format (columns, metadata, the run facts, a cell's
final row); ``msaresults.cli`` the command-line error contract (one line on stderr, exit
status 2). ``suites`` (which writes runs) and ``reports`` (which reads them) both import
this package; it imports neither, so the two never import each other in a cycle.
"""
