"""A demo stand-in for the example triggers' three APIs (ERP orders, helpdesk tickets, vision), on loopback.

It lets the examples run end to end with no outside network:
``webhook-dsl stand-in --port 8765`` then ``webhook-dsl call examples/triggers/...``.
Every answer echoes what the webhook sent, so a user can see the encoding at work,
and returns ``session.client_data`` to show the merge into the session.
"""

from __future__ import annotations

import itertools
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["serve", "start_in_thread"]

_tickets = itertools.count(1001)


class _Handler(BaseHTTPRequestHandler):
    server_version = "webhook-dsl-stand-in"
    protocol_version = "HTTP/1.1"
    # Head and body leave in one write (a buffered writer, flushed once per answer) with Nagle's algorithm
    # off: written in two, the body waited for the client's delayed ACK on every kept-alive call.
    wbufsize = 1 << 16
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw) if raw else None

    def _authorized(self) -> bool:
        if (self.headers.get("Authorization") or "").startswith("Bearer ") and len(self.headers["Authorization"]) > 7:
            return True
        self._send(401, {"error": "missing bearer token"})
        return False

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path.startswith("/erp/api/orders/") and self._authorized():
            number = unquote(parts.path.rsplit("/", 1)[1])
            self._send(
                200,
                {
                    "order_number": number,
                    "status": "in_transit",
                    "estimated_delivery": "2026-12-02",
                    "session": {"client_data": {"last_order_number": number}},
                },
            )
        elif not parts.path.startswith("/erp/api/orders/"):
            self._send(404, {"error": f"no such endpoint {parts.path}"})

    def do_POST(self) -> None:
        parts = urlsplit(self.path)
        try:
            body = self._body()
        except ValueError:
            self._send(400, {"error": "body is not JSON"})
            return
        if parts.path == "/helpdesk/api/tickets" and self._authorized():
            number = f"TCK-{next(_tickets)}"
            self._send(
                201,
                {
                    "ticket_number": number,
                    "status": "open",
                    "received": body,
                    "session_header": self.headers.get("X-Session-ID"),
                    "session": {"client_data": {"last_ticket": number}},
                },
            )
        elif parts.path == "/vision/analyze" and self._authorized():
            images = (body or {}).get("all_images") or []
            self._send(
                200,
                {
                    "session": parse_qs(parts.query).get("session", [""])[0],
                    "images_seen": len(images),
                    "labels": ["printer", "paper jam"],
                    "first_image": (body or {}).get("image_url"),
                },
            )
        elif parts.path not in ("/helpdesk/api/tickets", "/vision/analyze"):
            self._send(404, {"error": f"no such endpoint {parts.path}"})


def serve(host: str = "127.0.0.1", port: int = 8765) -> ThreadingHTTPServer:
    return ThreadingHTTPServer((host, port), _Handler)


def start_in_thread(host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """Start the stand-in on a background thread (tests); ``server.server_address`` has the port."""
    server = serve(host, port)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
