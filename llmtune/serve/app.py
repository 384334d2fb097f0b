"""The FastAPI app of ``llmtune serve``: OpenAI's routes over one model and one batching scheduler.

Routes: ``GET /v1/models`` (and ``/v1/models/{id}``), ``POST /v1/completions``,
``POST /v1/chat/completions`` (both with ``"stream": true`` as server-sent events ending
``data: [DONE]``), ``GET /health`` and ``GET /metrics`` (Prometheus text).

Every problem a client can cause is an OpenAI-style JSON error with a 4xx status (``schemas.ApiError``):
bad JSON, unknown or unsupported parameters, out-of-range values, an unknown model, a prompt or
``max_tokens`` beyond the context (400), a missing or wrong API key (401), a body over
``serve.max_body_bytes`` (413), a full queue (429). ``/health`` answers without a key.
"""


import hmac
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from llmtune.serve.engine import BatchEngine, SamplingParams
from llmtune.serve.metrics import MetricsMiddleware, ServeMetrics
from llmtune.serve.prompts import PromptBuilder
from llmtune.serve.responses import Stream, collect, new_answer, sse_stream
from llmtune.serve.scheduler import Job, QueueFull, Scheduler
from llmtune.serve.schemas import ApiError, ChatRequest, CompletionRequest, parse_request, read_json

if TYPE_CHECKING:
    from llmtune.config.schema import ServeConfig


@dataclass
class ServeState:
    """What the routes share: the model's id, prompt builder, scheduler, metrics and settings."""

    model_id: str
    prompts: PromptBuilder
    scheduler: Scheduler
    metrics: ServeMetrics
    settings: "ServeConfig"
    api_key: Optional[str] = None
    started: int = 0

    def check_key(self, authorization: Optional[str]) -> None:
        """Raise 401 unless ``Authorization: Bearer KEY`` matches (when a key is set)."""
        if self.api_key is None:
            return
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.api_key.encode()):
            raise ApiError(401, "missing or incorrect API key; send the header 'Authorization: Bearer KEY'",
                           code="invalid_api_key")

    def check_model(self, name: Optional[str]) -> None:
        """Raise 404 for a model id this server does not serve (omitting it is fine)."""
        if name is not None and name != self.model_id:
            raise ApiError(404, f"the model '{name}' does not exist here; this server serves '{self.model_id}' "
                                "(GET /v1/models)", param="model", code="model_not_found")

    def model_card(self) -> dict[str, Any]:
        """The model's entry in ``/v1/models``."""
        return {"id": self.model_id, "object": "model", "created": self.started, "owned_by": "llmtune"}

    def make_job(self, prompts: list[list[int]], req: Any, extra_stops: list[str], prompt_param: str) -> Job:
        """A job of ``len(prompts) * n`` choices, each with its token budget and sampling settings.

        Raises:
            ApiError: Too many choices for the batch, or a prompt / max_tokens beyond the context.
        """
        total = len(prompts) * req.n
        if total > self.settings.max_batch_size:
            raise ApiError(400, f"this request asks for {total} completions (prompts x n), more than the server's "
                                f"batch size {self.settings.max_batch_size}; lower n", param="n")
        budgets = [self.prompts.budget(len(ids), req.new_tokens(), prompt_param) for ids in prompts]
        job = Job(self.prompts.tokenizer, self.scheduler.engine.eos_ids, req.stops() + extra_stops)
        for ids, budget in zip(prompts, budgets):
            for _ in range(req.n):
                seed = None if req.seed is None else req.seed + len(job.choices)
                job.add_choice(ids, budget, SamplingParams(req.temperature, req.top_p, req.presence_penalty,
                                                           req.frequency_penalty, seed))
        return job

    async def respond(self, request: Any, job: Job, req: Any, prompt_tokens: int, chat: bool) -> Any:
        """Queue ``job`` and answer: an SSE stream or one JSON body."""
        from fastapi.responses import JSONResponse
        from fastapi.sse import EventSourceResponse

        try:
            self.scheduler.submit(job)
        except QueueFull as exc:
            raise ApiError(429, f"the server is busy: {exc}; retry shortly", type_="rate_limit_error",
                           code="queue_full") from None
        stream, answer = Stream(chat=chat, model=self.model_id), new_answer(job, prompt_tokens)
        cancel = lambda: self.scheduler.cancel(job)  # noqa: E731
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            events = sse_stream(job, answer, stream, include_usage, lambda a: self._count(job, a), cancel)
            return EventSourceResponse(events, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        try:
            await collect(job, answer, request.is_disconnected, cancel)
        finally:
            self._count(job, answer)
        return JSONResponse(stream.body(answer))

    def _count(self, job: Job, answer: Any) -> None:
        self.metrics.prompt_tokens.inc(answer.prompt_tokens)
        self.metrics.completion_tokens.inc(sum(answer.completion_tokens))
        if job.first_token_at is not None:
            self.metrics.first_token.observe(job.first_token_at - job.created)


async def read_body(request: Any, limit: int) -> bytes:
    """The request body, refusing (413) one over ``limit`` bytes before reading it all."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the request body is {declared} bytes, more than the limit of {limit} "
                            "(serve.max_body_bytes)", code="request_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the request body is over the limit of {limit} bytes (serve.max_body_bytes)",
                           code="request_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(model: Any, tokenizer: Any, settings: "ServeConfig", model_id: str,
               api_key: Optional[str] = None) -> Any:
    """The FastAPI app serving ``model``; its worker thread starts and stops with the app's lifespan.

    Args:
        model: A causal LM in eval mode (``decoding.load_for_generation``).
        tokenizer: Its tokenizer, with a pad token.
        settings: ``cfg.serve`` (batch size, queue limit, body limit, default max_tokens).
        model_id: The id clients name in ``model`` and see in ``/v1/models``.
        api_key: When set, every request but ``/health`` needs ``Authorization: Bearer <api_key>``.
    """
    from fastapi import FastAPI

    scheduler = Scheduler(BatchEngine(model, tokenizer), settings.max_batch_size, settings.max_queue)
    metrics = ServeMetrics(lambda: scheduler.queue_depth, lambda: scheduler.running)
    state = ServeState(model_id, PromptBuilder(model, tokenizer, settings.default_max_tokens), scheduler, metrics,
                       settings, api_key, int(time.time()))

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        scheduler.start()
        yield
        scheduler.stop()

    app = FastAPI(title="llmtune serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.serve = state
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    _add_error_handlers(app)
    _add_routes(app, state)
    return app


def _add_error_handlers(app: Any) -> None:
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    async def api_error(request: Any, exc: ApiError) -> Any:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    async def http_error(request: Any, exc: HTTPException) -> Any:  # unknown routes (404), wrong methods (405)
        message = f"{request.method} {request.url.path}: {exc.detail}; the routes are /v1/models, /v1/completions, " \
                  "/v1/chat/completions, /health and /metrics"
        return JSONResponse(ApiError(exc.status_code, message).body(), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(HTTPException, http_error)


def _add_routes(app: Any, state: ServeState) -> None:
    from fastapi import Request, Response

    limit = state.settings.max_body_bytes

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": state.model_id, "running": state.scheduler.running,
                "waiting": state.scheduler.queue_depth, "steps": state.scheduler.steps}

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        state.check_key(request.headers.get("authorization"))
        body, content_type = state.metrics.render()
        return Response(body, media_type=content_type)

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        state.check_key(request.headers.get("authorization"))
        return {"object": "list", "data": [state.model_card()]}

    @app.get("/v1/models/{name:path}")
    async def model(name: str, request: Request) -> dict[str, Any]:
        state.check_key(request.headers.get("authorization"))
        state.check_model(name)
        return state.model_card()

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        state.check_key(request.headers.get("authorization"))
        req: CompletionRequest = parse_request(CompletionRequest, read_json(await read_body(request, limit)))
        state.check_model(req.model)
        prompts = [state.prompts.completion_ids(p) for p in req.prompts()]
        job = state.make_job(prompts, req, [], "prompt")
        return await state.respond(request, job, req, sum(map(len, prompts)), chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        state.check_key(request.headers.get("authorization"))
        req: ChatRequest = parse_request(ChatRequest, read_json(await read_body(request, limit)))
        state.check_model(req.model)
        ids = state.prompts.chat_ids([m.as_template_message() for m in req.messages])
        job = state.make_job([ids], req, state.prompts.chat_stops, "messages")
        return await state.respond(request, job, req, len(ids), chat=True)


def served_model_id(name_or_path: str, explicit: Optional[str] = None) -> str:
    """The id clients use for the model: ``explicit``, else the folder's name or the hub id."""
    if explicit:
        return explicit
    from pathlib import Path

    path = Path(name_or_path).expanduser()
    return path.resolve().name if path.exists() else name_or_path
