"""What the benchmarks share: interleaved timing, command-line plumbing, the MiniLM base and random experts, and
the results files (`benchmarks/results/<name>.json`)."""

from __future__ import annotations

import copy
import json
import statistics
import time
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from hf_ttmoe import DEFAULT_BASE_MODEL, TTLoRAConfig, TTLoRAModel, load_base_model

RESULTS = Path(__file__).resolve().parent / "results"
MINILM_ARCHITECTURE = dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                           intermediate_size=1536, max_position_embeddings=512)  # all-MiniLM-L6-v2
LLAMA_1B = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                num_key_value_heads=8, vocab_size=128256)  # Llama-3.2-1B's shape (built on the meta device)
REFERENCE_SHAPES = {"q_proj": [[16, 8, 4, 4], [4, 4, 8, 16]], "v_proj": [[16, 16, 4, 2], [2, 16, 16]]}


# ----- timing -----


def interleaved(fns: dict, reps: int, warmup: int = 1, clock=time.perf_counter) -> dict[str, float]:
    """Median seconds per call of each fn, running them round-robin so machine-speed drift hits all alike.

    On a GPU each call is timed to the end of its kernels (the device is synchronized before reading the clock).
    `clock=time.thread_time` counts this thread's CPU time instead of wall time: with one intra-op thread it does not
    count the time other processes take the cores away, so it stays comparable on a busy machine.
    """
    sync = torch.cuda.synchronize if torch.cuda.is_initialized() else (lambda: None)
    times = {k: [] for k in fns}
    for r in tqdm(range(warmup + reps), desc="reps", leave=False):
        for name, fn in fns.items():
            sync()
            t0 = clock()
            fn()
            sync()
            if r >= warmup:
                times[name].append(clock() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def layer_clock(args):
    """The clock `interleaved` uses for layer benchmarks: wall time, or (`--cpu_time`) one thread's CPU time."""
    if not args.cpu_time:
        return time.perf_counter
    torch.set_num_threads(1)
    return time.thread_time


# ----- command line -----


def dispatch(parser) -> None:
    """Run the sub-command chosen on `parser` (each sub-parser sets `fn`)."""
    args = parser.parse_args()
    fn = args.fn
    del args.fn
    fn(args)


def add_device_args(parser) -> None:
    parser.add_argument("--device", default="cpu", help="cpu, or cuda where a GPU is present")
    parser.add_argument("--random_base", action="store_true",
                        help="MiniLM's architecture with random weights instead of the embedded checkpoint")


def add_layer_timing_args(parser) -> None:
    parser.add_argument("--device", default="cpu", help="cpu, or cuda where a GPU is present")
    parser.add_argument("--cpu_time", action="store_true",
                        help="one intra-op thread, timed in CPU time (robust to other load; results *_cpu_time.json)")


# ----- models -----


def bench_base(args, num_labels: int = 2) -> nn.Module:
    """The MiniLM base for timings, on `args.device`: the embedded weights, or with `--random_base` the same
    architecture with random weights (for machines without the embedded package; timings do not depend on values)."""
    if getattr(args, "random_base", False):
        from transformers import AutoConfig, AutoModelForSequenceClassification

        torch.manual_seed(0)
        config = AutoConfig.for_model("bert", num_labels=num_labels, **MINILM_ARCHITECTURE)
        base = AutoModelForSequenceClassification.from_config(config)
        base.config.name_or_path = DEFAULT_BASE_MODEL
    else:
        base = load_base_model(TTLoRAConfig(base_model_name_or_path=DEFAULT_BASE_MODEL, num_labels=num_labels))
    return base.to(getattr(args, "device", "cpu"))


def peft_lora_linear(linear: nn.Linear, r: int = 16) -> nn.Module:
    import peft

    holder = nn.Sequential(linear)
    return peft.get_peft_model(holder, peft.LoraConfig(r=r, lora_alpha=16, target_modules=["0"]))


def make_experts(root: Path, num: int, base, num_labels: tuple[int, ...] = (2,)) -> list[str]:
    """`num` expert directories with random cores and heads; expert i has `num_labels[i % len(num_labels)]` labels.
    One expert model per label count, on a copy of `base` (or, for a head size `base` lacks, a base loaded with it)."""
    experts = {}
    paths = []
    for i in tqdm(range(num), desc="writing experts"):
        labels = num_labels[i % len(num_labels)]
        if labels not in experts:
            config = TTLoRAConfig(base_model_name_or_path=DEFAULT_BASE_MODEL, num_labels=labels, task="t0")
            own = copy.deepcopy(base).cpu() if labels == base.config.num_labels else load_base_model(config)
            experts[labels] = TTLoRAModel(config, base_model=own)
        expert = experts[labels]
        with torch.no_grad():
            for p in expert.parameters():
                if p.requires_grad:
                    p.normal_(0, 0.1)
        expert.config.task = f"t{i}"
        path = root / f"expert{i}"
        expert.save_pretrained(path)
        paths.append(str(path))
    return paths


# ----- results -----


def results_name(name: str, args) -> str:
    """`name`, suffixed with the device when it is not the CPU (`moe_mixed_cuda`)."""
    device = getattr(args, "device", "cpu")
    return name if device == "cpu" else f"{name}_{device.split(':')[0]}"


def layer_results_name(name: str, args) -> str:
    return results_name(f"{name}_cpu_time" if args.cpu_time else name, args)


def save(name: str, payload: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2))


def resumed_rows(args, ignore: tuple[str, ...], defaults: dict | None = None) -> list[dict]:
    """The rows of `benchmarks/results/<args.name>.json` if it was run with the same settings (`ignore` aside). An
    option added since that run counts as the same when it is at its default (`defaults`, the parser's)."""
    path = RESULTS / f"{args.name}.json"
    if not path.exists():
        return []
    earlier = json.loads(path.read_text())
    same = {k: v for k, v in earlier["args"].items() if k not in ignore}
    now = {k: v for k, v in vars(args).items() if k not in ignore
           and (k in earlier["args"] or k not in (defaults or {}) or v != defaults[k])}
    if same != now:
        raise SystemExit(f"--resume: {path} was run with other settings: {same} vs now {now}")
    return earlier["rows"]


def mean_std(values) -> str:
    """Fractions as `mean ± std` in percent (population std over seeds)."""
    return f"{100 * statistics.fmean(values):.2f} ± {100 * statistics.pstdev(values):.2f}"
