"""User-facing errors.

A :class:`BenchError` carries one line that names the problem and the fix. The CLI
prints it (no traceback) and exits with code 2; library callers can catch it.
"""


class BenchError(Exception):
    """Bad input or an unusable environment, explained in one line."""

    exit_code = 2


def disk_full_message(exc: OSError) -> str:
    """The one line for a write that failed with ENOSPC (no space left on the device)."""
    where = f" while writing {exc.filename}" if getattr(exc, "filename", None) else ""
    return (
        f"no space left on the device{where}; free some space, then continue with "
        "`bench run --resume --name RUN` (completed work is kept)"
    )


def is_disk_full(exc: BaseException) -> bool:
    import errno

    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
