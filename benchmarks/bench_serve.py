"""Benchmark of `scripts/serve.py` (issue 16): throughput and latency of the real HTTP server, micro-batched vs one
request at a time, at 1 / 8 / 64 concurrent clients, with requests spread over 1 / 4 / all experts.

    python -m benchmarks.bench_serve                    # results in benchmarks/results/serve.json

The pool: MiniLM (the embedded checkpoint and its real tokenizer) with `--experts` random TT-LoRA experts on q/v
(timings do not depend on the values) under a router set so that which expert a text picks is known beforehand:

- candidate texts are Rotten Tomatoes snippets of 16-48 tokens (`hf_ttmoe.load_task("rotten_tomatoes")`, all splits);
- the linear router (`router_layer=0`: mean-pooled embeddings) is set to split them by the signs of their top three
  principal directions (8 experts = 8 sign patterns), after projecting out the directions that encode a text's length,
  so every expert gets about an eighth of the texts, of the same lengths (`set_sign_router`);
- the saved pool is run once offline through the same pipeline the server uses, and each text is bucketed by the
  expert it chose (texts near a boundary between two experts are dropped, so a different batch cannot flip them);
- a run "over k experts" sends texts from k buckets in turn, chosen so that every k sends the same sequence of token
  lengths (`length_matched`); every answer's `task` is checked against its bucket.

Two servers are started as subprocesses on free local ports and stopped by their process ids at the end (also on
errors): `micro-batched` (the defaults, `--max_batch_size 64 --batch_window_ms 5`) and `one at a time`
(`--max_batch_size 1`: each row is its own forward, and no window is waited since the batch is full at once), each
with `--server_threads` torch threads. Each run is a closed loop: N async httpx clients (one connection each) each send
single-input requests one after another, until `--requests` in all are sent or `--max_seconds` have passed.
Throughput = rows answered / wall time of the run; latency = per request, at the client. The two modes alternate
within each configuration (their order flips every time) and every configuration is repeated `--reps` times in
round-robin; tables give medians. `/health` is read around each run: its batch count is the forwards the run cost.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import platform
import queue
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from benchmarks.common import RESULTS, bench_base, make_experts, save
from hf_ttmoe import DEFAULT_BASE_MODEL, TTLoRAConfig, TTLoRAMoEModel, load_task, load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
MODES = {"micro-batched": [], "one at a time": ["--max_batch_size", "1"]}


# ----- the pool and its texts -----


def candidate_texts(tokenizer, num: int, min_tokens: int, max_tokens: int) -> list[str]:
    splits = load_task("rotten_tomatoes")
    texts = [t for split in ("test", "validation", "train") for t in splits[split]["text"]]
    lengths = [len(ids) for ids in tokenizer(texts)["input_ids"]]
    return [t for t, n in zip(texts, lengths) if min_tokens <= n <= max_tokens][:num]


@torch.no_grad()
def set_sign_router(moe: TTLoRAMoEModel, tokenizer, texts: list[str]) -> None:
    """Set the linear router so that it sends `texts` to the experts in about equal shares, whatever their length.

    Expert j gets the texts whose router features, centred, with their length-correlated directions projected out,
    have the signs of pattern j (the binary digits of j) along the top ceil(log2 E) principal directions: argmax_j
    s_j . z is the pattern of z's own signs, and z = U^T P (x - mean) is linear in the features x.
    """
    feats, lengths = [], []
    for i in range(0, len(texts), 128):
        batch = tokenizer(texts[i:i + 128], padding=True, return_tensors="pt")
        feats.append(moe.router_features(batch["input_ids"], batch["attention_mask"]))
        lengths.append(batch["attention_mask"].sum(1))
    x = torch.cat(feats).double()
    n = torch.cat(lengths).double()
    # mean-pooled embeddings carry the text's length (e.g. the [CLS]/[SEP] share 2/n): fit x on (1, n, 1/n) and
    # project the fitted directions out, so that no expert gets the short or the long texts
    fit = torch.linalg.lstsq(torch.stack([torch.ones_like(n), n, 1 / n], 1), x).solution  # (3, H)
    q, _ = torch.linalg.qr(fit.T)  # (H, 3)
    project = torch.eye(x.shape[1], dtype=x.dtype) - q @ q.T
    centred = (x - x.mean(0)) @ project
    num = len(moe.tasks)
    bits = max(1, (num - 1).bit_length())
    directions = torch.linalg.svd(centred, full_matrices=False).Vh[:bits].T  # (H, bits)
    signs = torch.tensor([[1.0 if (j >> b) & 1 else -1.0 for b in range(bits)] for j in range(num)], dtype=x.dtype)
    weight = signs @ directions.T @ project  # (E, H)
    net = moe.router.router_net
    net.weight.copy_(weight.to(net.weight.dtype))
    net.bias.copy_((-weight @ x.mean(0)).to(net.bias.dtype))


def bucket_texts(moe_dir: Path, texts: list[str], margin: float) -> dict[str, list[str]]:
    """Task -> the texts the saved pool routes to it, through the pipeline the server runs; texts whose top two
    router logits are within `margin` of each other are dropped."""
    from transformers import pipeline

    classifier = pipeline("text-classification", model=str(moe_dir), device="cpu")
    moe, tokenizer = classifier.model, classifier.tokenizer
    kept = []
    with torch.no_grad():
        for i in range(0, len(texts), 128):
            chunk = texts[i:i + 128]
            batch = tokenizer(chunk, padding=True, return_tensors="pt")
            logits = moe.router(moe.router_features(batch["input_ids"], batch["attention_mask"]))
            top2 = logits.topk(2, dim=-1).values
            kept += [t for t, gap in zip(chunk, (top2[:, 0] - top2[:, 1]).tolist()) if gap > margin]
    buckets: dict[str, list[str]] = {task: [] for task in moe.tasks}
    for text, result in zip(kept, classifier(kept, batch_size=64, truncation=True)):
        buckets[result["task"]].append(text)
    return dict(sorted(buckets.items(), key=lambda kv: -len(kv[1])))


def build_pool(args, root: Path) -> tuple[Path, dict[str, list[str]]]:
    base = bench_base(args).eval()
    tokenizer = load_tokenizer(TTLoRAConfig(base_model_name_or_path=DEFAULT_BASE_MODEL))
    texts = candidate_texts(tokenizer, args.candidates, args.min_tokens, args.max_tokens)
    paths = make_experts(root, args.experts, base)
    moe = TTLoRAMoEModel.from_experts(paths, base_model=copy.deepcopy(base), router_layer=0).eval()
    set_sign_router(moe, tokenizer, texts)
    moe_dir = root / "moe"
    moe.save_pretrained(moe_dir)
    return moe_dir, bucket_texts(moe_dir, texts, args.margin)


def interleave(buckets: list[list[str]]) -> list[tuple[str, int]]:
    """(text, bucket) taking one text from each bucket in turn (shorter buckets start over)."""
    longest = max(len(b) for b in buckets)
    return [(b[i % len(b)], k) for i in range(longest) for k, b in enumerate(buckets)]


def length_matched(buckets: list[list[str]], lengths: dict[str, int], reference: list[int]) -> list[tuple[str, int]]:
    """(text, bucket) for each token length in `reference`, taking the buckets in turn: the text of that bucket whose
    length is closest (texts of one length in turn), so that every spread sends texts of the same lengths."""
    by_length = []
    for bucket in buckets:
        groups: dict[int, list[str]] = {}
        for text in bucket:
            groups.setdefault(lengths[text], []).append(text)
        by_length.append(groups)
    used: dict[tuple[int, int], int] = {}
    work = []
    for i, target in enumerate(reference):
        k = i % len(buckets)
        n = min(by_length[k], key=lambda m: (abs(m - target), m))
        j = used.get((k, n), 0)
        used[(k, n)] = j + 1
        work.append((by_length[k][n][j % len(by_length[k][n])], k))
    return work


# ----- the servers -----


class Server:
    """`scripts/serve.py` as a subprocess on a free local port; `stop()` ends it by its process id."""

    def __init__(self, moe_dir: Path, extra: list[str], device: str, threads: int = 0, timeout: float = 300):
        cmd = [sys.executable, str(ROOT / "scripts" / "serve.py"), "--moe", str(moe_dir), "--port", "0",
               "--device", device, "--log_level", "warning", *extra]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        if threads:  # torch's intra-op threads in the server (default: one per core)
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()  # a full pipe would block the server
        try:
            self.url = self._read_url(time.monotonic() + timeout)
            self._wait_ready(time.monotonic() + timeout)
        except BaseException:
            self.stop()
            raise

    def _read_url(self, deadline: float) -> str:
        while True:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None or time.monotonic() > deadline:
                raise RuntimeError(f"server {self.proc.args} did not start:\n{''.join(self.log[-30:])}")
            if match := re.search(r"on (http://\S+)", line):
                return match.group(1)

    def _drain(self) -> None:
        for line in self.proc.stdout:
            self.log.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def _wait_ready(self, deadline: float) -> None:
        import httpx

        while True:
            try:
                if httpx.get(f"{self.url}/health", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server at {self.url} never answered /health:\n{''.join(self.log[-30:])}")
            time.sleep(0.2)

    def health(self) -> dict:
        import httpx

        return httpx.get(f"{self.url}/health", timeout=30).json()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


# ----- the clients -----


async def closed_loop(url: str, work: list[tuple[str, int]], tasks: list[str], clients: int, requests: int,
                      max_seconds: float) -> dict:
    """`clients` clients, each sending one single-input request after another (client c takes work items c,
    c + clients, ...) until `requests` in all are sent or `max_seconds` have passed."""
    import httpx

    latencies: list[float] = []
    wrong = 0
    # one AsyncClient (one keep-alive connection) per client: a pool shared by many concurrent requests is slow in
    # httpx (encode/httpx#3215) and would make the client, not the server, the bottleneck at 64 clients
    https = [httpx.AsyncClient(base_url=url, timeout=120) for _ in range(clients)]
    try:
        await asyncio.gather(*(http.get("/health") for http in https))  # connect before the clock starts
        start = time.perf_counter()
        deadline = start + max_seconds

        async def client(c: int) -> None:
            nonlocal wrong
            for j in range(c, requests, clients):
                if time.perf_counter() > deadline:
                    return
                text, bucket = work[j % len(work)]
                t0 = time.perf_counter()
                response = await https[c].post("/classify", json={"inputs": [text]})
                latencies.append(time.perf_counter() - t0)
                response.raise_for_status()
                wrong += response.json()[0]["task"] != tasks[bucket]

        await asyncio.gather(*(client(c) for c in range(clients)))
        elapsed = time.perf_counter() - start
    finally:
        await asyncio.gather(*(http.aclose() for http in https))
    lat = np.array(latencies) * 1e3
    return {"rows": len(latencies), "seconds": elapsed, "rows_per_s": len(latencies) / elapsed,
            "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)), "wrong_expert": wrong}


def run_once(server: Server, work, tasks, clients: int, args) -> dict:
    before = server.health()
    result = asyncio.run(closed_loop(server.url, work, tasks, clients, args.requests, args.max_seconds))
    after = server.health()
    result["batches"] = after["batches"] - before["batches"]
    result["server_rows"] = after["rows"] - before["rows"]
    result["rows_per_batch"] = result["server_rows"] / max(1, result["batches"])
    return result


# ----- the benchmark -----


def conditions() -> dict:
    return {"cpus": os.cpu_count(), "load_average": os.getloadavg(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform()}


def median_row(key: tuple, runs: list[dict]) -> dict:
    clients, spread, mode = key
    row = {"clients": clients, "experts": spread, "mode": mode, "reps": len(runs)}
    for name in ("rows_per_s", "p50_ms", "p99_ms", "batches", "rows_per_batch", "rows"):
        row[name] = statistics.median(r[name] for r in runs)
    row["wrong_expert"] = sum(r["wrong_expert"] for r in runs)
    row["runs"] = runs
    return row


def table(rows: list[dict]) -> str:
    """The markdown table; the speed-up is the median over repetitions of micro-batched / one-at-a-time rows/s, each
    pair run back to back."""
    by_key = {(r["clients"], r["experts"], r["mode"]): r for r in rows}
    lines = ["| clients | experts | rows/s micro-batched | rows/s one at a time | speed-up | p50 / p99 ms "
             "micro-batched | p50 / p99 ms one at a time | forwards / rows per run, micro-batched | forwards / rows "
             "per run, one at a time |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for clients, spread in sorted({(r["clients"], r["experts"]) for r in rows}):
        b, s = by_key[(clients, spread, "micro-batched")], by_key[(clients, spread, "one at a time")]
        speedup = statistics.median(x["rows_per_s"] / y["rows_per_s"] for x, y in zip(b["runs"], s["runs"]))
        lines.append(f"| {clients} | {spread} | {b['rows_per_s']:.1f} | {s['rows_per_s']:.1f} | {speedup:.2f}x | "
                     f"{b['p50_ms']:.0f} / {b['p99_ms']:.0f} | {s['p50_ms']:.0f} / {s['p99_ms']:.0f} | "
                     f"{b['batches']:g} / {b['rows']:g} | {s['batches']:g} / {s['rows']:g} |")
    return "\n".join(lines)


def results_file(args) -> str:
    return "serve" if args.server_threads == 1 else f"serve_threads{args.server_threads}"


def print_table(payload: dict) -> None:
    args = payload["args"]
    print(f"\nscripts/serve.py, MiniLM + {args['experts']} random TT-LoRA experts, single-input requests, "
          f"median of {args['reps']} interleaved runs ({args['requests']} requests or {args['max_seconds']:g} s each)")
    print(table(payload["rows"]))
    print(f"answers routed to another expert than bucketed: {sum(r['wrong_expert'] for r in payload['rows'])}")
    print(f"load average before / after: {payload['conditions_before']['load_average']} / "
          f"{payload['conditions_after']['load_average']}; wall time {payload['wall_s']:.0f} s")


def bench_serve(args) -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a terminated benchmark still stops its servers
    spreads = [min(s, args.experts) for s in args.spread]
    started = time.time()
    before = conditions()
    servers: dict[str, Server] = {}
    with tempfile.TemporaryDirectory() as tmp:
        moe_dir, buckets = build_pool(args, Path(tmp))
        tasks = list(buckets)
        sizes = {task: len(texts) for task, texts in buckets.items()}
        print(f"texts per expert (bucketed by the router): {sizes}")
        if any(len(buckets[t]) < args.min_bucket for t in tasks[:max(spreads)]):
            raise SystemExit(f"a bucket holds fewer than {args.min_bucket} texts: {sizes}; raise --candidates")
        tokenizer = load_tokenizer(TTLoRAConfig(base_model_name_or_path=DEFAULT_BASE_MODEL))
        every = [t for texts in buckets.values() for t in texts]
        lengths = dict(zip(every, (len(ids) for ids in tokenizer(every)["input_ids"])))
        reference = [lengths[t] for t, _ in interleave(list(buckets.values()))][:args.requests]
        work = {k: length_matched([buckets[t] for t in tasks[:k]], lengths, reference) for k in spreads}
        tokens = {k: float(np.mean([lengths[t] for t, _ in w])) for k, w in work.items()}
        print(f"mean tokens per text, by experts spread over: {tokens}")
        try:
            for mode, extra in tqdm(MODES.items(), desc="starting servers"):
                servers[mode] = Server(moe_dir, extra, args.device, args.server_threads)
            for server in servers.values():  # warm-up: first forwards at each batch size are slower
                for clients in args.clients:
                    asyncio.run(closed_loop(server.url, work[max(spreads)], tasks, clients, 2 * clients, 30))
            configs = [(c, k) for c in args.clients for k in spreads]
            runs: dict[tuple, list[dict]] = {}
            progress = tqdm(total=args.reps * len(configs) * len(MODES), desc="runs")
            for rep in range(args.reps):
                for clients, spread in configs:
                    order = list(MODES) if (rep + configs.index((clients, spread))) % 2 == 0 else list(MODES)[::-1]
                    for mode in order:
                        result = run_once(servers[mode], work[spread], tasks, clients, args)
                        runs.setdefault((clients, spread, mode), []).append(result)
                        progress.set_postfix(clients=clients, experts=spread, mode=mode,
                                             rows_s=f"{result['rows_per_s']:.1f}")
                        progress.update()
            progress.close()
            health = {mode: server.health() for mode, server in servers.items()}
        finally:
            for server in servers.values():
                server.stop()
    rows = [median_row(key, value) for key, value in sorted(runs.items())]
    payload = {"args": vars(args), "conditions_before": before, "conditions_after": conditions(),
               "wall_s": time.time() - started, "texts_per_expert": sizes,
               "mean_tokens": tokens, "health_at_end": health, "rows": rows}
    save(results_file(args), payload)
    print_table(payload)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experts", type=int, default=8, help="experts in the pool")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64], help="concurrent clients")
    parser.add_argument("--spread", type=int, nargs="+", default=[1, 4, 8],
                        help="how many experts the requests are spread over (capped at --experts)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--requests", type=int, default=256, help="requests per run (all clients together)")
    parser.add_argument("--max_seconds", type=float, default=6.0, help="no new request after this long in a run")
    parser.add_argument("--candidates", type=int, default=2048, help="candidate texts to bucket by expert")
    parser.add_argument("--min_tokens", type=int, default=16)
    parser.add_argument("--max_tokens", type=int, default=48)
    parser.add_argument("--margin", type=float, default=1e-3, help="least gap between the top two router logits")
    parser.add_argument("--min_bucket", type=int, default=8, help="least texts per expert used")
    parser.add_argument("--device", default="cpu", help="the servers' device")
    parser.add_argument("--server_threads", type=int, default=1,
                        help="torch intra-op threads per server (0: torch's default, one per core); results of "
                             "another value than 1 go to serve_threads<N>.json")
    parser.add_argument("--table", action="store_true", help="only print the table of the saved results")
    main_args = parser.parse_args()
    if main_args.table:
        print_table(json.loads((RESULTS / f"{results_file(main_args)}.json").read_text()))
    else:
        del main_args.table
        bench_serve(main_args)


if __name__ == "__main__":
    main()
