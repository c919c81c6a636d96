"""
MX resolution (RFC 5321 §5.1, RFC 7505): the ordering rules as plain function calls, then the
dnspython resolver in its thread pool against a real loopback DNS server (twisted.names, UDP and
TCP on 127.0.0.1) on the real reactor: preference order, implicit MX, null MX, NXDOMAIN, SERVFAIL.

``serve`` runs the same loopback DNS server in a subprocess for the interop tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
import pytest_twisted
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import DatagramProtocol
from twisted.names import common, dns, server

from strata_twisted.core.routes import (
    NoRoute,
    NullMX,
    RouteTemporaryFailure,
    order_exchanges,
)
from strata_twisted.server.dns import DNSPythonResolver

reactor: Any = _reactor
# pytest-twisted runs these on the real reactor; its decorator is untyped.
on_reactor = cast(
    Callable[[Callable[..., Any]], Callable[..., Any]], pytest_twisted.inlineCallbacks
)

# A zone: name -> records, each ("MX", preference, exchange) | ("A", address) | ("AAAA", address)
# | ("TXT", text).  A name not listed is NXDOMAIN; "servfail.test" always fails (SERVFAIL).
Zone = dict[str, list[tuple[Any, ...]]]

ZONE: Zone = {
    "pref.test": [("MX", 20, "b.pref.test"), ("MX", 10, "c.pref.test"), ("MX", 10, "a.pref.test")],
    "a.pref.test": [("A", "127.0.0.11")],
    "b.pref.test": [("A", "127.0.0.12"), ("AAAA", "::1")],
    "c.pref.test": [("A", "127.0.0.13")],
    "implicit.test": [("A", "127.0.0.20")],
    "nullmx.test": [("MX", 0, ".")],
    "noaddress.test": [("TXT", "v=spf1 -all")],
    "dangling.test": [("MX", 10, "nowhere.test"), ("MX", 20, "noaddress.test")],
    "half.test": [("MX", 10, "nowhere.test"), ("MX", 20, "c.pref.test")],
}


# -- the rules -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("records", "hosts"),
    [
        ([(20, "b.x.test."), (10, "a.x.test.")], ["a.x.test", "b.x.test"]),
        (
            [(10, "B.x.test"), (10, "a.x.test"), (5, "c.x.test")],
            ["c.x.test", "a.x.test", "b.x.test"],
        ),
        ([(10, "a.x.test"), (20, "a.x.test")], ["a.x.test"]),  # once, at its best preference
        ([], ["x.test"]),  # RFC 5321 §5.1: no MX, the domain itself (implicit MX)
        ([(0, "."), (10, "a.x.test")], ["a.x.test"]),  # a null MX among others is skipped
    ],
)
def test_order_exchanges(records: list[tuple[int, str]], hosts: list[str]) -> None:
    assert order_exchanges("x.test", records) == hosts


@pytest.mark.parametrize("records", [[(0, ".")], [(0, "")], [(0, "."), (0, ".")]])
def test_a_single_root_mx_is_a_null_mx(records: list[tuple[int, str]]) -> None:
    with pytest.raises(NullMX, match=r"x\.test accepts no mail \(null MX, RFC 7505\)"):
        order_exchanges("x.test", records)


# -- a loopback DNS server -------------------------------------------------------------------------


def _payload(record: tuple[Any, ...]) -> tuple[int, Any]:
    kind = record[0]
    if kind == "MX":
        exchange = "" if record[2] == "." else record[2]
        return dns.MX, dns.Record_MX(record[1], exchange.encode())
    if kind == "A":
        return dns.A, dns.Record_A(record[1])
    if kind == "AAAA":
        return dns.AAAA, dns.Record_AAAA(record[1])
    if kind == "TXT":
        return dns.TXT, dns.Record_TXT(record[1].encode())
    raise ValueError(f"unknown record type {kind!r}")


class ZoneResolver(common.ResolverBase):
    """An authoritative twisted.names resolver for a L{Zone}."""

    def __init__(self, zone: Zone) -> None:
        super().__init__()
        self.zone = {name.lower(): [_payload(r) for r in records] for name, records in zone.items()}

    def _lookup(
        self, name: bytes, cls: int, type: int, timeout: Any
    ) -> Deferred[tuple[list[dns.RRHeader], list[dns.RRHeader], list[dns.RRHeader]]]:
        text = name.decode().lower().rstrip(".")
        if text == "servfail.test":
            return fail(RuntimeError("simulated server failure"))
        if text not in self.zone:
            return fail(dns.AuthoritativeDomainError(text))
        answers = [
            dns.RRHeader(name, rtype, dns.IN, 60, payload, auth=True)
            for rtype, payload in self.zone[text]
            if rtype == type
        ]
        return succeed((answers, [], []))


def listen_dns(reactor: Any, zone: Zone) -> tuple[int, list[IListeningPort]]:
    """Serve ``zone`` on 127.0.0.1, UDP and TCP on one free port; return it and the ports."""
    factory = server.DNSServerFactory(authorities=[ZoneResolver(zone)])
    for _ in range(20):
        udp = reactor.listenUDP(0, dns.DNSDatagramProtocol(factory), interface="127.0.0.1")
        port: int = udp.getHost().port
        try:
            tcp = reactor.listenTCP(port, factory, interface="127.0.0.1")
        except Exception:  # noqa: BLE001 - the TCP port is taken: try another
            udp.stopListening()
            continue
        return port, [udp, tcp]
    raise RuntimeError("no free port for the loopback DNS server")


def serve(zone: Zone) -> None:
    """Run a loopback DNS server for ``zone`` until killed; print its port first (interop)."""
    port, _ = listen_dns(reactor, zone)
    print(port, flush=True)
    reactor.run()


@pytest.fixture
def dns_server() -> Iterator[int]:
    port, listening = listen_dns(reactor, ZONE)
    yield port
    for p in listening:
        p.stopListening()


@pytest.fixture
def resolver(dns_server: int) -> Iterator[DNSPythonResolver]:
    r = DNSPythonResolver(reactor, f"127.0.0.1:{dns_server}", mx_port=2525, timeout=3.0)
    r.start()
    yield r
    r.stop()


@on_reactor
def test_mx_hosts_in_preference_order_with_their_addresses(resolver: DNSPythonResolver) -> Any:
    hosts = yield resolver.lookup("pref.test")
    # a and c share preference 10 (by name), then b: its IPv4, then its IPv6 address.
    assert hosts == [("127.0.0.11", 2525), ("127.0.0.13", 2525), ("127.0.0.12", 2525),
                     ("::1", 2525)]  # fmt: skip


@on_reactor
def test_no_mx_is_the_implicit_mx(resolver: DNSPythonResolver) -> Any:
    hosts = yield resolver.lookup("implicit.test")
    assert hosts == [("127.0.0.20", 2525)]


@on_reactor
def test_an_mx_host_without_address_is_skipped(resolver: DNSPythonResolver) -> Any:
    hosts = yield resolver.lookup("half.test")
    assert hosts == [("127.0.0.13", 2525)]


def _error_of(d: Deferred[Any], kind: type[Exception]) -> Deferred[str]:
    def check(result: object) -> str:
        assert isinstance(result, kind), result
        return str(result)

    def unexpected(hosts: object) -> str:
        raise AssertionError(f"expected {kind.__name__}, got {hosts!r}")

    return d.addCallbacks(unexpected, lambda f: check(f.value))


@pytest.mark.parametrize(
    ("domain", "kind", "text"),
    [
        ("nullmx.test", NullMX, "nullmx.test accepts no mail (null MX, RFC 7505)"),
        ("gone.test", NoRoute, "gone.test: domain does not exist"),
        ("noaddress.test", NoRoute, "noaddress.test has no MX and no address records"),
        ("dangling.test", NoRoute, "dangling.test: no MX host has an address"),
        ("servfail.test", RouteTemporaryFailure, "servfail.test: MX lookup failed"),
    ],
)
@on_reactor
def test_lookup_failures(
    resolver: DNSPythonResolver, domain: str, kind: type[Exception], text: str
) -> Any:
    message = yield _error_of(resolver.lookup(domain), kind)
    assert message.startswith(text)


@on_reactor
def test_a_silent_name_server_is_a_temporary_failure() -> Any:
    # A UDP socket that never answers (and no TCP listener).
    silent = reactor.listenUDP(0, DatagramProtocol(), interface="127.0.0.1")
    r = DNSPythonResolver(reactor, f"127.0.0.1:{silent.getHost().port}", 25, timeout=0.5)
    r.start()
    try:
        message = yield _error_of(r.lookup("pref.test"), RouteTemporaryFailure)
        assert message.startswith("pref.test: MX lookup failed")
    finally:
        r.stop()
        silent.stopListening()
