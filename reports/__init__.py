"""msabench reports: generators that turn run files (``results/``) into documents.

- ``python -m reports build RESULTS...`` (``reports/__main__.py``, ``reports/build.py``):
  the comparison report, ``reports/<suite>/index.html`` + ``index.md`` + ``figures/``,
  with the papers' claims evaluated (``reports/claims.py``) and the authors' logged runs
  (``reports/data/``, read by ``reports/reference.py``) drawn beside ours;
- ``python -m reports.summary``: one Markdown table per run.

Generated output goes to ``reports/<suite>/`` (ignored by git); the generators and
``reports/data/`` are source.
"""
