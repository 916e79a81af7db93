import assay.models  # noqa: F401  (sets the OpenMP wait policy before anything loads torch)
