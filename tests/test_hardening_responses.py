"""Hostile response framing (issue 13, H1): the response cap counts the bytes that came, whatever the headers say.

A raw-socket server on 127.0.0.1 writes exactly the bytes each case needs (no HTTP library would send
a Content-Length next to Transfer-Encoding) and counts what it managed to hand to the kernel before the
client hung up. That count is the measure of what the client read: at most the cap plus the two socket
buffers, where an unbounded read takes the whole stream.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.loopback import Hostile
from webhook_dsl import Runtime, compile_webhook

#: Every test here runs on asyncio's loop and on uvloop (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("each_event_loop")

CAP = 1024 * 1024
#: What a hostile server offers; a client that reads it all has ignored the cap.
OFFERED = 128 * 1024 * 1024
#: What a bounded client may have let the server write: the cap plus loopback socket buffers, generously.
BOUNDED = 32 * 1024 * 1024
PIECE = 64 * 1024


def _chunked(piece: bytes, total: int = OFFERED) -> Iterator[bytes]:
    for _ in range(total // len(piece)):
        yield b"%x\r\n" % len(piece) + piece + b"\r\n"
    yield b"0\r\n\r\n"


def _raw(total: int = OFFERED) -> Iterator[bytes]:
    for _ in range(total // PIECE):
        yield b"x" * PIECE


@functools.cache
def _gzip_pieces(total: int = OFFERED) -> tuple[bytes, ...]:
    """A gzip stream of zeros (about 1,000:1), in the pieces a server would write it in."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = b"\0" * (4 * 1024 * 1024)
    pieces = [packer.compress(zeros) + packer.flush(zlib.Z_SYNC_FLUSH) for _ in range(total // len(zeros))]
    return (*pieces, packer.flush())


HostileServer = Hostile  # tests/loopback.py; the transport contract suite uses it too


async def _call(server: HostileServer, **settings: Any) -> Any:
    async with Runtime(allow_networks=["127.0.0.0/8"], max_retries=0, **settings) as runtime:
        result = await runtime.execute(compile_webhook({"url": server.url(), "method": "GET"}), {})
    async with asyncio.timeout(20):  # a hang detector, not a timing assertion: the client has hung up
        await server.finished.wait()
    return result


def _run(head: bytes, body: Callable[[], Iterator[bytes]], close: bool = False, **settings: Any) -> tuple[Any, int]:
    async def main() -> tuple[Any, int]:
        async with HostileServer(head, body, close=close) as server:
            result = await _call(server, **settings)
        return result, server.sent

    return asyncio.run(main())


def test_content_length_beside_transfer_encoding_is_refused_before_the_body_is_read() -> None:
    """The smuggling shape: a small Content-Length that would take the fast path, and endless chunks."""
    result, sent = _run(b"Content-Length: 10\r\nTransfer-Encoding: chunked\r\n", lambda: _chunked(b"x" * PIECE))
    assert result.category == "invalid_response", (result.category, len(result.body))
    assert "Content-Length and Transfer-Encoding" in (result.error or "")
    assert sent < BOUNDED


def test_endless_chunks_stop_at_the_cap() -> None:
    result, sent = _run(b"Transfer-Encoding: chunked\r\n", lambda: _chunked(b"x" * PIECE))
    assert result.category == "too_large"
    assert sent < BOUNDED


def test_a_content_length_larger_than_the_cap_is_read_no_further_than_the_cap() -> None:
    result, sent = _run(b"Content-Length: %d\r\n" % OFFERED, _raw)
    assert result.category == "too_large"
    assert sent < BOUNDED


def test_a_body_longer_than_its_content_length_is_cut_at_the_length() -> None:
    """The fast path: the parser stops at the declared length; the rest is never taken for the body."""

    async def main() -> tuple[list[Any], int]:
        async with (
            HostileServer(b"Content-Length: 5\r\n", lambda: _raw(8 * 1024 * 1024)) as server,
            Runtime(allow_networks=["127.0.0.0/8"], max_retries=0) as runtime,
        ):
            plan = compile_webhook({"url": server.url(), "method": "GET"})
            results = [await runtime.execute(plan, {}) for _ in range(2)]  # the second on a clean connection
        return results, server.sent

    results, sent = asyncio.run(main())
    assert [(r.ok, r.body) for r in results] == [(True, b"xxxxx")] * 2, [(r.category, r.error) for r in results]
    assert sent < 2 * BOUNDED


@pytest.mark.parametrize(
    "head",
    [
        b"Transfer-Encoding: gzip, chunked\r\n",
        b"Transfer-Encoding: identity\r\n",
        b"Transfer-Encoding: chunked, chunked\r\n",
    ],
)
def test_a_transfer_coding_the_client_does_not_undo_is_refused(head: bytes) -> None:
    """hyper undoes ``chunked`` only: a gzip transfer coding would come through still compressed, past the
    decompressed-size cap."""
    payload = gzip.compress(b"\0" * 10_000_000)
    result, _ = _run(head, lambda: _chunked(payload, len(payload)), close=True)
    assert result.category == "invalid_response", (result.category, len(result.body))


def test_conflicting_content_lengths_are_an_invalid_response() -> None:
    result, sent = _run(b"Content-Length: 10\r\nContent-Length: 50000000\r\n", _raw)
    assert result.category == "invalid_response"
    assert sent < BOUNDED


def test_a_gzip_bomb_with_a_small_content_length_is_too_large() -> None:
    bomb = gzip.compress(b"\0" * 50_000_000)
    result, _ = _run(b"Content-Encoding: gzip\r\nContent-Length: %d\r\n" % len(bomb), lambda: iter([bomb]))
    assert result.category == "too_large"


def test_an_endless_chunked_gzip_stream_is_too_large() -> None:
    result, _ = _run(b"Content-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
                        lambda: (b"%x\r\n" % len(d) + d + b"\r\n" for d in _gzip_pieces() if d))
    assert result.category == "too_large"


def test_a_plain_small_body_still_arrives_whole() -> None:
    body = b'{"ok": true, "n": "' + b"7" * 1000 + b'"}'
    head = b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
    result, _ = _run(head, lambda: iter([body]))
    assert result.ok and result.json()["ok"] is True


def test_the_httpx_path_refuses_conflicting_framing_too() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Length": "2", "Transfer-Encoding": "chunked"}, content=b"ok")

    async def resolver(host: str, port: int) -> list[str]:
        return ["93.184.215.14"]

    async def main() -> Any:
        async with Runtime(transport=httpx.MockTransport(handler), resolver=resolver) as runtime:
            return await runtime.execute(compile_webhook({"url": "https://api.example.com/", "method": "GET"}), {})

    assert asyncio.run(main()).category == "invalid_response"
