"""Push a saved expert, dense MoE-LoRA model or router directory to the Hub, with its model card.

    python scripts/push.py --path experts/sst2 --repo_id org/ttlora-minilm-sst2 --license apache-2.0 \\
        --datasets stanfordnlp/sst2
    python scripts/push.py --path moe/ --repo_id org/ttlora-moe-4tasks --expert_names '{"sst2": "ttlora-minilm-sst2"}'

An expert directory is pushed as it is (config, weights, and its README when training wrote one), without loading
the base model. A router is loaded (base model and experts), its local experts are pushed to the router's namespace
and pinned to their commits, then the router. `HF_ENDPOINT` / `HF_TOKEN` select the Hub and the token.
Installed as `hf-ttmoe-push` too.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from hf_ttmoe import DenseMoELoRAModel, TTLoRAMoEModel
from hf_ttmoe.hub import push_expert_dir, push_experts


@dataclass
class PushArguments:
    """What to push and where."""

    path: str = field(metadata={"help": "Directory saved by save_pretrained (expert, dense MoE-LoRA or router)."})
    repo_id: str = field(metadata={"help": "Target repo, 'namespace/name' (created if missing)."})
    private: bool = field(default=False, metadata={"help": "Create the repo private."})
    revision: str | None = field(default=None, metadata={"help": "Branch to push to (created if missing)."})
    commit_message: str | None = field(default=None, metadata={"help": "Commit message."})
    token: str | None = field(default=None, metadata={"help": "Hub token (default: HF_TOKEN or the saved login)."})
    license: str | None = field(default=None, metadata={"help": "Card license, e.g. apache-2.0."})
    language: list[str] | None = field(default=None, metadata={"help": "Card language codes."})
    datasets: list[str] | None = field(default=None, metadata={"help": "Hub ids of the training datasets."})
    tags: list[str] | None = field(default=None, metadata={"help": "Extra card tags."})
    expert_names: str | None = field(
        default=None, metadata={"help": 'Router only: JSON {task: repo name} for its local experts.'}
    )


def main(argv: list[str] | None = None) -> str:
    (args,) = HfArgumentParser(PushArguments).parse_args_into_dataclasses(args=argv)
    model_type = json.loads(Path(args.path, "config.json").read_text()).get("model_type")
    user = {"license": args.license, "language": args.language, "datasets": args.datasets or [],
            "tags": args.tags or []}
    hub = {"private": args.private or None, "token": args.token, "commit_message": args.commit_message}
    if model_type == "ttlora":
        commit = push_expert_dir(args.path, args.repo_id, revision=args.revision,
                                 metadata={k: v for k, v in user.items() if v}, **hub)
    elif model_type in ("moe_lora", "ttlora_moe"):
        model = (DenseMoELoRAModel if model_type == "moe_lora" else TTLoRAMoEModel).from_pretrained(args.path)
        data = model.model_card_data
        data.license, data.language = args.license or data.license, args.language or data.language
        data.datasets, data.tags = [*data.datasets, *user["datasets"]], [*data.tags, *user["tags"]]
        if model_type == "moe_lora":
            commit = model.push_to_hub(args.repo_id, revision=args.revision, **hub).oid
        else:
            names = json.loads(args.expert_names) if args.expert_names else None
            commit = push_experts(model, namespace=args.repo_id.split("/")[0], repo_id=args.repo_id,
                                  repo_names=names, revision=args.revision, **hub).oid
    else:
        raise ValueError(f"{args.path!r} holds a {model_type!r} model; hf_ttmoe pushes 'ttlora', 'moe_lora' and "
                         "'ttlora_moe' directories.")
    print(f"{args.repo_id} @ {commit}")
    return commit


def cli() -> None:
    """The `hf-ttmoe-push` console command: exits 0 once the commit is made."""
    sys.exit(0 if main(sys.argv[1:]) else 1)


if __name__ == "__main__":
    cli()
