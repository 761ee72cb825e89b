"""A scriptable HTTP/1.1 server on 127.0.0.1 for runtime tests: it can answer, stall, drip, reset or lie."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


@dataclass
class Request:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def json(self) -> object:
        return json.loads(self.body)


Handler = Callable[[Request, asyncio.StreamWriter], Awaitable[None]]


def response(status: int, body: bytes | str | object = b"", headers: dict[str, str] | None = None) -> bytes:
    if not isinstance(body, (bytes, str)):
        body = json.dumps(body)
        headers = {"Content-Type": "application/json", **(headers or {})}
    data = body.encode() if isinstance(body, str) else body
    lines = [f"HTTP/1.1 {status} X"] + [f"{k}: {v}" for k, v in (headers or {}).items()]
    lines.append(f"Content-Length: {len(data)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


@dataclass
class StubServer:
    """Serves ``handler`` on an ephemeral loopback port; records every request it read."""

    handler: Handler
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    server: asyncio.Server | None = None
    port: int = 0

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def __aenter__(self) -> StubServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self.server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("utf-8", "replace").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = [tuple(line.split(": ", 1)) for line in lines[1:] if ": " in line]
                length = int(next((v for k, v in headers if k.lower() == "content-length"), "0"))
                body = await reader.readexactly(length) if length else b""
                request = Request(method, target, headers, body)  # type: ignore[arg-type]
                self.requests.append(request)
                await self.handler(request, writer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


def answer(status: int, body: bytes | str | object = b"", headers: dict[str, str] | None = None) -> Handler:
    async def handler(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(response(status, body, headers))

    return handler
