"""User-facing errors.

A :class:`BenchError` carries one line that names the problem and the fix. The CLI
prints it (no traceback) and exits with code 2; library callers can catch it.
"""


class BenchError(Exception):
    """Bad input or an unusable environment, explained in one line."""

    exit_code = 2
