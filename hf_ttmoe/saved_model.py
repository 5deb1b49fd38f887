"""One save / load / push path for every hf_ttmoe model: a `PreTrainedModel` that saves only what it trains.

A model class declares what it saves (`is_saved_key`), what its card says (`card_data_class`, `fill_card_data`) and
what must reach the Hub before it (`push_dependencies`); this module does the rest the same way for all of them:
`config.json` + `model.safetensors` written atomically and bound to each other by digests, read back checked (locally
or pulled from the Hub at a revision), pushed in one commit with a model card merged into the README already there.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import ClassVar

import torch
from huggingface_hub import constants
from safetensors.torch import save_file
from transformers import PreTrainedModel

from hub_cards import HubCardData

from ._version import __version__
from .io import (
    CONFIG_NAME,
    WEIGHTS_DIGEST_KEY,
    WEIGHTS_NAME,
    ExpertNotFoundError,
    fetch_readme,
    hub_api,
    is_local_path,
    prepare_repo,
    pull,
    read_model_files,
    write_model_card,
    write_model_files,
)


def is_partitioned(param: torch.Tensor) -> bool:
    """True for a parameter DeepSpeed ZeRO-3 has partitioned (its local tensor is empty until gathered)."""
    return hasattr(param, "ds_id")


def gathered(params, modifier_rank: int | None = None):
    """Context in which ZeRO-3-partitioned `params` are whole (a no-op otherwise). Collective: call on every rank.

    With `modifier_rank`, changes made on that rank are broadcast to all ranks on exit.
    """
    params = [p for p in params if is_partitioned(p)]
    if not params:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=modifier_rank)


def base_card_facts(data: HubCardData, config, repo_id: str | None) -> HubCardData:
    """The card fields every model shares: repo, base model, task, labels, library version, Hub endpoint."""
    data.model_id = data.model_id or repo_id
    data.base_model = config.base_model_name_or_path
    data.base_model_revision = getattr(config, "base_model_revision", None)
    data.task = getattr(config, "task", None)
    data.task_type = getattr(config, "task_type", "seq_cls")
    data.library_version = __version__
    data.hub_url = constants.ENDPOINT
    if data.task_type == "seq_cls" and getattr(config, "id2label", None):
        data.labels = [config.id2label[i] for i in range(config.num_labels)]
    return data


class SavedModel(PreTrainedModel):
    """Base of every hf_ttmoe model. Subclasses declare:

    - `is_saved_key(name)`: the one rule for what is trained, saved and counted;
    - `card_data_class` and `fill_card_data(data)`: what the model card says beyond `base_card_facts`;
    - `push_dependencies(namespace, private, token)`: what must be on the Hub before this model (a router's experts);
    - `config_to_save(save_directory)` when the saved config differs from the live one.
    """

    base_model_prefix = "model"
    card_data_class: ClassVar[type[HubCardData]] = HubCardData
    saved_name: ClassVar[str | None] = None  # how errors name a saved model of this class (default: the class name)

    # ----- what a model declares -----

    def is_saved_key(self, key: str) -> bool:
        raise NotImplementedError

    def fill_card_data(self, data: HubCardData) -> None:
        """Set this model's own card fields (parameter counts, layouts, experts, ...)."""

    def push_dependencies(self, namespace: str | None, private: bool | None, token: str | bool | None) -> None:
        """Push what this model references to the Hub before the model itself (default: nothing)."""

    def config_to_save(self, save_directory: str | os.PathLike) -> dict:
        """The config as `config.json` stores it."""
        return self.config.to_diff_dict()

    @classmethod
    def _owner(cls, path: str) -> str:
        return f"{cls.saved_name or cls.__name__} {path!r}"

    # ----- the saved weights -----

    def tied_aliases(self) -> dict[str, str]:
        """`{alias: name}` of saved weights that several modules share (the stacked TT layout's U and V): each is saved
        once, under `name`; loading fills the aliases from it. Empty by default."""
        return {}

    def saved_state_dict(self, state_dict: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """The weights we save, from `state_dict` (e.g. one gathered by Trainer) or the model's own; a weight several
        modules share once (`tied_aliases`)."""
        state_dict = self.state_dict() if state_dict is None else state_dict
        aliases = self.tied_aliases()
        return {k: v.detach().contiguous() for k, v in state_dict.items() if self.is_saved_key(k) and k not in aliases}

    def gathered_saved_state_dict(self) -> dict[str, torch.Tensor]:
        """`saved_state_dict` with ZeRO-3-partitioned weights gathered (CPU copies). Collective: every rank."""
        params = [p for n, p in self.named_parameters() if self.is_saved_key(n)]
        with gathered(params):
            return {k: v.cpu().clone() for k, v in self.saved_state_dict().items()}

    def load_saved_state_dict(self, tensors: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
        """Load saved weights, refusing missing, unexpected or mis-shaped ones with an error naming them."""
        own = self.saved_state_dict()
        missing = sorted(set(own) - set(tensors))
        unexpected = sorted(set(tensors) - set(own))
        mismatched = [f"{k}: {tuple(tensors[k].shape)} vs model {tuple(own[k].shape)}"
                      for k in own if k in tensors and tensors[k].shape != own[k].shape]
        problems = [f"{what} {keys[:5]}{' ...' if len(keys) > 5 else ''}" for what, keys in
                    (("missing", missing), ("unexpected", unexpected), ("shape mismatches", mismatched)) if keys]
        if problems:
            raise ValueError(
                f"{source} does not fit this {type(self).__name__} on {self.config.base_model_name_or_path!r}: "
                + "; ".join(problems)
            )
        super().load_state_dict(tensors, strict=False)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Like `nn.Module.load_state_dict`; a state dict of saved keys only (what we save) counts as complete, and
        a shared weight saved once fills its aliases (`tied_aliases`)."""
        aliases = {k: v for k, v in self.tied_aliases().items() if k not in state_dict and v in state_dict}
        if aliases:
            state_dict = {**state_dict, **{k: state_dict[v] for k, v in aliases.items()}}
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        if all(self.is_saved_key(k) for k in state_dict):
            result.missing_keys[:] = [k for k in result.missing_keys if self.is_saved_key(k)]
        if strict and (result.missing_keys or result.unexpected_keys):
            raise RuntimeError(f"missing keys {result.missing_keys}, unexpected keys {result.unexpected_keys}")
        return result

    # ----- saving and loading -----

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        is_main_process: bool = True,
        state_dict: dict | None = None,
        push_to_hub: bool = False,
        **kwargs,
    ):
        """Write `model.safetensors` (only the saved weights), then `config.json`, each atomically and each recording
        the other's digest (`hf_ttmoe.io.write_model_files`): a loader can tell a pair that was not saved together."""
        if os.path.isfile(save_directory):
            raise ValueError(f"save_directory={str(save_directory)!r} is a file; give a directory.")
        os.makedirs(save_directory, exist_ok=True)
        tensors = self.saved_state_dict(state_dict)
        empty = [k for k, v in tensors.items() if v.numel() == 0 and getattr(self.get_parameter(k), "ds_numel", 0)]
        if empty:
            raise RuntimeError(
                f"{len(empty)} weights to save are ZeRO-3 partitions, not whole tensors (e.g. {empty[0]}). Save with "
                "Trainer.save_model(), or on every rank: sd = model.gathered_saved_state_dict(); then on the main "
                "process model.save_pretrained(path, state_dict=sd)."
            )
        if not is_main_process:
            return
        self.config.architectures = [type(self).__name__]
        write_model_files(save_directory, self.config_to_save(save_directory),
                          lambda path, metadata: save_file(tensors, path, metadata=metadata))
        if push_to_hub:
            return self.push_to_hub(kwargs.pop("repo_id", str(save_directory)), **kwargs)

    @classmethod
    def _from_saved_config(cls, config, base_model: PreTrainedModel | None, root: str | None, **hub_kwargs):
        """Build the model a saved config describes (`root`: the local directory it was read from, else None)."""
        return cls(config, base_model=base_model)

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *model_args,
        base_model: PreTrainedModel | None = None,
        config=None,
        revision: str | None = None,
        token: str | bool | None = None,
        cache_dir: str | None = None,
        local_files_only: bool = False,
        **kwargs,
    ):
        """Load a saved model: rebuild what its config names (or wrap `base_model`), then load the saved weights.

        Works on a local directory or a Hub repo id (`revision`, `token`, `cache_dir`, `local_files_only`,
        `HF_HUB_OFFLINE=1`); Hub files are pulled into the cache and checked (`hf_ttmoe.io.pull`). Either way the
        config and weights must have been saved together (`hf_ttmoe.io.read_model_files`). Errors name the model.
        """
        path = str(pretrained_model_name_or_path)
        owner = cls._owner(path)
        hub = {"token": token, "cache_dir": cache_dir, "local_files_only": local_files_only}
        local = os.path.isdir(path)
        if local:
            directory, source = path, path
        elif is_local_path(path):
            raise ExpertNotFoundError(f"{owner}: no such directory (a Hub repo id is 'name' or 'namespace/name').")
        else:
            directory, commit = pull(path, (CONFIG_NAME, WEIGHTS_NAME), revision, owner=owner, **hub)
            source = f"{path}@{commit[:10]}"
        saved_config, tensors = read_model_files(directory, owner)
        if saved_config.get("model_type", cls.config_class.model_type) != cls.config_class.model_type:
            raise ValueError(f"{owner} is a saved {saved_config.get('model_type')!r} model, not a "
                             f"{cls.config_class.model_type!r} one: load it with its own class (or AutoModel).")
        if config is None:
            config = cls.config_class.from_dict(saved_config)
        elif hasattr(config, WEIGHTS_DIGEST_KEY):  # read by AutoConfig from config.json: not part of the live config
            delattr(config, WEIGHTS_DIGEST_KEY)
        model = cls._from_saved_config(config, base_model, directory if local else None, **hub)
        model.load_saved_state_dict(tensors, source=f"{source}/{WEIGHTS_NAME}")
        return model.eval()

    # ----- the Hub -----

    @property
    def model_card_data(self) -> HubCardData:
        """What this model's card says (a `hub_cards` dataclass): set the user fields (license, datasets, tags, ...);
        the rest is filled from the model when pushing and from training by `ModelCardCallback`."""
        data = self.__dict__.get("_hub_card_data")
        if data is None:
            data = self.__dict__["_hub_card_data"] = self.card_data_class()
        return data

    def refresh_card_data(self, repo_id: str | None = None) -> HubCardData:
        """`model_card_data` with every automatic field filled from the model as it is now."""
        data = base_card_facts(self.model_card_data, self.config, repo_id)
        self.fill_card_data(data)
        return data

    def push_to_hub(self, repo_id: str, *, commit_message: str | None = None, commit_description: str | None = None,
                    private: bool | None = None, token: str | bool | None = None, revision: str | None = None,
                    create_pr: bool = False, tags: list[str] | None = None, **unused):
        """Push config, weights and a model card to `repo_id` (created if missing) in one commit, after what the
        model references (`push_dependencies`); a README already there is updated, not overwritten.

        Args:
            repo_id: "namespace/name".
            commit_message / commit_description / private / token / revision (a branch, created if missing) /
                create_pr: as in `HfApi.upload_folder`.
            tags: extra card tags.

        Returns:
            The `huggingface_hub.CommitInfo` of the commit (`.oid` is its sha).
        """
        self.push_dependencies(repo_id.split("/")[0] if "/" in repo_id else None, private, token)
        api = hub_api(token)
        repo_id = prepare_repo(api, repo_id, private, revision)
        data = self.refresh_card_data(repo_id)
        data.tags = list(dict.fromkeys([*data.tags, *(tags or [])]))
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp)
            write_model_card(data, tmp, existing=fetch_readme(repo_id, revision, token) or "")
            return api.upload_folder(repo_id=repo_id, folder_path=tmp, revision=revision, create_pr=create_pr,
                                     commit_message=commit_message or f"Upload {type(self).__name__}",
                                     commit_description=commit_description)


__all__ = ["SavedModel", "base_card_facts", "gathered", "is_partitioned"]
