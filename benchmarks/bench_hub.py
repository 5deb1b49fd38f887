"""Hub benchmarks (issue 5), against the local Hub server of `hf_ttmoe.testing` (HTTP on 127.0.0.1) driven by the
real `huggingface_hub` client, as in the tests.

    .venv/bin/python -m benchmarks.bench_hub --num_experts 16 --repeats 9 --threads 1

1. Repo sizes: a TT-LoRA expert repo (MiniLM q/v; the Llama-3.2-1B-shaped reference layout, built on the meta device
   with only the saved tensors materialized) against a PEFT LoRA r=16 adapter repo for the same modules and the same
   classification head, both in float32, both pushed to the server and measured from its file listing.
2. Time to compose a `num_experts` router from the server (`TTLoRAMoEModel.from_pretrained`, base model given, so the
   time is pulling + checking + composing): cold cache (wiped before each run), warm cache online (one revision lookup
   for the router, experts pinned by commit come from the cache), warm cache offline (`HF_HUB_OFFLINE=1`).
   Median of `repeats`, with the HTTP requests each run made. Experts are random, untrained MiniLM q/v experts.
"""

from __future__ import annotations

import copy
import json
import shutil
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.common import LLAMA_1B, REFERENCE_SHAPES, make_experts
from hf_ttmoe.testing import TOKEN, HubServer, client_settings

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class BenchArguments:
    num_experts: int = field(default=16, metadata={"help": "Experts in the composed router."})
    repeats: int = field(default=9, metadata={"help": "Repetitions of each compose timing (median reported)."})
    threads: int = field(default=1, metadata={"help": "torch intra-op threads while composing (tiny tensor ops: one "
                                                     "thread avoids OpenMP spin-waits on a busy machine)."})
    output: str = field(default="benchmarks/results/hub.json", metadata={"help": "Where to write the results."})


def repo_files(api, repo_id: str) -> dict[str, int]:
    return {s.rfilename: s.size for s in api.model_info(repo_id, files_metadata=True).siblings}


def summarize(files: dict[str, int]) -> dict:
    weights = sum(v for k, v in files.items() if k.endswith(".safetensors"))
    card = files.get("README.md", 0)
    return {"files": files, "total_bytes": sum(files.values()), "weights_bytes": weights, "card_bytes": card,
            "without_card_bytes": sum(v for k, v in files.items() if k not in ("README.md", ".gitattributes"))}


def push_peft(api, model, lora_config, repo_id: str, materialize: bool) -> dict:
    """A PEFT LoRA adapter repo: `save_pretrained` output (adapter config, safetensors, PEFT's README)."""
    import peft
    import torch
    from safetensors.torch import save_file

    lora = peft.get_peft_model(model, lora_config)
    with tempfile.TemporaryDirectory() as tmp:
        if materialize:  # meta-device model: write the adapter's tensors with their real shapes and dtype
            state = peft.get_peft_model_state_dict(lora)
            save_file({k: torch.zeros(v.shape, dtype=v.dtype) for k, v in state.items()},
                      f"{tmp}/adapter_model.safetensors", metadata={"format": "pt"})
            lora.peft_config["default"].save_pretrained(tmp)
        else:
            lora.save_pretrained(tmp)
        api.create_repo(repo_id, exist_ok=True)
        api.upload_folder(repo_id=repo_id, folder_path=tmp)
    params = sum(p.numel() for n, p in lora.named_parameters() if p.requires_grad)
    return {"trainable_parameters": params, **summarize(repo_files(api, repo_id))}


def bench_sizes(api) -> dict:
    import peft
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from hf_ttmoe import DEFAULT_BASE_MODEL, TTLoRAConfig, TTLoRAModel, load_base_model
    from hf_ttmoe.hub import push_expert_dir

    results = {}
    config = TTLoRAConfig(base_model_name_or_path=DEFAULT_BASE_MODEL, task="sst2", num_labels=2)
    expert = TTLoRAModel(config)
    expert.push_to_hub("org/ttlora-minilm-qv")
    counts = expert.num_parameters_by_kind()
    results["minilm_ttlora"] = {"trainable_parameters": counts["adapter"] + counts["head"],
                                **summarize(repo_files(api, "org/ttlora-minilm-qv"))}
    lora = peft.LoraConfig(r=16, lora_alpha=16, target_modules=["query", "value"], task_type="SEQ_CLS")
    results["minilm_peft_lora_r16"] = push_peft(api, load_base_model(config), lora, "org/peft-lora-minilm-qv", False)

    def llama_on_meta():
        with torch.device("meta"):
            return LlamaForSequenceClassification(LlamaConfig(**LLAMA_1B, num_labels=2))

    config = TTLoRAConfig(base_model_name_or_path="meta-llama/Llama-3.2-1B", task="sst2", num_labels=2, tt_rank=5,
                          alpha=16, tt_shapes=REFERENCE_SHAPES)
    expert = TTLoRAModel(config, base_model=llama_on_meta())
    tensors = {k: torch.randn(v.shape) * 0.01 for k, v in expert.adapter_state_dict().items()}
    dims = {n: m.base_layer.in_features for n, m in expert.named_modules() if hasattr(m, "ttlora_cores")}
    with tempfile.TemporaryDirectory() as tmp:
        expert.save_pretrained(tmp, state_dict=tensors)
        push_expert_dir(tmp, "org/ttlora-llama1b-qv", in_features=dims)
    results["llama1b_ttlora"] = {"trainable_parameters": sum(v.numel() for v in tensors.values()),
                                 **summarize(repo_files(api, "org/ttlora-llama1b-qv"))}
    lora = peft.LoraConfig(r=16, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="SEQ_CLS")
    results["llama1b_peft_lora_r16"] = push_peft(api, llama_on_meta(), lora, "org/peft-lora-llama1b-qv", True)
    return results


def bench_compose(api, hub: HubServer, cache: Path, args: BenchArguments, apply) -> dict:
    import torch

    from hf_ttmoe import DEFAULT_BASE_MODEL, TTLoRAConfig, TTLoRAMoEModel, load_base_model

    base = load_base_model(TTLoRAConfig(base_model_name_or_path=DEFAULT_BASE_MODEL, num_labels=2))
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_experts(Path(tmp), args.num_experts, base, num_labels=(2, 3, 4, 5))
        moe = TTLoRAMoEModel.from_experts(paths, base_model=copy.deepcopy(base))
        router = f"org/ttlora-moe-{args.num_experts}"
        moe.push_to_hub(router)
    torch.set_num_threads(args.threads)
    timings = {"cold": [], "warm": [], "warm_offline": []}
    requests = {}
    for _ in range(args.repeats):
        for mode in timings:
            if mode == "cold":
                shutil.rmtree(cache, ignore_errors=True)
            apply(offline=mode == "warm_offline")
            fresh = copy.deepcopy(base)
            before = len(hub.requests)
            start = time.perf_counter()
            TTLoRAMoEModel.from_pretrained(router, base_model=fresh)
            timings[mode].append(time.perf_counter() - start)
            requests[mode] = len(hub.requests) - before
    apply(offline=False)
    return {"num_experts": args.num_experts, "repeats": args.repeats, "requests": requests,
            "median_s": {k: statistics.median(v) for k, v in timings.items()},
            "min_s": {k: min(v) for k, v in timings.items()},
            "all_s": timings}


def main(argv: list[str] | None = None) -> dict:
    from transformers import HfArgumentParser

    (args,) = HfArgumentParser(BenchArguments).parse_args_into_dataclasses(args=argv)
    with tempfile.TemporaryDirectory() as tmp, HubServer(Path(tmp) / "hub") as hub:
        cache = Path(tmp) / "hf_cache"

        def apply(offline: bool) -> None:
            import os

            environment, attributes = client_settings(hub.url, TOKEN, cache, offline=offline)
            os.environ.update(environment)
            for obj, name, value in attributes:
                setattr(obj, name, value)

        apply(offline=False)
        from huggingface_hub import HfApi
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
        api = HfApi()
        results = {"sizes": bench_sizes(api), "compose": bench_compose(api, hub, cache, args, apply),
                   "args": asdict(args)}
    out = ROOT / args.output
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    sizes = results["sizes"]
    for name, r in sizes.items():
        print(f"{name:24s} params {r['trainable_parameters']:>10,}  repo {r['total_bytes']:>11,} B  "
              f"weights {r['weights_bytes']:>11,} B  card {r['card_bytes']:>6,} B")
    compose = results["compose"]
    for mode, seconds in compose["median_s"].items():
        print(f"compose {compose['num_experts']} experts, {mode:12s}: {seconds * 1000:8.1f} ms median, "
              f"{compose['min_s'][mode] * 1000:8.1f} ms min ({compose['requests'][mode]} requests)")
    return results


if __name__ == "__main__":
    main()
