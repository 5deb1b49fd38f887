"""Distributed training on CPU (gloo): DDP, DeepSpeed ZeRO-2 and ZeRO-3 with 2 processes behave like 1 process.

Each case launches tests/dist_worker.py with torchrun; run these alone with `pytest -m distributed`.
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


def launch(out_dir: Path, kind: str, base_dir: Path, nproc: int, deepspeed: Path | None = None) -> dict:
    worker_args = [str(WORKER), "--kind", kind, "--base_dir", str(base_dir), "--out_dir", str(out_dir)]
    if deepspeed:
        worker_args += ["--deepspeed", str(deepspeed)]
    if nproc == 1:
        cmd = [sys.executable, *worker_args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
               "--master_addr", "127.0.0.1", "--master_port", str(free_port()), *worker_args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    for attempt in range(2):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        log = proc.stdout + proc.stderr
        # a rank killed by SIGABRT inside gloo was seen twice in ~20 launches on a loaded 2-core machine, never in
        # 12 launches outside pytest; retry that one failure once, and only that one
        if proc.returncode == 0 or "SIGABRT" not in log:
            break
        print(f"launch attempt {attempt} aborted in gloo; retrying once")
    (out_dir / "launch.log").write_text(log)
    clues = [line for line in log.splitlines() if any(w in line for w in ("Error", "what()", "terminate", "rank"))]
    assert proc.returncode == 0, "\n".join(clues[-40:]) + "\n" + log[-3000:]
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
        assert "ZeRO-3 partitions" in report["save_error"] and "gathered_adapter_state_dict" in report["save_error"]
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
