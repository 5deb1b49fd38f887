"""Pulling repo files into the Hugging Face cache, checked, all or nothing.

`pull` resolves a revision to its commit, downloads the files into the normal cache (so `HF_HUB_OFFLINE=1` works from
the cache afterwards), checks them against what the Hub announced (sha256 for LFS files, git blob id otherwise) and,
for safetensors, their structure. When anything fails the repo's cache folders are put back as they were: no
half-written file, no pointer to a broken blob, no moved branch ref. Errors name the repo.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

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

from .errors import CorruptExpertError, ExpertLoadError, ExpertNotFoundError
from .files import MODEL_FILES, README_NAME, atomic_write, check_safetensors, file_sha256, git_blob_sha1

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_GIT_OID = re.compile(r"^[0-9a-f]{40}$")


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


def fetch_readme(repo_id: str, revision: str | None = None, token: str | bool | None = None) -> str | None:
    """The README text of a Hub repo, or None when the repo, the revision or the README does not exist."""
    try:
        directory, _ = pull(repo_id, (README_NAME,), revision, owner=f"Repo {repo_id!r}", token=token)
    except ExpertNotFoundError:
        return None
    return Path(directory, README_NAME).read_text(encoding="utf-8")


__all__ = ["fetch_readme", "pull"]
