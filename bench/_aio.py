"""asyncio servers for the registry (bench/servers.py): streams for TCP, a
datagram endpoint for UDP, on asyncio's own loop or on uvloop's."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable
from typing import Any

from bench.servers import Address, Proto, Serving


async def _stream_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while line := await reader.readline():
            writer.write(line)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


class _DatagramEcho(asyncio.DatagramProtocol):
    # uvloop's datagram transport is not an asyncio.DatagramTransport
    # subclass; both have sendto().
    _transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self._transport.sendto(data, addr)


class _AsyncioServing:
    def __init__(self, loop: asyncio.AbstractEventLoop, proto: Proto, host: str) -> None:
        self._loop = loop
        self._stopped: asyncio.Future[None] = loop.create_future()
        self._server: asyncio.Server | None = None
        self._transport: asyncio.BaseTransport | None = None
        if proto == "tcp":
            self._server = loop.run_until_complete(asyncio.start_server(_stream_echo, host, 0))
            sockname = self._server.sockets[0].getsockname()
        else:
            self._transport, _ = loop.run_until_complete(
                loop.create_datagram_endpoint(_DatagramEcho, local_addr=(host, 0))
            )
            sockname = self._transport.get_extra_info("sockname")
        self._address: Address = (str(sockname[0]), int(sockname[1]))

    @property
    def address(self) -> Address:
        return self._address

    def serve(self) -> None:
        self._loop.run_until_complete(self._stopped)

    def stop(self) -> None:
        def done() -> None:
            if not self._stopped.done():
                self._stopped.set_result(None)

        self._loop.call_soon_threadsafe(done)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            # Python >= 3.12 also waits for the connections' handlers here.
            wait = asyncio.wait_for(self._server.wait_closed(), 5.0)
            try:
                self._loop.run_until_complete(wait)
            except TimeoutError:
                pass
        if self._transport is not None:
            self._transport.close()
        self._loop.close()


def serving(proto: Proto, host: str, loop_module: str | None) -> Serving:
    if loop_module is None:
        loop = asyncio.new_event_loop()
    else:
        new_loop: Callable[[], asyncio.AbstractEventLoop] = importlib.import_module(loop_module).new_event_loop
        loop = new_loop()
    return _AsyncioServing(loop, proto, host)
