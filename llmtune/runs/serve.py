"""``llmtune serve``: one model behind an OpenAI-compatible HTTP API until SIGTERM or Ctrl-C.

The spine::

    check the serve extra, the API key variable and the port (before any weights load)
      -> model + tokenizer (``decoding.load_for_generation``: run dirs, HF folders, hub ids, LoRA adapters)
      -> FastAPI app (``serve.app.create_app``) with its batching worker
      -> uvicorn until a signal; in-flight requests finish first
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
from typing import Any, Iterator, Optional

from llmtune.config.schema import RunConfig
from llmtune.dist import log
from llmtune.errors import ConfigError

EXTRA_HINT = "pip install 'llmtune[serve]'"


def run(cfg: RunConfig) -> None:
    """Serve ``cfg.model`` with the settings of ``cfg.serve`` until stopped.

    Raises:
        ConfigError: The serve extra is missing, the API key variable is unset, or the port is taken.
        ModelError: The model cannot be loaded.
    """
    check_serve_extra()
    api_key = read_api_key(cfg.serve.api_key_env)
    from llmtune.serve.server import check_port

    check_port(cfg.serve.host, cfg.serve.port)
    warn_if_exposed(cfg.serve.host, api_key)
    app = build_app(cfg, api_key)
    from llmtune.serve.server import build_server

    server = build_server(app, cfg.serve)
    log(f"serving {app.state.serve.model_id} on http://{cfg.serve.host}:{cfg.serve.port}/v1 "
        f"(batch {cfg.serve.max_batch_size}, queue {cfg.serve.max_queue}); Ctrl-C stops")
    with _quiet_signal_reraise():
        server.run()
    log("server stopped")


def build_app(cfg: RunConfig, api_key: Optional[str] = None) -> Any:
    """Load the model of ``cfg`` and build its app (what ``run`` serves; tests and benchmarks use it too)."""
    from llmtune.decoding import load_for_generation
    from llmtune.serve.app import create_app, served_model_id

    model, tokenizer = load_for_generation(cfg)
    model_id = served_model_id(cfg.model.name_or_path or "", cfg.serve.model_name)
    return create_app(model, tokenizer, cfg.serve, model_id, api_key)


@contextlib.contextmanager
def in_background(cfg: RunConfig, api_key: Optional[str] = None) -> Iterator[str]:
    """``with in_background(cfg) as url:`` serves ``cfg.model`` from a thread (port 0: a free one) until the block ends.

    What ``llmtune quickstart`` uses to start, query and stop a server in its own process.

    Raises:
        ConfigError: The serve extra is missing or the port is taken.
        ModelError: The model cannot be loaded.
    """
    check_serve_extra()
    from llmtune.serve.server import BackgroundServer, check_port

    check_port(cfg.serve.host, cfg.serve.port)
    with BackgroundServer(build_app(cfg, api_key), cfg.serve) as url:
        yield url


def missing_serve_extra() -> list[str]:
    """The modules of the serve extra that are not installed (empty when it is)."""
    import importlib.util

    return [m for m in ("fastapi", "uvicorn", "prometheus_client") if importlib.util.find_spec(m) is None]


def check_serve_extra() -> None:
    """Raise ConfigError naming the extra when fastapi, uvicorn or prometheus_client is missing."""
    missing = missing_serve_extra()
    if missing:
        raise ConfigError(f"llmtune serve needs {', '.join(missing)}: {EXTRA_HINT}")


def read_api_key(env_name: Optional[str]) -> Optional[str]:
    """The API key from the variable ``env_name`` (None when no variable is named).

    Raises:
        ConfigError: The variable is named but unset or empty.
    """
    if env_name is None:
        return None
    key = os.environ.get(env_name, "").strip()
    if not key:
        raise ConfigError(f"--api-key-env {env_name}: the environment variable {env_name} is not set or empty; "
                          f"export {env_name}=<a long random key> first")
    return key


def warn_if_exposed(host: str, api_key: Optional[str]) -> None:
    """Log a warning when the server listens beyond this machine without an API key."""
    try:
        local = ipaddress.ip_address(host).is_loopback
    except ValueError:
        local = host == "localhost"
    if not local and api_key is None:
        log(f"warning: listening on {host} without an API key: anyone who can reach this port can use the model; "
            "pass --api-key-env NAME")


class _quiet_signal_reraise:
    """uvicorn re-raises SIGINT/SIGTERM after its graceful shutdown; make that a clean exit (status 0)."""

    def __enter__(self) -> None:
        self._previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
