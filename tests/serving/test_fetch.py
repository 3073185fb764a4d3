"""Address-checked URL fetching: every refused range, a rebinding resolver, redirects, and the caps on size and time.

Names are resolved by fake resolvers and requests go to httpx mock transports (or a loopback image host), so no test
touches the network.
"""

from __future__ import annotations

import asyncio
import ipaddress

import httpx
import pytest

from hpi.serving.fetch import UrlFetcher, address_refusal, embedded_ipv4
from hpi.serving.limits import ImageFetchError, PayloadTooLargeError, ServingLimits, UrlNotAllowedError
from tests.serving.conftest import jpeg_bytes
from tests.serving.test_app_classification import ImageHost

pytestmark = pytest.mark.serving

PUBLIC = "93.184.216.34"
PUBLIC_V6 = "2606:2800:220:1:248:1893:25c8:1946"


class FakeResolver:
    """Answers from a table; each host's answers are used in turn (the last one repeats), and queries are counted."""

    def __init__(self, table: dict[str, list[list[str]]]) -> None:
        self.table = table
        self.queries: list[str] = []

    async def resolve(self, host: str, port: int) -> list:
        self.queries.append(host)
        answers = self.table.get(host)
        if answers is None:
            raise OSError(f"unknown host {host}")
        answer = answers[min(self.queries.count(host) - 1, len(answers) - 1)]
        return [ipaddress.ip_address(a) for a in answer]


class Recorder:
    """An httpx mock transport: fixed routes by path, and a record of every request as sent."""

    def __init__(self, routes: dict[str, httpx.Response]) -> None:
        self.routes = routes
        self.requests: list[httpx.Request] = []
        self.transport = httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.routes.get(request.url.path, httpx.Response(404))


def fetch(fetcher: UrlFetcher, url: str) -> bytes:
    async def go() -> bytes:
        try:
            return await fetcher.fetch(url, "image")
        finally:
            await fetcher.aclose()

    return asyncio.run(go())


def fetcher_for(resolver, recorder=None, **limits) -> UrlFetcher:
    settings = {"url_allow_hosts": frozenset({"*"})} | limits
    return UrlFetcher(ServingLimits(**settings), resolver=resolver,
                      transport=recorder.transport if recorder else None)


# ----------------------------------------------------------------------------------------------- the address policy


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"), ("127.8.9.10", "loopback"), ("::1", "loopback"),
        ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("192.168.1.1", "private"), ("fd00::1", "private"),
        ("169.254.169.254", "link-local"), ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"), ("239.255.255.250", "multicast"), ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"), ("255.255.255.255", "reserved"),
        ("0.0.0.0", "unspecified"), ("::", "unspecified"),
        ("100.64.0.1", "not globally routable"), ("fec0::1", "site-local"),
        ("::ffff:127.0.0.1", "loopback"), ("::ffff:169.254.169.254", "link-local"), ("::ffff:10.0.0.1", "private"),
        ("2002:7f00:1::", "loopback"),  # 6to4 around 127.0.0.1
        ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64 around 169.254.169.254
    ],
)
def test_each_internal_range_is_refused_with_its_name(address, reason):
    assert address_refusal(ipaddress.ip_address(address), ()) == reason


@pytest.mark.parametrize("address", [PUBLIC, "8.8.8.8", PUBLIC_V6, "::ffff:93.184.216.34"])
def test_public_addresses_pass(address):
    assert address_refusal(ipaddress.ip_address(address), ()) is None


def test_an_allowed_network_lets_its_internal_addresses_through_and_only_those():
    networks = [ipaddress.ip_network("10.1.2.0/24"), ipaddress.ip_network("::1/128")]
    assert address_refusal(ipaddress.ip_address("10.1.2.9"), networks) is None
    assert address_refusal(ipaddress.ip_address("::ffff:10.1.2.9"), networks) is None  # mapped: checked as IPv4
    assert address_refusal(ipaddress.ip_address("::1"), networks) is None
    assert address_refusal(ipaddress.ip_address("10.1.3.9"), networks) == "private"


def test_embedded_ipv4_forms():
    assert str(embedded_ipv4(ipaddress.ip_address("::ffff:1.2.3.4"))) == "1.2.3.4"
    assert str(embedded_ipv4(ipaddress.ip_address("2002:0102:0304::1"))) == "1.2.3.4"
    assert embedded_ipv4(ipaddress.ip_address(PUBLIC_V6)) is None


@pytest.mark.parametrize(
    ("answers", "reason"),
    [
        (["127.0.0.1"], "loopback"), (["10.0.0.5"], "private"), (["169.254.169.254"], "link-local"),
        (["224.0.0.251"], "multicast"), (["240.0.0.9"], "reserved"), (["0.0.0.0"], "unspecified"),
        (["::1"], "loopback"), (["fe80::1"], "link-local"), (["::ffff:127.0.0.1"], "loopback"),
        ([PUBLIC, "10.0.0.5"], "private"),  # one internal address among public ones is enough to refuse
    ],
)
def test_a_name_resolving_to_an_internal_address_is_refused_before_any_connection(answers, reason):
    resolver = FakeResolver({"images.example.com": [answers]})
    recorder = Recorder({})
    with pytest.raises(UrlNotAllowedError, match=f"images.example.com \\(resolves to .*\\) is a {reason} address"):
        fetch(fetcher_for(resolver, recorder), "http://images.example.com/cat.jpg")
    assert recorder.requests == []


@pytest.mark.parametrize("url", ["http://127.0.0.1/x", "http://[::1]/x", "http://[::ffff:169.254.169.254]/x",
                                 "http://169.254.169.254/latest/meta-data/"])
def test_ip_literals_are_checked_without_resolving(url):
    resolver = FakeResolver({})
    with pytest.raises(UrlNotAllowedError, match="address"):
        fetch(fetcher_for(resolver, Recorder({})), url)
    assert resolver.queries == []


# ----------------------------------------------------------------------------------------------- connecting


def test_the_connection_goes_to_the_checked_address_with_the_name_in_host_and_sni():
    photo = jpeg_bytes()
    resolver = FakeResolver({"images.example.com": [[PUBLIC]]})
    recorder = Recorder({"/cat.jpg": httpx.Response(200, content=photo)})
    assert fetch(fetcher_for(resolver, recorder), "https://images.example.com/cat.jpg?size=2") == photo
    (request,) = recorder.requests
    assert request.url.host == PUBLIC and request.url.scheme == "https" and request.url.query == b"size=2"
    assert request.headers["host"] == "images.example.com"
    assert request.extensions["sni_hostname"] == "images.example.com"


def test_ipv6_addresses_are_connected_to_in_brackets():
    resolver = FakeResolver({"v6.example.com": [[PUBLIC_V6]]})
    recorder = Recorder({"/a.jpg": httpx.Response(200, content=b"img")})
    assert fetch(fetcher_for(resolver, recorder), "http://v6.example.com:8080/a.jpg") == b"img"
    (request,) = recorder.requests
    assert request.url.host == PUBLIC_V6 and request.url.port == 8080
    assert request.headers["host"] == "v6.example.com:8080"


def test_a_rebinding_resolver_cannot_move_the_connection_to_an_internal_address():
    """The name is public when checked and loopback when asked again: the fetch resolves once and connects to the
    address it checked, so the second answer is never used."""
    resolver = FakeResolver({"rebind.example.com": [[PUBLIC], ["127.0.0.1"]]})
    recorder = Recorder({"/cat.jpg": httpx.Response(200, content=b"public bytes")})
    assert fetch(fetcher_for(resolver, recorder), "http://rebind.example.com/cat.jpg") == b"public bytes"
    assert resolver.queries == ["rebind.example.com"]
    assert [r.url.host for r in recorder.requests] == [PUBLIC]


def test_a_rebinding_resolver_is_caught_when_a_redirect_asks_again():
    resolver = FakeResolver({"rebind.example.com": [[PUBLIC], ["127.0.0.1"]]})
    recorder = Recorder({"/hop": httpx.Response(302, headers={"Location": "/cat.jpg"}),
                         "/cat.jpg": httpx.Response(200, content=b"x")})
    with pytest.raises(UrlNotAllowedError, match="resolves to 127.0.0.1.*loopback"):
        fetch(fetcher_for(resolver, recorder), "http://rebind.example.com/hop")
    assert [r.url.path for r in recorder.requests] == ["/hop"]


def test_every_redirect_is_checked_again_and_relative_ones_keep_the_name():
    resolver = FakeResolver({"a.example.com": [[PUBLIC]], "b.example.com": [["8.8.4.4"]],
                             "evil.example.com": [["10.0.0.1"]]})
    recorder = Recorder({
        "/one": httpx.Response(301, headers={"Location": "http://b.example.com/two"}),
        "/two": httpx.Response(302, headers={"Location": "/three"}),
        "/three": httpx.Response(200, content=b"done"),
        "/bad": httpx.Response(302, headers={"Location": "http://evil.example.com/x"}),
        "/meta": httpx.Response(302, headers={"Location": "http://169.254.169.254/latest"}),
    })
    fetcher = fetcher_for(resolver, recorder)
    assert fetch(fetcher, "http://a.example.com/one") == b"done"
    assert [(r.url.host, r.headers["host"]) for r in recorder.requests] == [
        (PUBLIC, "a.example.com"), ("8.8.4.4", "b.example.com"), ("8.8.4.4", "b.example.com")]
    with pytest.raises(UrlNotAllowedError, match="evil.example.com .*private"):
        fetch(fetcher, "http://a.example.com/bad")
    with pytest.raises(UrlNotAllowedError, match="169.254.169.254 is a link-local"):
        fetch(fetcher, "http://a.example.com/meta")


def test_redirects_are_capped():
    resolver = FakeResolver({"loop.example.com": [[PUBLIC]]})
    recorder = Recorder({"/loop": httpx.Response(302, headers={"Location": "/loop"})})
    with pytest.raises(ImageFetchError, match="more than 2 redirects"):
        fetch(fetcher_for(resolver, recorder, url_max_redirects=2), "http://loop.example.com/loop")
    assert len(recorder.requests) == 3


def test_the_host_allow_list_still_applies_before_resolving():
    resolver = FakeResolver({"other.example.net": [[PUBLIC]]})
    fetcher = UrlFetcher(ServingLimits(url_allow_hosts=frozenset({"*.example.com"})), resolver=resolver,
                         transport=Recorder({}).transport)
    with pytest.raises(UrlNotAllowedError, match="not on this server's URL allow-list"):
        fetch(fetcher, "http://other.example.net/x.jpg")
    assert resolver.queries == []


def test_size_and_time_are_capped():
    resolver = FakeResolver({"big.example.com": [[PUBLIC]]})
    recorder = Recorder({"/big": httpx.Response(200, content=b"\xff" * 5000)})
    with pytest.raises(PayloadTooLargeError, match="more than the limit"):
        fetch(fetcher_for(resolver, recorder, max_image_bytes=1000), "http://big.example.com/big")

    class SlowResolver:
        async def resolve(self, host, port):
            await asyncio.sleep(5)
            return [ipaddress.ip_address(PUBLIC)]

    with pytest.raises(ImageFetchError, match="took more than 0.2 s"):
        fetch(fetcher_for(SlowResolver(), recorder, url_timeout_s=0.2), "http://big.example.com/big")


def test_resolution_failure_is_a_fetch_error():
    with pytest.raises(ImageFetchError, match="cannot resolve host 'nowhere.example.com'"):
        fetch(fetcher_for(FakeResolver({}), Recorder({})), "http://nowhere.example.com/x")


def test_a_real_connection_to_an_allowed_network_under_a_resolved_name():
    """Over loopback with a real socket: the name resolves (fakely) to 127.0.0.1, which --allow-url-network
    permits; the image host sees the name in its Host header."""
    seen_hosts = []
    photo = jpeg_bytes("rocket")
    with ImageHost({"/r.jpg": (200, {}, photo)}) as host:
        original = host.httpd.RequestHandlerClass.do_GET

        def do_get(handler):
            seen_hosts.append(handler.headers["Host"])
            original(handler)

        host.httpd.RequestHandlerClass.do_GET = do_get
        resolver = FakeResolver({"images.internal": [["127.0.0.1"]]})
        url = f"http://images.internal:{host.port}/r.jpg"
        with pytest.raises(UrlNotAllowedError, match="loopback"):
            fetch(fetcher_for(resolver), url)
        allowed = UrlFetcher(ServingLimits(url_allow_hosts=frozenset({"images.internal"}),
                                           url_allow_networks=frozenset({"127.0.0.0/8"})), resolver=resolver)
        assert fetch(allowed, url) == photo
    assert seen_hosts == [f"images.internal:{host.port}"]
