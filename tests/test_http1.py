"""The HTTP/1.1 transport under the upstream connections: framing, reuse, TLS, timeouts,
flow control, the pool's limits, and that the openai-compatible provider really uses it."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest

from threadline.providers.http1 import Http1Transport
from threadline.providers.openai_compat import OpenAICompatibleModel
from threadline.settings import ModelConfig

RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    b"6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n"
)


async def serve(handler, ssl_context: ssl.SSLContext | None = None):
    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=ssl_context)
    return server, server.sockets[0].getsockname()[1]


class Answering:
    """Answers every request of a connection with RESPONSE; counts connections and
    remembers the requests' heads and bodies."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests: list[bytes] = []

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                self.requests.append(head + await reader.readexactly(length))
                writer.write(RESPONSE)
                await writer.drain()


def client(**options) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=Http1Transport(**options))


async def test_plain_connections_stream_and_are_reused():
    answering = Answering()
    server, port = await serve(answering)
    async with server, client() as http:
        for n in range(3):
            r = await http.post(f"http://127.0.0.1:{port}/v1/x?q=1", json={"n": n})
            assert (r.status_code, r.text, r.headers["content-type"]) == (
                200,
                "hello world",
                "text/event-stream",
            )
            assert r.http_version == "HTTP/1.1" and r.reason_phrase == "OK"
    assert answering.connections == 1
    first = answering.requests[0]
    assert first.startswith(b"POST /v1/x?q=1 HTTP/1.1\r\n")
    assert f"host: 127.0.0.1:{port}".encode() in first.lower()
    assert first.endswith(b'\r\n\r\n{"n":0}')


async def test_a_body_that_ends_with_the_connection_and_a_connection_close():
    async def close_delimited(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it")
        await writer.drain()
        writer.close()

    server, port = await serve(close_delimited)
    transport = Http1Transport()
    async with server, httpx.AsyncClient(transport=transport) as http:
        for _ in range(2):
            assert (await http.get(f"http://127.0.0.1:{port}/")).text == "all of it"
            assert transport.open_connections == 0  # not kept: the server said close


async def test_a_kept_connection_the_server_closed_meanwhile_is_replaced():
    answering = Answering()

    async def once_then_close(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(RESPONSE)
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.close()  # closes the idle connection the client keeps
        answering.connections += 1

    server, port = await serve(once_then_close)
    async with server, client() as http:
        for _ in range(3):
            assert (await http.get(f"http://127.0.0.1:{port}/")).text == "hello world"
            await asyncio.sleep(0.1)
    assert answering.connections == 3


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subject = ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    files = ["-keyout", str(key), "-out", str(cert)]
    command = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    subprocess.run([*command, *subject, *files], check=True, capture_output=True)
    return cert, key


async def test_tls_connections(certificate):
    cert, key = certificate
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    answering = Answering()
    server, port = await serve(answering, server_tls)
    trusting = ssl.create_default_context(cafile=str(cert))
    async with server:
        async with client(ssl_context=trusting) as http:
            for _ in range(2):
                assert (await http.get(f"https://127.0.0.1:{port}/")).text == "hello world"
        assert answering.connections == 1
        # a certificate the client does not trust is a connect error, as with httpx's own
        async with client(ssl_context=httpx.create_ssl_context()) as http:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await http.get(f"https://127.0.0.1:{port}/")


async def test_read_timeout_and_a_dropped_connection():
    async def stall(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(RESPONSE[:90])  # headers and part of the body, then nothing
        await writer.drain()
        await asyncio.sleep(0.3)
        writer.close()

    server, port = await serve(stall)
    url = f"http://127.0.0.1:{port}/"
    transport = Http1Transport()
    async with server, httpx.AsyncClient(transport=transport) as http:
        with pytest.raises(httpx.ReadTimeout):
            async with http.stream("GET", url, timeout=0.1) as response:
                await response.aread()
        with pytest.raises(httpx.RemoteProtocolError):  # closed mid-body
            async with http.stream("GET", url, timeout=5) as response:
                await response.aread()
        assert transport.open_connections == 0


async def test_no_answer_and_garbage_are_protocol_errors():
    async def hang_up(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    async def garbage(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"SMTP ready\r\n\r\n")
        await writer.drain()

    for handler, match in ((hang_up, "without sending a response"), (garbage, "malformed")):
        server, port = await serve(handler)
        async with server, client() as http:
            with pytest.raises(httpx.RemoteProtocolError, match=match):
                await http.get(f"http://127.0.0.1:{port}/")


async def test_the_read_timeout_is_per_read_not_per_response():
    async def trickle(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for _ in range(6):  # 0.36 s in all, 0.06 s apart
            await asyncio.sleep(0.06)
            writer.write(b"1\r\nx\r\n")
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    server, port = await serve(trickle)
    async with server, client() as http:
        r = await http.get(f"http://127.0.0.1:{port}/", timeout=0.15)
        assert r.text == "x" * 6


async def test_a_slow_reader_pauses_the_socket_and_loses_nothing():
    payload = bytes(range(256)) * 8192  # 2 MiB: past the high-water mark

    async def big(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        head = f"HTTP/1.1 200 OK\r\ncontent-length: {len(payload)}\r\n\r\n".encode()
        writer.write(head + payload)
        await writer.drain()

    server, port = await serve(big)
    async with server, client() as http:
        async with http.stream("GET", f"http://127.0.0.1:{port}/") as response:
            received = bytearray()
            async for part in response.aiter_raw():
                received += part
                await asyncio.sleep(0)
        assert bytes(received) == payload


async def test_the_pool_limit_makes_requests_wait_then_time_out():
    release = asyncio.Event()

    async def slow(reader, writer):
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                await reader.readuntil(b"\r\n\r\n")
                await release.wait()
                writer.write(RESPONSE)
                await writer.drain()

    server, port = await serve(slow)
    url = f"http://127.0.0.1:{port}/"
    transport = Http1Transport(max_connections=2)
    async with server, httpx.AsyncClient(transport=transport) as http:
        first = [asyncio.create_task(http.get(url, timeout=5)) for _ in range(2)]
        await asyncio.sleep(0.05)
        assert transport.open_connections == 2
        with pytest.raises(httpx.PoolTimeout):
            await http.get(url, timeout=httpx.Timeout(5, pool=0.1))
        waiting = asyncio.create_task(http.get(url, timeout=5))  # gets a connection once free
        release.set()
        assert [r.text for r in await asyncio.gather(*first, waiting)] == ["hello world"] * 3
        assert transport.open_connections == 2


async def test_the_provider_uses_it():
    model = OpenAICompatibleModel(
        "m",
        ModelConfig(provider="openai-compatible", base_url="http://127.0.0.1:1/v1"),
        api_key=None,
    )
    try:
        assert isinstance(model._transport, Http1Transport)
    finally:
        await model.aclose()
