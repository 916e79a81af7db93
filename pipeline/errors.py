"""Exceptions that the command maps to exit codes.

``DataError`` is bad input (exit code 2); ``CriticalValidationError`` is a critical
expectation that failed (exit code 3). Messages are written for the person at the
terminal: they name the file and say what was expected and what was found.
"""

from __future__ import annotations


class AssayError(Exception):
    """Base class of every error assay raises on purpose."""

    exit_code = 1


class DataError(AssayError, ValueError):
    """The input (a dataset, a suite, a config, an injection spec) is not what was expected."""

    exit_code = 2


class CriticalValidationError(AssayError):
    """At least one critical expectation failed; the run stops before detection."""

    exit_code = 3
