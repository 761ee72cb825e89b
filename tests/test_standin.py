"""The demo stand-in answers in one write with Nagle's algorithm off: the load tests read through it."""

from __future__ import annotations

import socket

from webhook_dsl.demo import _Handler


class _CountingSocket(socket.socket):
    """A server-side socket that counts the writes the handler makes."""

    writes: list[bytes]

    def send(self, data: bytes, *args: int) -> int:  # type: ignore[override]
        self.writes.append(bytes(data))
        return super().send(data, *args)

    def sendall(self, data: bytes, *args: int) -> None:  # type: ignore[override]
        self.writes.append(bytes(data))
        super().sendall(data, *args)


class _Server:
    """What BaseHTTPRequestHandler reads of its server."""

    server_name = "stand-in-test"
    server_port = 0


def _serve_once(request: bytes) -> tuple[_CountingSocket, bytes]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        accepted, address = listener.accept()
    server_side = _CountingSocket(fileno=accepted.detach())
    server_side.writes = []
    with client:
        client.sendall(request)
        client.shutdown(socket.SHUT_WR)  # the handler sees end of input after the requests
        _Handler(server_side, address, _Server())  # type: ignore[arg-type]
        nodelay = server_side.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        server_side.close()
        received = b""
        while chunk := client.recv(65536):
            received += chunk
    assert nodelay, "Nagle's algorithm is still on: a two-part answer would wait for a delayed ACK"
    return server_side, received


def test_each_answer_is_one_write_head_and_body_together() -> None:
    get = b"GET /erp/api/orders/A-1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tokentoken\r\n\r\n"
    sock, received = _serve_once(get * 3)  # three kept-alive requests on one connection
    assert received.count(b"HTTP/1.1 200") == 3
    assert len(sock.writes) == 3
    for write in sock.writes:
        head, _, body = write.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert body.startswith(b"{") and b'"order_number": "A-1"' in body
