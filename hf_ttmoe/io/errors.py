"""The errors hf_ttmoe raises when a saved model cannot be pulled, read or composed; each message names the model."""

from __future__ import annotations


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


__all__ = ["CorruptExpertError", "ExpertLoadError", "ExpertNotFoundError", "IncompatibleExpertError"]
