"""Serve a TT-LoRA MoE over HTTP: the pool is loaded once, and requests that arrive together are classified together.

    python scripts/serve.py --moe runs/demo/moe                     # http://127.0.0.1:8000
    python scripts/serve.py --moe org/ttlora-moe-4tasks --port 0    # any free port; the URL is printed

    curl -s localhost:8000/classify -H 'content-type: application/json' \\
        -d '{"inputs": ["a moving film", {"text": "A man plays.", "text_pair": "Someone plays."}]}'
    # [{"label": "positive", "score": 0.93, "task": "rotten_tomatoes"}, {"label": ..., "task": ...}]

- `POST /classify`: `{"inputs": [text or {"text", "text_pair"}, ...]}` -> one `{label, score, task}` per input, as
  `pipeline("text-classification", model=--moe)` gives it (`hf_ttmoe.pipelines`). Bad input (empty list, non-string,
  text over `--max_chars`, more than `--max_inputs` inputs, unknown fields, broken JSON) gets a 422 naming the problem.
- `GET /health`: status, and how many batches and rows the model has run (forwards = batches).
- `GET /experts`: the base model, router layer, and each expert's task, label names, repo and pinned revision.

Micro-batching: each input row is queued; the first row of a batch opens a window of `--batch_window_ms`, and the
batch runs when the window closes or `--max_batch_size` rows are waiting, as one mixed-expert forward whatever experts
its rows pick. The model runs in one worker thread, so requests keep arriving (and the next batch fills) meanwhile.
A batch that fails is retried row by row: only the requests whose rows fail get a 500, and the server keeps serving.
Needs the `serve` extra (`pip install 'hf_ttmoe[serve]'`: FastAPI, uvicorn). Installed as `hf-ttmoe-serve` too.
"""

# no `from __future__ import annotations` here: FastAPI reads the endpoint's annotation, a class `create_app` makes,
# at runtime
import asyncio
import logging
import socket
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated

from transformers import HfArgumentParser, pipeline

from hf_ttmoe.pipelines import TTLoRAMoEClassificationPipeline

try:
    import uvicorn
    from fastapi import FastAPI, HTTPException
    from pydantic import BaseModel, ConfigDict, Field, StrictStr, StringConstraints
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(f"scripts/serve.py needs the serve extra: pip install 'hf_ttmoe[serve]' ({err}).") from err

logger = logging.getLogger(__name__)

Classify = Callable[[list], list]  # rows (text or {"text", "text_pair"}) -> one {label, score, task} per row


@dataclass
class ServeArguments:
    """The pool to serve, where, and how requests are batched."""

    moe: str = field(metadata={"help": "Saved TT-LoRA MoE directory or Hub id."})
    revision: str | None = field(default=None, metadata={"help": "Revision of the MoE on the Hub (its experts are "
                                                                 "pinned by the MoE's config)."})
    host: str = field(default="127.0.0.1", metadata={"help": "Interface to listen on (0.0.0.0: every interface)."})
    port: int = field(default=8000, metadata={"help": "Port to listen on; 0 = any free port (the URL is printed)."})
    device: str | None = field(default=None, metadata={"help": "Torch device, e.g. cpu or cuda:0 (default: the "
                                                               "pipeline's, the first accelerator if any)."})
    max_batch_size: int = field(default=64, metadata={"help": "Most rows in one forward."})
    batch_window_ms: float = field(default=5.0, metadata={"help": "How long the first row of a batch waits for "
                                                                  "others, in milliseconds."})
    max_inputs: int = field(default=256, metadata={"help": "Most inputs in one request."})
    max_chars: int = field(default=10_000, metadata={"help": "Longest text (characters) a request may send."})
    max_length: int | None = field(default=None, metadata={"help": "Truncate inputs to this many tokens (default: "
                                                                   "the tokenizer's model_max_length)."})
    log_level: str = field(default="info", metadata={"help": "uvicorn's log level."})

    def __post_init__(self):
        for name in ("max_batch_size", "max_inputs", "max_chars"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} {getattr(self, name)} must be >= 1.")
        if self.batch_window_ms < 0:
            raise ValueError(f"--batch_window_ms {self.batch_window_ms} must be >= 0.")


class MicroBatcher:
    """Queues rows from concurrent requests and classifies them in batches of at most `max_batch_size` rows, each
    batch after a window of `window_s` seconds from its first row (or as soon as it is full).

    `classify` runs in one worker thread, one batch at a time. `batches` and `rows` count what it ran.
    """

    def __init__(self, classify: Classify, max_batch_size: int = 64, window_s: float = 0.005):
        self.classify, self.max_batch_size, self.window_s = classify, max_batch_size, window_s
        self.batches = self.rows = 0
        self._pending: list[tuple[object, asyncio.Future]] = []
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hf-ttmoe-serve")
        self._task: asyncio.Task | None = None
        self._arrived: asyncio.Event | None = None

    async def submit(self, rows: list) -> list:
        """Classify `rows` (in batches shared with other requests); raises what classifying them raised."""
        self._start()
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in rows]
        self._pending.extend(zip(rows, futures))
        self._arrived.set()
        return list(await asyncio.gather(*futures))

    def _start(self) -> None:
        """Start the batching loop in the running event loop (once per loop)."""
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._arrived = asyncio.Event()
            self._task = loop.create_task(self._loop())

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._arrived.wait()
            deadline = loop.time() + self.window_s
            while len(self._pending) < self.max_batch_size and (remaining := deadline - loop.time()) > 0:
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            batch, self._pending = self._pending[: self.max_batch_size], self._pending[self.max_batch_size:]
            if self._pending:  # rows beyond this batch: the next one starts at once
                self._arrived.set()
            else:
                self._arrived.clear()
            await self._run(batch)

    async def _run(self, batch: list[tuple[object, asyncio.Future]]) -> None:
        loop = asyncio.get_running_loop()
        rows = [row for row, _ in batch]
        try:
            results = await loop.run_in_executor(self._executor, self._count_and_classify, rows)
        except Exception:  # one bad row must not fail the others: retry row by row
            logger.exception("A batch of %d rows failed; retrying its rows one by one.", len(rows))
            for row, future in batch:
                try:
                    (result,) = await loop.run_in_executor(self._executor, self._count_and_classify, [row])
                except Exception as err:
                    if not future.done():
                        future.set_exception(err)
                else:
                    if not future.done():
                        future.set_result(result)
            return
        for (_, future), result in zip(batch, results):
            if not future.done():  # a request cancelled by its client leaves a cancelled future
                future.set_result(result)

    def _count_and_classify(self, rows: list) -> list:
        self.batches += 1
        self.rows += len(rows)
        results = self.classify(rows)
        if len(results) != len(rows):
            raise RuntimeError(f"classify returned {len(results)} results for {len(rows)} rows.")
        return results

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)


def request_model(max_inputs: int, max_chars: int) -> type[BaseModel]:
    """The body `POST /classify` accepts: 1..max_inputs texts or text pairs, each text 1..max_chars characters."""
    Text = Annotated[StrictStr, StringConstraints(min_length=1, max_length=max_chars)]

    class TextPair(BaseModel):
        model_config = ConfigDict(extra="forbid")
        text: Text
        text_pair: Text | None = None

    class ClassifyRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        inputs: Annotated[list[Text | TextPair], Field(min_length=1, max_length=max_inputs)]

    return ClassifyRequest


class Result(BaseModel):
    label: str
    score: float
    task: str


def create_app(classify: Classify, experts: dict, max_batch_size: int = 64, batch_window_ms: float = 5.0,
               max_inputs: int = 256, max_chars: int = 10_000) -> FastAPI:
    """The HTTP app around `classify` (see the module docstring); `experts` is what `GET /experts` answers."""
    batcher = MicroBatcher(classify, max_batch_size, batch_window_ms / 1000)
    ClassifyRequest = request_model(max_inputs, max_chars)  # noqa: N806 (a class)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        batcher.close()

    app = FastAPI(title="hf_ttmoe TT-LoRA MoE", summary="Routed text classification over a pool of TT-LoRA experts.",
                  lifespan=lifespan)
    app.state.batcher = batcher

    @app.post("/classify", response_model=list[Result])
    async def classify_inputs(request: ClassifyRequest) -> list[dict]:
        rows = [row if isinstance(row, str) else row.model_dump(exclude_none=True) for row in request.inputs]
        try:
            return await batcher.submit(rows)
        except Exception as err:
            raise HTTPException(status_code=500, detail=f"classification failed: {type(err).__name__}: {err}") from err

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "experts": len(experts["experts"]), "batches": batcher.batches, "rows": batcher.rows,
                "max_batch_size": batcher.max_batch_size, "batch_window_ms": batch_window_ms}

    @app.get("/experts")
    async def list_experts() -> dict:
        return experts

    return app


def pool_facts(moe) -> dict:
    """What `GET /experts` answers for a `TTLoRAMoEModel`."""
    return {
        "base_model": moe.config.base_model_name_or_path,
        "router_layer": moe.config.router_layer,
        "experts": [{"task": e.task, "labels": e.label_names, "repo_id": e.repo_id, "revision": e.revision}
                    for e in moe.expert_sources],
    }


def load_classifier(args: ServeArguments):
    """The MoE's text-classification pipeline, and a `Classify` that runs rows through it in one batch."""
    classifier = pipeline("text-classification", model=args.moe, revision=args.revision, device=args.device)
    if not isinstance(classifier, TTLoRAMoEClassificationPipeline):
        raise ValueError(f"--moe {args.moe!r} is a {classifier.model.config.model_type!r} model, not a TT-LoRA MoE "
                         "(ttlora_moe).")
    tokenizer_kwargs = {"truncation": True, **({"max_length": args.max_length} if args.max_length else {})}

    def classify(rows: list) -> list:
        return classifier(rows, batch_size=len(rows), **tokenizer_kwargs)

    return classifier, classify


def main(argv: list[str] | None = None) -> None:
    (args,) = HfArgumentParser(ServeArguments).parse_args_into_dataclasses(args=argv)
    classifier, classify = load_classifier(args)
    app = create_app(classify, pool_facts(classifier.model), args.max_batch_size, args.batch_window_ms,
                     args.max_inputs, args.max_chars)
    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(128)
    host, port = sock.getsockname()[:2]
    host = f"[{host}]" if ":" in host else host
    print(f"serving {args.moe} ({len(classifier.model.tasks)} experts) on http://{host}:{port}", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level=args.log_level)).run(sockets=[sock])


def cli() -> None:
    """The `hf-ttmoe-serve` console command."""
    main(sys.argv[1:])


if __name__ == "__main__":
    cli()
