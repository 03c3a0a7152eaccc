"""Opening input files: plain or gzip (detected by content, not by name), with clear errors."""

from __future__ import annotations

import gzip
import io
import os
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from plmsae._util import InputError

_GZIP_MAGIC = b"\x1f\x8b"


def open_text(path: str | os.PathLike, what: str) -> TextIO:
    """Open ``path`` for reading text, decompressing gzip when the file starts with the gzip magic.

    ``what`` names the expected content ("FASTA", "annotation file") for the error message.
    Undecodable bytes are replaced, so a binary file fails later as bad content with a line number.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} not found.", path=path, fix="check the path.")
    if path.is_dir():
        raise InputError(
            f"expected a {what}, got a directory.", path=path, fix=f"pass the {what} itself."
        )
    with open(path, "rb") as fh:
        magic = fh.read(2)
    # the caller owns (and closes) the returned handle
    raw = gzip.open(path, "rb") if magic == _GZIP_MAGIC else open(path, "rb")  # noqa: SIM115
    return io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline=None)


@contextmanager
def gzip_errors(path: str | os.PathLike) -> Iterator[None]:
    """Turn a damaged or truncated gzip stream met while reading ``path`` into an InputError."""
    try:
        yield
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise InputError(
            f"the gzip stream is damaged or truncated ({e}).",
            path=Path(path),
            fix="re-download or re-compress the file.",
        ) from e
