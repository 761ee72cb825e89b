"""Loopback HTTP/1.1 servers that record where each connection really arrived.

A client written in Rust connects out of Python's sight, so what a test may trust about "where did it
connect" is what the server saw: the local address of each accepted socket is the address that was
dialled. ``Landing`` listens on any loopback address (127.0.0.0/8 all reach this machine on Linux), and
``landings`` opens several on one port, so that a request sent to the wrong address of a name would be
answered, and seen, by a decoy instead of failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field

Answer = Callable[[str, dict[str, str], bytes], Awaitable[bytes]]


async def _json_ok(target: str, headers: dict[str, str], body: bytes) -> bytes:
    data = json.dumps({"target": target, "host": headers.get("host")}).encode()
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(data) + data


@dataclass
class Landing:
    """Serves on ``host:port`` (0: any free port); ``dialled`` has the local address of every connection
    accepted, ``received`` the (Host header, target) of every request read."""

    host: str = "127.0.0.1"
    port: int = 0
    answer: Answer = _json_ok
    dialled: list[str] = field(default_factory=list)
    received: list[tuple[str, str]] = field(default_factory=list)
    _server: asyncio.Server | None = None

    def url(self, path: str = "/", host: str | None = None) -> str:
        return f"http://{host or self.host}:{self.port}{path}"

    async def __aenter__(self) -> Landing:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.dialled.append(str(writer.get_extra_info("sockname")[0]))
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                lines = head.split("\r\n")
                target = lines[0].split(" ")[1]
                fields = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines[1:] if line)}
                body = await reader.readexactly(int(fields.get("content-length", "0")))
                self.received.append((fields.get("host", ""), target))
                writer.write(await self.answer(target, fields, body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


def free_port(*hosts: str) -> int:
    """A port free on every one of *hosts* right now."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((hosts[0], 0))
            port = int(probe.getsockname()[1])
        with contextlib.ExitStack() as stack:
            try:
                for host in hosts[1:]:
                    other = stack.enter_context(socket.socket())
                    other.bind((host, port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no port free on all of {hosts}")


@contextlib.asynccontextmanager
async def landings(*hosts: str, answer: Answer = _json_ok) -> AsyncIterator[list[Landing]]:
    """A ``Landing`` on each of *hosts*, all on one port."""
    port = free_port(*hosts)
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(Landing(host, port, answer)) for host in hosts]


class Hostile:
    """Answers every request on a connection with ``head`` then the pieces of ``body()``, counting the bytes
    it managed to hand to the kernel before the client hung up: the measure of what the client read (at
    most the cap plus the socket buffers, where an unbounded read takes the whole stream)."""

    def __init__(self, head: bytes, body: Callable[[], Iterator[bytes]], *, close: bool = False) -> None:
        self.head = head
        self.body = body
        self.close = close  # hang up after one answer (a body framed by the end of the connection)
        self.sent = 0
        self.finished = asyncio.Event()
        self.server: asyncio.Server | None = None

    def url(self, path: str = "/") -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}{path}"

    async def __aenter__(self) -> Hostile:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 200 OK\r\n" + self.head + b"\r\n")
                for piece in self.body():
                    writer.write(piece)
                    self.sent += len(piece)
                    await writer.drain()
                if self.close:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self.finished.set()
