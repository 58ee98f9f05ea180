"""The asyncio network backend under the upstream connections: plain and TLS connections,
timeouts, flow control, and that the openai-compatible provider really uses it."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import subprocess
from pathlib import Path

import httpcore
import httpx
import pytest

from threadline.providers import asyncio_network
from threadline.providers.asyncio_network import AsyncioBackend
from threadline.providers.openai_compat import OpenAICompatibleModel
from threadline.settings import ModelConfig

RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    b"6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n"
)


async def serve(handler, ssl_context: ssl.SSLContext | None = None):
    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=ssl_context)
    return server, server.sockets[0].getsockname()[1]


async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
        while True:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(RESPONSE)
            await writer.drain()


async def body_via(pool: httpcore.AsyncConnectionPool, url: str) -> bytes:
    async with pool.stream("GET", url) as response:
        return b"".join([part async for part in response.aiter_stream()])


async def test_plain_connections_stream_and_are_reused():
    server, port = await serve(answer)
    async with server, httpcore.AsyncConnectionPool(network_backend=AsyncioBackend()) as pool:
        for _ in range(3):
            assert await body_via(pool, f"http://127.0.0.1:{port}/") == b"hello world"
        assert len(pool.connections) == 1


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subject = ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    files = ["-keyout", str(key), "-out", str(cert)]
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            *subject,
            *files,
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_tls_connections(certificate):
    cert, key = certificate
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    server, port = await serve(answer, server_tls)
    trusting = ssl.create_default_context(cafile=str(cert))
    async with server:
        async with httpcore.AsyncConnectionPool(
            ssl_context=trusting, network_backend=AsyncioBackend()
        ) as pool:
            assert await body_via(pool, f"https://127.0.0.1:{port}/") == b"hello world"
        # a certificate the client does not trust is a connect error, as with httpx's own
        client = httpx.AsyncClient(
            transport=asyncio_network.transport(
                verify=httpx.create_ssl_context(), limits=httpx.Limits()
            )
        )
        async with client:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await client.get(f"https://127.0.0.1:{port}/")


async def test_read_timeout_and_a_dropped_connection():
    async def stall(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(RESPONSE[:90])  # headers and part of the body, then nothing
        await writer.drain()
        await asyncio.sleep(0.3)
        writer.close()

    server, port = await serve(stall)
    url = f"http://127.0.0.1:{port}/"
    async with (
        server,
        httpx.AsyncClient(
            transport=asyncio_network.transport(
                verify=httpx.create_ssl_context(), limits=httpx.Limits()
            )
        ) as client,
    ):
        with pytest.raises(httpx.ReadTimeout):
            async with client.stream("GET", url, timeout=0.1) as response:
                await response.aread()
        with pytest.raises(httpx.RemoteProtocolError):  # closed mid-body
            async with client.stream("GET", url, timeout=5) as response:
                await response.aread()


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
    async with server, httpcore.AsyncConnectionPool(network_backend=AsyncioBackend()) as pool:
        extensions = {"timeout": {"read": 0.15}}
        async with pool.stream(
            "GET", f"http://127.0.0.1:{port}/", extensions=extensions
        ) as response:
            assert b"".join([part async for part in response.aiter_stream()]) == b"x" * 6


async def test_a_slow_reader_pauses_the_socket_and_loses_nothing():
    payload = bytes(range(256)) * 8192  # 2 MiB: past the high-water mark

    async def big(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        head = f"HTTP/1.1 200 OK\r\ncontent-length: {len(payload)}\r\n\r\n".encode()
        writer.write(head + payload)
        await writer.drain()

    server, port = await serve(big)
    async with server, httpcore.AsyncConnectionPool(network_backend=AsyncioBackend()) as pool:
        async with pool.stream("GET", f"http://127.0.0.1:{port}/") as response:
            received = bytearray()
            async for part in response.aiter_stream():
                received += part
                await asyncio.sleep(0)
        assert bytes(received) == payload


async def test_the_provider_pools_run_on_it():
    model = OpenAICompatibleModel(
        "m",
        ModelConfig(provider="openai-compatible", base_url="http://127.0.0.1:1/v1"),
        api_key=None,
    )
    try:
        for client in model._clients:
            pool = client._transport._pool  # type: ignore[attr-defined]
            assert isinstance(pool._network_backend, AsyncioBackend)
    finally:
        await model.aclose()
