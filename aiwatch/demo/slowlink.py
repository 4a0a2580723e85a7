"""A congested network link of the demo's own: a TCP proxy that delays and bandwidth-limits what it forwards.

The ``network`` scenario puts it on the gateway -> inference hop (the gateway connects to the proxy, the proxy to the
inference service) and switches it on for the middle stage. While it is on, every chunk of bytes crosses the link
like this, in each direction:

- it waits for the link: one chunk at a time per direction, ``len(chunk) / bandwidth`` seconds each (the
  serialization delay of a slow link, shared by every connection on it);
- then it travels ``delay / 2`` seconds (the propagation delay), so a request and its answer take ``delay`` longer.

Bytes of one connection are delivered in the order they were sent, and nothing is ever dropped: the link is slow,
not lossy. The proxy runs an asyncio loop on its own thread, so it keeps running across the runner's event loops;
:meth:`SlowLink.congest` and :meth:`SlowLink.clear` may be called from any thread.

    >>> link = SlowLink("127.0.0.1", 50051)
    >>> port = link.start()  # point the client at 127.0.0.1:port
    >>> link.congest(delay=0.2, bandwidth=256_000)
    >>> link.clear(); link.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

log = logging.getLogger("aiwatch.demo")

#: The link's bandwidth while congested, bytes per second (2 Mbit/s): a demo request and its answer (a few hundred
#: bytes each) then wait about a millisecond each for the link, on top of the delay.
CONGESTED_BANDWIDTH = 256_000.0


@dataclass
class _Direction:
    """One direction of the link: when it is free to send the next chunk."""

    free_at: float = 0.0


class SlowLink:
    """A TCP proxy from ``127.0.0.1:<port>`` to ``target_host:target_port`` that can be congested at runtime."""

    def __init__(self, target_host: str, target_port: int, listen_host: str = "127.0.0.1",
                 listen_port: int = 0, clock: Callable[[], float] = time.monotonic) -> None:
        self.target = (target_host, target_port)
        self.listen = (listen_host, listen_port)
        self.delay = 0.0
        self.bandwidth: float | None = None
        self.port = 0
        self.forwarded_bytes = 0
        self._clock = clock
        self._up, self._down = _Direction(), _Direction()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # --- control, from any thread ---------------------------------------------------------------------------------
    def congest(self, delay: float, bandwidth: float | None = CONGESTED_BANDWIDTH) -> None:
        """From now on, add ``delay`` seconds per round trip and limit each direction to ``bandwidth`` bytes/s."""
        if delay < 0 or (bandwidth is not None and bandwidth <= 0):
            raise ValueError(f"delay must be >= 0 and bandwidth > 0, got {delay}, {bandwidth}")
        self.delay, self.bandwidth = delay, bandwidth

    def clear(self) -> None:
        """Back to a plain proxy (no added delay, no bandwidth limit)."""
        self.delay, self.bandwidth = 0.0, None

    @property
    def congested(self) -> bool:
        return self.delay > 0 or self.bandwidth is not None

    def start(self, timeout: float = 10.0) -> int:
        """Start listening on a thread of its own; returns the port."""
        ready: Future[int] = Future()
        self._thread = threading.Thread(target=self._serve, args=(ready,), name="aiwatch-demo-slowlink",
                                        daemon=True)
        self._thread.start()
        self.port = ready.result(timeout)
        return self.port

    def stop(self, timeout: float = 5.0) -> None:
        loop = self._loop
        if loop is None or self._thread is None:
            return
        with contextlib.suppress(RuntimeError, TimeoutError):  # the loop already stopped, or is stuck
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout)
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout)
        self._loop = None

    # --- the proxy, on its own loop -------------------------------------------------------------------------------
    def _serve(self, ready: Future[int]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._server = loop.run_until_complete(asyncio.start_server(self._accept, *self.listen))
            ready.set_result(int(self._server.sockets[0].getsockname()[1]))
        except Exception as exc:
            ready.set_exception(exc)
            loop.close()
            return
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError as exc:
            log.warning("slow link: cannot reach %s:%s (%s)", *self.target, exc)
            client_writer.close()
            return
        for reader, writer, direction in ((client_reader, server_writer, self._up),
                                          (server_reader, client_writer, self._down)):
            task = asyncio.create_task(self._pump(reader, writer, direction))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direction: _Direction) -> None:
        """Read chunks as they come and deliver each at its time, in order (a writer task per direction)."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        deliver = asyncio.create_task(self._deliver(queue, writer))
        try:
            while chunk := await reader.read(65536):
                queue.put_nowait((self._due(len(chunk), direction), chunk))
        except (ConnectionError, OSError):
            pass
        finally:
            queue.put_nowait((0.0, b""))  # end of stream, after what is still on its way
            with contextlib.suppress(Exception):
                await deliver

    def _due(self, size: int, direction: _Direction) -> float:
        """When a chunk of ``size`` bytes read now reaches the other end."""
        now = self._clock()
        if self.bandwidth is not None:
            direction.free_at = max(now, direction.free_at) + size / self.bandwidth
            sent = direction.free_at
        else:
            sent = now
        return sent + self.delay / 2

    async def _deliver(self, queue: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                due, chunk = await queue.get()
                if not chunk:
                    break
                wait = due - self._clock()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(chunk)
                await writer.drain()
                self.forwarded_bytes += len(chunk)
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()
