"""Files on disk: the names a saved model uses, atomic writes, digests, safetensors reads that check the file, and
the binding of a saved model's two files to each other.

Imports nothing of hf_ttmoe: every other module builds on it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .errors import CorruptExpertError, ExpertLoadError, ExpertNotFoundError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
README_NAME = "README.md"
MODEL_FILES = (CONFIG_NAME, WEIGHTS_NAME)
WEIGHTS_DIGEST_KEY = "weights_sha256"  # in config.json: sha256 of the model.safetensors saved with it
CONFIG_DIGEST_KEY = "hf_ttmoe_config_sha256"  # in model.safetensors' metadata: `config_digest` of its config.json

logger = logging.getLogger(__name__)


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call `write(tmp_path)`, then rename onto `path`: a reader never sees a half-written file.

    The file gets the mode `open(path, "w")` would give it, `0o666` less the process umask (0644 under umask 022),
    so a teammate can read a shared folder (`tempfile.mkstemp` would give 0600 whatever the umask): the temporary
    file is created with `os.open(..., 0o666)`, the kernel applies the umask, and that mode is set again after
    `write`, which may have replaced the file (safetensors' `save_file` does, with 0600).
    """
    path = Path(path)
    while True:
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:  # a name another writer holds: draw again
            continue
    try:
        mode = stat.S_IMODE(os.stat(tmp).st_mode)  # 0o666 & ~umask, read without changing the process umask
        write(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def git_blob_sha1(data: bytes) -> str:
    """The id git (and the Hub's `ETag` for non-LFS files) gives a file's content."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_safetensors(path: str | os.PathLike) -> dict[str, str]:
    """Raise `ValueError` when `path` is not a whole safetensors file: header length, JSON header, and tensor data
    that ends exactly at the end of the file (a truncated file fails here with the byte counts).

    Returns:
        The header's `__metadata__` (`{}` when it has none).
    """
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
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    return metadata if isinstance(metadata, dict) else {}


def read_weights(path: str | os.PathLike, owner: str) -> dict[str, torch.Tensor]:
    """`load_file` after `check_safetensors`; a bad file raises `CorruptExpertError` naming `owner`."""
    try:
        check_safetensors(path)
        return load_file(path)
    except (ValueError, SafetensorError) as err:
        raise CorruptExpertError(f"{owner}: {Path(path).name} is corrupted or truncated: {err}") from err


def is_local_path(name: str) -> bool:
    """True when `name` can only mean a local path, never a Hub repo id (`"name"` or `"namespace/name"`): absolute,
    starting with `.` or `~`, holding a backslash, or with more than one `/`.

    >>> [is_local_path(n) for n in ("org/model", "model", "./model", "/tmp/model", "runs/a/model")]
    [False, False, True, True, True]
    """
    return os.path.isabs(name) or name.startswith((".", "~")) or "\\" in name or name.count("/") > 1


# ----- a saved model's two files, bound to each other -----


def config_digest(config: dict) -> str:
    """sha256 of a config as JSON (sorted keys, no spaces, after a JSON round trip), leaving out the weights digest
    it records: the value a weights file's metadata records for the config it was saved with."""
    body = json.loads(json.dumps({k: v for k, v in config.items() if k != WEIGHTS_DIGEST_KEY}))
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_model_files(directory: str | os.PathLike, config: dict,
                      write_weights: Callable[[str, dict[str, str]], None]) -> None:
    """Write `model.safetensors`, then `config.json`, each atomically and each naming the other's digest.

    The weights' metadata records `config_digest(config)` (`CONFIG_DIGEST_KEY`); the config records the sha256 of
    the weights file (`WEIGHTS_DIGEST_KEY`). A crash between the two renames leaves new weights beside the old
    config, which `read_model_files` then refuses.

    Args:
        directory: an existing directory.
        config: the config as `config.json` stores it (a stale `WEIGHTS_DIGEST_KEY` in it is replaced).
        write_weights: `write_weights(path, metadata)` writes the safetensors file with that metadata.
    """
    config = {k: v for k, v in config.items() if k != WEIGHTS_DIGEST_KEY}
    metadata = {"format": "pt", CONFIG_DIGEST_KEY: config_digest(config)}
    digest = {}

    def weights(tmp: str) -> None:
        write_weights(tmp, metadata)
        digest["sha256"] = file_sha256(tmp)

    atomic_write(Path(directory, WEIGHTS_NAME), weights)
    text = json.dumps({**config, WEIGHTS_DIGEST_KEY: digest["sha256"]}, indent=2, sort_keys=True) + "\n"
    atomic_write(Path(directory, CONFIG_NAME), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def check_model_files(config: dict, metadata: dict[str, str], weights_path: str | os.PathLike, owner: str) -> None:
    """Refuse a `config.json` and `model.safetensors` that were not saved together, or weights whose bytes changed.

    A pair from before digests were recorded loads with a one-line notice; so, with a warning, do weights that
    carry no config digest (written by another tool) but differ from the digest the config records: their shapes
    are still checked against the model.

    Raises:
        CorruptExpertError: naming both files when the weights were saved with another config, or the weights file
            when its bytes do not hash to the digest its config records.
    """
    recorded_weights, recorded_config = config.get(WEIGHTS_DIGEST_KEY), metadata.get(CONFIG_DIGEST_KEY)
    if recorded_weights is None and recorded_config is None:
        logger.warning("%s: saved without digests (by an older hf_ttmoe): %s and %s are not checked against each "
                       "other; save it again to bind them.", owner, CONFIG_NAME, WEIGHTS_NAME)
        return
    if recorded_config is not None and recorded_config != config_digest(config):
        raise CorruptExpertError(
            f"{owner}: {CONFIG_NAME} and {WEIGHTS_NAME} do not belong together: the weights were saved with a config "
            f"of digest {recorded_config[:12]}…, but {CONFIG_NAME} hashes to {config_digest(config)[:12]}… (a save "
            "interrupted between the two files, or one of them edited or replaced). Save the model again.")
    actual = file_sha256(weights_path) if recorded_weights is not None else None
    if actual != recorded_weights and recorded_config is not None:
        raise CorruptExpertError(
            f"{owner}: {WEIGHTS_NAME} is corrupted: its bytes hash to {actual[:12]}…, but {CONFIG_NAME} records "
            f"{recorded_weights[:12]}… for the weights saved with it.")
    if actual != recorded_weights:
        logger.warning("%s: %s was not saved with this %s (no config digest in it, and its sha256 %s… differs from "
                       "the %s… the config records); loading it as given.", owner, WEIGHTS_NAME, CONFIG_NAME,
                       actual[:12], recorded_weights[:12])


def read_model_files(directory: str | os.PathLike, owner: str, repo_id: str | None = None,
                     revision: str | None = None) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read a saved model's `config.json` and `model.safetensors`, checked: both present, the config valid JSON,
    the weights whole safetensors, and the two saved together (`check_model_files`).

    Args:
        directory: a local directory, or a Hub cache snapshot.
        owner: how errors name the model (e.g. `"Expert 'org/name'"`).
        repo_id / revision: set on the `ExpertLoadError` raised.

    Returns:
        `(config, tensors)`: the config as a dict, without the weights digest it records, and the weights.
    """
    try:
        return _read_model_files(directory, owner)
    except ExpertLoadError as err:
        err.repo_id, err.revision = err.repo_id or repo_id, err.revision or revision
        raise


def _read_model_files(directory: str | os.PathLike, owner: str) -> tuple[dict, dict[str, torch.Tensor]]:
    for name in MODEL_FILES:
        if not os.path.isfile(os.path.join(directory, name)):
            raise ExpertNotFoundError(f"{owner}: {str(directory)!r} has no {name}: it is not a saved hf_ttmoe model.")
    try:
        config = json.loads(Path(directory, CONFIG_NAME).read_text(encoding="utf-8"))
        if not isinstance(config, dict):
            raise ValueError(f"a JSON {type(config).__name__}, not an object")
    except (UnicodeDecodeError, ValueError) as err:
        raise CorruptExpertError(f"{owner}: {CONFIG_NAME} cannot be read: {err}") from err
    weights_path = os.path.join(directory, WEIGHTS_NAME)
    try:
        metadata = check_safetensors(weights_path)
    except ValueError as err:
        raise CorruptExpertError(f"{owner}: {WEIGHTS_NAME} is corrupted or truncated: {err}") from err
    check_model_files(config, metadata, weights_path, owner)
    config.pop(WEIGHTS_DIGEST_KEY, None)
    return config, read_weights(weights_path, owner)


__all__ = ["CONFIG_DIGEST_KEY", "CONFIG_NAME", "MODEL_FILES", "README_NAME", "WEIGHTS_DIGEST_KEY", "WEIGHTS_NAME",
           "atomic_write", "check_model_files", "check_safetensors", "config_digest", "file_sha256", "git_blob_sha1",
           "is_local_path", "read_model_files", "read_weights", "write_model_files"]
