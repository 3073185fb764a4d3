"""What a request may cost the server, and reading its images within those limits.

An image field is either Base64 (standard alphabet, optionally a ``data:image/...;base64,`` URI) or an http(s)
URL. Everything that can make one request expensive is bounded before the work is done:

* the request body (``max_body_bytes``): checked by :class:`BodyLimitMiddleware` while the body streams in, so an
  oversized upload is refused before it is buffered, with or without a ``Content-Length``;
* the encoded image (``max_image_bytes``): checked on the Base64 length before decoding it, and on the bytes a URL
  sends while they arrive;
* the decoded pixels (``max_pixels``): read from the file header (PNG ``IHDR``, JPEG ``SOF``, Pillow's header
  parser for the other formats) before OpenCV allocates anything, so a 100-byte PNG that declares 100000 x 100000
  pixels (a decompression bomb) is refused in microseconds;
* the aspect ratio (``max_aspect_ratio``): a thin strip passes the pixel limit but explodes when its short side
  is resized up to the model's input size;
* the images in one request (``max_images_per_request``).

URL fetching is off unless hosts are allowed (``url_allow_hosts``): a server that fetches any URL it is given lets
a client reach whatever the server can reach (cloud metadata endpoints, internal services), the SSRF hole. The
addresses a host resolves to are checked too, and the connection goes to the checked address
(:mod:`hpi.serving.fetch`, the ``fetcher`` of :func:`read_image_field`).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import ipaddress
import json
import os
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

try:  # SIMD Base64 (the serve extra): same bytes and the same refusals as the standard library, 20-40x faster;
    # a 47 KB image took 16% of the event loop's CPU to decode with base64.b64decode under load
    import pybase64 as _base64
except ImportError:  # pragma: no cover - without it, the standard library's decoder
    _base64 = base64

from hpi.errors import InvalidConfigError, InvalidInputError
from hpi.preprocess.decode import jpeg_header

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MiB = 1 << 20
# Connection-level defaults of ServeSettings, here so that ``hpi serve``'s parser can show them without FastAPI.
DEFAULT_MAX_CONNECTIONS = 512
DEFAULT_HEADER_TIMEOUT_S = 5.0
DEFAULT_BODY_TIMEOUT_S = 30.0
_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_DATA_URI_RE = re.compile(r"^data:[\w/+.\-]*(;[\w=.\-]+)*;base64,", re.ASCII)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------------------------------- errors


class RequestRejectedError(InvalidInputError):
    """A request the server will not process; ``status_code`` is the HTTP status it is answered with."""

    status_code = 400


class PayloadTooLargeError(RequestRejectedError):
    """The body, an image's bytes or its declared pixels exceed a limit."""

    status_code = 413


class UrlNotAllowedError(RequestRejectedError):
    """An image URL the server may not fetch: fetching is off, or its host is not on the allow-list."""

    status_code = 403


class ImageFetchError(RequestRejectedError):
    """An allowed URL could not be fetched (network error, HTTP error status, timeout)."""

    status_code = 422


class DecodeMemoryBusyError(RequestRejectedError):
    """The decoded images of the requests in hand already take the server's decode-memory budget."""

    status_code = 503


# --------------------------------------------------------------------------------------------------- limits


@dataclass(frozen=True)
class ServingLimits:
    """Per-request limits. Every field has a safe default; ``hpi serve`` exposes each as an option."""

    max_body_bytes: int = 32 * MiB  # whole request body, as sent (Base64 grows an image by 4/3)
    max_image_bytes: int = 16 * MiB  # one encoded image, after Base64 decoding or as downloaded
    max_pixels: int = 40_000_000  # width x height declared by one image's header (8000 x 5000)
    max_aspect_ratio: float = 100.0  # long side / short side: a 1 x 30000 strip resized to a short side of 256
    # would need 7.7 G pixels, a bomb the pixel limit alone does not catch
    max_images_per_request: int = 64  # imageLabelPairs in one index build/add request
    max_ids_per_request: int = 10_000  # ids in one index remove request
    url_allow_hosts: frozenset[str] = field(default_factory=frozenset)  # empty: URL inputs refused; "*": any host
    # whose addresses are public
    url_allow_networks: frozenset[str] = field(default_factory=frozenset)  # CIDRs fetched from although internal
    # (loopback, private, link-local, ...): e.g. "10.1.2.0/24" for an internal image store
    url_timeout_s: float = 10.0  # the whole fetch of one URL, redirects included
    url_max_redirects: int = 3


    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_image_bytes", "max_pixels", "max_images_per_request",
                     "max_ids_per_request"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidConfigError(f"ServingLimits.{name} must be a positive integer, got {value!r}")
        if not self.max_aspect_ratio >= 1:
            raise InvalidConfigError(f"ServingLimits.max_aspect_ratio must be at least 1, got {self.max_aspect_ratio!r}")
        if not self.url_timeout_s > 0:
            raise InvalidConfigError(f"ServingLimits.url_timeout_s must be positive, got {self.url_timeout_s!r}")
        if not isinstance(self.url_max_redirects, int) or not 0 <= self.url_max_redirects <= 20:
            raise InvalidConfigError(
                f"ServingLimits.url_max_redirects must be an integer in [0, 20], got {self.url_max_redirects!r}")
        hosts = frozenset(_normalise_host_entry(h) for h in self.url_allow_hosts)
        object.__setattr__(self, "url_allow_hosts", hosts)
        networks = []
        for entry in self.url_allow_networks:
            try:
                networks.append(str(ipaddress.ip_network(str(entry).strip(), strict=False)))
            except ValueError:
                raise InvalidConfigError(
                    f"URL network entry {entry!r} is not an IP network; expected e.g. '10.1.2.0/24', '127.0.0.1' "
                    "or 'fd00::/8'"
                ) from None
        object.__setattr__(self, "url_allow_networks", frozenset(networks))

    @property
    def urls_enabled(self) -> bool:
        return bool(self.url_allow_hosts)


def _normalise_host_entry(entry: str) -> str:
    """``"Example.COM"`` -> ``"example.com"``; ``"host:8080"`` keeps its port; ``"*.example.com"`` is a suffix."""
    if not isinstance(entry, str) or not entry.strip() or "/" in entry or "@" in entry:
        raise InvalidConfigError(
            f"URL allow-list entry {entry!r} is not a host; expected e.g. 'images.example.com', "
            "'127.0.0.1:8000' or '*.example.com'"
        )
    return entry.strip().lower()


def _split_entry(entry: str) -> tuple[str, int | None]:
    """An allow-list entry as (host, port or None): ``host``, ``host:port``, ``[v6]``, ``[v6]:port``, bare v6."""
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        return host, int(port) if port.isdigit() else None
    return entry, None


def host_allowed(host: str, port: int | None, allow: frozenset[str]) -> bool:
    """Whether ``host`` (and ``port``) matches an allow-list entry: an exact host, ``host:port``, or ``*.suffix``.

    >>> host_allowed("img.example.com", None, frozenset({"*.example.com"}))
    True
    >>> host_allowed("example.com.evil.net", None, frozenset({"example.com"}))
    False
    """
    host = host.lower().strip("[]")
    for entry in allow:
        if entry.startswith("*."):
            if host.endswith(entry[1:]):
                return True
            continue
        name, entry_port = _split_entry(entry)
        if host == name and (entry_port is None or entry_port == port):
            return True
    return False


# --------------------------------------------------------------------------------------------------- images


def is_url(text: str) -> bool:
    """True when the image field is a URL (any scheme) rather than Base64 (which never contains ``://``)."""
    return bool(_URL_RE.match(text[:64]))


def decode_base64_image(text: str, limits: ServingLimits, name: str) -> bytes:
    """The bytes of a Base64 image field, refusing oversized ones before decoding.

    Raises:
        PayloadTooLargeError: the decoded size would exceed ``max_image_bytes``.
        RequestRejectedError: empty, or not valid Base64.
    """
    match = _DATA_URI_RE.match(text[:256])
    if match:
        text = text[match.end():]
    if not text:
        raise RequestRejectedError(f"{name}: empty; expected a Base64-encoded image file or an http(s) URL")
    if len(text) // 4 * 3 > limits.max_image_bytes + 3:
        raise PayloadTooLargeError(
            f"{name}: the encoded image is about {len(text) * 3 // 4 / MiB:.1f} MiB, more than the limit of "
            f"{limits.max_image_bytes / MiB:.1f} MiB"
        )
    try:
        return _base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        pass
    try:  # MIME encoders wrap lines; accept whitespace, nothing else
        return _base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestRejectedError(
            f"{name}: neither an http(s) URL nor valid Base64 ({exc}); send the image file's bytes Base64-encoded"
        ) from None


def image_dimensions(data: bytes, name: str) -> tuple[int, int]:
    """(width, height) from the image header, without decoding pixels.

    Raises:
        RequestRejectedError: not an image format the server reads, or a header too damaged to give a size.
    """
    if data.startswith(_PNG_SIGNATURE):
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise RequestRejectedError(f"{name}: not a readable image (PNG without an IHDR header)")
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    header = jpeg_header(data)
    if header is not None:
        return header.width, header.height
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:  # parses the header only
            return img.size
    except Image.DecompressionBombError as exc:  # Pillow refuses some sizes at open already
        raise PayloadTooLargeError(f"{name}: the image declares too many pixels ({exc})") from None
    except UnidentifiedImageError:
        raise RequestRejectedError(
            f"{name}: not a readable image (unknown format); send JPEG, PNG, BMP, WebP or TIFF"
        ) from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for damaged headers
        raise RequestRejectedError(f"{name}: not a readable image ({type(exc).__name__}: {exc})") from None


def check_pixels(data: bytes, limits: ServingLimits, name: str) -> tuple[int, int]:
    """The header's (width, height), refusing images that would decode to more than ``max_pixels``."""
    width, height = image_dimensions(data, name)
    if width < 1 or height < 1:
        raise RequestRejectedError(f"{name}: not a readable image (declared size {width} x {height})")
    if width * height > limits.max_pixels:
        raise PayloadTooLargeError(
            f"{name}: the image declares {width} x {height} = {width * height / 1e6:.1f} megapixels, more than "
            f"the limit of {limits.max_pixels / 1e6:.1f} megapixels"
        )
    if max(width, height) > limits.max_aspect_ratio * min(width, height):
        raise PayloadTooLargeError(
            f"{name}: the image is {width} x {height}, more elongated than the limit of "
            f"{limits.max_aspect_ratio:g}:1 (resizing its short side would need too many pixels)"
        )
    return width, height


def default_decode_budget_bytes() -> int:
    """An eighth of the machine's memory (of the cgroup's limit when lower), at least 256 MiB."""
    total = 0
    with contextlib.suppress(ValueError, OSError, AttributeError):
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = open(limit_file, encoding="ascii").read().strip()  # noqa: SIM115 - one read
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < (total or 1 << 62):
            total = int(text)
    return max(256 * MiB, total // 8)


def decoded_bytes(data: bytes, name: str = "image") -> int:
    """The bytes an encoded image takes once decoded to 8-bit BGR, from its header."""
    width, height = image_dimensions(data, name)
    return max(1, width) * max(1, height) * 3


class DecodeBudget:
    """A total for the decoded images of all requests in hand: a request holds its images' decoded size from
    reading until its answer; past the total it waits (at most ``wait_s``), then is refused with 503 and
    Retry-After. An image larger than the whole budget still runs, alone.

    Sixteen concurrent largest-allowed images took the server to 1.36 GB before it had one.
    """

    def __init__(self, total_bytes: int, wait_s: float = 5.0) -> None:
        if total_bytes < 1 or not wait_s > 0:
            raise InvalidConfigError(f"decode budget must be positive with a positive wait, got {total_bytes!r} "
                                     f"bytes and {wait_s!r} s")
        self.total, self.wait_s, self.used = total_bytes, wait_s, 0
        self._changed: Any = None  # asyncio.Condition, made on the serving loop

    @contextlib.asynccontextmanager
    async def hold(self, nbytes: int) -> AsyncIterator[None]:
        import asyncio

        nbytes = min(max(1, nbytes), self.total)
        if self._changed is None:
            self._changed = asyncio.Condition()
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: self.used + nbytes <= self.total), self.wait_s)
            except TimeoutError:
                raise DecodeMemoryBusyError(
                    f"the server's decode-memory budget ({self.total / MiB:.0f} MiB) is taken by the images in hand; "
                    f"retry shortly") from None
            self.used += nbytes
        try:
            yield
        finally:
            async with self._changed:
                self.used -= nbytes
                self._changed.notify_all()


def decode_image_bytes(data: bytes, limits: ServingLimits, name: str) -> np.ndarray:
    """Encoded bytes to a BGR uint8 HWC array (PaddleX's array convention), within the pixel limit.

    Pixels equal ``cv2.imread(..., IMREAD_COLOR)`` as PaddleX reads files (EXIF orientation applied).

    Raises:
        PayloadTooLargeError: too many pixels.
        RequestRejectedError: not a readable image.
    """
    width, height = check_pixels(data, limits, name)
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise RequestRejectedError(f"{name}: not a readable image ({exc.err or 'decoder error'})") from None
    if img is None or img.size == 0:
        raise RequestRejectedError(
            f"{name}: not a readable image (its header says {width} x {height}, but it cannot be decoded: truncated, "
            "corrupt, or a variant OpenCV does not read)"
        )
    return img


async def read_image_field(text: str, limits: ServingLimits, fetcher: Any, name: str) -> bytes:
    """The encoded image bytes of one ``image`` field (Base64 or URL), within the limits."""
    if is_url(text):
        return await fetcher.fetch(text, name)
    return decode_base64_image(text, limits, name)


# --------------------------------------------------------------------------------------------------- body size


def error_body(status: int, message: str, log_id: str | None = None) -> bytes:
    """The protocol's error body: ``{logId, errorCode, errorMsg}`` with the HTTP status as ``errorCode``."""
    return json.dumps({"logId": log_id or str(uuid.uuid4()), "errorCode": status, "errorMsg": message}).encode()


class BodyLimitMiddleware:
    """ASGI middleware: refuses request bodies larger than ``max_bytes`` with 413, before the app sees them.

    A declared ``Content-Length`` over the limit is refused at once; otherwise the body is read (at most
    ``max_bytes``, whatever the framing) and replayed to the app.
    """

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        for key, value in scope.get("headers", ()):
            if key == b"content-length":
                if not value.isdigit():
                    _mark(scope, "bad_content_length")
                    await _reply(scope, send, 400, f"invalid Content-Length {value[:32].decode('latin-1')!r}")
                    return
                if int(value) > limit:
                    _mark(scope, "body_too_large")
                    await _reply(scope, send, 413, _too_large(int(value), limit))
                    return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > limit:
                _mark(scope, "body_too_large")
                await _reply(scope, send, 413, _too_large(None, limit))
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _too_large(size: int | None, limit: int) -> str:
    got = f"{size / MiB:.1f} MiB" if size is not None else "more"
    return f"request body too large: {got}, the limit is {limit / MiB:.1f} MiB"


def _mark(scope: Scope, reason: str) -> None:
    """Record why a request was refused, for the metrics and the access log (:mod:`hpi.serving.observability`)."""
    scope.setdefault("state", {})["refusal"] = reason


async def _reply(scope: Scope, send: Send, status: int, message: str,
                 extra: tuple[tuple[bytes, bytes], ...] = ((b"connection", b"close"),)) -> None:
    body = error_body(status, message, scope.get("state", {}).get("log_id"))
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *extra]})
    await send({"type": "http.response.body", "body": body})


class ConcurrencyLimitMiddleware:
    """ASGI middleware: at most ``max_requests`` requests in this process at once; more get 503 with Retry-After.

    It counts requests, not connections: a request reaches the app only once its headers are complete, so a client
    that opens connections and never finishes a request cannot lock others out (the header and body deadlines of
    :mod:`hpi.serving.server` close such connections). ``/health`` is exempt, so a load balancer can tell a busy
    server from a dead one.
    """

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], max_requests: int,
                 exempt: tuple[str, ...] = ()) -> None:
        self.app = app
        self.max_requests = max_requests
        self.exempt = frozenset(exempt)
        self.active = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in self.exempt:
            await self.app(scope, receive, send)
            return
        if self.active >= self.max_requests:
            _mark(scope, "connection_limit")
            await _reply(scope, send, 503, f"the server is at its limit of {self.max_requests} requests at once; "
                                           "retry shortly", ((b"retry-after", b"1"),))
            return
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1


def status_for(exc: BaseException) -> int:
    """The HTTP status an exception is answered with: a request's fault is 4xx, the server's 5xx."""
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        return status
    return 400 if isinstance(exc, InvalidInputError) else 500
