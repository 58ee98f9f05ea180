"""The one way the server fetches an untrusted URL (a link in a prompt, a web result, an image).

A URL a user names may point at the server's own network: `http://169.254.169.254/` (cloud
metadata), `http://localhost:5432/`, a name that resolves to `10.0.0.7`, or a public page that
redirects to any of those. So `SafeFetcher.fetch(url)`:

    parses the URL           http and https only; no credentials in it
    resolves the host        itself, off the event loop, and refuses if ANY address it
                             resolves to is not public (loopback, private, link-local, CGNAT,
                             multicast, reserved, unspecified, and IPv6 forms embedding those)
    connects                 to the very address it checked (no second DNS lookup, so DNS
                             rebinding cannot swap it), sending the real Host header and SNI
                             and verifying the certificate against the host name
    follows redirects        itself, at most `max_redirects`, checking every hop as above
    caps                     the whole fetch's time, the connect time, the body's bytes
                             (streamed; decoded bytes for gzip/deflate too) and the content
                             types it accepts

It answers a `FetchedPage` or raises `FetchRefused` (will not fetch) / `FetchFailed` (could
not). Their reasons are the server's own words: the upstream's error text and body never
reach a caller; details go to the server log.

`allow_private_hosts` ("host:port" entries) lets tests reach a page server on 127.0.0.1.
It is empty by default and has no business in a production config.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import zlib
from collections.abc import Awaitable, Callable, Collection
from urllib.parse import urljoin

import httpx
import structlog

from threadline.domain.errors import FetchFailed, FetchRefused
from threadline.domain.fetching import FetchedPage
from threadline.tools.addresses import refusal

log = structlog.get_logger(__name__)

Resolver = Callable[[str, int], Awaitable[list[str]]]

READABLE_TYPES = frozenset(
    {"text/html", "application/xhtml+xml", "text/plain", "text/markdown", "application/pdf"}
)
READABLE = "a web page, text or PDF"
READABLE_ACCEPT = "text/html,application/xhtml+xml,text/plain;q=0.9,application/pdf;q=0.8"
IMAGE_CONTENT_TYPES = frozenset(
    {
        "image/png",
        "image/jpeg",
        "image/jpg",
        "image/pjpeg",
        "image/gif",
        "image/webp",
        "image/tiff",
        "image/bmp",
        "image/x-ms-bmp",
    }
)
"""What an image fetcher accepts (the images the parser can OCR). The type the caller
uses is read from the bytes; the header only decides whether the body is read at all."""
IMAGES = "an image (PNG, JPEG, GIF, WebP, TIFF or BMP)"
IMAGES_ACCEPT = "image/png,image/jpeg,image/gif,image/webp,image/tiff;q=0.8,image/bmp;q=0.8"
REDIRECTS = frozenset({301, 302, 303, 307, 308})
DEFAULT_PORTS = {"http": 80, "https": 443}
MiB = 1024 * 1024


async def resolve(host: str, port: int) -> list[str]:
    """The host's addresses, by the system resolver in a worker thread."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class SafeFetcher:
    """A `PageFetcher` that reaches public addresses only. See the module docstring."""

    def __init__(
        self,
        *,
        timeout_seconds: float = 15.0,
        connect_timeout_seconds: float = 5.0,
        max_bytes: int = 5 * MiB,
        max_redirects: int = 5,
        user_agent: str = "Threadline link reader",
        allow_private_hosts: Collection[str] = (),
        content_types: Collection[str] = READABLE_TYPES,
        accept: str = READABLE_ACCEPT,
        accepted: str = READABLE,
        resolver: Resolver = resolve,
    ) -> None:
        """`content_types` are the only ones whose body is read; `accept` is the Accept
        header sent; `accepted` names them in the refusal ("not a web page, text or PDF").
        Link reading uses the defaults; an image fetcher is made with `for_images`."""
        self.timeout_seconds = timeout_seconds
        self.connect_timeout_seconds = connect_timeout_seconds
        self.max_bytes = max_bytes
        self.max_redirects = max_redirects
        self.user_agent = user_agent
        self.allow_private_hosts = frozenset(h.lower() for h in allow_private_hosts)
        self.content_types = frozenset(content_types)
        self.accept = accept
        self.accepted = accepted
        self.resolver = resolver
        self._tls = ssl.create_default_context()

    def for_images(
        self,
        *,
        max_bytes: int,
        content_types: Collection[str] = IMAGE_CONTENT_TYPES,
        accepted: str = IMAGES,
    ) -> SafeFetcher:
        """A fetcher with this one's rules (time caps, redirects, allow-list, resolver) that
        reads images only, up to `max_bytes` each. Both image features make theirs here: chat
        images take every type in `IMAGE_CONTENT_TYPES` (the default); the image variator's
        source a subset of it, named in `accepted`. The Accept header follows the types."""
        types = frozenset(content_types)
        if not types <= IMAGE_CONTENT_TYPES:
            raise ValueError(f"not image content types: {sorted(types - IMAGE_CONTENT_TYPES)}")
        wanted = [part for part in IMAGES_ACCEPT.split(",") if part.partition(";")[0] in types]
        return SafeFetcher(
            timeout_seconds=self.timeout_seconds,
            connect_timeout_seconds=self.connect_timeout_seconds,
            max_bytes=max_bytes,
            max_redirects=self.max_redirects,
            user_agent=self.user_agent,
            allow_private_hosts=self.allow_private_hosts,
            content_types=types,
            accept=",".join(wanted) or ",".join(sorted(types)),
            accepted=accepted,
            resolver=self.resolver,
        )

    async def fetch(self, url: str) -> FetchedPage:
        """GET `url`. Raises `FetchRefused` or `FetchFailed` with a reason a person reads."""
        try:
            async with asyncio.timeout(self.timeout_seconds):
                return await self._follow(url)
        except TimeoutError:
            raise FetchFailed(f"the page did not load within {self.timeout_seconds:g} s") from None

    async def _follow(self, url: str) -> FetchedPage:
        # One client per fetch and no keep-alive: no connection is ever reused for another
        # host name (SNI) than the one it was opened for. trust_env=False: no proxy from the
        # environment gets to resolve names behind our back.
        async with httpx.AsyncClient(
            verify=self._tls,
            trust_env=False,
            follow_redirects=False,
            limits=httpx.Limits(max_keepalive_connections=0),
            timeout=httpx.Timeout(self.timeout_seconds, connect=self.connect_timeout_seconds),
        ) as client:
            current = _checked_url(url)
            for _ in range(self.max_redirects + 1):
                addresses = await self._addresses(current)
                answer = await self._get(client, current, addresses)
                if isinstance(answer, FetchedPage):
                    return answer
                current = answer
        raise FetchFailed(f"the page redirected more than {self.max_redirects} times")

    async def _addresses(self, url: httpx.URL) -> list[str]:
        """The addresses to connect to, all checked (unless the host is allow-listed)."""
        host, port = _host(url), _port(url)
        try:
            addresses = await self.resolver(host, port)
        except (OSError, UnicodeError):
            raise FetchFailed(f"the host name {host} could not be resolved") from None
        if not addresses:
            raise FetchFailed(f"the host name {host} could not be resolved")
        if _host_port(url) in self.allow_private_hosts:
            return addresses
        for address in addresses:
            reason = refusal(address)
            if reason:
                log.info("fetch_refused", host=host, address=address, reason=reason)
                verb = "is" if address == host else "resolves to"
                raise FetchRefused(f"{host} {verb} {reason}; only public addresses are fetched")
        return addresses

    async def _get(
        self, client: httpx.AsyncClient, url: httpx.URL, addresses: list[str]
    ) -> FetchedPage | httpx.URL:
        """One hop: the page, or the checked URL it redirects to."""
        response = await self._connect(client, url, addresses)
        try:
            if response.status_code in REDIRECTS:
                return _redirect_target(url, response)
            if not 200 <= response.status_code < 300:
                raise FetchFailed(f"the server answered HTTP {response.status_code}")
            content_type, charset = _content_type(response)
            if content_type not in self.content_types:
                shown = content_type or "no content type"
                raise FetchFailed(f"the page is {shown}, not {self.accepted}")
            body = await self._body(response)
            return FetchedPage(str(url), content_type, body, charset)
        finally:
            await response.aclose()

    async def _connect(
        self, client: httpx.AsyncClient, url: httpx.URL, addresses: list[str]
    ) -> httpx.Response:
        """Send the request to each checked address in turn until one answers."""
        host = _host(url)
        headers = {
            "Host": url.netloc.decode("ascii"),
            "User-Agent": self.user_agent,
            "Accept": self.accept,
            "Accept-Encoding": "gzip, deflate",
        }
        for address in addresses:
            request = client.build_request(
                "GET",
                url.copy_with(host=address.split("%", 1)[0]),
                headers=headers,
                extensions={"sni_hostname": host},
            )
            try:
                return await client.send(request, stream=True)
            except (httpx.ConnectError, httpx.ConnectTimeout) as error:
                log.info("fetch_connect_failed", host=host, address=address, error=repr(error))
            except httpx.TimeoutException:
                raise FetchFailed(f"{host} did not answer in time") from None
            except httpx.HTTPError as error:
                log.info("fetch_failed", host=host, address=address, error=repr(error))
                raise FetchFailed(f"the connection to {host} failed") from None
        raise FetchFailed(f"could not connect to {host}")

    async def _body(self, response: httpx.Response) -> bytes:
        """The body, decoded, streamed and stopped at `max_bytes` (raw and decoded)."""
        too_large = FetchFailed(f"the page is larger than {_size(self.max_bytes)}")
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise too_large
        decoder = _decoder(response.headers.get("Content-Encoding", ""))
        raw = 0
        parts: list[bytes] = []
        kept = 0
        try:
            async for chunk in response.aiter_raw():
                raw += len(chunk)
                if raw > self.max_bytes:
                    raise too_large
                part = decoder.decompress(chunk, self.max_bytes + 1 - kept)
                kept += len(part)
                parts.append(part)
                if kept > self.max_bytes or decoder.unconsumed_tail:
                    raise too_large
        except httpx.TimeoutException:
            raise FetchFailed("the page stopped arriving") from None
        except httpx.HTTPError as error:
            log.info("fetch_body_failed", error=repr(error))
            raise FetchFailed("the connection broke while reading the page") from None
        except zlib.error:
            raise FetchFailed("the page's compressed body is corrupt") from None
        return b"".join(parts)


class _Identity:
    unconsumed_tail = b""

    def decompress(self, data: bytes, max_length: int) -> bytes:
        return data


def _decoder(encoding: str) -> _Identity | zlib._Decompress:
    """A bounded decoder for the body's Content-Encoding (gzip, deflate or none)."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return _Identity()
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj(32 + zlib.MAX_WBITS)  # zlib or gzip header, detected
    raise FetchFailed(f"the page is sent with an unsupported encoding ({encoding[:40]})")


def _checked_url(raw: str) -> httpx.URL:
    try:
        url = httpx.URL(raw.strip())
    except (httpx.InvalidURL, UnicodeError, TypeError):
        raise FetchRefused("not a valid URL") from None
    if url.scheme not in DEFAULT_PORTS:
        scheme = url.scheme or "none"
        raise FetchRefused(f"only http and https links are fetched, not {scheme[:20]}:")
    if not url.host:
        raise FetchRefused("the URL has no host")
    if url.userinfo:
        raise FetchRefused("links with a user name or password in them are not fetched")
    return url.copy_with(fragment=None)


def _redirect_target(url: httpx.URL, response: httpx.Response) -> httpx.URL:
    location = response.headers.get("Location")
    if not location:
        raise FetchFailed(f"the server answered HTTP {response.status_code} without a Location")
    try:
        target = urljoin(str(url), location)
    except ValueError:
        raise FetchFailed("the page redirected to an invalid URL") from None
    return _checked_url(target)


def _content_type(response: httpx.Response) -> tuple[str, str | None]:
    kind, _, params = response.headers.get("Content-Type", "").partition(";")
    charset = None
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip():
            charset = value.strip().strip('"')[:40]
    return kind.strip().lower(), charset


def _host(url: httpx.URL) -> str:
    return url.raw_host.decode("ascii").lower()


def _port(url: httpx.URL) -> int:
    return url.port or DEFAULT_PORTS[url.scheme]


def _host_port(url: httpx.URL) -> str:
    host = _host(url)
    return f"[{host}]:{_port(url)}" if ":" in host else f"{host}:{_port(url)}"


def _size(n: int) -> str:
    return f"{n / MiB:g} MB" if n >= MiB else f"{n / 1024:g} KB"
