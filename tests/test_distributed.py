"""Distributed training on CPU (gloo): DDP, DeepSpeed ZeRO-2 and ZeRO-3 with 2 processes behave like 1 process.

The model cases launch tests/dist_worker.py with torchrun; the README cases run each launch line of README.md's
"Distributed training" (`deepspeed`, `accelerate launch`, `torchrun`) on scripts/train_expert.py itself. Run these
alone with `pytest -m distributed`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import rel_err, tiny_base
from dist_models import BATCH, KINDS, make_dataset, save_router_experts
from safetensors.torch import load_file

pytestmark = pytest.mark.distributed
pytest.importorskip("deepspeed")

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "dist_worker.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ABORT_SIGNS = ("SIGABRT", "exitcode: -6")  # how the launcher reports a rank that gloo aborted


def run_launch(cmd: list, log_path: Path, **env: str) -> str:
    """Run one launch command from the repository root; fail with the lines that tell why, else return its log."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", **env}
    for attempt in range(2):
        proc = subprocess.run([str(c) for c in cmd], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        log = proc.stdout + proc.stderr
        # a rank killed by SIGABRT inside gloo was seen twice in ~20 launches on a loaded 2-core machine, never in
        # 12 launches outside pytest; retry that one failure once, and only that one. The launcher reports it either
        # as "SIGABRT" or, when the abort comes at teardown ("terminate called without an active exception"), only as
        # "exitcode: -6" (seen once, stop 31, beside two benchmark runs)
        if proc.returncode == 0 or not any(sign in log for sign in ABORT_SIGNS):
            break
        print(f"launch attempt {attempt} aborted in gloo; retrying once")
    log_path.write_text(log)
    clues = [line for line in log.splitlines() if any(w in line for w in ("Error", "what()", "terminate", "rank"))]
    assert proc.returncode == 0, " ".join(map(str, cmd)) + "\n" + "\n".join(clues[-40:]) + "\n" + log[-3000:]
    return log


def launch(out_dir: Path, kind: str, base_dir: Path, nproc: int, deepspeed: Path | None = None) -> dict:
    worker_args = [WORKER, "--kind", kind, "--base_dir", base_dir, "--out_dir", out_dir]
    if deepspeed:
        worker_args += ["--deepspeed", deepspeed]
    if nproc == 1:
        cmd = [sys.executable, *worker_args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", nproc,
               "--master_addr", "127.0.0.1", "--master_port", free_port(), *worker_args]
    run_launch(cmd, out_dir / "launch.log")
    return json.loads((out_dir / "report.json").read_text())


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_bert")
    tiny_base("bert").save_pretrained(path)
    save_router_experts(path)
    return path


@pytest.fixture(scope="module")
def zero3_partitioned_config(tmp_path_factory):
    """ZeRO-3 that partitions every parameter, adapters included (persistence threshold 0)."""
    config = json.loads((ROOT / "scripts/ds_configs/zero3.json").read_text())
    config["zero_optimization"]["stage3_param_persistence_threshold"] = 0
    path = tmp_path_factory.mktemp("ds") / "zero3_partitioned.json"
    path.write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def reference(base_dir, tmp_path_factory):
    """The single-process run every distributed run must reproduce."""
    return {kind: launch(tmp_path_factory.mktemp(f"ref_{kind}"), kind, base_dir, nproc=1) for kind in KINDS}


def check_against_reference(report: dict, ref: dict, out_dir: Path, kind: str, base_dir: Path) -> None:
    assert report["world_size"] == 2
    # the optimized and logged loss is the single-process loss on the same global batch
    assert len(report["losses"]) == len(ref["losses"]) == 4
    for got, want in zip(report["losses"], ref["losses"]):
        assert abs(got - want) <= 1e-5 * abs(want), (report["losses"], ref["losses"])
    # frozen weights stay frozen and out of the optimizer
    assert report["still_frozen"] and report["num_frozen"] == ref["num_frozen"]
    assert report["in_optimizer"] == ref["in_optimizer"]
    # merge gathers partitioned weights correctly
    assert report["merge_rel_err"] <= 1e-5 and report["unmerge_rel_err"] <= 1e-5
    # saved weights are complete (no empty ZeRO-3 partitions) and reload in a fresh process to the same outputs
    assert report["saved_shapes"] == ref["saved_shapes"]
    assert all(n > 0 for shape in report["saved_shapes"].values() for n in shape)
    # routing statistics logged by our callbacks are reduced over ranks: equal to the single-process ones
    assert len(report["routing_logs"]) == len(ref["routing_logs"])
    for got, want in zip(report["routing_logs"], ref["routing_logs"]):
        assert got.keys() == want.keys() and all(abs(got[k] - want[k]) <= 1e-5 for k in want)
    from transformers import AutoModel

    import hf_ttmoe  # noqa: F401  (registers our models with AutoModel)

    model = AutoModel.from_pretrained(out_dir / "final")
    batch = {k: torch.tensor(v[:BATCH]) for k, v in make_dataset().items() if k != "labels"}
    with torch.no_grad():
        logits = model(**batch).logits
    assert rel_err(logits, load_file(out_dir / "logits.safetensors")["logits"]) <= 1e-5


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("stage", ["ddp", "zero2", "zero3"])
def test_two_processes_match_one(stage, kind, base_dir, reference, tmp_path):
    deepspeed = None if stage == "ddp" else ROOT / f"scripts/ds_configs/{stage}.json"
    report = launch(tmp_path, kind, base_dir, nproc=2, deepspeed=deepspeed)
    assert report["zero3"] == (stage == "zero3")
    check_against_reference(report, reference[kind], tmp_path, kind, base_dir)


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "router"])
def test_zero3_with_partitioned_adapters(kind, base_dir, reference, zero3_partitioned_config, tmp_path):
    report = launch(tmp_path, kind, base_dir, nproc=2, deepspeed=zero3_partitioned_config)
    assert report["partitioned"], "expected the adapters themselves to be partitioned in this configuration"
    # a plain save_pretrained either refuses, naming the fix, or (weights whole at that moment) saves them complete
    if report["save_error"] is not None:
        assert "ZeRO-3 partitions" in report["save_error"] and "gathered_saved_state_dict" in report["save_error"]
    else:
        assert report["ungathered_shapes"] == reference[kind]["saved_shapes"]
    assert report["gathered_shapes"] == report["saved_shapes"] == reference[kind]["saved_shapes"]
    check_against_reference(report, reference[kind], tmp_path, kind, base_dir)


def test_deepspeed_config_checks_name_the_problem():
    from hf_ttmoe.distributed import check_deepspeed_config

    for stage in (2, 3):
        assert check_deepspeed_config(ROOT / f"scripts/ds_configs/zero{stage}.json", cpu=True)
    with pytest.raises(ValueError, match=r"zero_optimization.stage=4 is not a ZeRO stage; valid: \(0, 1, 2, 3\)"):
        check_deepspeed_config({"zero_optimization": {"stage": 4}})
    with pytest.raises(ValueError, match="stage3_gather_16bit_weights_on_model_save=true"):
        check_deepspeed_config({"zero_optimization": {"stage": 3}})
    with pytest.raises(ValueError, match="optimizer.type='AdamW' without params.torch_adam=true on CPU"):
        check_deepspeed_config({"optimizer": {"type": "AdamW", "params": {}}}, cpu=True)
    assert check_deepspeed_config({"optimizer": {"type": "AdamW", "params": {}}}, cpu=False)


# README.md's "Distributed training" launch lines, each with a free port so that concurrent runs cannot collide.
# `accelerate launch --num_processes 2` starts 2 processes only where it sees 2 GPUs; on CPU it needs --use_deepspeed
# (a DeepSpeed run) to start them, else it runs the script once.
BIN = Path(sys.executable).parent
README_LAUNCHERS = {
    "deepspeed": lambda port: [BIN / "deepspeed", "--num_gpus", "2", "--master_port", port],
    "accelerate": lambda port: [BIN / "accelerate", "launch", "--use_deepspeed", "--num_processes", "2",
                                "--main_process_port", port],
    "torchrun": lambda port: [BIN / "torchrun", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                              "--master_port", port],
}
CPU_FLAGS = ["--use_cpu", "--ddp_backend", "gloo", "--average_tokens_across_devices", "False"]  # README's CPU advice
# 8 training rows = one global batch (2 ranks x 4, or 1 x 8): every step sees all rows whatever the sampler, so the
# 2-process run must reproduce the single-process one
TINY_RUN = ["--task", "rotten_tomatoes", "--max_train_samples", "8", "--max_eval_samples", "16", "--max_length", "32",
            "--max_steps", "2", "--report_to", "none", "--save_strategy", "no"]


def train_expert(base: Path, out_dir: Path, launcher: str | None = None, ds_config: str | None = None) -> str:
    """scripts/train_expert.py on the tiny base, launched as README.md says (or as one plain process)."""
    if launcher is None:  # a process group of one is no process group: no --ddp_backend
        cmd, batch, cpu_flags = [sys.executable], 8, ["--use_cpu"]
    else:
        cmd, batch, cpu_flags = README_LAUNCHERS[launcher](free_port()), 4, CPU_FLAGS
    cmd += ["scripts/train_expert.py", *(["--deepspeed", ds_config] if ds_config else []), "--output_dir", out_dir,
            "--base_model_name_or_path", base, *TINY_RUN, "--per_device_train_batch_size", batch, *cpu_flags]
    # transformers' info logs say how many processes trained and whether ZeRO-3 partitioned the model on load
    return run_launch(cmd, out_dir.parent / f"{out_dir.name}.log", TRANSFORMERS_VERBOSITY="info")


@pytest.fixture(scope="module")
def script_base(tmp_path_factory):
    """The tiny BERT with the real tokenizer of the default base (its vocabulary), as a user's base model dir."""
    from hf_ttmoe import DEFAULT_BASE_MODEL, TTLoRAConfig, load_tokenizer

    path = tmp_path_factory.mktemp("tiny_bert_tokenizer")
    tokenizer = load_tokenizer(TTLoRAConfig(base_model_name_or_path=DEFAULT_BASE_MODEL))
    model = tiny_base("bert", num_labels=2)
    model.resize_token_embeddings(len(tokenizer))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def script_reference(script_base, tmp_path_factory):
    """The expert one plain process trains on the same global batch."""
    out = tmp_path_factory.mktemp("script_ref") / "expert"
    train_expert(script_base, out)
    return out


@pytest.fixture(scope="module", params=[
    pytest.param(("deepspeed", "scripts/ds_configs/zero3.json"), id="deepspeed-zero3"),
    pytest.param(("deepspeed", "scripts/ds_configs/zero2.json"), id="deepspeed-zero2"),
    pytest.param(("accelerate", "scripts/ds_configs/zero2.json"), id="accelerate-zero2"),
    pytest.param(("accelerate", "scripts/ds_configs/zero3.json"), id="accelerate-zero3"),
    pytest.param(("torchrun", None), id="torchrun-ddp"),
])
def readme_run(request, script_base, tmp_path_factory):
    """One README launch line run with 2 CPU processes: (its config, the saved expert's folder, its log)."""
    launcher, ds_config = request.param
    out = tmp_path_factory.mktemp(f"{launcher}_{Path(ds_config or 'ddp').stem}") / "expert"
    return ds_config, out, train_expert(script_base, out, launcher, ds_config)


def test_readme_launch_line_saves_a_complete_trained_expert(readme_run, script_reference):
    from hf_ttmoe import TTLoRAModel

    ds_config, out, log = readme_run
    # two processes trained, each on half of the global batch; ZeRO-3 partitioned the base as it loaded
    assert "Instantaneous batch size per device = 4" in log, log[-3000:]
    assert "Total train batch size (w. parallel, distributed & accumulation) = 8" in log, log[-3000:]
    assert ("Detected DeepSpeed ZeRO-3" in log) == ("zero3" in str(ds_config))
    # the saved expert holds every tensor whole (no empty ZeRO-3 partitions), and it trained
    saved = load_file(out / "model.safetensors")
    assert {k: v.shape for k, v in saved.items()} == {
        k: v.shape for k, v in load_file(script_reference / "model.safetensors").items()}
    assert all(v.numel() > 0 for v in saved.values())
    assert all(v.abs().sum() > 0 for k, v in saved.items() if k.endswith("ttlora_cores.3"))  # zero at init
    assert {"train_loss", "test_accuracy", "test_f1"} <= set(json.loads((out / "results.json").read_text()))
    # it reloads to the weights the run saved
    state = TTLoRAModel.from_pretrained(out).state_dict()
    assert all(torch.equal(state[k], v) for k, v in saved.items())


def test_readme_launch_line_trains_the_expert_one_process_would(readme_run, script_base, script_reference):
    """Same start, same global batch: 2 processes train the expert 1 process does (gradients reduced over ranks)."""
    from transformers import AutoTokenizer

    from hf_ttmoe import TTLoRAModel

    _, out, _ = readme_run
    saved, want = load_file(out / "model.safetensors"), load_file(script_reference / "model.safetensors")
    for name, tensor in saved.items():
        assert rel_err(tensor, want[name]) <= 1e-4, name
    loss, want_loss = (json.loads((d / "results.json").read_text())["train_loss"] for d in (out, script_reference))
    assert abs(loss - want_loss) <= 1e-5 * abs(want_loss)
    # reloaded, it gives the single-process expert's outputs
    batch = AutoTokenizer.from_pretrained(script_base)(["a wonderful, moving film", "dull and far too long"],
                                                      padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = TTLoRAModel.from_pretrained(out)(**batch).logits
        want_logits = TTLoRAModel.from_pretrained(script_reference)(**batch).logits
    assert rel_err(logits, want_logits) <= 1e-4
