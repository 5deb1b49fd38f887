"""Files on disk: the names a saved model uses, atomic writes, digests, and safetensors reads that check the file.

Imports nothing of hf_ttmoe: every other module builds on it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .errors import CorruptExpertError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
README_NAME = "README.md"
MODEL_FILES = (CONFIG_NAME, WEIGHTS_NAME)


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call `write(tmp_path)`, then rename onto `path`: a reader never sees a half-written file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
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



__all__ = ["CONFIG_NAME", "MODEL_FILES", "README_NAME", "WEIGHTS_NAME", "atomic_write", "check_safetensors",
           "file_sha256", "git_blob_sha1", "read_weights"]
