"""Running the app under uvicorn: in the foreground (``llmtune serve``) or in a thread (tests, benchmarks).

uvicorn handles SIGTERM and Ctrl-C itself: it stops accepting connections, lets in-flight requests
(streams included) finish for up to ``serve.shutdown_timeout`` seconds, then runs the app's lifespan
shutdown, which stops the batching worker.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from llmtune.errors import ConfigError

if TYPE_CHECKING:
    from llmtune.config.schema import ServeConfig


def check_port(host: str, port: int) -> None:
    """Raise ConfigError when ``host:port`` cannot be bound (in use, or not an address of this machine)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pass another --port, "
                              "or --host with an address of this machine") from None


def build_server(app: Any, settings: "ServeConfig", log_level: str = "info") -> Any:
    """A ``uvicorn.Server`` for ``app`` on ``settings.host:port`` with graceful shutdown."""
    import uvicorn

    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=log_level,
                            timeout_graceful_shutdown=settings.shutdown_timeout, access_log=log_level == "debug",
                            lifespan="on", server_header=False)
    return uvicorn.Server(config)


class BackgroundServer:
    """``with BackgroundServer(app, settings) as url:`` serves ``app`` from a thread until the block ends.

    Port 0 picks a free port; ``url`` is ``http://host:port``.
    """

    def __init__(self, app: Any, settings: "ServeConfig", log_level: str = "warning") -> None:
        self.server = build_server(app, settings, log_level)
        self.server.install_signal_handlers = lambda: None  # only the main thread may install them
        self._thread = threading.Thread(target=self.server.run, name="llmtune-serve-http", daemon=True)
        self.url = ""

    def __enter__(self) -> str:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self.url

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=30)
