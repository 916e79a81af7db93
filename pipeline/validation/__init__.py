"""The parts behind :mod:`pipeline.validate`.

``suites``  reading and checking suite files in ``expectations/``, and learning one
``tables``  the three tables the suites run over (per sample, dataset facts, per class)
``engine``  running the suites with Great Expectations and turning its results into
            plain dictionaries
"""
