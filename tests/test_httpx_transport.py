"""``HttpxTransport()`` over TLS: it dials the checked address, yet speaks to the host.

The URL httpx is handed names the address; the TLS server name (SNI) and the certificate check must
still be the host's, and two names on one address must never share a connection whose certificate was
checked for only one of them. A throwaway CA signs a certificate for a.test, b.test and api.test (no
address in it), and a TLS server on 127.0.0.3 records the server name of every connection.
"""

from __future__ import annotations

import asyncio
import datetime
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import webhook_dsl.runtime.client
from webhook_dsl import Runtime, compile_webhook
from webhook_dsl.runtime.calls import CallResult
from webhook_dsl.runtime.httpx_transport import HttpxTransport

x509 = pytest.importorskip("cryptography.x509")
hashes = pytest.importorskip("cryptography.hazmat.primitives.hashes")
serialization = pytest.importorskip("cryptography.hazmat.primitives.serialization")
ec = pytest.importorskip("cryptography.hazmat.primitives.asymmetric.ec")
NameOID = x509.oid.NameOID

NAMES = ["a.test", "b.test", "api.test"]


@pytest.fixture(autouse=True)
def only_loopback(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def dialling(address: str, port: int) -> None:
        if not address.startswith("127."):
            raise AssertionError(f"test tried to connect to {address!r}")

    monkeypatch.setattr(webhook_dsl.runtime.client, "dialling", dialling)
    yield


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, Path, Path]:
    """(a client context trusting the throwaway CA, the server's certificate file, its key file)."""
    now = datetime.datetime.now(datetime.UTC)

    def certificate(subject: str, key: Any, issuer: str, signer: Any, ca: bool, names: list[str]) -> Any:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = certificate("throwaway CA", ca_key, "throwaway CA", ca_key, True, [])
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = certificate("a.test", key, "throwaway CA", ca_key, False, NAMES)
    folder = tmp_path_factory.mktemp("tls")
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    client = ssl.create_default_context(cadata=ca.public_bytes(serialization.Encoding.PEM).decode())
    return client, cert_file, key_file


class TLSServer:
    """HTTPS on 127.0.0.3: answers 200 with the request's Host; records each connection's server name."""

    def __init__(self, cert_file: Path, key_file: Path) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert_file, key_file)
        self.context.sni_callback = self._sni
        self.server_names: list[str | None] = []
        self.dialled: list[str] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    def _sni(self, sock: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> None:
        self.server_names.append(name)

    async def __aenter__(self) -> TLSServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.3", 0, ssl=self.context)
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
                host = next(line[6:] for line in head.split("\r\n") if line.lower().startswith("host: "))
                body = f'{{"host": "{host}"}}'.encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                             % len(body) + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


def _calls(tls: tuple[ssl.SSLContext, Path, Path], hosts: list[str]) -> tuple[list[CallResult], TLSServer]:
    client, cert_file, key_file = tls

    async def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.3"]

    async def main() -> tuple[list[CallResult], TLSServer]:
        async with TLSServer(cert_file, key_file) as server, Runtime(
            transport=HttpxTransport(verify=client), resolver=resolver, allow_networks=["127.0.0.0/8"], max_retries=0
        ) as runtime:
            results = []
            for host in hosts:
                plan = compile_webhook({"url": f"https://{host}:{server.port}/", "method": "GET"})
                results.append(await runtime.execute(plan, {}))
            return results, server

    return asyncio.run(main())


def test_the_address_is_dialled_and_the_host_is_verified(tls: tuple[ssl.SSLContext, Path, Path]) -> None:
    results, server = _calls(tls, ["api.test", "api.test"])
    assert all(r.ok for r in results), [(r.category, r.error) for r in results]
    assert results[0].json() == {"host": f"api.test:{server.port}"}
    assert server.dialled == ["127.0.0.3"] and server.server_names == ["api.test"]  # one connection, kept alive


def test_two_names_on_one_address_never_share_a_connection(tls: tuple[ssl.SSLContext, Path, Path]) -> None:
    results, server = _calls(tls, ["a.test", "b.test", "a.test", "b.test"])
    assert all(r.ok for r in results), [(r.category, r.error) for r in results]
    assert [r.json()["host"].split(":")[0] for r in results] == ["a.test", "b.test", "a.test", "b.test"]
    assert server.server_names == ["a.test", "b.test"]


def test_a_certificate_for_other_names_is_refused_before_anything_is_sent(
    tls: tuple[ssl.SSLContext, Path, Path],
) -> None:
    (result,), server = _calls(tls, ["evil.test"])
    assert result.category == "connection" and (result.error or "").startswith("not sent: ")
    assert "certificate" in (result.error or "").lower()
    assert server.server_names == ["evil.test"]
