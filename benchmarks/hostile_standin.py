"""A hostile API on loopback for ``load_service.py --hostile``: answers 200 and drips a huge body.

    python benchmarks/hostile_standin.py --port 8766            # then GET /drip/chunked, /stats ...

Every path but ``/ok`` and ``/stats`` answers ``200`` and then offers ``--total-bytes`` (100 MB by
default) in ``--chunk-bytes`` pieces (64 KiB), one every ``--interval-ms`` (5 ms), framed as the
path says:

=================  ==================================================================================
``/drip/chunked``  ``Transfer-Encoding: chunked``
``/drip/length``   ``Content-Length: 104857600``, the body raw
``/drip/lying``    ``Content-Length: 10`` *and* ``Transfer-Encoding: chunked`` (RFC 9112 6.3: an error),
                   then the 100 MB chunked
``/drip/eof``      neither header: the body ends when the connection does
``/drip/gzip``     ``Content-Encoding: gzip``: 100 MB of zeros compressed to about 100 KB (a gzip bomb)
``/drip/slow``     chunked, one piece every ``--slow-interval-ms`` (50 ms): 1 MiB takes 0.8 s
=================  ==================================================================================

Every drip says ``Connection: close``. ``/ok`` answers a small JSON object at once (the webhook of a
call whose arguments were valid). ``GET /stats`` answers, per path, how many answers were started, how
many the client cut short (it hung up before the end) or read to the end, and the body bytes handed to
the kernel per answer (at most the client's cap plus the two loopback socket buffers, when the client
stops reading in time). Nothing is stored but those counters. It exits by itself after ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import time
import zlib
from collections.abc import Iterator
from typing import Any

VARIANTS = ("chunked", "length", "lying", "eof", "gzip", "slow")


class Stats:
    def __init__(self) -> None:
        self.by_path: dict[str, dict[str, Any]] = {}

    def entry(self, path: str) -> dict[str, Any]:
        return self.by_path.setdefault(path, {"started": 0, "cut": 0, "completed": 0, "active": 0, "sent": []})

    def view(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for path, entry in sorted(self.by_path.items()):
            sent = entry["sent"]
            out[path] = {
                "started": entry["started"],
                "cut_by_client": entry["cut"],
                "read_to_end": entry["completed"],
                "still_sending": entry["active"],
                "body_bytes_written_max": max(sent, default=0),
                "body_bytes_written_median": int(statistics.median(sent)) if sent else 0,
                "body_bytes_written_total": sum(sent),
            }
        return out


class Hostile:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stats = Stats()
        self.piece = b"x" * args.chunk_bytes
        self._gzip: list[bytes] | None = None

    def gzip_pieces(self) -> list[bytes]:
        """``--total-bytes`` of zeros as one gzip stream, cut into ``--chunk-bytes`` pieces; made once."""
        if self._gzip is None:
            packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
            block = b"\0" * (1 << 20)
            data = b"".join(packer.compress(block) for _ in range(max(1, self.args.total_bytes >> 20)))
            data += packer.flush()
            size = self.args.chunk_bytes
            self._gzip = [data[i : i + size] for i in range(0, len(data), size)]
        return self._gzip

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                parts = lines[0].split(" ")
                if len(parts) != 3:
                    return
                path = parts[1].split("?", 1)[0]
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length" and value.strip().isdigit():
                        length = int(value.strip())
                if length:
                    await reader.readexactly(min(length, 1 << 20))
                if path == "/stats":
                    await self._small(writer, self.stats.view())
                elif path == "/ok":
                    await self._small(writer, {"ok": True, "session": {"client_data": {"last_check": "ok"}}})
                elif path.startswith("/drip/") and path[6:] in VARIANTS:
                    await self._drip(path[6:], writer)
                    return  # a drip never leaves the connection reusable
                else:
                    await self._small(writer, {"error": f"no such path {path}"}, status=b"404 Not Found")
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    @staticmethod
    async def _small(writer: asyncio.StreamWriter, payload: dict[str, Any], status: bytes = b"200 OK") -> None:
        body = json.dumps(payload).encode()
        writer.write(
            b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (status, len(body), body)
        )
        await writer.drain()

    def _pieces(self, variant: str) -> Iterator[bytes]:
        if variant == "gzip":
            yield from self.gzip_pieces()
            return
        for _ in range(max(1, self.args.total_bytes // len(self.piece))):
            yield self.piece

    async def _drip(self, variant: str, writer: asyncio.StreamWriter) -> None:
        args = self.args
        # Connection: close on every drip, since the server hangs up after one: without it, a client that read a
        # short answer to the end (the gzip bomb) may pool the connection and lose its next request to the race.
        head = [b"HTTP/1.1 200 OK", b"Content-Type: application/json", b"Connection: close"]
        chunked = variant in ("chunked", "lying", "slow")
        if variant == "length":
            head.append(b"Content-Length: %d" % (len(self.piece) * max(1, args.total_bytes // len(self.piece))))
        elif variant == "lying":
            head += [b"Content-Length: 10", b"Transfer-Encoding: chunked"]
        elif variant == "gzip":
            head += [b"Content-Encoding: gzip", b"Content-Length: %d" % sum(map(len, self.gzip_pieces()))]
        if chunked and variant != "lying":
            head.append(b"Transfer-Encoding: chunked")
        interval = (args.slow_interval_ms if variant == "slow" else args.interval_ms) / 1000
        entry = self.stats.entry(f"/drip/{variant}")
        entry["started"] += 1
        entry["active"] += 1
        sent = 0
        try:
            writer.write(b"\r\n".join(head) + b"\r\n\r\n")
            await writer.drain()
            for piece in self._pieces(variant):
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                await writer.drain()
                if writer.transport.is_closing():
                    raise ConnectionResetError
                sent += len(piece)
                await asyncio.sleep(interval)
            if chunked:
                writer.write(b"0\r\n\r\n")
            await writer.drain()
            entry["completed"] += 1
        except (ConnectionError, OSError):
            entry["cut"] += 1
        finally:
            entry["active"] -= 1
            entry["sent"].append(sent)


async def main_async(args: argparse.Namespace) -> None:
    hostile = Hostile(args)
    hostile.gzip_pieces()  # before the first request, so no answer waits for it
    server = await asyncio.start_server(hostile.serve, "127.0.0.1", args.port, backlog=1024, limit=1 << 16)
    print(f"hostile stand-in on http://127.0.0.1:{args.port}/", file=sys.stderr, flush=True)
    started = time.monotonic()
    async with server:
        while time.monotonic() - started < args.max_seconds:
            await asyncio.sleep(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True, help="port on 127.0.0.1")
    parser.add_argument("--chunk-bytes", type=int, default=64 * 1024, help="bytes per piece (default 65536)")
    parser.add_argument("--interval-ms", type=float, default=5.0, help="pause after each piece (default 5)")
    parser.add_argument("--slow-interval-ms", type=float, default=50.0, help="/drip/slow's pause (default 50)")
    parser.add_argument("--total-bytes", type=int, default=100 * 1024 * 1024, help="body offered (default 100 MiB)")
    parser.add_argument("--max-seconds", type=float, default=900, help="exit after this long (default 900)")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
