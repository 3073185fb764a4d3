"""Fetching image URLs by checked address: resolve once, refuse internal addresses, connect to what was checked.

A host-name allow-list alone does not stop server-side request forgery: an allowed name can resolve to
``127.0.0.1`` or to a cloud metadata address, and a name that resolved to a public address when it was checked can
resolve to an internal one when the HTTP client looks it up again (DNS rebinding). So every hop of a fetch:

1. parses the URL (http or https, no credentials) and checks its host against ``url_allow_hosts``
   (``"*"`` allows any host whose addresses pass step 2);
2. resolves the host once, through :class:`Resolver`, and refuses it if **any** address it resolves to is
   loopback, private, link-local, multicast, reserved, unspecified or otherwise not globally routable (IPv4 and
   IPv6; an IPv4 address embedded in IPv6 as IPv4-mapped, 6to4, Teredo or NAT64 is checked as IPv4), unless the
   address is inside a network of ``url_allow_networks``;
3. connects to the checked address itself: the request URL carries the IP, the ``Host`` header the name, and for
   https the TLS server name (SNI and certificate check) is the name, so nothing resolves the name a second time;
4. follows a redirect only by going back to step 1 with the new URL, at most ``url_max_redirects`` times.

The whole fetch, redirects included, is bounded by ``url_timeout_s`` and the body by ``max_image_bytes``.
Connections are not pooled: a pooled connection to an address could otherwise carry a request for another name.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any, Protocol

from hpi.serving.limits import (
    ImageFetchError,
    MiB,
    PayloadTooLargeError,
    RequestRejectedError,
    ServingLimits,
    UrlNotAllowedError,
    host_allowed,
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class Resolver(Protocol):
    """Resolves a host name to the addresses a connection may use."""

    async def resolve(self, host: str, port: int) -> list[IPAddress]: ...


class SystemResolver:
    """The operating system's resolver (``getaddrinfo``), run off the event loop."""

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        seen: dict[str, IPAddress] = {}
        for _family, _type, _proto, _name, sockaddr in infos:
            text = str(sockaddr[0]).split("%", 1)[0]  # an IPv6 scope id is not part of the address
            seen.setdefault(text, ipaddress.ip_address(text))
        return list(seen.values())


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (IPv4-mapped, 6to4, Teredo client, NAT64), or None."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_refusal(address: IPAddress, allow_networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]
                    ) -> str | None:
    """Why the server may not connect to ``address`` (e.g. ``"loopback"``), or None when it may.

    >>> address_refusal(ipaddress.ip_address("::ffff:169.254.169.254"), ())
    'link-local'
    >>> address_refusal(ipaddress.ip_address("127.0.0.1"), [ipaddress.ip_network("127.0.0.0/8")]) is None
    True
    """
    inner = embedded_ipv4(address)
    # An address that carries an IPv4 address reaches that IPv4 host: judge it as that (the IPv6 wrapper ranges
    # themselves, such as ::ffff:0:0/96, are "reserved" and say nothing about where the connection goes).
    candidate = inner if inner is not None else address
    if any(candidate in net for net in allow_networks if candidate.version == net.version):
        return None
    for reason, flagged in (("unspecified", candidate.is_unspecified), ("loopback", candidate.is_loopback),
                            ("link-local", candidate.is_link_local), ("multicast", candidate.is_multicast),
                            ("reserved", candidate.is_reserved),
                            ("site-local", getattr(candidate, "is_site_local", False)),
                            ("private", candidate.is_private), ("not globally routable", not candidate.is_global)):
        if flagged:
            return reason
    return None


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def parse_networks(entries: Iterable[str]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """``url_allow_networks`` entries (``"10.0.0.0/8"``, ``"127.0.0.1"``) as networks."""
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


class UrlFetcher:
    """Fetches image URLs under the address policy described in the module docstring.

    Args:
        limits: the allow-lists, the caps on redirects, bytes and time.
        resolver: where names are resolved (tests pass a fake one); default :class:`SystemResolver`.
        transport: the httpx transport requests go through (tests pass a mock); default httpx's own.
    """

    def __init__(self, limits: ServingLimits, *, resolver: Resolver | None = None, transport: Any = None) -> None:
        self.limits = limits
        self.resolver = resolver or SystemResolver()
        self.transport = transport
        self.networks = parse_networks(limits.url_allow_networks)
        self._client: Any = None

    def _parse(self, url: str, name: str) -> Any:
        import httpx

        if not self.limits.urls_enabled:
            raise UrlNotAllowedError(
                f"{name}: image URLs are disabled on this server (fetching arbitrary URLs would let clients reach "
                "internal hosts); send the image Base64-encoded, or start the server with --allow-url-host HOST"
            )
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError, ValueError) as exc:
            raise RequestRejectedError(f"{name}: not a valid URL ({exc})") from None
        if parsed.scheme not in ("http", "https"):
            raise UrlNotAllowedError(f"{name}: only http and https URLs are fetched, got scheme {parsed.scheme!r}")
        if parsed.userinfo:
            raise UrlNotAllowedError(f"{name}: URLs with credentials (user@host) are not fetched")
        if not parsed.host:
            raise RequestRejectedError(f"{name}: the URL {url[:200]!r} has no host")
        allow = self.limits.url_allow_hosts
        if "*" not in allow and not host_allowed(parsed.host, self._port(parsed), allow):
            raise UrlNotAllowedError(
                f"{name}: host {parsed.host!r} is not on this server's URL allow-list ({', '.join(sorted(allow))})"
            )
        return parsed

    @staticmethod
    def _port(url: Any) -> int:
        return url.port or (443 if url.scheme == "https" else 80)

    async def _checked_address(self, url: Any, name: str) -> IPAddress:
        """The one address of ``url``'s host to connect to, after checking every address it resolves to."""
        host = url.host
        literal = _ip_literal(host)
        if literal is not None:
            addresses = [literal]
        else:
            try:
                addresses = list(await self.resolver.resolve(host, self._port(url)))
            except (OSError, UnicodeError) as exc:
                raise ImageFetchError(f"{name}: cannot resolve host {host!r} ({exc})") from None
            if not addresses:
                raise ImageFetchError(f"{name}: host {host!r} resolves to no address")
        for address in addresses:
            reason = address_refusal(address, self.networks)
            if reason is not None:
                what = host if str(address) == host else f"{host} (resolves to {address})"
                raise UrlNotAllowedError(
                    f"{name}: {what} is a {reason} address; the server does not fetch from internal addresses "
                    "(allow a network with --allow-url-network CIDR if this one is meant)"
                )
        return addresses[0]

    def _client_for_fetch(self) -> Any:
        import httpx

        if self._client is None:
            self._client = httpx.AsyncClient(
                follow_redirects=False, trust_env=False, transport=self.transport,
                timeout=self.limits.url_timeout_s, limits=httpx.Limits(max_keepalive_connections=0),
            )
        return self._client

    async def _get(self, url: Any, address: IPAddress, name: str) -> tuple[int, str | None, bytes]:
        """One GET to ``address`` for ``url``: (status, Location of a redirect, body of a 200)."""
        host_header = url.netloc.decode("ascii")
        extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
        target = url.copy_with(host=str(address))
        cap = self.limits.max_image_bytes
        async with self._client_for_fetch().stream("GET", target, headers={"Host": host_header},
                                                   extensions=extensions) as resp:
            if resp.is_redirect:
                return resp.status_code, resp.headers.get("location", ""), b""
            if resp.status_code != 200:
                raise ImageFetchError(f"{name}: fetching the URL returned HTTP {resp.status_code}")
            declared = resp.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > cap:
                raise PayloadTooLargeError(
                    f"{name}: the URL serves {int(declared) / MiB:.1f} MiB, more than the limit of {cap / MiB:.1f} MiB"
                )
            chunks, size = [], 0
            async for chunk in resp.aiter_bytes():
                size += len(chunk)
                if size > cap:
                    raise PayloadTooLargeError(f"{name}: the URL serves more than the limit of {cap / MiB:.1f} MiB")
                chunks.append(chunk)
            return 200, None, b"".join(chunks)

    async def _fetch(self, url: str, name: str) -> bytes:
        import httpx

        current = self._parse(url, name)
        for _ in range(self.limits.url_max_redirects + 1):
            address = await self._checked_address(current, name)
            try:
                status, location, body = await self._get(current, address, name)
            except httpx.TimeoutException:
                raise ImageFetchError(
                    f"{name}: fetching the URL timed out after {self.limits.url_timeout_s:g} s") from None
            except httpx.HTTPError as exc:
                raise ImageFetchError(f"{name}: fetching the URL failed ({type(exc).__name__}: {exc})") from None
            if location is None:
                return body
            current = self._parse(str(current.join(location)), name)  # relative to the name, not the address
        raise ImageFetchError(f"{name}: more than {self.limits.url_max_redirects} redirects")

    async def fetch(self, url: str, name: str) -> bytes:
        """The bytes at ``url`` (at most ``max_image_bytes``, within ``url_timeout_s`` in all).

        Raises:
            UrlNotAllowedError: fetching is off, or the URL (or a redirect) names a host off the allow-list or one
                that resolves to an address the server may not reach.
            PayloadTooLargeError: the response is larger than ``max_image_bytes``.
            ImageFetchError: resolving or fetching failed, returned an error status, took too long, or redirected
                too often.
        """
        try:
            return await asyncio.wait_for(self._fetch(url, name), self.limits.url_timeout_s)
        except TimeoutError:
            raise ImageFetchError(f"{name}: fetching the URL took more than {self.limits.url_timeout_s:g} s") from None

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
