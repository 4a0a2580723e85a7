"""Running one demo service under uvicorn as a child process of the demo runner."""

from __future__ import annotations

import os
import threading
import time
from typing import Any


def exit_with_parent(interval: float = 0.5) -> None:
    """Exit this process when its parent goes away, so a runner killed by SIGKILL leaves no orphan service."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watch, name="aiwatch-demo-parent-watch", daemon=True).start()


def serve(app: Any, port: int, host: str = "127.0.0.1", loop: str = "auto") -> None:
    """Serve ``app`` on ``host:port`` until SIGINT/SIGTERM (loopback only by default). ``loop="asyncio"`` for a
    process that also runs ``grpc.aio`` (which needs the standard asyncio event loop, not uvloop)."""
    import uvicorn

    exit_with_parent()
    # keep-alive longer than the demo clients' (httpx's 5 s, which equals uvicorn's default): at equal timeouts a
    # request sent on a connection the server is closing fails (encode/httpx#2487), a spurious gateway error
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, timeout_graceful_shutdown=2,
                lifespan="on", loop=loop, timeout_keep_alive=75)
