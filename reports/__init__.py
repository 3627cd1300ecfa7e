"""msabench reports: generators that turn run files (``results/``) into Markdown.

``python -m reports.summary`` writes one table per run; see ``reports/summary.py``.
Generated output goes to ``reports/<suite>/`` (ignored by git); only the generators here
are source.
"""
