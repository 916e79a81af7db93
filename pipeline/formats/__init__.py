"""Readers for the input formats :func:`pipeline.io.load` accepts.

One module per format, each with one ``read_*`` function that returns a validated
:class:`~pipeline.dataset.Dataset`; :mod:`pipeline.io` chooses among them from the data
spec and owns the canonical format that assay itself writes.
"""
