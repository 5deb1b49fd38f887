"""Pulling repo files into the Hugging Face cache, checked, all or nothing; reading safetensors safely.

`pull` resolves a revision to its commit, downloads the files into the normal cache (so `HF_HUB_OFFLINE=1` works from
the cache afterwards), checks them against what the Hub announced (sha256 for LFS files, git blob id otherwise) and,
for safetensors, their structure. When anything fails the repo's cache folders are put back as they were: no
half-written file, no pointer to a broken blob, no moved branch ref. Errors name the repo.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import torch
from huggingface_hub import HfApi, constants, hf_hub_download
from huggingface_hub.errors import (
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
    RevisionResolutionError,
)
from huggingface_hub.file_download import repo_folder_name
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..adapter import CONFIG_NAME, WEIGHTS_NAME, atomic_write

MODEL_FILES = (CONFIG_NAME, WEIGHTS_NAME)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_GIT_OID = re.compile(r"^[0-9a-f]{40}$")


class ExpertLoadError(OSError):
    """An expert (or router, or any hf_ttmoe repo) could not be pulled or read; the message names it."""

    def __init__(self, message: str, repo_id: str | None = None, revision: str | None = None):
        super().__init__(message)
        self.repo_id, self.revision = repo_id, revision


class ExpertNotFoundError(ExpertLoadError, FileNotFoundError):
    """The repo, the revision or a file does not exist, or is not in the cache while offline."""


class CorruptExpertError(ExpertLoadError):
    """A file was truncated or corrupted (in transit or in the repo), or is not valid safetensors."""


class IncompatibleExpertError(ValueError):
    """Experts that cannot be composed: different base model, layout or shapes. The message names the expert."""


# ----- reading files -----


def git_blob_sha1(data: bytes) -> str:
    """The id git (and the Hub's `ETag` for non-LFS files) gives a file's content."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_safetensors(path: str | os.PathLike) -> None:
    """Raise `ValueError` when `path` is not a whole safetensors file: header length, JSON header, and tensor data
    that ends exactly at the end of the file (a truncated file fails here with the byte counts)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{size} bytes is too short for a safetensors file")
        header_len = int.from_bytes(head, "little")
        if header_len > size - 8:
            raise ValueError(f"header announces {header_len} bytes but the file has only {size}: truncated")
        try:
            header = json.loads(f.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"header is not valid JSON ({err})") from err
    try:
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as err:
        raise ValueError(f"header does not list tensors with data offsets ({err!r})") from err
    if 8 + header_len + max(ends, default=0) != size:
        raise ValueError(f"tensor data ends at byte {8 + header_len + max(ends, default=0)} but the file has {size} "
                         "bytes: truncated or padded")


def read_weights(path: str | os.PathLike, owner: str) -> dict[str, torch.Tensor]:
    """`load_file` after `check_safetensors`; a bad file raises `CorruptExpertError` naming `owner`."""
    try:
        check_safetensors(path)
        return load_file(path)
    except (ValueError, SafetensorError) as err:
        raise CorruptExpertError(f"{owner}: {Path(path).name} is corrupted or truncated: {err}") from err


def _verify_download(path: str) -> None:
    """A cached file must hash to the blob name the Hub gave it (its `ETag`: sha256 for LFS, git blob id else)."""
    blob = os.path.basename(os.path.realpath(path))
    if _SHA256.match(blob):
        actual = file_sha256(path)
    elif _GIT_OID.match(blob):
        actual = git_blob_sha1(Path(path).read_bytes())
    else:  # a copy, not a blob link (symlinks disabled): nothing to compare with
        return
    if actual != blob:
        raise ValueError(f"content hashes to {actual[:12]}…, but the Hub announced {blob[:12]}…: corrupted download")


# ----- pulling into the cache, all or nothing -----


def _cache_roots(repo_id: str, cache_dir: str | None) -> list[Path]:
    cache = Path(cache_dir or constants.HF_HUB_CACHE)
    folder = repo_folder_name(repo_id=repo_id, repo_type="model")
    return [cache / folder, cache / ".locks" / folder]


def _cache_state(roots: list[Path]) -> dict[Path, bytes | None]:
    """Every path under `roots` (ref files with their content, so a moved branch can be put back)."""
    state = {}
    for root in roots:
        for path in [root, *root.rglob("*")] if root.exists() else []:
            is_ref = path.parent.name == "refs" or "refs" in path.relative_to(root).parts[:-1]
            state[path] = path.read_bytes() if is_ref and path.is_file() and not path.is_symlink() else None
    return state


def _restore_cache(roots: list[Path], before: dict[Path, bytes | None]) -> None:
    """Remove what appeared under `roots` since `before` and put back ref files that changed."""
    after = _cache_state(roots)
    for path in sorted(set(after) - set(before), key=lambda p: len(p.parts), reverse=True):
        if path.is_symlink() or path.is_file():
            path.unlink(missing_ok=True)
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    for path, content in before.items():
        if content is not None and after.get(path) != content:
            atomic_write(path, lambda tmp, c=content: Path(tmp).write_bytes(c))


def _named(err: Exception, owner: str, repo_id: str, revision: str | None, filename: str, cache: str) -> Exception:
    at = f" at revision {revision!r}" if revision else ""
    args = (repo_id, revision)
    if isinstance(err, RevisionNotFoundError):
        return ExpertNotFoundError(f"{owner}: revision {revision!r} does not exist in {repo_id!r} on "
                                   f"{constants.ENDPOINT}.", *args)
    if isinstance(err, RepositoryNotFoundError):
        return ExpertNotFoundError(f"{owner}: repository {repo_id!r} not found on {constants.ENDPOINT} (or it is "
                                   "private or gated and the token does not grant access).", *args)
    if isinstance(err, RemoteEntryNotFoundError):
        return ExpertNotFoundError(f"{owner}{at}: the repository has no {filename!r}; it is not a saved hf_ttmoe "
                                   "model.", *args)
    if isinstance(err, (LocalEntryNotFoundError, RevisionResolutionError, OfflineModeIsEnabled)):
        return ExpertNotFoundError(f"{owner}{at}: {filename} is not in the cache ({cache}) and the Hub cannot be "
                                   f"used (offline mode, HF_HUB_OFFLINE=1, or unreachable): {err}", *args)
    if isinstance(err, OSError) and "Consistency check failed" in str(err):
        return CorruptExpertError(f"{owner}{at}: the download of {filename} was truncated: {err}", *args)
    return ExpertLoadError(f"{owner}{at}: {filename} could not be downloaded: {err}", *args)


def pull(repo_id: str, filenames: tuple[str, ...] = MODEL_FILES, revision: str | None = None, *,
         owner: str | None = None, token: str | bool | None = None, cache_dir: str | None = None,
         local_files_only: bool = False) -> tuple[str, str]:
    """Download `filenames` of `repo_id` at `revision` into the Hugging Face cache, checked, all or nothing.

    Args:
        repo_id: the Hub repo.
        filenames: files to fetch; every one must exist.
        revision: branch, tag or commit; `None` = main. Resolved once, so all files come from one commit.
        owner: how errors name the repo (default `f"Expert {repo_id!r}"`).
        token / cache_dir / local_files_only: as in `huggingface_hub.hf_hub_download`; `HF_HUB_OFFLINE=1` reads the
            cache only.

    Returns:
        `(directory, commit)`: the cache snapshot directory holding the files, and the commit sha they come from.
    """
    owner = owner or f"Expert {repo_id!r}"
    offline = local_files_only or constants.is_offline_mode()
    hub = {"token": token, "cache_dir": cache_dir, "local_files_only": offline}
    roots = _cache_roots(repo_id, cache_dir)
    before = _cache_state(roots)
    filename = filenames[0]
    try:
        try:
            commit = HfApi(token=token).resolve_revision(repo_id, revision=revision, cache_dir=cache_dir,
                                                         local_files_only=offline, token=token).resolved
            paths = []
            for filename in filenames:
                paths.append(hf_hub_download(repo_id, filename, revision=commit, **hub))
        except Exception as err:
            raise _named(err, owner, repo_id, revision, filename, str(cache_dir or constants.HF_HUB_CACHE)) from err
        for filename, path in zip(filenames, paths):
            try:
                _verify_download(path)
                if filename.endswith(".safetensors"):
                    check_safetensors(path)
            except ValueError as err:
                for broken in (os.path.realpath(path), path):  # broken whenever it came: out of the cache
                    Path(broken).unlink(missing_ok=True)
                raise CorruptExpertError(f"{owner} (commit {commit}): {filename} is corrupted or truncated: {err}",
                                         repo_id, revision) from err
    except BaseException:
        _restore_cache(roots, before)
        raise
    return os.path.dirname(paths[0]), commit


__all__ = ["CorruptExpertError", "ExpertLoadError", "ExpertNotFoundError", "IncompatibleExpertError", "MODEL_FILES",
           "check_safetensors", "file_sha256", "git_blob_sha1", "pull", "read_weights"]
