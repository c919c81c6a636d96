"""
MX resolution (RFC 5321 §5.1, RFC 7505): the ordering rules as plain function calls, then the
dnspython resolver in its thread pool against a real loopback DNS server (twisted.names, UDP and
TCP on 127.0.0.1) on the real reactor: preference order, implicit MX, null MX, NXDOMAIN, SERVFAIL.

The loopback DNS server lives in tests/peers/dns.py (its ``serve`` runs it in a subprocess for
the interop tests).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from random import Random
from typing import Any, cast

import pytest
import pytest_twisted
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol

from strata_twisted.core.routes import (
    MAX_ADDRESSES,
    MAX_EXCHANGES,
    NoRoute,
    NullMX,
    RouteTemporaryFailure,
    address_literal,
    order_exchanges,
)
from strata_twisted.server.dns import DNSPythonResolver
from tests.peers.dns import Zone, ZoneResolver, listen_dns

reactor: Any = _reactor
# pytest-twisted runs these on the real reactor; its decorator is untyped.
on_reactor = cast(
    Callable[[Callable[..., Any]], Callable[..., Any]], pytest_twisted.inlineCallbacks
)

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
    # IDNA 2008 keeps the sharp s (faß -> xn--fa-hia); IDNA 2003 maps it to "ss": another domain.
    "xn--fa-hia.test": [("MX", 10, "c.pref.test")],
    "fass.test": [("MX", 10, "a.pref.test")],
    # A name server that answers A but fails on AAAA (still seen in the wild).
    "v4only.test": [("MX", 10, "brokenaaaa.test")],
    "brokenaaaa.test": [("A", "127.0.0.30"), ("SERVFAIL", "AAAA")],
    # Two exchangers on one address.
    "shared.test": [("MX", 10, "a.pref.test"), ("MX", 20, "alias.shared.test")],
    "alias.shared.test": [("A", "127.0.0.11")],
    # One exchanger with more addresses than the relay should try.
    "many.test": [("MX", 10, "big.many.test")],
    "big.many.test": [("A", f"127.0.1.{i}") for i in range(1, 2 * MAX_ADDRESSES + 1)],
    # More exchangers than are worth looking up, none of which exists.
    "wide.test": [("MX", i, f"h{i:02}.wide.test") for i in range(1, 2 * MAX_EXCHANGES + 1)],
    # An exchanger whose name server never answers, then one that does.
    "slow.test": [("MX", 10, "slowhost.test"), ("MX", 20, "c.pref.test")],
    "slowhost.test": [("SILENT", "A"), ("AAAA", "::1")],
}


# -- the rules -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("records", "hosts"),
    [
        ([(20, "b.x.test."), (10, "a.x.test.")], ["a.x.test", "b.x.test"]),
        ([(10, "B.x.test"), (5, "c.x.test")], ["c.x.test", "b.x.test"]),
        ([(10, "a.x.test"), (20, "a.x.test")], ["a.x.test"]),  # once, at its best preference
        ([(20, "a.x.test"), (30, "b.x.test"), (10, "a.x.test")], ["a.x.test", "b.x.test"]),
        ([], ["x.test"]),  # RFC 5321 §5.1: no MX, the domain itself (implicit MX)
        ([(0, "."), (10, "a.x.test")], ["a.x.test"]),  # a null MX among others is skipped
    ],
)
def test_order_exchanges(records: list[tuple[int, str]], hosts: list[str]) -> None:
    for seed in range(5):
        assert order_exchanges("x.test", records, Random(seed)) == hosts


def test_equal_preferences_are_shuffled_not_sorted() -> None:
    """
    Regression: exchangers of equal preference always went in name order, so every Strata sent
    all its mail to the same one.  RFC 5321 §5.1: the client "MUST randomize them".
    """
    records = [(20, "z.x.test"), (10, "b.x.test"), (10, "c.x.test"), (10, "a.x.test")]
    orders = {tuple(order_exchanges("x.test", records, Random(seed))) for seed in range(200)}
    # Every order of the three preference-10 hosts shows up, and z (20) is always last.
    assert {order[:3] for order in orders} == {
        ("a.x.test", "b.x.test", "c.x.test"), ("a.x.test", "c.x.test", "b.x.test"),
        ("b.x.test", "a.x.test", "c.x.test"), ("b.x.test", "c.x.test", "a.x.test"),
        ("c.x.test", "a.x.test", "b.x.test"), ("c.x.test", "b.x.test", "a.x.test"),
    }  # fmt: skip
    assert {order[3] for order in orders} == {"z.x.test"}


@pytest.mark.parametrize("records", [[(0, ".")], [(0, "")], [(0, "."), (0, ".")]])
def test_a_single_root_mx_is_a_null_mx(records: list[tuple[int, str]]) -> None:
    with pytest.raises(NullMX, match=r"x\.test accepts no mail \(null MX, RFC 7505\)"):
        order_exchanges("x.test", records, Random(0))


@pytest.fixture
def zone() -> ZoneResolver:
    return ZoneResolver(ZONE)


@pytest.fixture
def dns_server(zone: ZoneResolver) -> Iterator[int]:
    port, listening = listen_dns(reactor, zone)
    yield port
    for p in listening:
        p.stopListening()


@pytest.fixture
def resolver(dns_server: int) -> Iterator[DNSPythonResolver]:
    r = DNSPythonResolver(
        reactor, f"127.0.0.1:{dns_server}", mx_port=2525, timeout=3.0, rng=Random(7)
    )
    r.start()
    yield r
    r.stop()


@on_reactor
def test_mx_hosts_in_preference_order_with_their_addresses(resolver: DNSPythonResolver) -> Any:
    orders = set()
    for _ in range(20):
        hosts = yield resolver.lookup("pref.test")
        # a and c share preference 10 (in random order), then b: its IPv4, then its IPv6.
        assert {hosts[0], hosts[1]} == {("127.0.0.11", 2525), ("127.0.0.13", 2525)}
        assert hosts[2:] == [("127.0.0.12", 2525), ("::1", 2525)]
        orders.add(tuple(hosts[:2]))
    assert len(orders) == 2  # RFC 5321 §5.1: equal preferences are randomized


@on_reactor
def test_no_mx_is_the_implicit_mx(resolver: DNSPythonResolver) -> Any:
    hosts = yield resolver.lookup("implicit.test")
    assert hosts == [("127.0.0.20", 2525)]


@on_reactor
def test_an_mx_host_without_address_is_skipped(resolver: DNSPythonResolver) -> Any:
    hosts = yield resolver.lookup("half.test")
    assert hosts == [("127.0.0.13", 2525)]


@on_reactor
def test_a_unicode_domain_is_looked_up_by_its_idna2008_name(resolver: DNSPythonResolver) -> Any:
    """Regression: dnspython encodes a U-label with IDNA 2003, so faß.test became fass.test."""
    hosts = yield resolver.lookup("faß.test")
    assert hosts == [("127.0.0.13", 2525)]  # xn--fa-hia.test's exchanger, not fass.test's


@on_reactor
def test_a_failed_aaaa_lookup_keeps_the_ipv4_addresses(resolver: DNSPythonResolver) -> Any:
    """
    Regression: a SERVFAIL on the exchanger's AAAA query threw away its A records, so a domain
    whose name server mishandles AAAA had no route at all, for ever.
    """
    hosts = yield resolver.lookup("v4only.test")
    assert hosts == [("127.0.0.30", 2525)]


@on_reactor
def test_an_address_shared_by_two_exchangers_is_tried_once(resolver: DNSPythonResolver) -> Any:
    hosts = yield resolver.lookup("shared.test")
    assert hosts == [("127.0.0.11", 2525)]


@on_reactor
def test_the_addresses_are_limited(resolver: DNSPythonResolver) -> Any:
    hosts = yield resolver.lookup("many.test")
    assert hosts == [(f"127.0.1.{i}", 2525) for i in range(1, MAX_ADDRESSES + 1)]


@on_reactor
def test_the_exchangers_looked_up_are_limited(
    resolver: DNSPythonResolver, zone: ZoneResolver
) -> Any:
    message = yield _error_of(resolver.lookup("wide.test"), NoRoute)
    assert message.startswith("wide.test: no MX host has an address")
    asked = [name for name, kind in zone.queries if kind == "A"]
    assert asked == [f"h{i:02}.wide.test" for i in range(1, MAX_EXCHANGES + 1)]


@pytest.mark.parametrize("domain", ["", "[not-an-ip]", "[::1]", "x..test", "localhost"])
@on_reactor
def test_what_is_not_a_domain_has_no_route_without_asking(
    resolver: DNSPythonResolver, zone: ZoneResolver, domain: str
) -> Any:
    """Regression: "" (the queue's domain for a sender without one) asked for the root's MX."""
    message = yield _error_of(resolver.lookup(domain), NoRoute)
    assert message.startswith(f"no MX lookup for {domain!r}")
    assert zone.queries == []


@pytest.mark.parametrize(
    ("domain", "address"),
    [
        ("[127.0.0.1]", "127.0.0.1"),
        ("[192.0.2.1]", "192.0.2.1"),
        ("[IPv6:2001:db8::1]", "2001:db8::1"),
        ("[ipv6:::1]", "::1"),
        ("[::1]", None),  # an IPv6 literal needs its tag (RFC 5321 §4.1.3)
        ("[IPv6:192.0.2.1]", None),
        ("[192.0.2.300]", None),
        ("[example.test]", None),
        ("example.test", None),
        ("", None),
    ],
)
def test_address_literal(domain: str, address: str | None) -> None:
    assert address_literal(domain) == address


@on_reactor
def test_an_address_literal_is_its_own_route_without_dns(
    resolver: DNSPythonResolver, zone: ZoneResolver
) -> Any:
    hosts = yield resolver.lookup("[127.0.0.1]")
    assert hosts == [("127.0.0.1", 2525)]
    hosts = yield resolver.lookup("[IPv6:::1]")
    assert hosts == [("::1", 2525)]
    assert zone.queries == []


@on_reactor
def test_an_exchanger_that_times_out_is_asked_once(dns_server: int, zone: ZoneResolver) -> Any:
    r = DNSPythonResolver(reactor, f"127.0.0.1:{dns_server}", 2525, timeout=1.0, rng=Random(0))
    r.start()
    try:
        hosts = yield r.lookup("slow.test")
    finally:
        r.stop()
    assert hosts == [("127.0.0.13", 2525)]  # the next exchanger still gets its turn
    # Its AAAA query would only have waited as long again.
    assert {q for q in zone.queries if q[0] == "slowhost.test"} == {("slowhost.test", "A")}


def test_a_lookup_after_the_stop_fails_at_once() -> None:
    """
    Regression: a stopped Twisted ThreadPool drops new work silently, so a lookup after the
    service stopped returned a Deferred that never fired and the relay's drain hung on it.
    """
    r = DNSPythonResolver(reactor, "127.0.0.1:1", 25)
    r.start()
    r.stop()
    failures: list[Any] = []
    r.lookup("pref.test").addErrback(failures.append)
    assert len(failures) == 1
    assert isinstance(failures[0].value, RouteTemporaryFailure)
    assert str(failures[0].value) == "pref.test: the DNS resolver is stopped"


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
