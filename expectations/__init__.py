"""Great Expectations suites, as JSON files versioned with the code.

``default.json`` is the suite a run uses when none is given: generic checks that fit any
labelled image data (readable 8-bit images of a supported size, no constant images,
labels present and declared, class balance, duplicates). ``digits.json`` is an example
suite with hand-set bounds for MNIST-like digits (bright ink on a dark background). Both
ship with the package (``importlib.resources.files("assay.expectations")``).
"""
