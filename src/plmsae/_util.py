"""Small shared helpers: clear input errors, atomic writes, checksums, progress bars.

Every stage writes its outputs through :func:`atomic_write` / :func:`write_json` so that a
killed run never leaves a half-written file behind, and reports bad input with
:class:`InputError`, whose message names the file, the record and the fix.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("plmsae")
    except PackageNotFoundError:  # running from a source tree without installation
        return "0.0.0+src"


#: the installed plmsae version (``plmsae.__version__``), recorded in every output's metadata
VERSION = _package_version()


class PlmsaeError(Exception):
    """Base class for errors plmsae reports to the user (the CLI prints them without a traceback)."""


class InputError(PlmsaeError, ValueError):
    """Bad user input.

    The message always says where (file, line or record), what is wrong, and how to fix it.
    """

    def __init__(
        self,
        problem: str,
        *,
        path: str | os.PathLike | None = None,
        record: str | int | None = None,
        fix: str | None = None,
    ):
        where = ""
        if path is not None:
            where = str(path)
            if record is not None:
                where += f", {record}" if isinstance(record, str) else f", line {record}"
            where += ": "
        elif record is not None:
            where = f"{record}: "
        msg = f"{where}{problem}"
        if fix:
            msg += f" Fix: {fix}"
        super().__init__(msg)
        self.path = None if path is None else str(path)
        self.record = record
        self.problem = problem
        self.fix = fix


def _umask_mode() -> int:
    # mkstemp creates 0600 files; outputs (sites, stores, checkpoints) should get the usual
    # permissions of a new file, 0666 minus the umask.
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _umask_mode()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary file next to ``path``; on success fsync and rename it over ``path``.

    On any exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, _FILE_MODE)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path for a writer that wants a filename (pyarrow, safetensors, numpy).

    The temporary file is renamed over ``path`` when the block succeeds, removed otherwise. A
    full disk reported by the writer library in its own exception type (safetensors does) is
    raised as ``OSError(ENOSPC)`` naming ``path``, so every stage reports it the same way.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent
    )
    os.close(fd)
    os.chmod(tmp, _FILE_MODE)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if _is_disk_full(e):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from e
        raise


def _is_disk_full(e: BaseException) -> bool:
    if isinstance(e, OSError) and e.errno is not None:
        return False  # already an OSError that says what it is
    text = str(e)
    return "No space left on device" in text or "os error 28" in text or "StorageFull" in text


def prepare_out_dir(path: str | os.PathLike, option: str = "--out") -> Path:
    """Create the output directory ``path`` (and its parents), or explain why it cannot be one."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(
            f"{option} exists and is not a directory.",
            path=path,
            fix=f"choose another {option}, or move the file away.",
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise InputError(
            f"{option} cannot be created: a part of its path is a file.",
            path=path,
            fix=f"choose another {option}.",
        ) from None
    return path


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_write(path, "w") as fh:
        json.dump(obj, fh, indent=2, sort_keys=False, default=_json_default)
        fh.write("\n")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        with open(path) as fh:
            return json.load(fh)
    except json.JSONDecodeError as e:
        raise InputError(
            f"not valid JSON ({e.msg} at line {e.lineno}).",
            path=path,
            fix="the file is damaged; delete it and re-run the stage that wrote it.",
        ) from e


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while b := fh.read(chunk):
            h.update(b)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    """Stable hash of a JSON-able object (settings dicts, cache keys)."""
    return hashlib.sha256(
        json.dumps(obj, sort_keys=True, default=_json_default).encode()
    ).hexdigest()


_PROGRESS = {"shown": False}


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return getattr(ctypes.CDLL(None), "malloc_trim", None)
    except (OSError, TypeError):  # no C library to open by name (Windows)
        return None


def release_freed_memory() -> None:
    """Return the free pages of the C heap to the system (glibc's ``malloc_trim``; nothing
    elsewhere). Arrays freed at the end of a step leave a fragmented heap that glibc keeps, so
    without this the resident memory between steps stays near the last step's peak."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def show_progress(shown: bool = True) -> None:
    """Show progress bars of long stages on stderr (the CLI turns them on; off for library use)."""
    _PROGRESS["shown"] = shown


def progress(transient: bool = False) -> Progress:
    """The one progress-bar style of plmsae (rich). Add a task with ``fields`` for rates.

    Silent unless :func:`show_progress` was called, and always when ``PLMSAE_NO_PROGRESS=1``.
    """
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}", style="cyan"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=transient,
        disable=not _PROGRESS["shown"] or os.environ.get("PLMSAE_NO_PROGRESS") == "1",
    )
