"""Great Expectations suites, as JSON files versioned with the code.

``default.json`` is the suite a run uses when none is given; it ships with the package
(``importlib.resources.files("assay.expectations")``).
"""
