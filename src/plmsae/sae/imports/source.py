"""Where an SAE to import lives: a local file or directory, or ``hf://owner/repo[/path]``.

A hub source is read through ``huggingface_hub`` one file at a time, only the files the format
needs (an all-layer Biohub repository is not downloaded whole): each download lands in the
Hugging Face cache and is reused; with ``HF_HUB_OFFLINE=1`` only the cache is read. A missing
file, a missing repository and "offline, not cached" are each an :class:`InputError` that says
so. ``HF_ENDPOINT`` (a mirror) and ``HF_HOME`` / ``HF_HUB_CACHE`` work as for any hub client.

A source names one file when its last part has a weights or config suffix (``.pt``,
``.safetensors`` ...), else a directory (a repository root or a folder in it).
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from plmsae._util import InputError

HF_SCHEME = "hf://"
#: suffixes that make a source one file rather than a directory
FILE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors", ".json", ".yaml")


class Source:
    """``Source("hf://Elana/InterPLM-esm2-8m/layer_4/ae_normalized.pt")`` or a local path.

    :meth:`file` is the source file itself (file sources), :meth:`member` a file in the source
    directory or next to the source file, fetched on first use."""

    def __init__(self, text: str, revision: str | None = None):
        self.text = str(text)
        self.revision = revision
        self.fetched: list[Path] = []  # every file read, in order (hashed into the provenance)
        self.hub = self.text.startswith(HF_SCHEME)
        if self.hub:
            self.repo_id, self.subpath = _parse(self.text)
            self.is_file = self.subpath.endswith(FILE_SUFFIXES)
        else:
            self.local = Path(self.text).expanduser()
            if not self.local.exists():
                raise InputError(
                    "SAE source not found.",
                    path=self.local,
                    fix="pass an existing file or directory, or hf://owner/repo[/path].",
                )
            self.is_file = self.local.is_file()

    @property
    def name(self) -> str:
        """The file or directory name the source points at ("" for a repository root)."""
        return PurePosixPath(self.subpath).name if self.hub else self.local.name

    def file(self) -> Path:
        """The source file (file sources only), local or downloaded."""
        if not self.is_file:
            raise InputError(
                "this format reads one checkpoint file, but the source is a directory.",
                path=self.text,
                fix="point to the checkpoint file itself (e.g. .../ae_normalized.pt).",
            )
        path = self._get(self.subpath) if self.hub else self.local
        assert path is not None
        self._read(path)
        return path

    def member(self, name: str, *, optional: bool = False) -> Path | None:
        """File ``name`` in the source directory, or next to the source file; None when
        ``optional`` and it does not exist."""
        if self.hub:
            base = PurePosixPath(self.subpath)
            base = base.parent if self.is_file else base
            got = self._get(str(base / name) if str(base) not in ("", ".") else name, optional)
            return None if got is None else self._read(got)
        path = (self.local.parent if self.is_file else self.local) / name
        if path.is_file():
            return self._read(path)
        if optional:
            return None
        raise InputError(
            f"{name} is missing next to the SAE.",
            path=path.parent,
            fix=f"copy {name} from the publisher's release into this directory.",
        )

    def _read(self, path: Path) -> Path:
        if path not in self.fetched:
            self.fetched.append(path)
        return path

    def _get(self, path_in_repo: str, optional: bool = False) -> Path | None:
        """Download (or find in the cache) one file of the hub repository."""
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import (
            EntryNotFoundError,
            HfHubHTTPError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        where = f"{HF_SCHEME}{self.repo_id}/{path_in_repo}"
        try:
            return Path(
                hf_hub_download(
                    self.repo_id,
                    path_in_repo,
                    revision=self.revision,
                    local_files_only=_offline(),
                )
            )
        except LocalEntryNotFoundError:
            if optional and not _offline():
                return None  # the hub is unreachable; an optional file is just absent
            raise InputError(
                "not in the local Hugging Face cache and "
                + ("HF_HUB_OFFLINE is set." if _offline() else "the hub cannot be reached."),
                path=where,
                fix="connect to the internet once (the files are then cached), or unset "
                "HF_HUB_OFFLINE, or download the files and pass their local path.",
            ) from None
        except RepositoryNotFoundError:
            raise InputError(
                f"repository {self.repo_id} does not exist on the hub (or is private).",
                path=where,
                fix="check the owner/name; for a private or gated repository log in with "
                "`hf auth login`.",
            ) from None
        except RevisionNotFoundError:
            raise InputError(
                f"revision {self.revision!r} does not exist in {self.repo_id}.",
                path=where,
                fix="pass an existing branch, tag or commit to --revision.",
            ) from None
        except EntryNotFoundError:
            if optional:
                return None
            raise InputError(
                f"{path_in_repo} is not a file of {self.repo_id}"
                + (f" at revision {self.revision}." if self.revision else "."),
                path=where,
                fix="check the path against the repository's file list.",
            ) from None
        except HfHubHTTPError as e:
            raise InputError(
                f"the hub refused the download: {str(e).splitlines()[0]}",
                path=where,
                fix="check the path, your access to the repository, or try again later.",
            ) from None


def _parse(text: str) -> tuple[str, str]:
    """``hf://owner/repo[/path]`` -> ``(owner/repo, path)``."""
    parts = [p for p in text[len(HF_SCHEME) :].split("/") if p]
    if len(parts) < 2:
        raise InputError(
            "a hub source is hf://owner/repo or hf://owner/repo/path/in/repo.",
            path=text,
            fix="e.g. hf://Elana/InterPLM-esm2-8m/layer_4/ae_normalized.pt.",
        )
    return "/".join(parts[:2]), "/".join(parts[2:])


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
