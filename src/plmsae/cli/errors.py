"""How the CLI ends: one clear line on stderr and an exit code, never a traceback for user errors.

Exit codes: 0 done, 1 a stage reports that nothing useful was produced (its printer decides),
2 bad input or an unusable output location, 130 interrupted (Ctrl-C). Every stage writes
atomically, so after an error or an interrupt the finished outputs are intact and the same
command resumes.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator

import typer
from rich.console import Console
from rich.markup import escape

from plmsae._util import PlmsaeError

EXIT_INPUT = 2
EXIT_INTERRUPTED = 130

_WRITE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}
_RESUME = "finished outputs are kept; re-run the same command to continue."


def fail(message: str, code: int = EXIT_INPUT) -> typer.Exit:
    """Print ``error: message`` on stderr; return the Exit to raise."""
    Console(stderr=True, highlight=False).print("[bold red]error:[/] " + escape(message))
    return typer.Exit(code=code)


@contextlib.contextmanager
def exit_on_user_errors() -> Iterator[None]:
    try:
        yield
    except PlmsaeError as e:
        raise fail(str(e)) from None
    except KeyboardInterrupt:
        Console(stderr=True, highlight=False).print(f"\ninterrupted: {_RESUME}")
        raise typer.Exit(code=EXIT_INTERRUPTED) from None
    except OSError as e:
        message = os_error_message(e)
        if message is None:
            raise
        raise fail(message) from None


def os_error_message(e: OSError) -> str | None:
    """One line for the OS errors a user can fix (full disk, read-only or wrong --out)."""
    where = f"{e.filename}: " if e.filename else ""
    if isinstance(e, (FileExistsError, NotADirectoryError)):
        return f"{where}exists and is not a directory. Fix: choose another --out."
    if e.errno not in _WRITE_ERRNOS:
        return None
    fix = (
        "free disk space"
        if e.errno in (errno.ENOSPC, errno.EDQUOT)
        else "choose a writable output directory"
    )
    return f"{where}{e.strerror}. Fix: {fix}; {_RESUME}"
