"""A loopback TCP proxy that adds a fixed delay to every request, like a network round trip.

On loopback an emulator answers in a millisecond, so a benchmark there measures CPU, not the
waiting that dominates against real S3 and SQS (tens of milliseconds a call). Putting this
proxy between the contenders and the emulator restores that waiting, identically for both.
Each chunk sent towards the emulator is held for the delay; keep-alive HTTP requests are one
chunk each, so every AWS call pays about one delay, as it pays one round trip on a network.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit

from batchspot.emulators import LOOPBACK


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    with contextlib.suppress(ConnectionError):
        while chunk := await reader.read(65536):
            if delay:
                await asyncio.sleep(delay)
            writer.write(chunk)
            await writer.drain()
    writer.close()


@contextlib.contextmanager
def delayed(endpoint: str, delay_ms: float) -> Iterator[str]:
    """Serve ``endpoint`` through a proxy adding ``delay_ms`` per request; yield its URL."""
    target = urlsplit(endpoint)
    loop = asyncio.new_event_loop()
    delay = delay_ms / 1000

    async def connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(
            target.hostname, target.port
        )
        # Ending normally when cancelled at shutdown: asyncio 3.11 logs a traceback otherwise.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(
                _pipe(reader, upstream_writer, delay), _pipe(upstream_reader, writer, 0)
            )

    server = loop.run_until_complete(asyncio.start_server(connect, LOOPBACK, 0))
    port = server.sockets[0].getsockname()[1]
    thread = threading.Thread(target=loop.run_forever, name="latency-proxy", daemon=True)
    thread.start()

    async def shutdown() -> None:
        server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    try:
        yield f"http://{LOOPBACK}:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.close()
