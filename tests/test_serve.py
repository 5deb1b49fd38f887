"""`scripts/serve.py`: a routed pool over HTTP. Concurrent requests for different experts are micro-batched into one
mixed-expert forward; bad requests get a 422 naming the problem; a failing row fails only its request. In process
(httpx on the ASGI app) and as a real server on a free local port, stopped by its process id."""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
import torch
from tiny_pool import LABELS, PAIRS, TEXTS, save_pool

from hf_ttmoe.commands.serve import ServeArguments, create_app, load_classifier, pool_facts

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-5
CONCURRENT = 64


@pytest.fixture(scope="module")
def moe_dir(tmp_path_factory):
    return save_pool("bert", tmp_path_factory.mktemp("pool"))[1]


@pytest.fixture(scope="module")
def loaded(moe_dir):
    """(the MoE's pipeline, the batch `classify` the server runs, the answer for each of TEXTS classified alone)."""
    classifier, classify = load_classifier(ServeArguments(moe=str(moe_dir), device="cpu"))
    alone = {text: classifier(text)[0] for text in TEXTS}
    return classifier, classify, alone


def count_forwards(module: torch.nn.Module) -> list[int]:
    calls = [0]

    def hook(*_):
        calls[0] += 1

    handle = module.register_forward_hook(hook)
    calls.append(handle)
    return calls


def concurrently(app, requests: list[tuple[str, str, dict]]) -> list[httpx.Response]:
    """Send every (method, path, httpx kwargs) at once to the ASGI app, in process; the responses in order."""
    async def send_all():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serve.test") as client:
            return await asyncio.gather(*(client.request(method, path, **kw) for method, path, kw in requests))

    return asyncio.run(send_all())


def assert_result(got: dict, want: dict) -> None:
    assert (got["task"], got["label"]) == (want["task"], want["label"])
    assert got["score"] == pytest.approx(want["score"], abs=TOL)


@pytest.mark.parametrize("max_batch_size, batches", [(CONCURRENT, 1), (16, 4)])
def test_concurrent_requests_for_different_experts_share_one_forward(loaded, moe_dir, max_batch_size, batches):
    classifier, classify, alone = loaded
    # a long window: a batch runs when max_batch_size rows wait, so the count does not depend on timing
    app = create_app(classify, pool_facts(classifier.model), max_batch_size=max_batch_size, batch_window_ms=5000)
    texts = [TEXTS[i % len(TEXTS)] for i in range(CONCURRENT)]
    assert len({alone[t]["task"] for t in texts}) >= 2  # the requests ask for different experts
    forwards = count_forwards(classifier.model)
    try:
        responses = concurrently(app, [("POST", "/classify", {"json": {"inputs": [t]}}) for t in texts])
    finally:
        forwards[1].remove()
    assert [r.status_code for r in responses] == [200] * CONCURRENT
    for text, response in zip(texts, responses):
        (result,) = response.json()
        assert_result(result, alone[text])  # batched with 63 others = classified alone
    assert forwards[0] == batches  # 64 single-input requests: 64 / max_batch_size forwards, not 64
    health = concurrently(app, [("GET", "/health", {})])[0].json()
    assert health["batches"] == batches and health["rows"] == CONCURRENT


def test_inputs_mix_texts_and_text_pairs_in_order(loaded):
    classifier, classify, alone = loaded
    app = create_app(classify, pool_facts(classifier.model), batch_window_ms=1)
    inputs = [TEXTS[0], PAIRS[0], TEXTS[1], PAIRS[1]]
    (response,) = concurrently(app, [("POST", "/classify", {"json": {"inputs": inputs}})])
    assert response.status_code == 200
    got = response.json()
    assert len(got) == 4
    assert_result(got[0], alone[TEXTS[0]])
    assert_result(got[2], alone[TEXTS[1]])
    for result, pair in zip(got[1::2], PAIRS[:2]):
        assert_result(result, classifier(pair))


def test_health_and_experts(loaded):
    classifier, classify, _ = loaded
    app = create_app(classify, pool_facts(classifier.model))
    health, experts = (r.json() for r in concurrently(app, [("GET", "/health", {}), ("GET", "/experts", {})]))
    assert health == {"status": "ok", "experts": 3, "batches": 0, "rows": 0, "max_batch_size": 64,
                      "batch_window_ms": 5.0}
    assert [e["task"] for e in experts["experts"]] == ["task0", "task1", "task2"]
    assert [e["labels"] for e in experts["experts"]] == [list(labels) for labels in LABELS[:3]]
    assert all(e["revision"] is None and e["repo_id"] for e in experts["experts"])  # local experts: no commit
    assert experts["router_layer"] == 0 and experts["base_model"].endswith("bert-base")


BAD_REQUESTS = [
    ({"inputs": []}, "at least 1 item"),
    ({"inputs": [3]}, "valid string"),
    ({"inputs": "one text"}, "valid list"),
    ({"inputs": [""]}, "at least 1 character"),
    ({"inputs": ["x" * 101]}, "at most 100 characters"),
    ({"inputs": ["a"] * 9}, "at most 8 items"),
    ({"inputs": ["a"], "top_k": 2}, "Extra inputs are not permitted"),
    ({"inputs": [{"text": "a", "pair": "b"}]}, "Extra inputs are not permitted"),
    ({"texts": ["a"]}, "Field required"),
]


def test_bad_requests_get_422_naming_the_problem_and_never_reach_the_model(loaded):
    classifier, classify, _ = loaded
    app = create_app(classify, pool_facts(classifier.model), max_inputs=8, max_chars=100)
    requests = [("POST", "/classify", {"json": body}) for body, _ in BAD_REQUESTS]
    requests.append(("POST", "/classify", {"content": b"{not json", "headers": {"content-type": "application/json"}}))
    requests.append(("POST", "/classify", {"json": {"inputs": ["the film"]}}))  # a good one among them
    *bad, broken, good = concurrently(app, requests)
    for response, (body, message) in zip(bad, BAD_REQUESTS):
        assert response.status_code == 422, body
        assert message in str(response.json()["detail"]), (body, response.json())
    assert broken.status_code == 422 and "JSON decode error" in str(broken.json()["detail"])
    assert good.status_code == 200 and app.state.batcher.rows == 1


def test_a_failing_row_fails_only_its_request(loaded):
    classifier, classify, alone = loaded

    def classify_or_fail(rows):
        if "boom" in rows:
            raise RuntimeError("cannot classify 'boom'")
        return classify(rows)

    app = create_app(classify_or_fail, pool_facts(classifier.model), max_batch_size=4, batch_window_ms=5000)
    texts = [TEXTS[0], "boom", TEXTS[1], TEXTS[2]]
    responses = concurrently(app, [("POST", "/classify", {"json": {"inputs": [t]}}) for t in texts])
    assert [r.status_code for r in responses] == [200, 500, 200, 200]
    assert "RuntimeError: cannot classify 'boom'" in responses[1].json()["detail"]
    for text, response in zip(texts[::2] + texts[3:], responses[::2] + responses[3:]):
        assert_result(response.json()[0], alone[text])
    assert app.state.batcher.batches == 1 + 4  # the batch, then each of its rows alone
    (after,) = concurrently(app, [("POST", "/classify", {"json": {"inputs": TEXTS[3:7]}})])  # fills a batch
    assert after.status_code == 200 and len(after.json()) == 4  # still serving


def test_serve_script_on_a_local_port(moe_dir, loaded, tmp_path):
    """The real server: started on a free port of 127.0.0.1, 64 concurrent clients, stopped by its process id."""
    _, _, alone = loaded
    stderr = tmp_path / "stderr.log"
    with open(stderr, "w") as err:
        command = [sys.executable, str(ROOT / "scripts/serve.py"), "--moe", str(moe_dir), "--port", "0",
                   "--batch_window_ms", "5000", "--device", "cpu"]  # no --host: the default, loopback
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True,
                                env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
        try:
            banner = lines.get(timeout=240)
        except queue.Empty:
            pytest.fail(f"no banner from the server; stderr:\n{stderr.read_text()}")
        assert " on http://127.0.0.1:" in banner, (banner, stderr.read_text())  # loopback by default
        url = banner.split(" on ")[-1].strip()
        texts = [TEXTS[i % len(TEXTS)] for i in range(CONCURRENT)]

        async def clients():
            async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=60) as client:
                health = (await client.get("/health")).json()
                responses = await asyncio.gather(*(client.post("/classify", json={"inputs": [t]}) for t in texts))
                return health, responses, (await client.get("/health")).json(), (await client.get("/experts")).json()

        before, responses, after, experts = asyncio.run(clients())
        assert before["batches"] == 0
        assert [r.status_code for r in responses] == [200] * CONCURRENT
        for text, response in zip(texts, responses):
            assert_result(response.json()[0], alone[text])
        assert after["batches"] == 1 and after["rows"] == CONCURRENT  # 64 concurrent clients, one forward
        assert [e["task"] for e in experts["experts"]] == ["task0", "task1", "task2"]
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    # uvicorn shuts down gracefully, then re-raises the signal it caught: the exit status says SIGTERM
    log = stderr.read_text()
    assert proc.returncode in (0, -signal.SIGTERM) and "Application shutdown complete" in log, log
