"""One module per section of the report; each ``build(inputs)`` returns the plain dict
the section's template reads."""
