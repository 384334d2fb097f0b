"""``llmtune serve``: an OpenAI-compatible HTTP server for a model (completions, chat, streaming, batching)."""

from typing import Annotated, Optional

import typer

from llmtune.cli import _options as o
from llmtune.cli._common import resolve_config

HELP = "Serve a model over an OpenAI-compatible HTTP API: completions, chat, streaming, batched requests."
EXAMPLES = (
    "Examples:\n\n"
    "  llmtune serve --model runs/sft --port 8000\n\n"
    "  LLMTUNE_API_KEY=$(openssl rand -hex 16) llmtune serve -m runs/sft --host 0.0.0.0 "
    "--api-key-env LLMTUNE_API_KEY --max-batch-size 16\n\n"
    "  curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' "
    "-d '{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}], \"max_tokens\": 32}'\n\n"
    "Endpoints: /v1/models, /v1/completions, /v1/chat/completions (\"stream\": true for server-sent events), "
    "/health, /metrics. Binds 127.0.0.1 unless --host says otherwise; Ctrl-C or SIGTERM finishes the requests "
    "in flight, then exits. Needs the serve extra: pip install 'llmtune\\[serve]'. Guide: docs/serve.md."
)


def serve(
    model: o.Model = None,
    host: Annotated[Optional[str], typer.Option("--host", help="Address to bind (default 127.0.0.1: this machine only).")] = None,
    port: Annotated[Optional[int], typer.Option("--port", help="TCP port (default 8000).")] = None,
    api_key_env: Annotated[
        Optional[str], typer.Option("--api-key-env", help="Environment variable holding the API key clients must send.")
    ] = None,
    max_batch_size: Annotated[
        Optional[int], typer.Option("--max-batch-size", help="Sequences generated together per forward pass (default 8).")
    ] = None,
    max_queue: Annotated[
        Optional[int], typer.Option("--max-queue", help="Requests that may wait for a slot; more get HTTP 429 (default 64).")
    ] = None,
    recipe: o.Recipe = None,
    trust_remote_code: o.TrustRemoteCode = None,
    allow_pickle: o.AllowPickle = None,
    set_: o.Set = None,
    print_config: o.PrintConfig = False,
) -> None:
    cfg = resolve_config("serve", locals())
    from llmtune.runs.serve import run

    run(cfg)
