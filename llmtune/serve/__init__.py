"""``llmtune serve``: an OpenAI-compatible HTTP server with iteration-level batching.

* ``schemas``: OpenAI request bodies, validation, OpenAI-style JSON errors (``ApiError``).
* ``engine``: the batched decoder (one KV cache for every running sequence; rows join and leave each step).
* ``scheduler``: the worker thread that owns the model, the bounded waiting queue, stop strings.
* ``prompts``: prompts and chats to token ids (the chat template, as ``llmtune generate --chat``), context checks.
* ``responses``: JSON bodies and server-sent-event streams; ``metrics``: Prometheus ``/metrics``.
* ``app``: the FastAPI app factory and its routes; ``server``: running it under uvicorn.

Nothing here imports FastAPI at package import time; ``runs/serve.py`` loads the model and runs the app.
"""
